"""What a study leaves behind: the trials table, the best configuration, Optuna's plots, the retrained model.

Files in the study folder:
  trials.csv, trials.md    every trial: state, objective, validation SSIM and loss, epochs, time, options
  best.yaml                the best trial's options on the full budget ('aelab train --config best.yaml')
  figures/history.png, figures/importances.png, figures/parallel.png   (Optuna's matplotlib plots)
  best-trial-NNNN/         the best configuration retrained and evaluated on the test split
  summary.json, summary.md the above in short
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from optuna.trial import FrozenTrial, TrialState

from aelab.config import dump_yaml
from aelab.errors import TuneError, one_line
from aelab.experiments.jobs import ensure_run
from aelab.experiments.tune.objective import SURPLUS
from aelab.experiments.tune.settings import TuneSettings
from aelab.experiments.tune.storage import fail_stale_trials
from aelab.files import atomic_write_bytes, atomic_write_text, write_json
from aelab.report.compare import Column, csv_text, markdown_table
from aelab.runs import Run

PLOTS = ("history", "importances", "parallel")


# ------------------------------------------------------------------------------------------ the table
def _param_names(study: optuna.Study, settings: TuneSettings) -> list[str]:
    names = list(settings.space.names)
    for t in study.get_trials(deepcopy=False):
        names += [k for k in t.params if k not in names]
    return names


def trial_rows(study: optuna.Study, settings: TuneSettings) -> list[dict[str, Any]]:
    """One row per trial, in trial order."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        note = a.get("error", "")
        if t.state == TrialState.PRUNED:
            note = f"pruned after epoch {a.get('epochs', '?')}"
        elif t.state == TrialState.FAIL and not note:
            note = "killed or crashed (no heartbeat)"
        elif t.state == TrialState.RUNNING:
            note = "running (or killed: marked failed once its heartbeat is stale)"
        retried = t.system_attrs.get("failed_trial")
        again = f"a new run of trial {retried}, whose worker was killed" if retried is not None else ""
        note = "; ".join(n for n in (a.get("note", ""), again, note) if n)
        seconds = t.duration.total_seconds() if t.duration else None
        state = "not run" if a.get(SURPLUS) else t.state.name.lower()
        rows.append({"trial": t.number, "state": state,
                     "objective": t.value if t.state == TrialState.COMPLETE else None,
                     "val_ssim": a.get("val_ssim"), "val_loss": a.get("val_loss"), "epochs": a.get("epochs"),
                     "seconds": round(seconds, 1) if seconds is not None else None,
                     **{f"param:{k}": t.params.get(k) for k in _param_names(study, settings)}, "note": note})
    return rows


def _fmt_param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if value != 0 and abs(value) < 0.01 else f"{value:.4g}"
    return "–" if value is None else str(value)


def trials_markdown(rows: list[dict[str, Any]], settings: TuneSettings) -> str:
    cols = [Column("trial", "trial"), Column("state", "state"), Column("val_ssim", "val SSIM", "{:.4f}"),
            Column("val_loss", "val loss", "{:.5f}"), Column("epochs", "epochs"), Column("seconds", "s", "{:.1f}")]
    keys = [k for k in (rows[0] if rows else {}) if k.startswith("param:")]
    shown = [{**r, **{k: _fmt_param(r[k]) for k in keys}} for r in rows]
    cols += [Column(k, k[len("param:"):]) for k in keys] + [Column("note", "note")]
    return markdown_table(shown, cols)


# ------------------------------------------------------------------------------------------ the plots
def write_plots(study: optuna.Study, folder: Path, target_name: str) -> dict[str, str]:
    """Optuna's matplotlib plots as PNG; a plot that cannot be drawn yet (too few trials) is skipped with why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    makers = {
        "history": lambda: ovm.plot_optimization_history(study, target_name=target_name),
        "importances": lambda: ovm.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0)),
        "parallel": lambda: ovm.plot_parallel_coordinate(study, target_name=target_name),
    }
    done: dict[str, str] = {}
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    for name, make in makers.items():
        if complete < (2 if name != "history" else 1):
            done[name] = f"skipped: needs at least {2 if name != 'history' else 1} complete trials"
            continue
        try:
            # Optuna switches the global style to ggplot in each call: keep that inside this block only.
            with matplotlib.rc_context(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = make()
                fig = ax.figure
                fig.set_size_inches(8, 5)
                fig.tight_layout()
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=100)
                plt.close(fig)
            done[name] = str(atomic_write_bytes(folder / f"{name}.png", buf.getvalue()))
        except Exception as err:  # Optuna refuses some plots for degenerate studies (one value, one option)
            plt.close("all")
            done[name] = f"skipped: {one_line(err, 120)}"
    return done


# ------------------------------------------------------------------------------------------ export
def best_trial(study: optuna.Study) -> FrozenTrial | None:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def write_best_config(settings: TuneSettings, best: FrozenTrial) -> Path:
    cfg = settings.best_config(best.params)
    head = (f"# best trial {best.number} of study '{settings.study}' ({settings.objective_label} {best.value:.4f}, "
            f"trained for {best.user_attrs.get('epochs', '?')} epochs"
            f"{f' on {settings.trial_train_limit} images' if settings.trial_train_limit else ''}"
            f"{f' in at most {settings.trial_minutes:g} minutes' if settings.trial_minutes else ''}),\n"
            f"# with the full budget below. Train it: aelab train --config {settings.out / 'best.yaml'}\n")
    return atomic_write_text(settings.out / "best.yaml", head + dump_yaml(cfg))


def export(settings: TuneSettings, study: optuna.Study) -> dict[str, Any]:
    """Write the study's results into its folder; retrain the best configuration when asked."""
    fail_stale_trials(study)
    out = settings.out
    rows = trial_rows(study, settings)
    atomic_write_text(out / "trials.csv", csv_text(rows))
    atomic_write_text(out / "trials.md", f"# Trials of study {settings.study}\n\nObjective: {settings.objective_label} "
                      f"(of the best checkpoint); the test split is never used.\n\n" + trials_markdown(rows, settings))
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running", "not run")}
    summary: dict[str, Any] = {"study": settings.study, "folder": str(out), "objective": settings.objective_label,
                               "trials": counts, "trials_table": str(out / "trials.md")}
    best = best_trial(study)
    if best is None:
        write_json(out / "summary.json", summary)
        first = next((r["note"] for r in rows if r["state"] == "fail" and r["note"]), "")
        raise TuneError(f"no trial of study {settings.study} completed ({counts['fail']} failed"
                        f"{f'; first error: {first}' if first else ''}); fix the search space or the budget, "
                        f"see {out / 'trials.md'}")
    summary["best"] = {"trial": best.number, "value": best.value, "params": best.params,
                       "val_ssim": best.user_attrs.get("val_ssim"), "val_loss": best.user_attrs.get("val_loss")}
    summary["best_config"] = str(write_best_config(settings, best))
    summary["figures"] = write_plots(study, out / "figures", settings.objective_label)
    if settings.retrain:
        cfg = settings.best_config(best.params)
        # Workers of one study end together and all export: the first retrains, the others wait for it here and
        # find the run done (ensure_run skips it), so the best trial is retrained once.
        with FileLock(out / ".retrain.lock"):
            folder = out / f"best-trial-{best.number:04d}"
            if settings.progress and not Run(folder).metrics.is_file():
                print(f"retraining trial {best.number} on the full budget ({cfg.epochs} epochs"
                      f"{f', {cfg.train_limit} images' if cfg.train_limit else ''})", file=sys.stderr)
            run, metrics, how = ensure_run(cfg, folder, progress=settings.progress)
        ae, pca = metrics["autoencoder"]["overall"], metrics["pca"]["overall"]
        summary["retrained"] = {"run": str(run.path), "how": how, "test_ssim": ae["ssim"], "test_psnr": ae["psnr"],
                                "test_mse": ae["mse"], "pca_ssim": pca["ssim"], "latent": cfg.latent}
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    t = summary["trials"]
    lines = [f"# Study {summary['study']}", "",
             f"- trials: {t['complete']} complete, {t['pruned']} pruned, {t['fail']} failed"
             + (f", {t['running']} running" if t["running"] else "")
             + (f", {t['not run']} not run (workers raced for the last places)" if t.get("not run") else ""),
             f"- best: trial {summary['best']['trial']}, {summary['objective']} {summary['best']['value']:.4f}",
             f"- options: {', '.join(f'{k}={_fmt_param(v)}' for k, v in summary['best']['params'].items())}",
             f"- best configuration: {summary['best_config']}"]
    if "retrained" in summary:
        r = summary["retrained"]
        done = "already done" if r.get("how") == "skipped" else "here"
        lines.append(f"- retrained on the full budget ({done}): {r['run']}: test SSIM {r['test_ssim']:.4f} "
                     f"(PCA {r['pca_ssim']:.4f} at latent {r['latent']}), PSNR {r['test_psnr']:.2f} dB")
    lines.append(f"- all trials: {summary['trials_table']}")
    return "\n".join(lines) + "\n"
