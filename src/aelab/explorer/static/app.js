// aelab explorer: the map of the test set's latent codes and the panels around it. Plain JS + canvas.
"use strict";

// The report's class colours (figures.py CLASS_COLOURS), so the map matches the report's scatter.
const COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#C9B200", "#0072B2", "#D55E00", "#CC79A7", "#000000",
                 "#882255", "#999999"];
const HIT_PX = 6;      // a point counts as under the mouse within this many CSS pixels
const CELL_PX = 8;     // the hover grid's cell size
const STEPS = 10;      // images in an interpolation strip

const $ = (id) => document.getElementById(id);
const state = {
  info: null, proj: null, n: 0,
  sx: null, sy: null,              // screen positions (CSS px) of the points
  grid: new Map(),                 // cell key -> point indices
  hidden: new Set(),               // classes switched off in the legend
  base: null,                      // offscreen canvas with every point drawn
  size: 600, scale: 1, ox: 0, oy: 0, cx: 0, cy: 0,
  hover: -1, following: false, probe: null,  // probe: [x, y] in map units
  a: null, b: null, next: "a",     // picks: {index?, code, label, src}
  upload: null,                    // {code, xy, ...} of the last upload
};
window.explorer = { ready: false, decodes: 0, state };

// ------------------------------------------------------------------------------------------ requests
function showError(message) { $("error").textContent = message || ""; }

async function api(path, options) {
  const r = await fetch(path, options);
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try { message = (await r.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return r;
}

function setBlob(img, blob) {
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = URL.createObjectURL(blob);
  img.src = img.dataset.url;
}

// One decode request in flight at a time; while it runs only the latest wanted point is remembered, so a moving
// mouse costs at most one request per round trip and the image always ends on where the mouse stopped.
const probeQueue = { busy: false, want: null };
function requestProbe(xy) {
  probeQueue.want = xy;
  if (!probeQueue.busy) runProbe();
}
async function runProbe() {
  const xy = probeQueue.want;
  if (!xy) return;
  probeQueue.want = null;
  probeQueue.busy = true;
  try {
    const r = await api(`/api/lift?x=${xy[0]}&y=${xy[1]}`);
    setBlob($("decoded"), await r.blob());
    window.explorer.decodes += 1;
    $("probe-facts").textContent = `map point (${xy[0].toFixed(3)}, ${xy[1].toFixed(3)})`;
  } catch (e) {
    showError(`decode: ${e.message}`);
  } finally {
    probeQueue.busy = false;
    if (probeQueue.want) runProbe();
  }
}

// ------------------------------------------------------------------------------------------ the map
function layout() {
  const canvas = $("map");
  const side = Math.max(320, Math.min(window.innerHeight - 150, window.innerWidth * 0.55, 760));
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = canvas.style.height = `${side}px`;
  canvas.width = canvas.height = Math.round(side * dpr);
  state.size = side;
  const { x, y } = state.proj;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < state.n; i++) {
    x0 = Math.min(x0, x[i]); x1 = Math.max(x1, x[i]); y0 = Math.min(y0, y[i]); y1 = Math.max(y1, y[i]);
  }
  const span = Math.max(x1 - x0, y1 - y0, 1e-9) * 1.06;   // one scale for both axes: distances stay true
  state.scale = side / span;
  state.cx = (x0 + x1) / 2; state.cy = (y0 + y1) / 2;
  state.sx = new Float32Array(state.n); state.sy = new Float32Array(state.n);
  for (let i = 0; i < state.n; i++) [state.sx[i], state.sy[i]] = toScreen(x[i], y[i]);
  buildGrid();
  drawBase();
  draw();
}

function toScreen(x, y) {
  return [state.size / 2 + (x - state.cx) * state.scale, state.size / 2 - (y - state.cy) * state.scale];
}
function toMap(px, py) {
  return [state.cx + (px - state.size / 2) / state.scale, state.cy - (py - state.size / 2) / state.scale];
}

function buildGrid() {
  state.grid = new Map();
  for (let i = 0; i < state.n; i++) {
    const key = `${Math.floor(state.sx[i] / CELL_PX)},${Math.floor(state.sy[i] / CELL_PX)}`;
    if (!state.grid.has(key)) state.grid.set(key, []);
    state.grid.get(key).push(i);
  }
}

function pointAt(px, py) {
  let best = -1, bestD = HIT_PX * HIT_PX;
  const gx = Math.floor(px / CELL_PX), gy = Math.floor(py / CELL_PX);
  for (let dx = -1; dx <= 1; dx++) {
    for (let dy = -1; dy <= 1; dy++) {
      for (const i of state.grid.get(`${gx + dx},${gy + dy}`) || []) {
        if (state.hidden.has(state.proj.labels[i])) continue;
        const d = (state.sx[i] - px) ** 2 + (state.sy[i] - py) ** 2;
        if (d < bestD) { bestD = d; best = i; }
      }
    }
  }
  return best;
}

function drawBase() {
  const dpr = $("map").width / state.size;
  const base = document.createElement("canvas");
  base.width = base.height = $("map").width;
  const g = base.getContext("2d");
  g.scale(dpr, dpr);
  g.globalAlpha = 0.65;
  const r = state.n > 5000 ? 1.6 : 2.4;
  for (let c = 0; c < state.proj.classes.length; c++) {   // one path per class: 10,000 points in a few ms
    if (state.hidden.has(c)) continue;
    g.fillStyle = COLOURS[c % COLOURS.length];
    g.beginPath();
    for (let i = 0; i < state.n; i++) {
      if (state.proj.labels[i] !== c) continue;
      g.moveTo(state.sx[i] + r, state.sy[i]);
      g.arc(state.sx[i], state.sy[i], r, 0, 2 * Math.PI);
    }
    g.fill();
  }
  state.base = base;
}

function ring(g, px, py, radius, colour, width) {
  g.strokeStyle = colour; g.lineWidth = width;
  g.beginPath(); g.arc(px, py, radius, 0, 2 * Math.PI); g.stroke();
}

function marker(g, xy, label, colour) {
  const [px, py] = toScreen(xy[0], xy[1]);
  ring(g, px, py, 7, "#fff", 4); ring(g, px, py, 7, colour, 2);
  g.fillStyle = colour; g.font = "bold 13px system-ui, sans-serif";
  g.fillText(label, px + 9, py - 8);
}

let drawPending = false;
function draw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    const canvas = $("map"), g = canvas.getContext("2d"), dpr = canvas.width / state.size;
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.clearRect(0, 0, canvas.width, canvas.height);
    g.drawImage(state.base, 0, 0);
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const xyOf = (i) => [state.proj.x[i], state.proj.y[i]];
    if (state.a) marker(g, state.a.xy, "A", "#d00");
    if (state.b) marker(g, state.b.xy, "B", "#d00");
    if (state.upload) marker(g, state.upload.xy, "yours", "#7a00cc");
    if (state.probe) {
      const [px, py] = toScreen(state.probe[0], state.probe[1]);
      g.strokeStyle = state.following ? "#0072B2" : "#1d232a"; g.lineWidth = 1.5;
      g.beginPath(); g.moveTo(px - 9, py); g.lineTo(px + 9, py); g.moveTo(px, py - 9); g.lineTo(px, py + 9); g.stroke();
    }
    if (state.hover >= 0) {
      const [px, py] = toScreen(...xyOf(state.hover));
      ring(g, px, py, 5, "#1d232a", 2);
    }
  });
}

// ------------------------------------------------------------------------------------------ panels
function className(label) { return state.proj.classes[label] ?? String(label); }
function imageUrl(i, kind) { return `/api/images/${i}?kind=${kind}`; }

function showHover(i) {
  if (i === state.hover) return;
  state.hover = i;
  draw();
  if (i < 0) return;
  $("hover-input").src = imageUrl(i, "input");
  $("hover-recon").src = imageUrl(i, "reconstruction");
  $("hover-facts").textContent =
    `#${i} · ${className(state.proj.labels[i])} · SSIM ${state.proj.ssim[i].toFixed(3)}`;
  $("hover-panel").dataset.index = String(i);
}

async function pickPoint(i) {
  const p = await (await api(`/api/points/${i}`)).json();
  setPick({ index: i, code: p.code, xy: p.xy, label: `#${i} ${p.class}`, src: imageUrl(i, "input") });
}

function setPick(pick, slot = state.next) {
  state[slot] = pick;
  state.next = slot === "a" ? "b" : "a";
  $(`pick-${slot}`).src = pick.src;
  $(`pick-${slot}-label`).textContent = `${slot.toUpperCase()}: ${pick.label}`;
  if (slot === "a") showNeighbours(pick);
  draw();
  if (state.a && state.b) interpolate();
}

async function interpolate() {
  const { a, b } = state;
  try {
    let r;
    if (a.index !== undefined && b.index !== undefined) {
      r = await api(`/api/interpolate?a=${a.index}&b=${b.index}&steps=${STEPS}`);
    } else {   // an upload among the pair: interpolate the codes here, decode them as one batch
      const codes = [];
      for (let s = 0; s < STEPS; s++) {
        const t = s / (STEPS - 1);
        codes.push(a.code.map((v, k) => (1 - t) * v + t * b.code[k]));
      }
      r = await api("/api/decode", { method: "POST", headers: { "Content-Type": "application/json" },
                                     body: JSON.stringify({ codes, format: "png" }) });
    }
    setBlob($("strip"), await r.blob());
    $("strip-facts").textContent = `${STEPS} decoded codes on the straight line from A to B in latent space`;
  } catch (e) { showError(`interpolation: ${e.message}`); }
}

function thumbs(row, items) {
  row.replaceChildren(...items.map((it) => {
    const img = document.createElement("img");
    img.src = imageUrl(it.index, "input");
    img.alt = img.title = `#${it.index} ${it.class} (distance ${it.distance})`;
    img.addEventListener("click", () => pickPoint(it.index).catch((e) => showError(e.message)));
    return img;
  }));
}

async function showNeighbours(pick) {
  try {
    const nn = pick.index !== undefined
      ? await (await api(`/api/neighbours?index=${pick.index}&k=8`)).json()
      : pick.neighbours;
    thumbs($("nn-latent"), nn.latent);
    thumbs($("nn-pixel"), nn.pixel);
  } catch (e) { showError(`neighbours: ${e.message}`); }
}

async function upload(file) {
  showError("");
  try {
    const r = await api("/api/encode", { method: "POST", body: file,
                                         headers: { "Content-Type": file.type || "application/octet-stream" } });
    const u = await r.json();
    state.upload = u;
    $("up-input").src = u.input;
    $("up-recon").src = u.reconstruction;
    $("up-facts").textContent = `SSIM ${u.ssim.toFixed(3)} · ${u.size[0]}x${u.size[1]} px` +
      (u.inverted ? " · light background: inverted" : "") + ` · nearest: ${u.neighbours.latent[0].class}`;
    $("up-pick").disabled = false;
    draw();
  } catch (e) { showError(`upload: ${e.message}`); }
}

// ------------------------------------------------------------------------------------------ events
function canvasXY(ev) {
  const rect = $("map").getBoundingClientRect();
  return [ev.clientX - rect.left, ev.clientY - rect.top];
}

function wire() {
  const canvas = $("map");
  canvas.addEventListener("mousemove", (ev) => {
    const [px, py] = canvasXY(ev);
    showHover(pointAt(px, py));
    if (state.following) {
      state.probe = toMap(px, py);
      requestProbe(state.probe);
      draw();
    }
  });
  canvas.addEventListener("mouseleave", () => showHover(-1));
  canvas.addEventListener("click", (ev) => {
    const [px, py] = canvasXY(ev);
    const i = pointAt(px, py);
    if (state.following) {               // second click: pin the decoded point where it is
      state.following = false;
    } else if (i >= 0) {
      pickPoint(i).catch((e) => showError(e.message));
      return;
    } else {
      state.following = true;
    }
    state.probe = toMap(px, py);
    requestProbe(state.probe);
    canvas.classList.toggle("following", state.following);
    $("probe-state").textContent = state.following ? "following the mouse: click to pin" : "pinned";
    draw();
  });
  $("upload").addEventListener("change", (ev) => { if (ev.target.files[0]) upload(ev.target.files[0]); });
  $("up-pick").addEventListener("click", () => {
    const u = state.upload;
    setPick({ code: u.code, xy: u.xy, label: "your image", src: u.input, neighbours: u.neighbours }, "a");
  });
  document.addEventListener("dragover", (ev) => { ev.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    document.body.classList.remove("dragging");
    if (ev.dataTransfer.files[0]) upload(ev.dataTransfer.files[0]);
  });
  $("sample").addEventListener("click", async () => {
    try { setBlob($("samples"), await (await api(`/api/sample?n=8&seed=${Date.now() % 100000}`)).blob()); }
    catch (e) { showError(`samples: ${e.message}`); }
  });
  let resize = 0;
  window.addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(layout, 150); });
}

function legend() {
  const ul = $("legend");
  ul.replaceChildren(...state.proj.classes.map((name, c) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = COLOURS[c % COLOURS.length];
    li.append(sw, name);
    li.addEventListener("click", () => {
      if (state.hidden.has(c)) state.hidden.delete(c); else state.hidden.add(c);
      li.classList.toggle("off", state.hidden.has(c));
      drawBase(); draw();
    });
    return li;
  }));
}

// Where the browser test (and a curious user) can find things on the map: a point's screen position, and the
// empty spot (no point within twice the hover distance) nearest to a start (the middle by default).
window.explorer.screenOf = (i) => [state.sx[i], state.sy[i]];
window.explorer.emptySpot = (fromX, fromY) => {
  const x0 = fromX ?? state.size / 2, y0 = fromY ?? state.size / 2;
  for (let r = 0; r < state.size; r += 4) {
    for (let k = 0; k < 16; k++) {
      const px = x0 + r * Math.cos(k * Math.PI / 8), py = y0 + r * Math.sin(k * Math.PI / 8);
      if (px < 4 || py < 4 || px > state.size - 4 || py > state.size - 4) continue;
      let near = false;
      for (let i = 0; i < state.n && !near; i++) near = (state.sx[i] - px) ** 2 + (state.sy[i] - py) ** 2 < (2 * HIT_PX) ** 2;
      if (!near) return [px, py];
    }
  }
  return null;
};

async function main() {
  try {
    const [info, proj] = await Promise.all([(await api("/api/info")).json(), (await api("/api/projection")).json()]);
    state.info = info; state.proj = proj; state.n = proj.x.length;
    $("run-name").textContent = `· ${info.run}`;
    $("run-facts").textContent = `${info.model.model}, latent ${info.latent}, ${info.dataset}: ` +
      `${info.points.toLocaleString()} test images, mean SSIM ${info.mean_ssim.toFixed(3)}`;
    $("map-note").textContent = proj.description;
    $("sample-panel").hidden = !info.vae;
    const [c, h, w] = info.shape;  // the images the model takes: 1x28x28 for the built-in data sets
    $("up-caption").textContent = `your image (${h}x${w})`;
    $("up-input").alt = `uploaded image, ${h}x${w} ${c === 1 ? "grey" : "colour"}`;
    legend();
    wire();
    layout();
    $("map-status").textContent = "";
    window.explorer.ready = true;
    document.body.dataset.ready = "1";
  } catch (e) {
    $("map-status").textContent = "";
    showError(`could not load the run: ${e.message}`);
  }
}

main();
