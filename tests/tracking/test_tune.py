"""A small tracked tuning study: in MLflow one run for the study and a nested run per trial (a pruned trial KILLED
and saying so), in TensorBoard each trial's hparams in its own folder."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from aelab.config import resolve
from aelab.experiments.tune import TuneSettings, tune
from aelab.experiments.tune.space import load_space
from tests.tracking.common import events, history, hparams_of, mlflow_client, steps

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy's, inside MLflow's store
TINY = dict(model="dense", width=0.25, latent=8, train_limit=800, epochs=2, threads=1, report=False, patience=0,
            track=["tensorboard", "mlflow"])


def test_a_study_nests_its_trials_and_a_pruned_trial_says_so(tmp_path: Path, data_root: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == 1)  # trial 1, after epoch 1
    base = resolve(overrides=TINY)
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    tune(TuneSettings(base=base, space=load_space(space, base), out=tmp_path / "study", study="s", trials=2,
                      retrain=False, progress=False))
    trials = tmp_path / "study" / "trials"
    client = mlflow_client(trials)
    runs = client.search_runs([client.get_experiment_by_name("aelab").experiment_id])
    (study,) = [r for r in runs if r.data.tags.get("aelab.study") == "s"]
    assert study.info.run_name == "s" and study.info.status == "FINISHED"
    nested = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id}
    assert set(nested) == {"trial-0000", "trial-0001"}
    done, pruned = nested["trial-0000"], nested["trial-0001"]
    assert done.info.status == "FINISHED" and 0 < done.data.metrics["tune/val_ssim"] < 1
    assert history(client, done.info.run_id, "train/loss") == [1, 2]
    assert pruned.info.status == "KILLED" and pruned.data.tags["aelab.pruned"].startswith("pruned after epoch 1")
    assert history(client, pruned.info.run_id, "train/loss") == [1]
    assert {"model", "images"} & {a.path for a in client.list_artifacts(done.info.run_id)} == {"images"}
    lrs = [hparams_of(events(trials / name))["hparams"]["lr"] for name in ("trial-0000", "trial-0001")]
    assert lrs == [float(r.data.params["lr"]) for r in (done, pruned)] and lrs[0] != lrs[1]
    assert steps(events(trials / "trial-0001"), "train/loss") == [1]
    assert "pruned/text_summary" in events(trials / "trial-0001").Tags()["tensors"]


def test_workers_racing_to_make_the_study_run_keep_one(tmp_path: Path) -> None:
    """--jobs N starts N processes that may each look for the study's run, find none, and make one at once:
    they all settle on the oldest and delete their own, so the study stays one MLflow run (a real SQLite
    store; the race is staged by hiding the others' runs from each worker's first look)."""
    from mlflow.tracking import MlflowClient  # lazy: the tracking extra, as in tests.tracking.common

    from aelab.tracking.mlflow import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trackers = [MlflowTracker(uri, study="s") for _ in range(3)]
    for t in trackers:
        t.client = MlflowClient(tracking_uri=uri)
        real, looks = t.client.search_runs, []

        def first_look_sees_nothing(*args, _real=real, _looks=looks, **kwargs):  # type: ignore[no-untyped-def]
            _looks.append(1)
            return [] if len(_looks) == 1 else _real(*args, **kwargs)

        t.client.search_runs = first_look_sees_nothing
    ids = [t.study_run("s") for t in trackers]
    exp = trackers[0].experiment()
    left = MlflowClient(tracking_uri=uri).search_runs([exp], "tags.`aelab.study` = 's'")
    assert len(set(ids)) == 1 and [r.info.run_id for r in left] == ids[:1]
