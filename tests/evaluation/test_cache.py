"""A repeated evaluation reads back what its inputs fix (the kNN sample's codes, PCA's figures) and gives the same
metrics; new weights or a damaged cache file compute them again."""

from __future__ import annotations

import shutil

import pytest
import torch

import aelab.evaluation.evaluate as evaluate_mod
from aelab.checkpoints import load_checkpoint
from aelab.evaluation import evaluate_run
from aelab.runs import Run


def _without_time(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "eval_seconds"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _close(a: dict, b: dict) -> bool:
    """Equal up to float32 rounding (matmul results may differ in the last bits between thread counts)."""
    fa, fb = _flat(_without_time(a)), _flat(_without_time(b))
    numbers = {k for k, v in fa.items() if isinstance(v, float)}
    return ({k: v for k, v in fa.items() if k not in numbers} == {k: v for k, v in fb.items() if k not in numbers}
            and {k: fa[k] for k in numbers} == pytest.approx({k: fb[k] for k in numbers}, rel=1e-5))


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(evaluate_mod, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_mod, name, counted)
    return calls


def _scoring(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the pass that computes per-image metrics (a pass asked for reconstructions only is not counted)."""
    calls: list[int] = []
    real = evaluate_mod.reconstruction_pass

    def counted(*args, **kwargs):
        if kwargs.get("metrics", True):
            calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_mod, "reconstruction_pass", counted)
    return calls


@pytest.fixture()
def run(run_path, tmp_path) -> Run:
    shutil.copytree(run_path, tmp_path / "run")
    return Run.open(tmp_path / "run")


def test_a_repeated_evaluation_reads_back_the_knn_codes_and_pcas_figures(run, monkeypatch):
    first = evaluate_run(run)
    assert (run.eval_cache).is_file()
    encodes, metrics = _counting(monkeypatch, "encode_all"), _scoring(monkeypatch)
    second = evaluate_run(run)
    assert encodes == [] and metrics == [1]  # only the autoencoder's reconstructions are scored again
    assert second["pca"] == first["pca"] and _close(second, first)


def test_new_weights_or_a_damaged_cache_compute_again(run, monkeypatch):
    first = evaluate_run(run)
    model = run.load_model()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.05)
    encodes = _counting(monkeypatch, "encode_all")
    changed = evaluate_run(run, model=model)
    assert encodes == [1] and changed["autoencoder"]["overall"] != first["autoencoder"]["overall"]
    assert changed["pca"] == first["pca"]  # PCA's figures do not depend on the weights: read back

    (run.eval_cache).write_bytes(b"\x00garbage")
    again = evaluate_run(run)
    assert encodes == [1, 1] and _close(again, first)
    load_checkpoint(run.eval_cache)  # rewritten whole
