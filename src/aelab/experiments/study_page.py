"""The study's page: README.md with its tables, the goals the study is judged by, and the published figures
set beside ours (each with its source, latent size, data and metric definition), and the sweep's figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aelab.experiments.study_records import RECORDED
from aelab.report.compare import SSIM_NOTE, markdown_table, plot_latent_sweep

PART_TITLES = {
    "compare": "1. Base vs modified vs tuned (Fashion-MNIST)",
    "sweep": "2. Latent sweep of the modified model against PCA (Fashion-MNIST)",
    "dense": "3. Dense model, 2-D latent space (MNIST)",
}


@dataclass(frozen=True)
class Published:
    """One published figure: where it comes from and exactly what it measures."""

    source: str
    data: str
    model: str
    latent: int | None   # None: the source does not state it
    metric: str          # "ssim" or "mse"
    value: float
    definition: str
    step: str | None     # the study's step to set beside it (None: nothing comparable)


SEED = "seed table"
PUMAP = "Parametric UMAP paper"
SOURCES = {
    SEED: "the table the published Fashion-MNIST autoencoder projects this study follows end with (base / modified "
          "/ tuned; latent size and SSIM window not stated; the 128 and 256 figures on two classes only)",
    PUMAP: "Sainburg, McInnes & Gentner, 'Parametric UMAP embeddings for representation and semisupervised "
           "learning', Neural Computation 2021: reconstruction MSE on the test set",
}
PUBLISHED: tuple[Published, ...] = (
    Published(SEED, "Fashion-MNIST", "base", None, "ssim", 0.925, "SSIM, window not stated", "fmnist-base-64"),
    Published(SEED, "Fashion-MNIST", "modified", None, "ssim", 0.942, "SSIM, window not stated",
              "fmnist-modified-beside-tune-64"),  # the base / modified / tuned rows of one table (part 1)
    Published(SEED, "Fashion-MNIST", "tuned", None, "ssim", 0.944, "SSIM, window not stated", "tune-64"),
    Published(SEED, "Fashion-MNIST, two classes only", "modified", 128, "ssim", 0.913, "SSIM, window not stated",
              "fmnist-modified-128"),
    Published(SEED, "Fashion-MNIST, two classes only", "modified", 256, "ssim", 0.928, "SSIM, window not stated",
              "fmnist-modified-256"),
    Published(PUMAP, "Fashion-MNIST", "autoencoder", 2, "mse", 0.0244, "MSE per pixel, [0, 1]", "fmnist-modified-2"),
    Published(PUMAP, "Fashion-MNIST", "autoencoder", 64, "mse", 0.0054, "MSE per pixel, [0, 1]",
              "fmnist-modified-64"),
    Published(PUMAP, "Fashion-MNIST", "PCA", 2, "mse", 0.0461, "MSE per pixel, [0, 1]", None),
    Published(PUMAP, "Fashion-MNIST", "PCA", 64, "mse", 0.0104, "MSE per pixel, [0, 1]", None),
    Published(PUMAP, "MNIST", "autoencoder", 2, "mse", 0.0369, "MSE per pixel, [0, 1]", "mnist-dense-2"),
    Published(PUMAP, "MNIST", "autoencoder", 64, "mse", 0.0016, "MSE per pixel, [0, 1]", None),
)

# The goals of the full study (Fashion-MNIST test set, the default recipe, <= 10 minutes of training per run on
# 2 CPU cores): latent -> (SSIM at least, MSE below, PSNR at least). The autoencoder must also beat PCA on SSIM
# and MSE at every latent size.
GOALS: dict[int, tuple[float, float | None, float | None]] = {
    2: (0.55, 0.0244, None), 16: (0.80, None, None), 64: (0.90, 0.0054, 23.0), 128: (0.94, None, None),
    256: (0.96, None, None)}


def goals_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The sweep's rows against the goals and against PCA: a miss is shown, not hidden."""
    lines = ["Goals of the full study (issue 12) and where the sweep stands:", "",
             "| latent | SSIM | goal SSIM | MSE | goal MSE | PSNR dB | PCA SSIM | PCA MSE | beats PCA | goals |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in sorted(rows, key=lambda r: r["latent"]):
        ssim_goal, mse_goal, psnr_goal = GOALS.get(r["latent"], (None, None, None))
        beats = r["ssim"] > r["pca_ssim"] and (r.get("pca_mse") is None or r["mse"] < r["pca_mse"])
        checks = [ok for ok in (ssim_goal is None or r["ssim"] >= ssim_goal,
                                mse_goal is None or r["mse"] < mse_goal,
                                psnr_goal is None or r["psnr"] >= psnr_goal)]
        verdict = "–" if ssim_goal is None and mse_goal is None else ("met" if all(checks) else "**missed**")
        lines.append(f"| {r['latent']} | {r['ssim']:.4f} | {_f(ssim_goal, '>= {:.2f}')} | {r['mse']:.5f} | "
                     f"{_f(mse_goal, '< {:.4f}')} | {r['psnr']:.2f}{_f(psnr_goal, ' (>= {:.0f})')} | "
                     f"{r['pca_ssim']:.4f} | {_f(r.get('pca_mse'), '{:.5f}')} | {'yes' if beats else '**no**'} | "
                     f"{verdict} |")
    return lines + [""]


def compare_goal_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The seeds' table goal, per latent: base < modified < tuned on test SSIM, every one above PCA on SSIM and
    MSE."""
    lines = ["Goal (issue 12): base < modified < tuned on test SSIM, each above PCA on SSIM and MSE.", "",
             "| latent | base | modified | tuned | PCA | order | all above PCA |", "|---:|---:|---:|---:|---:|---|---|"]
    for latent in sorted({r["latent"] for r in rows}):
        by = {r["series"].split(" ")[0]: r for r in rows if r["latent"] == latent}
        ssim = [by[k]["ssim"] if k in by else None for k in ("base", "modified", "tuned")]
        pca = next(iter(by.values()))
        done = None not in ssim
        order = "pending" if not done else ("met" if ssim[0] < ssim[1] < ssim[2] else "**missed**")
        above = all(r["ssim"] > r["pca_ssim"] and (r.get("pca_mse") is None or r["mse"] < r["pca_mse"])
                    for r in by.values())
        lines.append(f"| {latent} | " + " | ".join(_f(v, "{:.4f}") or "–" for v in ssim)
                     + f" | {pca['pca_ssim']:.4f} | {order} | {'yes' if above else '**no**'} |")
    return lines + [""]


def dense_goal_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The MNIST 2-D goal: above PCA on SSIM and MSE, MSE below the published autoencoder's."""
    published = next(p.value for p in PUBLISHED if p.data == "MNIST" and p.latent == 2 and p.model == "autoencoder")
    out = []
    for r in rows:
        met = r["ssim"] > r["pca_ssim"] and r["mse"] < r.get("pca_mse", float("inf")) and r["mse"] < published
        out.append(f"Goal (issue 12): above PCA on SSIM and MSE, MSE below the published {published:g}: "
                   f"SSIM {r['ssim']:.4f} (PCA {r['pca_ssim']:.4f}), MSE {r['mse']:.5f} (PCA "
                   f"{_f(r.get('pca_mse'), '{:.5f}')}): {'met' if met else '**missed**'}.")
    return out + [""]


def published_lines(tables: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each published figure beside the study's run that corresponds to it (or why none does)."""
    ours = {r["name"].split(" (trial")[0]: r for rows in tables.values() for r in rows}
    lines = ["Published figures beside ours (ours: this study's run named in the last column, the same test set; "
             "our SSIM is the 11x11 Gaussian one of DESIGN.md):", "",
             "| source | data | model | latent | metric | published | ours | our run |",
             "|---|---|---|---:|---|---:|---:|---|"]
    for p in PUBLISHED:
        row = ours.get(p.step or "")
        mine = "–" if p.step is None else ("pending" if row is None else f"{row[p.metric]:.4f}")
        if p.model == "PCA" and p.latent is not None:  # PCA of the same size is in every sweep row
            pca = next((r for r in tables.get("sweep", []) if r["latent"] == p.latent), None)
            mine = "pending" if pca is None else _f(pca.get(f"pca_{p.metric}"), "{:.4f}")
        lines.append(f"| {p.source} | {p.data} | {p.model} | {p.latent or 'not stated'} | {p.definition} | "
                     f"{p.value:g} | {mine} | {p.step or ('PCA of the sweep' if p.model == 'PCA' else '–')} |")
    return lines + ["", *[f"- {k}: {v}." for k, v in SOURCES.items()],
                    "", "The seed table states neither its latent size nor its SSIM window; it is set beside "
                    "our latent-64 runs. Its 128/256 figures are on two classes only, ours on all ten.", ""]


def sweep_figure(rows: list[dict[str, Any]]) -> bytes:
    """SSIM and MSE of the sweep and of PCA against the latent size, with the published points of a stated size."""
    points = [(p.latent, p.metric, p.value, f"{p.model}, {'seed table' if p.source == SEED else 'Parametric UMAP'}"
               f"{' (2 classes)' if 'two classes' in p.data else ''}")
              for p in PUBLISHED if p.latent is not None and p.data.startswith("Fashion-MNIST")]
    return plot_latent_sweep(rows, points, "Latent sweep of the modified model (Fashion-MNIST test set)")


def _f(value: float | None, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def _done(step: str, latest: str, result: dict[str, Any]) -> str:
    """What was done to a step by the invocation that worked on it."""
    if step in result["step_done"]:
        return result["step_done"][step]
    return "worked on earlier" if latest == "skipped" and step in result["step_seconds"] else latest


def _load_note(loads: dict[str, float], cores: int) -> str:
    values = [v for v in loads.values() if v == v]
    if not values:
        return ""
    return (f"The machine's 1-minute load average, sampled after each step, was {min(values):.1f} to "
            f"{max(values):.1f} (mean {sum(values) / len(values):.1f}) on {cores} cores: above {cores}, other "
            f"work shared the cores and the times are longer than on an idle machine.")


def _machines(result: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """(the CPU each step's record names, the machine to name on the page: the one every record names when they
    agree, else this invocation's)."""
    named = {k: r["machine"] for k, r in (result.get("records") or {}).items() if isinstance(r.get("machine"), dict)}
    cpus = {k: str(m["cpu"]) for k, m in named.items() if m.get("cpu")}
    machines = list(named.values())
    common = machines[0] if machines and all(m == machines[0] for m in machines) else result["machine"]
    return cpus, common


NOTES = "NOTES.md"  # hand-written notes beside a study's tables: how it ran, what was tried against each miss


def readme(tables: dict[str, list[dict[str, Any]]], result: dict[str, Any], budget: str, description: str,
           notes: bool = False) -> str:
    """The study's README.md; ``notes``: link the hand-written NOTES.md beside it wherever a goal is judged."""
    cpus, m = _machines(result)
    see = ([f"Where a goal is missed, what was tried against it and what each change gave: [{NOTES}]({NOTES}).",
            ""] if notes else [])
    fresh = [k for k, v in result["steps"].items() if v not in ("skipped", "pending", RECORDED)]
    mixed = len(set(cpus.values())) > 1  # steps trained on machines of other kinds: say which, per step
    lines = [
        f"# aelab study ({budget})", "",
        *([] if result.get("complete", True) else [
            f"**PARTIAL: the study is in progress, {sum(v != 'pending' for v in result['steps'].values())} of "
            f"{len(result['steps'])} steps done.** The tables below hold the finished steps only; rerun the "
            f"command below to continue.", ""]),
        "The study published Fashion-MNIST autoencoder projects ran, reproduced with one command:", "",
        "```", result["command"] or "aelab study", "```", "",
        f"## What this run did ({budget} budget)", "", description, "",
        (f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads), "
         f"Python {m['python']}." if not mixed else
         f"Machines: the steps ran on {len(set(cpus.values()))} kinds of machine, named per step below; a step "
         f"capped in minutes fits fewer epochs on a slower one. This invocation: {result['machine']['cpu']}, "
         f"{result['machine']['cores']} cores, torch {result['machine']['torch']}."), "",
        f"Time: {result['total_seconds'] / 60:.1f} minutes for "
        f"{'all ' if result.get('complete', True) else ''}{len(result['step_seconds'])} steps (summed over the "
        f"invocations that worked on them); the latest invocation took {result['wall_seconds'] / 60:.1f} minutes "
        f"and worked on {len(fresh)} of them. {_load_note(result['step_load'], m['cores'])}", "",
        "| step | done | seconds | load average after it |" + (" machine |" if mixed else ""),
        "|---|---|---:|---:|" + ("---|" if mixed else ""),
        *[f"| {k} | {_done(k, v, result)} | {_f(result['step_seconds'].get(k), '{:.0f}') or '–'} | "
          f"{_f(result['step_load'].get(k), '{:.2f}') or '–'} |" + (f" {cpus.get(k, '–')} |" if mixed else "")
          for k, v in result["steps"].items()],
        "",
        *([f"How each step ran (machine, load, reruns): [{NOTES}]({NOTES}).", ""] if notes else []),
    ]
    if budget == "quick":
        lines += ["These are *quick* numbers: small training sets and few epochs, so every autoencoder is far "
                  "below what it reaches with the full budget (`aelab study` without `--quick`). They show "
                  "the pipeline and the trends, not the models' quality.", ""]
    for part, rows in tables.items():
        if not rows:
            lines += [f"## {PART_TITLES[part]}", "", "*Pending: none of this part's runs has finished yet.*", ""]
            continue
        lines += [f"## {PART_TITLES[part]}", "", markdown_table(rows),
                  f"Files: [{part}.md]({part}.md), [{part}.csv]({part}.csv), [{part}.html]({part}.html)", ""]
        if part == "sweep":
            lines += ["![SSIM and MSE against latent size, with the published figures]"
                      "(sweep-ssim-mse-vs-latent.png)", "", *goals_lines(rows), *see, *published_lines(tables)]
        if part == "compare":
            lines += compare_goal_lines(rows) + see
        if part == "dense":
            lines += dense_goal_lines(rows)
        if part == "compare" and result["tuning"]:
            lines += ["Tuned configurations (best trial of each study):", ""]
            for name, t in result["tuning"].items():
                params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in t["best"]["params"].items())
                lines.append(f"- {name}: trial {t['best']['trial']} (validation SSIM {t['best']['value']:.4f}; "
                             f"{t['trials']['complete']} complete, {t['trials']['pruned']} pruned, "
                             f"{t['trials']['fail']} failed): {params}. All trials: [{name}-trials.md]"
                             f"({name}-trials.md), history: [{name}-history.png]({name}-history.png)")
            lines.append("")
    lines += ["## Definitions", "", SSIM_NOTE, ""]
    return "\n".join(lines)
