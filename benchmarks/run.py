"""aelab's benchmark suite: one command, every speed figure a ratio against a peer run side by side.

    .venv/bin/python benchmarks/run.py                    # everything (about 30 min with --minutes 2,5,10)
    .venv/bin/python benchmarks/run.py --minutes 1,3      # shorter time-to-quality budgets
    .venv/bin/python benchmarks/run.py --only throughput,profile
    .venv/bin/python benchmarks/run.py --smoke --out /tmp/b   # tiny slices: checks the suite still runs

Writes ``<out>/<date>-<machine>[-<only>][-smoke].json`` and a Markdown table with the same stem. See
benchmarks/README.md for what each section measures and how.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SECTIONS = ("throughput", "throughput-default", "quality", "evaluate", "encode", "profile")
FORMAT = "aelab-bench-1"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2
        sys.stderr.write(f"error: {message}; see 'benchmarks/run.py --help'\n")
        sys.exit(2)


def fail(message: str) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(description="aelab benchmarks: speed side by side with peers (results in benchmarks/results)")
    p.add_argument("--smoke", action="store_true", help="tiny slices and one round: checks the suite runs")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run (default all): {', '.join(SECTIONS)}")
    p.add_argument("--judge-every", type=float, default=0.25,
                   help="time to quality: also judge every this many epochs (0: at epoch ends only)")
    p.add_argument("--minutes", default="2,5,10",
                   help="time-to-quality budgets in minutes; the largest caps each contender's training")
    p.add_argument("--target-ssim", type=float, default=None, help="the quality target (default 0.773)")
    p.add_argument("--rounds", type=int, default=5, help="throughput rounds counted (after the warm-up)")
    p.add_argument("--warmup", type=int, default=1, help="throughput warm-up rounds, not counted")
    p.add_argument("--round-images", type=int, default=10240, help="training images per throughput round")
    p.add_argument("--profile-steps", type=int, default=30, help="training steps in the profiled epoch")
    p.add_argument("--profile-presets", default="seed-64,default", help="presets to profile, comma-separated")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per encoding contender")
    p.add_argument("--threads", type=int, default=None, help="threads for every contender (default: all CPUs)")
    p.add_argument("--no-keras", action="store_true", help="skip the Keras/TensorFlow peer")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the results (default: %(default)s)")
    a = p.parse_args(argv)
    a.sections = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in a.sections if s not in SECTIONS]
    if bad or not a.sections:
        fail(f"unknown section {', '.join(bad) or '(none)'} in --only; choose from: {', '.join(SECTIONS)}")
    try:
        a.budgets = sorted({float(m) for m in a.minutes.split(",") if m.strip()})
    except ValueError:
        fail(f"--minutes {a.minutes!r} is not a comma-separated list of numbers; e.g. --minutes 2,5,10")
    if not a.budgets or min(a.budgets) <= 0:
        fail(f"--minutes {a.minutes!r} needs positive numbers; e.g. --minutes 2,5,10")
    for key in ("rounds", "round_images", "profile_steps", "repeats"):
        if getattr(a, key) < 1:
            fail(f"--{key.replace('_', '-')} must be >= 1")
    if a.warmup < 0 or (a.threads is not None and a.threads < 1):
        fail("--warmup must be >= 0 and --threads >= 1")
    from aelab.config import PRESETS

    a.presets = [s.strip() for s in a.profile_presets.split(",") if s.strip()]
    unknown = [s for s in a.presets if s not in PRESETS]
    if unknown or not a.presets:
        fail(f"unknown preset {', '.join(unknown) or '(none)'} in --profile-presets; choose from: "
             f"{', '.join(PRESETS)}")
    if a.target_ssim is not None and not 0 < a.target_ssim < 1:
        fail(f"--target-ssim {a.target_ssim} must lie in (0, 1), e.g. 0.773")
    if a.smoke:  # tiny everything; the figures mean nothing, the code paths are all exercised
        a.rounds, a.warmup, a.round_images, a.profile_steps, a.repeats = 1, 1, 512, 3, 1
        if a.minutes == p.get_default("minutes"):
            a.budgets = [0.1, 0.2]
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from bench_common import (
        TARGET_SSIM,
        bf16_matmul_gflops,
        load_average,
        machine_info,
        machine_slug,
        matmul_gflops,
        usable_cpus,
    )
    from bench_report import render

    from aelab.data import load_dataset
    from aelab.errors import AelabError
    from aelab.files import atomic_write_text, write_json

    threads = args.threads or usable_cpus()
    torch.set_num_threads(threads)
    target = args.target_ssim or TARGET_SSIM
    out_dir = Path(args.out)
    started = time.perf_counter()
    try:
        limits = dict(train_limit=1200, test_limit=600) if args.smoke else {}
        bundle = load_dataset("fashion-mnist", **limits)
    except AelabError as err:
        fail(str(err))
    info = machine_info()
    stem = f"{time.strftime('%Y-%m-%d')}-{machine_slug(info)}"
    if set(args.sections) != set(SECTIONS):
        stem += "-" + "-".join(args.sections)
    if args.smoke:
        stem += "-smoke"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"cannot create --out folder {out_dir} ({err.strerror}); choose a writable folder")
    say(f"machine: {info['cpu_model']}, {info['usable_cpus']} CPUs, torch {info['torch']}, {threads} threads")
    mm_seconds = 0.3 if args.smoke else 2.0
    ceiling = matmul_gflops(seconds=mm_seconds)
    say(f"fp32 matmul: {ceiling['gflops_best']} GFLOP/s")
    bf16_gflops = bf16_matmul_gflops(seconds=mm_seconds)
    say(f"bf16 matmul: {bf16_gflops} GFLOP/s")

    results: dict[str, Any] = {"format": FORMAT, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                               "smoke": args.smoke, "command": shlex.join([sys.executable, *sys.argv]),
                               "machine": info, "fp32_matmul": ceiling, "fp32_matmul_checks": [ceiling["gflops_best"]],
                               "bf16_matmul_gflops": bf16_gflops,
                               "sections": {}, "errors": []}
    sections: dict[str, Any] = results["sections"]
    with tempfile.TemporaryDirectory(prefix="aelab-bench-") as tmp:
        keras, keras_skip = start_keras(args, threads, tmp)
        if keras is not None:
            try:
                results["keras_peer"] = keras.call("hello")
            except Exception as err:  # noqa: BLE001
                keras_skip, keras = f"Keras peer failed to start: {err}", None
        if keras_skip:
            say(keras_skip)
        # Keras's mixed_bfloat16 peer: the equal-precision contender of aelab's bf16 path (where bf16 is native).
        keras_bf16 = None
        if keras is not None and bf16_gflops and {"throughput", "throughput-default"} & set(args.sections):
            keras_bf16, why = start_keras(args, threads, tmp, precision="bf16")
            try:
                results["keras_bf16_peer"] = keras_bf16.call("hello") if keras_bf16 else why
            except Exception as err:  # noqa: BLE001
                results["keras_bf16_peer"], keras_bf16 = f"Keras bf16 peer failed to start: {err}", None
        gflops = ceiling["gflops_best"]
        trained: dict[str, Any] = {}
        try:
            for name in SECTIONS:
                if name not in args.sections:
                    continue
                t0 = time.perf_counter()
                say(f"[{name}] running")
                try:
                    sections[name] = run_section(name, args, bundle, threads, keras, keras_skip, gflops, target,
                                                 tmp, trained, bf16_gflops, keras_bf16)
                except Exception as err:  # noqa: BLE001 - record it, keep the other sections
                    traceback.print_exc()
                    results["errors"].append(f"{name}: {type(err).__name__}: {err}")
                say(f"[{name}] done in {time.perf_counter() - t0:.0f} s")
                results["fp32_matmul_checks"].append(matmul_gflops(seconds=mm_seconds)["gflops_best"])
        finally:
            for peer in (keras, keras_bf16):
                if peer is not None:
                    peer.close()
    best = max(results["fp32_matmul_checks"])
    if best > ceiling["gflops_best"]:  # the ceiling is the best the machine showed in the whole run
        ceiling.update(gflops_best=best, note="best of the checks between sections")
        rescale(sections, best)
    info["load_average_end"] = load_average()
    results["seconds"] = round(time.perf_counter() - started, 1)
    json_path = write_json(out_dir / f"{stem}.json", results)
    atomic_write_text(out_dir / f"{stem}.md", render(results))
    say(f"wrote {json_path} and {json_path.with_suffix('.md')}")
    return 1 if results["errors"] else 0


def say(msg: str) -> None:
    print(msg, flush=True)


def start_keras(args: argparse.Namespace, threads: int, tmp: str, precision: str = "fp32"
                ) -> tuple[Any, str | None]:
    from bench_keras import KerasPeer, PeerError, available

    if not {"throughput", "throughput-default", "quality"} & set(args.sections):
        return None, None
    if args.no_keras:
        return None, "the Keras/TensorFlow peer is skipped (--no-keras)"
    why = available()
    if why:
        return None, why
    try:
        return KerasPeer(threads, tmp, precision), None
    except PeerError as err:
        return None, f"Keras peer failed to start: {err}"


def trained_model(bundle: Any, threads: int, tmp: str, trained: dict[str, Any]) -> tuple[Any, Any, str]:
    """(run folder, model, where it came from) for the evaluation and encoding sections: the time-to-quality
    run of aelab's default recipe when that section ran, else a quick one (one epoch on 2,048 images; speed
    does not need quality)."""
    from bench_quality import train_aelab
    from bench_throughput import slice_bundle

    from aelab.config import resolve

    if "model" not in trained:
        cfg = resolve("default", overrides=dict(epochs=1, threads=threads))
        out = train_aelab(cfg, slice_bundle(bundle, 2048), Path(tmp) / "quick-run", [float("inf")])
        trained.update(run=out["run"], model=out["model"],
                       source="preset default, 1 epoch on 2,048 images (a quick run: speed does not need quality)")
    return trained["run"], trained["model"], trained["source"]


def run_section(name: str, args: argparse.Namespace, bundle: Any, threads: int, keras: Any,
                keras_skip: str | None, gflops: float, target: float, tmp: str, trained: dict[str, Any],
                bf16_gflops: float | None = None, keras_bf16: Any = None) -> Any:
    if name in ("throughput", "throughput-default"):
        from bench_throughput import run_throughput

        return run_throughput(bundle, images=args.round_images, rounds=args.rounds, warmup=args.warmup,
                              threads=threads, keras=keras, keras_skip=keras_skip, gflops=gflops, tmp=tmp,
                              bf16_gflops=bf16_gflops, keras_bf16=keras_bf16,
                              preset="seed-64" if name == "throughput" else "default")
    if name == "quality":
        from bench_quality import run_quality

        q = run_quality(bundle, budgets_min=args.budgets, target=target, threads=threads, keras=keras,
                        keras_skip=keras_skip, tmp=tmp, smoke=args.smoke,
                        every=args.judge_every)
        trained.update(q.pop("_trained"), source=f"preset default from the time-to-quality run (test SSIM "
                                                 f"{q['aelab']['final_ssim']} after {q['aelab']['epochs']} epochs)")
        return q
    if name == "evaluate":
        from bench_eval import run_evaluation

        run, model, _ = trained_model(bundle, threads, tmp, trained)
        return run_evaluation(run, model, bundle, gflops)
    if name == "encode":
        from bench_encode import run_encoding

        _, model, source = trained_model(bundle, threads, tmp, trained)
        return run_encoding(model, bundle, threads=threads, repeats=args.repeats, gflops=gflops, tmp=tmp,
                            source=source)
    from bench_profile import profile_training

    return [profile_training(bundle, preset=p, steps=args.profile_steps, threads=threads, top=15, tmp=tmp)
            for p in args.presets]


def rescale(sections: dict[str, Any], gflops: float) -> None:
    """Recompute the ceiling shares against a higher ceiling measured at the end of the run."""
    from bench_common import ceiling_share

    for t in (sections.get("throughput"), sections.get("throughput-default")):
        for c in (t or {}).get("contenders", {}).values():
            c["fp32_ceiling_share"] = ceiling_share(c["median"], t["train_flops_per_image"], gflops)
    v = sections.get("evaluate")
    if v and v.get("network_gflops"):  # the floor of the evaluation's network passes, at the final ceiling
        v["network_seconds_at_fp32_ceiling"] = round(v["network_gflops"] / gflops, 2)
        if v.get("warm_network_gflops"):
            v["warm_network_seconds_at_fp32_ceiling"] = round(v["warm_network_gflops"] / gflops, 2)
    e = sections.get("encode")
    if e:
        for c in e["contenders"].values():
            c["fp32_ceiling_share"] = ceiling_share(c["images_per_s"], e["encode_flops_per_image"], gflops)


if __name__ == "__main__":
    sys.exit(main())
