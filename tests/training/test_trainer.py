"""Training on real data: it learns, resume is exact, early stopping and divergence are handled."""

from __future__ import annotations

import csv
import os
import signal

import pytest
import torch

from aelab.checkpoints import load_checkpoint
from aelab.config import resolve
from aelab.data import load_dataset
from aelab.errors import Interrupted, TrainingDiverged
from aelab.runs import Run
from aelab.training import Trainer
from tests.resume import model_weights, straight_and_resumed

SMALL = dict(train_limit=1500, threads=1, report=False, latent=16)


@pytest.fixture(scope="module")
def bundle(data_root):
    return load_dataset("fashion-mnist", val_fraction=0.1, seed=0, train_limit=1500)




@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_resume_equals_uninterrupted(tmp_path, bundle, schedule):
    cfg = resolve(overrides=dict(SMALL, epochs=2, schedule=schedule))  # conv-modified: dropout + batch norm
    straight, parted = straight_and_resumed(cfg, bundle, tmp_path)

    a, b = model_weights(straight.last), model_weights(parted.last)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    rows_a = list(csv.DictReader(straight.history.open()))
    rows_b = list(csv.DictReader(parted.history.open()))
    assert [float(r["val_loss"]) for r in rows_a] == pytest.approx([float(r["val_loss"]) for r in rows_b],
                                                                    rel=1e-5)


def test_training_lowers_the_loss_and_writes_history(tmp_path, bundle):
    run = Run(tmp_path / "r")
    run.path.mkdir()
    st = Trainer(resolve(overrides=dict(SMALL, epochs=3)), run, bundle=bundle, progress=False).fit()
    rows = list(csv.DictReader(run.history.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert st.stopped == "completed" and run.best.is_file() and run.last.is_file()
    assert float(rows[0]["images_per_s"]) > 0


def test_early_stopping(tmp_path, bundle):
    run = Run(tmp_path / "r")
    run.path.mkdir()
    cfg = resolve(overrides=dict(SMALL, epochs=10, patience=1, min_delta=10.0))
    st = Trainer(cfg, run, bundle=bundle, progress=False).fit()
    assert st.stopped == "early-stopping" and st.epoch == 2 and st.best_epoch == 1


def test_nan_loss_stops_with_a_clear_message(tmp_path, bundle):
    run = Run(tmp_path / "r")
    run.path.mkdir()
    cfg = resolve(overrides=dict(SMALL, model="dense", optimizer="sgd", lr=1e12, loss="mse", epochs=2))
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf).*lower --lr"):
        Trainer(cfg, run, bundle=bundle, progress=False).fit()


@pytest.mark.parametrize("n", [500, 1025])
def test_awkward_sizes_train(tmp_path, data_root, n):
    """Few planned steps (one-cycle warm-up) and a one-image last batch (batch norm) both train."""
    b = load_dataset("fashion-mnist", val_fraction=0.1, seed=0, train_limit=n)
    run = Run(tmp_path / "r")
    run.path.mkdir()
    st = Trainer(resolve(overrides=dict(SMALL, train_limit=n, epochs=1)), run, bundle=b, progress=False).fit()
    assert st.stopped == "completed" and st.history[0]["images_per_s"] > 0


def test_training_from_a_worker_thread(tmp_path, bundle):
    import threading

    run = Run(tmp_path / "r")
    run.path.mkdir()
    result = {}
    t = threading.Thread(target=lambda: result.update(
        st=Trainer(resolve(overrides=dict(SMALL, epochs=1)), run, bundle=bundle, progress=False).fit()))
    t.start()
    t.join(300)
    assert result["st"].stopped == "completed"


def test_a_time_budget_shortens_the_schedule_instead_of_cutting_it(tmp_path, bundle, monkeypatch):
    """--max-minutes that would cut the planned epochs: after epoch 1 the plan shrinks and the one-cycle schedule
    is stretched over it, so the run ends annealed (not stopped at a high learning rate); the plan is in the
    checkpoint, and a run interrupted after epoch 1 and resumed ends exactly as the uninterrupted one."""
    from aelab.training import trainer as trainer_module

    fit = trainer_module.budget_epochs
    assert (fit(12, 600, 64.0), fit(12, 600, 10.0), fit(12, 10, 64.0), fit(12, 600, 0.0)) == (9, 12, 1, 12)
    monkeypatch.setattr(trainer_module, "budget_epochs", lambda epochs, budget, seconds: 2)  # "2 of 4 fit"
    cfg = resolve(overrides=dict(SMALL, model="dense", loss="mse", epochs=4, schedule="onecycle", max_minutes=60))

    def train(name, **kw):
        run = Run(tmp_path / name)
        run.path.mkdir(exist_ok=True)
        return run, Trainer(cfg if "schedule" not in kw else resolve(overrides=dict(
            SMALL, model="dense", loss="mse", epochs=4, schedule=kw.pop("schedule"), max_minutes=60)),
            run, bundle=bundle, progress=False, **kw)

    run, trainer = train("straight")
    st = trainer.fit()
    assert st.stopped == "completed" and st.epoch == 2 and st.planned_epochs == 2
    lrs = [float(r["lr"]) for r in csv.DictReader(run.history.open())]
    ref = Run(tmp_path / "two-epochs")  # a run planned for 2 epochs from the start ends at the same learning rate
    ref.path.mkdir()
    Trainer(resolve(overrides=dict(SMALL, model="dense", loss="mse", epochs=2, schedule="onecycle")), ref,
            bundle=bundle, progress=False).fit()
    assert lrs[-1] == pytest.approx(float(list(csv.DictReader(ref.history.open()))[-1]["lr"]), rel=1e-6)
    assert lrs[-1] < 0.01 * cfg.lr  # annealed, where the 4-epoch plan cut after 2 would stop near its peak
    assert load_checkpoint(run.last)[1]["loop"]["planned_epochs"] == 2

    parted, first = train("parted", on_epoch_end=lambda s: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(Interrupted):
        first.fit()
    _, again = train("parted", resume=True)
    assert again.fit().epoch == 2
    assert [float(r["lr"]) for r in csv.DictReader(parted.history.open())] == pytest.approx(lrs, rel=1e-6)

    _, constant = train("constant", schedule="constant")  # nothing to stretch: all planned epochs run
    assert constant.fit().epoch == 4
