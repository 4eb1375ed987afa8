"""The one-class protocol over classes, behind ``aelab anomaly --normal CLASS|all``.

For each normal class: a run trained on that class only (``ensure_run``: a finished run is reused, an
interrupted one resumed), its detector fitted and judged on the whole test set beside the baselines
(``evaluation.one_class``), its figures written into ``RUN/figures/``. ``--normal all`` does the ten classes
and writes one table with the mean: ``OUT/anomaly.md``, ``OUT/anomaly.csv``, ``OUT/anomaly.json`` and
``OUT/figures/auroc_by_class.png``.

Tracked (``--track``, as ``aelab train``): the study is one run of its own (the folder OUT) with each one-class
training nested in it (MLflow: tag ``mlflow.parentRunId``; TensorBoard: OUT's event files beside its runs'), and
the study's run gets the table's figures as metrics (``anomaly/<class>/auroc``..., ``anomaly/mean/...``) and
anomaly.json, anomaly.csv and anomaly.md as files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aelab.config import RunConfig, resolve
from aelab.data import dataset_info, load_dataset
from aelab.data.datasets import resolve_classes
from aelab.data.own import is_own
from aelab.errors import ConfigError
from aelab.evaluation.anomaly import DEFAULT_QUANTILE
from aelab.evaluation.one_class import evaluate_one_class
from aelab.experiments.jobs import ensure_run
from aelab.files import atomic_write_text, write_json
from aelab.report.anomaly import anomaly_figures, auroc_by_class, write_figures
from aelab.runs import Run
from aelab.tracking import open_trackers
from aelab.tracking.trackers import metric_name

# The one-class recipe (docs/anomaly.md, measured): a small dense autoencoder with a narrow code, trained on MSE.
ONE_CLASS_RECIPE: dict[str, Any] = dict(model="dense", latent=8, loss="mse", epochs=10, batch_size=64, report=False)
GOAL_MEAN_AUROC = 0.935  # Golan & El-Yaniv (NeurIPS 2018), Fashion-MNIST mean AUROC (docs/anomaly.md)
SUMMARY_FORMAT = "aelab-anomaly-summary-1"


def class_slug(name: str) -> str:
    """A folder name for a class: 'T-shirt/top' -> 't-shirt-top'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "class"


def one_class_config(dataset: str, config_file: str | None = None, overrides: dict[str, Any] | None = None
                     ) -> RunConfig:
    """The base configuration of the one-class runs: the recipe < a config file < options (no --classes)."""
    overrides = dict(overrides or {})
    if overrides.get("classes"):
        raise ConfigError("--classes does not apply to 'aelab anomaly'; the normal class is --normal")
    return resolve(config_file=config_file, overrides={**ONE_CLASS_RECIPE, **overrides, "dataset": dataset})


def normal_classes(normal: str, dataset: str, cfg: RunConfig | None = None) -> list[str]:
    """'all' -> every class name of ``dataset``; a name or index -> [that class's name]. Your own images'
    classes are read from the data (``cfg`` gives the options that load them)."""
    names = (load_dataset(dataset, **(cfg or RunConfig(dataset=dataset)).data_kwargs()).classes
             if is_own(dataset) else dataset_info(dataset).classes)
    if normal.strip().lower() == "all":
        return list(names)
    keep = resolve_classes([normal], names)
    assert keep is not None
    return [names[keep[0]]]


@dataclass
class AnomalyResult:
    out: Path
    results: list[dict[str, Any]]
    summary: dict[str, Any]


def anomaly_job(normal: str, *, dataset: str = "fashion-mnist", out: str | Path | None = None,
                config_file: str | None = None, overrides: dict[str, Any] | None = None,
                quantile: float = DEFAULT_QUANTILE, score: str = "auto", progress: bool = True,
                figures: bool = True) -> AnomalyResult:
    """Train (or reuse) one run per normal class under ``out`` and judge each; write the summary table."""
    if not 0.0 < quantile < 1.0:
        raise ConfigError(f"--quantile {quantile}: give a quantile in (0, 1), e.g. 0.95")
    t0 = time.perf_counter()
    base = one_class_config(dataset, config_file, overrides)
    names = normal_classes(normal, dataset, base)
    out = Path(out) if out else Path("runs") / f"anomaly-{dataset}-{'all' if len(names) > 1 else class_slug(names[0])}"
    if base.track and "mlflow" in base.track and not base.tracking_uri:
        from aelab.tracking.mlflow import default_uri  # lazy: an optional extra, loaded when asked for

        base = dataclasses.replace(base, tracking_uri=default_uri(out.parent))  # the study and its runs: one store
    trackers = open_trackers(base)  # the study's own run; --track without its package: one line, before the data
    study = str(out.absolute()) if trackers else None
    full = load_dataset(dataset, **dict(base.data_kwargs(), classes=None, train_limit=None))
    if trackers:
        out.mkdir(parents=True, exist_ok=True)
        trackers.reopen(Run(out), base).note("study", study or "")  # the tag the nested runs find it by
    results = []
    with trackers.ending():  # FINISHED with the table, or KILLED / FAILED
        for name in names:
            t = time.perf_counter()
            cfg = dataclasses.replace(base, classes=[name]).validate()
            run, _, done = ensure_run(cfg, out / class_slug(name), progress=progress, study=study)
            result, passes = evaluate_one_class(run, full, quantile=quantile, score=score)
            if figures:
                write_figures(run.figures, anomaly_figures(result, passes, full.classes))
            result = dict(result, folder=str(run.path), done=done, wall_seconds=round(time.perf_counter() - t, 1))
            results.append(result)
        summary = summarize(results, dataset, quantile, time.perf_counter() - t0)
        write_summary(out, summary, results, figures)
        trackers.results = summary_metrics(summary)
        trackers.files = [out / "anomaly.json", out / "anomaly.csv", out / "anomaly.md", out / "figures"]
        trackers.summary = markdown_summary(summary)
    return AnomalyResult(out, results, summary)


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The table as flat metric names: ``anomaly/<class>/auroc``, ``.../ap``, ``.../auroc_pca``... and
    ``anomaly/mean/...``."""
    out: dict[str, float] = {}
    for label, row in [(r["normal"], r) for r in summary["rows"]] + [("mean", summary["mean"])]:
        for key, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "wall_seconds":
                out[f"anomaly/{metric_name(label)}/{metric_name(key)}"] = float(value)  # mse+knn: mse_knn
    out["anomaly/every_class_above_pca"] = float(summary["every_class_above_pca"])
    return out


def summarize(results: list[dict[str, Any]], dataset: str, quantile: float, seconds: float) -> dict[str, Any]:
    """One row per normal class (the detector's score, the best AE score, the baselines) and the mean row."""
    rows = []
    for r in results:
        m = r["methods"]
        chosen = m[r["score"]]
        rows.append({"normal": r["normal"], "score": r["score"], "auroc": chosen["auroc"], "ap": chosen["ap"],
                     "precision": chosen["precision"], "recall": chosen["recall"], "f1": chosen["f1"],
                     **{f"auroc_{k}": v["auroc"] for k, v in m.items()},
                     "above_pca": chosen["auroc"] > m["pca"]["auroc"], "wall_seconds": r["wall_seconds"],
                     "folder": r["folder"]})
    keys = [k for k in rows[0] if k.startswith("auroc") or k in ("ap", "precision", "recall", "f1")] if rows else []
    mean = {k: float(np.mean([row[k] for row in rows])) for k in keys}
    return {"format": SUMMARY_FORMAT, "dataset": dataset, "quantile": quantile, "classes": len(rows),
            "rows": rows, "mean": mean, "every_class_above_pca": all(r["above_pca"] for r in rows),
            "goal_mean_auroc": GOAL_MEAN_AUROC, "wall_seconds": round(seconds, 1)}


def markdown_summary(summary: dict[str, Any]) -> str:
    """The table of ``summary`` in Markdown: one row per normal class and the mean."""
    cols = [("AUROC", "auroc"), ("AP", "ap"), ("F1", "f1"), ("AE: MSE", "auroc_mse"),
            ("AE: 1-SSIM", "auroc_ssim"), ("AE: latent kNN", "auroc_knn"), ("AE: MSE+kNN", "auroc_mse+knn"),
            ("AE: (1-SSIM)+kNN", "auroc_ssim+knn"), ("AE: neg. ELBO", "auroc_elbo"),
            ("PCA", "auroc_pca"), ("Isolation Forest", "auroc_iforest")]
    cols = [(c, k) for c, k in cols if any(k in r for r in summary["rows"])]  # the ELBO: VAE runs only
    lines = ["| normal class | score | " + " | ".join(c for c, _ in cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for r in summary["rows"]:
        cells = [f"{r[k]:.4f}" if k in r else "–" for _, k in cols]
        lines.append(f"| {r['normal']} | {r['score']} | " + " | ".join(cells) + " |")
    mean = summary["mean"]
    lines.append("| **mean** | | " + " | ".join(f"**{mean[k]:.4f}**" if k in mean else "–" for _, k in cols) + " |")
    return "\n".join(lines)


def write_summary(out: Path, summary: dict[str, Any], results: list[dict[str, Any]], figures: bool) -> None:
    """OUT/anomaly.json (summary and every run's result), anomaly.csv, anomaly.md and the AUROC figure."""
    write_json(out / "anomaly.json", {**summary, "runs": results})
    buf = io.StringIO()
    fields = list(summary["rows"][0]) if summary["rows"] else []
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(summary["rows"])
    atomic_write_text(out / "anomaly.csv", buf.getvalue())
    text = [f"# One-class anomaly detection on {summary['dataset']}", "",
            "AUROC, AP and F1 of each run's detector score (the F1 at the threshold: the "
            f"{summary['quantile']:g} quantile of normal validation scores), then the AUROC of every score and "
            "baseline. Written by `aelab anomaly`.", "", markdown_summary(summary), "",
            f"Every class above PCA: {summary['every_class_above_pca']}. Wall time: {summary['wall_seconds']:.0f} s."]
    if figures and len(summary["rows"]) > 1:
        names = [r["normal"] for r in summary["rows"]]
        values = {"autoencoder (its score)": [r["auroc"] for r in summary["rows"]],
                  "PCA reconstruction": [r["auroc_pca"] for r in summary["rows"]],
                  "Isolation Forest": [r["auroc_iforest"] for r in summary["rows"]]}
        write_figures(out / "figures", [("auroc_by_class.png", auroc_by_class(
            names, values, f"One-class AUROC per normal class ({summary['dataset']})", GOAL_MEAN_AUROC))])
        text += ["", "![AUROC per class](figures/auroc_by_class.png)"]
    atomic_write_text(out / "anomaly.md", "\n".join(text) + "\n")
