"""The Markdown table beside each results JSON: the same figures, for people."""

from __future__ import annotations

from typing import Any


def _f(v: Any, fmt: str = "{:,.0f}") -> str:
    if v is None:
        return "–"
    if isinstance(v, (int, float)):
        return fmt.format(v)
    return str(v)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def machine_lines(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    ceiling = r.get("fp32_matmul", {})
    return [
        f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs ({m['logical_cpus']} logical), torch "
        f"{m['torch']} with {m['torch_threads']} threads; TensorFlow {m.get('tensorflow') or 'absent'}, Keras "
        f"{m.get('keras') or 'absent'}, ONNX Runtime {m.get('onnxruntime') or 'absent'}.",
        f"Load average at start {m.get('load_average_start')}, at end {m.get('load_average_end')} "
        f"(a load above the CPU count means other processes shared the machine).",
        f"Measured fp32 matmul ceiling: {_f(ceiling.get('gflops_best'), '{:.1f}')} GFLOP/s, the best of the "
        f"checks at the start and after each section ({r.get('fp32_matmul_checks')}): the best {ceiling.get('size')}"
        f"^3 GEMM of torch.mm (MKL) and a 1x1 convolution (oneDNN) with {ceiling.get('threads')} threads (at the "
        f"start: MKL {ceiling.get('mkl_mm')}, oneDNN {ceiling.get('onednn_1x1_conv')}). A kernel whose "
        f"{ceiling.get('threads')}-thread rate is more than {ceiling.get('threads')}x its one-thread rate is "
        f"excluded as mis-measured ({ceiling.get('suspect') or 'none here'}). Shares of this ceiling count "
        f"convolution and matmul FLOPs only.",
        f"Measured bf16 matmul ceiling (torch.mm, {ceiling.get('threads')} threads): "
        f"{_f(r.get('bf16_matmul_gflops'), '{:.1f}')} GFLOP/s ('–': no native bf16, aelab trains in fp32 here).",
    ]


def throughput_md(t: dict[str, Any]) -> list[str]:
    lines = [f"## Training throughput: `{t.get('model', 'conv')}` (preset {t.get('preset', 'seed-64')}), latent "
             f"{t['latent']}, batch {t['batch']}",
             "", f"{t['rounds']} rounds of {t['images_per_round']:,} images each (after {t['warmup_rounds']} "
             f"warm-up), contenders alternating; {t['threads']} threads. Training FLOPs per image (conv and "
             f"matmul, forward + backward): {t['train_flops_per_image'] / 1e6:.1f} M.", "",
             "| contender | precision | images/s (median) | min–max | share of fp32 ceiling | share of bf16 "
             "ceiling | final loss |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, c in t["contenders"].items():
        lines.append(f"| {name}: {c['what']} | {c.get('precision', 'fp32')} | {_f(c['median'])} | "
                     f"{_f(c['min'])}–{_f(c['max'])} | {_pct(c['fp32_ceiling_share'])} | "
                     f"{_pct(c.get('bf16_ceiling_share'))} | {_f(c['final_loss'], '{:.4f}')} |")
    prec = t["contenders"]["aelab"].get("precision", "fp32")
    by = t.get("ratio_vs_keras_by_precision") or {}
    lines += ["", f"Like with like: aelab / Keras at aelab's default precision ({prec}): "
              f"**{_x(t['ratio_vs_keras'])}** (paired rounds: {t['paired_ratios_vs_keras']}); at fp32: "
              f"**{_x(by.get('fp32', t.get('ratio_fp32_vs_keras')))}** (paired rounds: "
              f"{t.get('paired_ratios_fp32_vs_keras', '–')}); at bf16 (Keras mixed_bfloat16): "
              f"**{_x(by.get('bf16'))}**.",
              "", f"Other ratios: aelab / tutorial loop: **{_x(t['ratio_vs_tutorial'])}** (paired rounds: "
              f"{t['paired_ratios_vs_tutorial']}); aelab {prec} / aelab fp32: "
              f"**{_x(t.get('ratio_bf16_vs_fp32'))}** (the gain of the default precision itself, not a comparison "
              f"with a peer)."]
    return lines + [f"- {n}" for n in t["notes"]]


def quality_md(q: dict[str, Any]) -> list[str]:
    budgets = [f"{b:g}" for b in q["budgets_minutes"]]
    lines = [f"## Time to quality: test SSIM >= {q['target_ssim']} at latent {q['latent']}", "",
             f"Train {q['train_images']:,} images, judged on {q['test_images']:,} test images after every epoch and "
             f"at each budget; "
             f"time cap {q['time_cap_minutes']:g} min per contender; {q['threads']} threads.", "",
             "| contender | seconds to target | epochs to target | " + " | ".join(f"SSIM at {b} min" for b in budgets)
             + " | final SSIM | epochs | wall s | stopped |",
             "|---|---:|---:|" + "---:|" * len(budgets) + "---:|---:|---:|---|"]
    for name in ("aelab", "keras"):
        c = q.get(name)
        if not c:
            continue
        at = " | ".join(_f(c["ssim_at_minutes"].get(b), "{:.4f}") for b in budgets)
        lines.append(f"| {name}: {c['recipe']} | {_f(c['seconds_to_target'], '{:.0f}')} | "
                     f"{_f(c['epochs_to_target'], '{:g}')} | {at} | {_f(c['final_ssim'], '{:.4f}')} | "
                     f"{_f(c['epochs'], '{:g}')} | {_f(c['wall_s'], '{:.0f}')} | {c['stopped']} |")
    if "time_ratio" in q:
        lines += ["", f"aelab's time to target / Keras's: **{q['time_ratio']:.3f}**"]
    elif "time_ratio_upper_bound" in q:
        lines += ["", f"aelab's time to target / Keras's: **< {q['time_ratio_upper_bound']:.3f}** (upper bound)"]
    lines += ["", "Readings (when, epochs done, wall s, SSIM):"]
    for name in ("aelab", "keras"):
        if q.get(name):
            lines.append(f"- {name}: " + "; ".join(f"{r['at']} {r['epochs']:g} ep {r['wall_s']:.0f} s "
                                                   f"{r['ssim']:.4f}" for r in q[name]["readings"]))
    return lines + [f"- {n}" for n in q["notes"]]


def evaluation_md(e: dict[str, Any]) -> list[str]:
    parts = ", ".join(f"{k} {v:.2f}" for k, v in e["parts_seconds"].items())
    return [f"## Evaluation: all metrics on {e['test_images']:,} test images", "",
            "| what | seconds |", "|---|---:|",
            f"| `evaluate_run` cold (PCA fitted, everything computed: the end of training) | "
            f"{e['evaluate_run_seconds_cold']:.2f} |",
            f"| `evaluate_run` warm (PCA, its figures and the kNN sample's codes read back: `aelab evaluate`) | "
            f"{e['evaluate_run_seconds_warm']:.2f} |",
            f"| aelab `reconstruction_metrics` (SSIM, SSIM-7, PSNR, MSE, BCE) | "
            f"{e['parts_seconds']['reconstruction_metrics']:.2f} |",
            f"| peer: {e['peer']['what']} | {e['peer']['seconds']:.2f} |", "",
            f"Metrics speed-up vs scikit-image: **{_f(e['speedup_vs_skimage'], '{:.1f}')}x** (means agree to "
            f"{max(e['peer']['abs_difference_of_means'].values()):.1e}). Parts (s): {parts}.", "",
            f"The floor of `evaluate_run`: its network passes ({e['test_images']:,} test images through the "
            f"autoencoder, kNN-5's sample of training images through the encoder) are "
            f"{_f(e.get('network_gflops'), '{:,.1f}')} GFLOP, {_f(e.get('network_seconds_at_fp32_ceiling'), '{:.2f}')}"
            f" s at the fp32 ceiling" + (f"; warm, only the test images' pass: {e['warm_network_gflops']:,.1f} GFLOP, "
                                          f"{_f(e.get('warm_network_seconds_at_fp32_ceiling'), '{:.2f}')} s"
                                          if e.get("warm_network_gflops") else "") + ".",
            *_knn_line(e.get("knn5"))]


def _knn_line(k: dict[str, Any] | None) -> list[str]:
    if not k:
        return []
    return ["", f"kNN-5 fitted on a fixed sample of {k['train_images_sample']:,} training codes (what `evaluate_run` "
            f"does): accuracy {k['accuracy_sample']:.4f}; fitted on all {k['train_images_all']:,}: "
            f"{k['accuracy_all']:.4f}."]


def encoding_md(e: dict[str, Any]) -> list[str]:
    lines = [f"## Encoding: {e['images']:,} test images, trained `{e['model']['model']}` encoder, latent "
             f"{e['model']['latent']}", "",
             f"Encoder FLOPs per image: {e['encode_flops_per_image'] / 1e6:.1f} M; {e['threads']} threads; "
             f"model: {e['source']}.", "",
             "| contender | images/s (best) | median | share of fp32 ceiling |", "|---|---:|---:|---:|"]
    for name, c in e["contenders"].items():
        lines.append(f"| {name}: {c['what']} | {_f(c['images_per_s'])} | {_f(c['median_images_per_s'])} | "
                     f"{_pct(c['fp32_ceiling_share'])} |")
    lines += ["", f"aelab / tutorial loop: **{_x(e['ratio_vs_tutorial'])}**"
              + (f"; ONNX Runtime / aelab: **{_x(e['onnxruntime_vs_aelab'])}** (max abs difference "
                 f"{e['contenders']['onnxruntime']['max_abs_difference']:.1e})" if "onnxruntime_vs_aelab" in e
                 else "")]
    return lines + [f"- {n}" for n in e["notes"]]


def profile_md(p: dict[str, Any]) -> list[str]:
    lines = [f"## Profile: preset `{p['preset']}` ({p['model']}, batch {p['batch']}), one epoch of "
             f"{p['steps']} steps", "",
             f"{p['wall_s']:.1f} s wall while profiled, {_f(p['images_per_s_while_profiled'])} images/s; "
             f"self CPU total {p['self_cpu_total_ms']:,.0f} ms.", "",
             "| operator | self CPU ms | share | calls |", "|---|---:|---:|---:|"]
    for r in p["top_ops"]:
        lines.append(f"| `{r['op']}` | {r['self_cpu_ms']:,.1f} | {_pct(r['share'])} | {r['calls']} |")
    return lines


def render(r: dict[str, Any]) -> str:
    lines = [f"# aelab benchmarks, {r['date']}{' (smoke run: tiny slices, figures meaningless)' if r['smoke'] else ''}",
             "", *machine_lines(r), "", f"Command: `{r['command']}`; {r['seconds']:.0f} s in all.", ""]
    s = r["sections"]
    for key, fn in (("throughput", throughput_md), ("throughput-default", throughput_md),
                    ("quality", quality_md), ("evaluate", evaluation_md),
                    ("encode", encoding_md)):
        if s.get(key):
            lines += [*fn(s[key]), ""]
    for p in s.get("profile") or []:
        lines += [*profile_md(p), ""]
    for err in r.get("errors", []):
        lines.append(f"- ERROR: {err}")
    return "\n".join(lines).rstrip() + "\n"
