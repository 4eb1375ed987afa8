"""The MLflow backend, through MLflow's client API (``MlflowClient``): no server to run by default.

Where: ``--tracking-uri`` (a team's server, ``http://...``, or any database MLflow takes), else a SQLite store
beside the runs, ``sqlite:///<runs folder>/mlflow.db`` (MLflow's own default since 3.7; its file store is
deprecated), with the artifacts in ``<runs folder>/mlartifacts``. ``mlflow ui --backend-store-uri`` that URI shows
them. Every run goes in the experiment ``aelab`` (or ``MLFLOW_EXPERIMENT_NAME``).

A resumed run continues its MLflow run: its id is kept in the run folder (``Run.tracking``). A stored run still
RUNNING when its training resumes was killed (its process could not close it): the run is continued, tagged
``aelab.interrupted`` with where it was, and closed with the state this session ends in. Metrics are logged with
step = epoch; a resume reads the last epoch the run holds back from its history, so no epoch is logged twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from aelab.files import write_json
from aelab.runs import Run
from aelab.tracking.tracker import Tracker

EXPERIMENT = "aelab"
EPOCH_METRIC = "train/loss"  # every logged epoch has it: a resumed run reads its history to find where the log ends
BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's limits per log_batch call
# An unreachable server: MLflow's defaults retry for minutes (7 retries, backoff factor 2); a training waits ~3 s
# before it goes on without it. Variables the user set win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
ARTIFACTS_DIR = "mlartifacts"


def default_uri(runs: Path) -> str:
    """The SQLite store beside the runs of folder ``runs``."""
    return f"sqlite:///{runs.absolute() / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite database; a server or another database decides
    for itself (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS_DIR).absolute().as_uri()


def param_value(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else "none" if value is None else str(value)
    return text[:6000]  # MLflow's longest parameter value


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, uri: str | None, study: str | None = None):
        self.uri = uri  # None: the SQLite store beside the run's folder (``default_uri``), known at the start
        self.study = study  # a tuning study's name: this run is nested in the study's run
        self.parent: str | None = None
        self.run_id: str | None = None
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        for name in ("mlflow", "alembic"):  # "Creating initial MLflow database tables...": not the user's business
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client: Any = None  # an MlflowClient, made at the start

    def experiment(self) -> str:
        """The id of the experiment runs go in, made on first use."""
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=artifact_root(str(self.uri)))
            except MlflowException:  # another process made it at the same moment
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        return found.experiment_id

    def study_run(self, study: str) -> str:
        """The run of tuning study ``study`` (found by its name, made on first use), RUNNING while a trial runs:
        every trial's run is nested in it."""
        experiment = self.experiment()
        found = self.client.search_runs([experiment], filter_string=f"tags.`aelab.study` = '{study}'", max_results=1)
        if found:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return str(found[0].info.run_id)
        made = self.client.create_run(experiment, run_name=study, tags={"aelab.study": study})
        # Workers of one study (--jobs N) can get here at the same moment and each make a run: all keep the
        # oldest one made, and the others delete their own, so the study stays one run.
        runs = self.client.search_runs([experiment], filter_string=f"tags.`aelab.study` = '{study}'",
                                       max_results=1000)
        keep = min(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id)).info.run_id if runs else \
            made.info.run_id
        if keep != made.info.run_id:
            self.client.delete_run(made.info.run_id)
        return str(keep)

    def _close_orphans(self, folder: str) -> None:
        """Runs of this folder left RUNNING by a training killed in its first epoch and then started again (its
        record went with it): KILLED."""
        try:
            stale = self.client.search_runs([self.experiment()], filter_string=f"tags.`aelab.run_folder` = "
                                            f"'{folder}' and attributes.status = 'RUNNING'", max_results=100)
        except MlflowException:  # a folder name the filter cannot quote: nothing to close
            return
        for found in stale:
            self.client.set_tag(found.info.run_id, "aelab.interrupted", "its training was killed in its first epoch "
                                                                        "and started again in a new run")
            self.client.set_terminated(found.info.run_id, "KILLED")

    def _stored(self, run: Run, epoch: int) -> tuple[str | None, int]:
        """(the MLflow run this run folder logged to in this store, the last epoch it holds), or (None, 0)."""
        try:
            record = json.loads(run.tracking.read_text()).get("mlflow") if run.tracking.is_file() else None
        except (OSError, ValueError, AttributeError):
            record = None
        if not isinstance(record, dict) or record.get("uri") != self.uri or not record.get("run_id"):
            return None, 0
        try:
            info = self.client.get_run(str(record["run_id"])).info
        except MlflowException:  # deleted from the store since: a new MLflow run
            return None, 0
        if info.lifecycle_stage == "deleted":
            return None, 0
        if info.status == "RUNNING":  # its process ended without closing it: killed or crashed
            self.client.set_tag(info.run_id, "aelab.interrupted",
                                f"the training process ended without closing this run (killed or crashed) after "
                                f"epoch {epoch}; found on {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self.client.update_run(info.run_id, status="RUNNING")
        history = self.client.get_metric_history(info.run_id, EPOCH_METRIC)
        return info.run_id, max((int(m.step) for m in history), default=0)

    def start(self, run: Run, config: dict[str, Any], facts: dict[str, Any], epoch: int = 0) -> int:
        self.uri = self.uri or default_uri(run.path.parent)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_id, held = self._stored(run, epoch)
        if self.study is not None:
            self.parent = self.study_run(self.study)
        if self.run_id is None:
            self._close_orphans(str(run.path.absolute()))
            tags = {"aelab.run_folder": str(run.path.absolute())}
            if self.parent:
                tags["mlflow.parentRunId"] = self.parent
            self.run_id = self.client.create_run(self.experiment(), run_name=run.path.name, tags=tags).info.run_id
            params = [Param(k, param_value(v)) for k, v in config.items() if k != "tracking_uri"]
            for part in _batches(params, BATCH["params"]):
                self.client.log_batch(self.run_id, params=part)
            write_json(run.tracking, {"mlflow": {"uri": self.uri, "run_id": self.run_id}})
        tags = [RunTag(f"aelab.{k}", param_value(v)[:5000]) for k, v in _flat(facts).items()]
        for part in _batches(tags, BATCH["tags"]):  # each session's facts: the latest ones stay
            self.client.log_batch(self.run_id, tags=part)
        return held

    def log_epoch(self, step: int, scalars: dict[str, float], images: dict[str, np.ndarray]) -> None:
        assert self.run_id is not None
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in scalars.items()])
        for key, image in images.items():
            self.client.log_image(self.run_id, image, key=key, step=step)

    def log_final(self, step: int, metrics: dict[str, float], artifacts: list[Path], summary: str) -> None:
        assert self.run_id is not None
        now = int(time.time() * 1000)
        for part in _batches([Metric(k, float(v), now, step) for k, v in metrics.items()], BATCH["metrics"]):
            self.client.log_batch(self.run_id, metrics=part)
        for path in artifacts:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), path.name)
            else:
                self.client.log_artifact(self.run_id, str(path), "model" if path.suffix == ".safetensors" else None)
        if summary:
            self.client.log_text(self.run_id, summary + "\n", "results.txt")

    def note(self, key: str, text: str) -> None:
        self.client.set_tag(self.run_id, f"aelab.{key}", text[:5000])

    def end(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)
        if self.parent is not None:  # the study's run: FINISHED once no trial of it runs any more
            # This trial ended above, before the look: of two trials ending together, the later look sees both
            # ended, so one of them finishes the study's run; a trial still running keeps it RUNNING.
            running = self.client.search_runs([self.experiment()], filter_string=f"tags.`mlflow.parentRunId` = "
                                              f"'{self.parent}' and attributes.status = 'RUNNING'", max_results=1)
            if not running:
                self.client.set_terminated(self.parent, "FINISHED")

    def where(self) -> str:
        if str(self.uri).startswith("sqlite:///"):
            return f"mlflow ui --backend-store-uri {self.uri}"
        return f"MLflow at {self.uri}, run {self.run_id}"


def _flat(facts: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'machine': {'cpu': ...}} -> {'machine.cpu': ...}: one tag per fact."""
    out: dict[str, Any] = {}
    for key, value in facts.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
