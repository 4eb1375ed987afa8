"""aelab study: the plan of the published study, and a real (tiny) study run that a rerun skips."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from aelab.config import merge
from aelab.experiments.study import (
    FULL,
    PAIRED_PREFIX,
    QUICK,
    SWEEP_LATENTS,
    Budget,
    Step,
    plan,
    run_order,
    run_study,
)

# a study small enough for a test: 800 images, one epoch, two one-epoch trials
TINY = Budget("test", train_limit=800, epochs=1, dense_epochs=1, tune_trials=2, tune_epochs=1, tune_train_limit=800,
              sampler="random", report=False)


def test_the_plan_is_the_published_study() -> None:
    parts = plan(QUICK)
    compare = [(s.cfg.model, s.cfg.latent, s.tuned) for s in parts["compare"]]
    assert compare == [("conv", 64, False), ("conv-modified", 64, False), ("conv-modified", 64, True),
                       ("conv", 128, False), ("conv-modified", 128, False), ("conv-modified", 128, True)]
    assert [(s.cfg.model, s.cfg.latent) for s in parts["sweep"]] == [("conv-modified", n) for n in SWEEP_LATENTS]
    assert SWEEP_LATENTS == (2, 8, 16, 32, 64, 128, 256)
    (dense,) = parts["dense"]
    assert (dense.cfg.dataset, dense.cfg.model, dense.cfg.latent) == ("mnist", "dense", 2)
    assert {s.cfg.dataset for s in parts["compare"] + parts["sweep"]} == {"fashion-mnist"}
    # part 1 trains its own run of the recipe, beside its tuning step (both on a clock, so they must share the
    # machine and its hour): the sweep's configuration under another name, run right before the tuning step
    sweep_cfg = {s.cfg.latent: s.cfg for s in parts["sweep"]}
    paired = [s for s in parts["compare"] if s.name.startswith(PAIRED_PREFIX)]
    assert [s.name for s in paired] == [f"{PAIRED_PREFIX}64", f"{PAIRED_PREFIX}128"]
    assert all(s.cfg == sweep_cfg[s.cfg.latent] for s in paired)
    assert not {s.name for s in parts["compare"]} & {s.name for s in parts["sweep"]}
    # the quick budget is what the README says it is
    assert all(s.cfg.train_limit == 6000 and s.cfg.epochs == 3 for s in parts["compare"] + parts["sweep"])
    assert dense.cfg.epochs == 5 and QUICK.tune_trials == 5 and QUICK.tune_epochs == 2
    # the full budget keeps the recipes: all the data, their own epochs
    full = plan(FULL)
    base64 = full["compare"][0].cfg
    assert base64.train_limit is None and base64.epochs == 10 and base64.loss == "bce"
    sweep2 = full["sweep"][0].cfg  # the 10-minute recipe: as many epochs as fit, at most 30 (session 9)
    assert (sweep2.epochs, sweep2.max_minutes, sweep2.batch_size, sweep2.lr, sweep2.dropout) == \
        (30, 10.0, 64, 5e-3, 0.05)
    assert full["dense"][0].cfg.epochs == 60
    # the tuned runs are budgeted in minutes with a cap that leaves them as many epochs as fit
    tuned = {s.name: s.cfg for s in full["compare"] if s.tuned}
    assert tuned["tune-64"].epochs == 30 and tuned["tune-64"].max_minutes == 10.0
    sweep = {s.name: s.cfg for s in full["sweep"]}
    assert tuned["tune-64"].model_kwargs() == sweep["fmnist-modified-64"].model_kwargs()
    assert "at most 30 epochs" in FULL.describe() and "(at most 30)" in FULL.describe()
    assert all(s.cfg.epochs == 3 for s in parts["compare"])  # quick: every run of the comparison alike
    # the run order: the time-capped sweep first, the dense run, then the comparison (each recipe run before its tuning)
    assert [s.name for s in run_order(full)] == [f"fmnist-modified-{n}" for n in SWEEP_LATENTS] + [
        "mnist-dense-2", "fmnist-base-64", f"{PAIRED_PREFIX}64", "tune-64", "fmnist-base-128", f"{PAIRED_PREFIX}128",
        "tune-128"]
    # the trials search the study's focused space (tune/study_space.yaml), not the default one
    assert FULL.tune_space == "study" and "weight_decay" in FULL.describe() and "sgd" not in FULL.describe()


def test_a_tiny_study_writes_its_tables_and_a_rerun_skips_finished_runs(tmp_path: Path) -> None:
    budget = TINY
    full = plan(budget, threads=1, compare_latents=(8,), sweep_latents=(8,))

    def small(step: Step) -> Step:  # the same steps with a narrow dense model, to keep the test fast
        return dataclasses.replace(step, cfg=merge(step.cfg, {"model": "dense", "width": 0.25}, "test"))

    modified8 = small(full["sweep"][0])
    tuned8 = small(next(s for s in full["compare"] if s.tuned))
    parts = {"compare": [modified8, tuned8], "sweep": [modified8], "dense": [modified8]}
    out = tmp_path / "study"

    def stop_before_tuning(line: str) -> None:  # an interrupted study leaves partial tables, labelled as such
        if line.endswith("tune-8: tuning ..."):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(out, budget=budget, parts=parts, progress=False, command="aelab study --test",
                  log=stop_before_tuning)
    partial = json.loads((out / "study.json").read_text())
    assert partial["complete"] is False and partial["steps"] == {"fmnist-modified-8": "trained", "tune-8": "pending"}
    assert "PARTIAL: the study is in progress, 1 of 2 steps done" in (out / "README.md").read_text()
    assert "still to run: tune-8" in (out / "compare.md").read_text()
    assert "PARTIAL" not in (out / "sweep.md").read_text()  # the sweep itself is complete
    # --no-train writes the same partial tables without training anything
    rendered = run_study(out, budget=budget, parts=parts, progress=False, log=lambda s: None, train=False)
    assert rendered["steps"] == {"fmnist-modified-8": "skipped", "tune-8": "pending"}
    assert not (out / "runs" / "tune-8" / "summary.json").exists()
    assert (out / "sweep-ssim-mse-vs-latent.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "README.md").read_text()
    assert "| 8 | " in page and "Published figures beside ours" in page and "| 0.0244 | pending |" in page

    first = run_study(out, budget=budget, parts=parts, progress=False, command="aelab study --test",
                      log=lambda s: None)
    assert first["steps"] == {"fmnist-modified-8": "skipped", "tune-8": "tuned"} and first["complete"] is True
    assert "PARTIAL" not in (out / "README.md").read_text() + (out / "compare.md").read_text()
    assert first["tuning"]["tune-8"]["trials"]["complete"] == 2
    for part in ("compare", "sweep", "dense"):
        for ext in ("md", "csv", "html"):
            assert (out / f"{part}.{ext}").is_file()
        assert (out / f"{part}-ssim-vs-latent.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 0 | complete |" in (out / "tune-8-trials.md").read_text()
    assert (out / "tune-8-history.png").read_bytes()[:4] == b"\x89PNG"
    readme = (out / "README.md").read_text()
    assert "aelab study --test" in readme and "800 training images" in readme
    assert "| fmnist-modified-8 |" in readme and "| tune-8 (trial " in readme
    assert "NOTES.md" not in readme  # no hand-written notes beside it yet
    compare_csv = (out / "compare.csv").read_text().splitlines()
    assert len(compare_csv) == 3 and "tuned (conv-modified)" in compare_csv[2]

    metrics = out / "runs" / "fmnist-modified-8" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    (out / "NOTES.md").write_text("# what was tried\n")  # written by hand: the README links it, never rewrites it
    again = run_study(out, budget=budget, parts=parts, progress=False, log=lambda s: None)
    assert (out / "NOTES.md").read_text() == "# what was tried\n"
    linked = "what was tried against it and what each change gave: [NOTES.md](NOTES.md)"
    assert linked in (out / "README.md").read_text()
    assert again["steps"] == {"fmnist-modified-8": "skipped", "tune-8": "skipped"}
    assert again["step_seconds"] == first["step_seconds"]  # the times of the invocation that did the work
    assert metrics.stat().st_mtime_ns == stamp  # not retrained, not even re-evaluated
    assert again["tuning"]["tune-8"]["trials"]["complete"] == 2  # the tuning study holds its target already


def test_the_goals_table_shows_a_miss_and_a_loss_to_pca() -> None:
    from aelab.experiments.study_page import goals_lines

    rows = [dict(latent=64, ssim=0.89, mse=0.0050, psnr=24.5, pca_ssim=0.70, pca_mse=0.0098),
            dict(latent=2, ssim=0.60, mse=0.0230, psnr=16.5, pca_ssim=0.26, pca_mse=0.0456),
            dict(latent=256, ssim=0.95, mse=0.0030, psnr=26.0, pca_ssim=0.90, pca_mse=0.0020)]
    lines = {line.split(" |")[0]: line for line in goals_lines(rows) if line.startswith("| ")}
    assert lines["| 2"].endswith("| yes | met |")
    assert lines["| 64"].endswith("| yes | **missed** |")  # SSIM 0.89 < 0.90
    assert lines["| 256"].endswith("| **no** | **missed** |")  # PCA's MSE is lower; SSIM 0.95 < 0.96


def test_the_page_states_the_comparison_and_mnist_goals() -> None:
    """The seeds' table goal (base < modified < tuned, each above PCA) and the MNIST 2-D goal get a verdict."""
    from aelab.experiments.study_page import compare_goal_lines, dense_goal_lines

    def row(series: str, latent: int, ssim: float, mse: float, pca_ssim: float, pca_mse: float) -> dict:
        return dict(series=series, latent=latent, ssim=ssim, mse=mse, pca_ssim=pca_ssim, pca_mse=pca_mse)

    rows = [row("base (conv)", 64, 0.77, 0.007, 0.70, 0.010),
            row("modified (conv-modified)", 64, 0.89, 0.005, 0.70, 0.010),
            row("tuned (conv-modified)", 64, 0.87, 0.006, 0.70, 0.010),
            row("base (conv)", 128, 0.79, 0.0064, 0.81, 0.0059),
            row("modified (conv-modified)", 128, 0.92, 0.0035, 0.81, 0.0059)]
    text = "\n".join(compare_goal_lines(rows))
    assert "| 64 | 0.7700 | 0.8900 | 0.8700 | 0.7000 | **missed** | yes |" in text
    assert "| 128 | 0.7900 | 0.9200 | – | 0.8100 | pending | **no** |" in text
    ok = compare_goal_lines([row("base (conv)", 64, 0.77, 0.007, 0.70, 0.01),
                             row("modified (x)", 64, 0.8, 0.006, 0.7, 0.01),
                             row("tuned (x)", 64, 0.81, 0.005, 0.7, 0.01)])
    assert "| met | yes |" in "\n".join(ok)
    assert dense_goal_lines([row("dense (MNIST)", 2, 0.557, 0.0359, 0.255, 0.0555)])[0].endswith(": met.")
    assert "**missed**" in dense_goal_lines([row("dense (MNIST)", 2, 0.513, 0.0381, 0.255, 0.0555)])[0]


def test_a_new_tuning_budget_keeps_the_records_of_the_steps_it_does_not_change(tmp_path: Path) -> None:
    from aelab.experiments.study import _previous_steps

    record = tmp_path / "study.json"
    old = dataclasses.replace(FULL, tune_trials=30, tune_epochs=3, tune_minutes=None, tuned_epochs=None)
    stored = dataclasses.asdict(old)
    del stored["tune_minutes"], stored["tuned_epochs"]  # a record written before the fields existed
    record.write_text(json.dumps({"budget": stored, "step_seconds": {"fmnist-modified-64": 600.0, "tune-64": 3600.0},
                                  "step_load": {"fmnist-modified-64": 2.1, "tune-64": 2.5},
                                  "step_done": {"fmnist-modified-64": "trained", "tune-64": "tuned"},
                                  "records": {"fmnist-modified-64": {"row": {}}, "tune-64": {"row": {}}}}))
    seconds, loads, done, records = _previous_steps(record, FULL, {"tune-64"})
    assert seconds == {"fmnist-modified-64": 600.0} and loads == {"fmnist-modified-64": 2.1}
    assert done == {"fmnist-modified-64": "trained"}  # the tuning step is redone; the sweep step is not
    assert list(records) == ["fmnist-modified-64"]  # and its record no longer counts
    assert _previous_steps(record, old, {"tune-64"})[0] == {"fmnist-modified-64": 600.0, "tune-64": 3600.0}
    assert _previous_steps(record, dataclasses.replace(old, train_limit=6000), {"tune-64"}) == ({}, {}, {}, {})
    assert "1.85 minutes of training each" in FULL.describe() and "20 trials per latent" in FULL.describe()


def test_a_checkout_without_the_run_folders_reads_finished_steps_back_from_study_json(tmp_path: Path) -> None:
    """study.json keeps each finished step's configuration and row: with the run folders gone (a fresh checkout
    of the committed tables) a rerun trains nothing and writes the same tables; a step whose recipe changed, and
    only that step, trains again."""
    import shutil

    budget = TINY
    full = plan(budget, threads=1, compare_latents=(8,), sweep_latents=(8,))

    def small(step: Step, width: float = 0.25) -> Step:
        return dataclasses.replace(step, cfg=merge(step.cfg, {"model": "dense", "width": width}, "test"))

    modified8, tuned8 = small(full["sweep"][0]), small(next(s for s in full["compare"] if s.tuned))
    parts = {"compare": [modified8, tuned8], "sweep": [modified8]}
    out = tmp_path / "study"
    first = run_study(out, budget=budget, parts=parts, progress=False, log=lambda s: None)
    assert first["steps"] == {"fmnist-modified-8": "trained", "tune-8": "tuned"}
    record = first["records"]["tune-8"]
    tuned_csv = list(csv.DictReader((out / "compare.csv").read_text().splitlines()))[1]
    assert float(tuned_csv["ssim"]) == pytest.approx(record["row"]["ssim"])  # the row the table shows
    assert tuned_csv["precision"] == record["row"]["precision"] in ("fp32", "bf16")  # the arithmetic it trained in
    assert record["machine"]["cores"] >= 1 and record["tuning"]["trials"]["complete"] == 2
    tables = {f: (out / f).read_text() for f in ("sweep.csv", "compare.csv", "compare.md", "tune-8-trials.md")}

    shutil.rmtree(out / "runs")  # what a fresh checkout of the committed study has: its tables and study.json
    lines: list[str] = []
    again = run_study(out, budget=budget, parts=parts, progress=False, log=lines.append)
    assert again["steps"] == {"fmnist-modified-8": "recorded", "tune-8": "recorded"} and again["complete"]
    assert not (out / "runs").exists()  # nothing trained, nothing tuned
    assert any("fmnist-modified-8: read back from" in line for line in lines)
    assert {f: (out / f).read_text() for f in tables} == tables
    assert again["step_done"] == first["step_done"] and again["records"] == first["records"]
    page = (out / "README.md").read_text()
    assert "| fmnist-modified-8 | trained |" in page and "| tune-8 (trial " in page
    assert "PARTIAL" not in page and "Machines:" not in page  # one machine ran every step

    # another recipe for the sweep step: that step trains again, the tuning step is still read back
    changed = small(full["sweep"][0], width=0.5)
    third = run_study(out, budget=budget, parts={"compare": [changed, tuned8], "sweep": [changed]},
                      progress=False, log=lambda s: None)
    assert third["steps"] == {"fmnist-modified-8": "trained", "tune-8": "recorded"}
    assert third["records"]["fmnist-modified-8"]["config"]["width"] == 0.5
    assert third["records"]["fmnist-modified-8"]["row"]["parameters"] != first["records"]["fmnist-modified-8"][
        "row"]["parameters"]
    assert not (out / "runs" / "tune-8").exists()


def test_a_record_matches_only_its_own_configuration() -> None:
    from aelab.experiments.study_records import make_record, matching

    step = plan(FULL)["sweep"][4]  # fmnist-modified-64
    row = {"name": step.name, "latent": 64, "ssim": 0.8867, "psnr": 24.34, "mse": 0.0052, "pca_ssim": 0.7043,
           "pca_mse": 0.0098}
    record = make_record(step.cfg, step.name, row, {"cpu": "x", "cores": 2})
    assert matching(record, step.cfg, step.name) is record
    assert matching(record, merge(step.cfg, {"threads": 1, "report": False}, "test"), step.name) is record
    assert matching(record, merge(step.cfg, {"lr": 7e-3}, "test"), step.name) is None  # another recipe
    assert matching(record, step.cfg, "fmnist-modified-65") is None  # another step's folder name
    newer = json.loads(json.dumps(record))
    newer["config"]["an_option_of_a_later_version"] = 1
    assert matching(newer, step.cfg, step.name) is None
    assert matching({"config": record["config"]}, step.cfg, step.name) is None  # no row: not finished
    assert matching(None, step.cfg, step.name) is None
    assert matching({**record, "row": {**row, "ssim": None}}, step.cfg, step.name) is None  # a damaged row
    assert matching(record, step.cfg, step.name, tuned=True) is None  # a tuning step's record names its best trial
    best = {"best": {"trial": 3, "params": {}, "value": 0.85}, "trials": {"complete": 2}}
    tuned = make_record(step.cfg, step.name, row, None, best)
    assert matching(tuned, step.cfg, step.name, tuned=True) is tuned
