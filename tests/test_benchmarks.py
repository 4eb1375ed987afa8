"""The benchmark suite must not rot: ``benchmarks/run.py --smoke`` runs every section on tiny slices of the
real data and writes its results; no timing is asserted (timings belong in benchmarks/results)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"


def bench(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench")
    proc = bench("--smoke", "--threads", "1", "--out", str(out))
    files = sorted(p.name for p in out.iterdir())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert len(files) == 2 and files[0].endswith("-smoke.json") and files[1].endswith("-smoke.md"), files
    return json.loads((out / files[0]).read_text()), (out / files[1]).read_text(), proc


def test_smoke_run_writes_machine_and_ceiling(smoke: tuple) -> None:
    r, md, _ = smoke
    assert r["format"] == "aelab-bench-1" and r["smoke"] is True and r["errors"] == []
    m = r["machine"]
    for key in ("cpu_model", "usable_cpus", "torch", "torch_threads"):
        assert m[key], key
    assert m["torch_threads"] == 1  # --threads reached torch
    assert r["fp32_matmul"]["gflops_best"] > 0
    assert m["cpu_model"] in md and "GFLOP/s" in md


def test_smoke_throughput_compares_peers(smoke: tuple) -> None:
    t = smoke[0]["sections"]["throughput"]
    assert t["model"] == "conv" and t["latent"] == 64 and t["batch"] == 256
    c = t["contenders"]
    for name in ("aelab", "tutorial"):
        assert c[name]["median"] > 0 and 0 < c[name]["final_loss"] < 1, name
    assert t["ratio_vs_tutorial"] > 0 and t["train_flops_per_image"] > 1e6
    if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("keras"):
        assert c["keras"]["median"] > 0 and t["ratio_vs_keras"] > 0
        assert smoke[0]["keras_peer"]["parameters"] == c["aelab"]["parameters"]  # the same model, layer for layer
    else:
        assert c["keras"]["median"] is None and any("skipped" in n for n in t["notes"])


def test_smoke_quality_evaluation_encoding_profile(smoke: tuple) -> None:
    s = smoke[0]["sections"]
    q = s["quality"]
    assert q["target_ssim"] == 0.773 and q["aelab"]["readings"]
    assert 0 < q["aelab"]["readings"][0]["ssim"] <= 1 and set(q["aelab"]["ssim_at_minutes"]) == {"0.1", "0.2"}
    e = s["evaluate"]
    assert e["evaluate_run_seconds_cold"] > 0 and e["peer"]["seconds"] > 0
    assert max(e["peer"]["abs_difference_of_means"].values()) < 1e-3  # aelab and scikit-image agree
    enc = s["encode"]["contenders"]
    assert enc["aelab"]["images_per_s"] > 0 and enc["tutorial"]["images_per_s"] > 0
    assert "onnxruntime" in enc and enc["onnxruntime"]["max_abs_difference"] < 1e-3
    profiles = s["profile"]
    assert [p["preset"] for p in profiles] == ["seed-64", "default"]
    ops = [row["op"] for row in profiles[0]["top_ops"]]
    assert any("conv" in op for op in ops), ops


def test_bad_flags_one_line_error_nothing_written(tmp_path: Path) -> None:
    for args in (["--only", "nonsense"], ["--minutes", "two"], ["--profile-presets", "nope"], ["--rounds", "0"]):
        proc = bench(*args, "--out", str(tmp_path / "x"), timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "x").exists()
