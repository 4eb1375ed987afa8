"""Tracking: a training logged to the tools people already watch runs in (``--track tensorboard,mlflow``).

``tracker.py`` is the one interface every backend implements (``Tracker``: start, log_epoch, log_final, end);
``trackers.py`` the fan-out a training holds (``Trackers``: every backend at once, a failing one turned into one
warning and dropped, so that logging never stops a training; ``open_trackers``; ``log_evaluation`` for ``aelab
evaluate``); ``tensorboard.py`` and ``mlflow.py`` the two backends (MLflow's also keeps a tuning study as one run
with a nested run per trial), imported only when asked for (their packages are the optional extra
``aelab[track]``); ``samples.py`` the fixed validation images whose SSIM and reconstructions are logged every
epoch; ``facts.py`` what a training is about to do (model, data, precision, threads, budget, folder, trackers),
printed at its start, kept in the run folder and logged.
"""

from aelab.tracking.tracker import FAILED, FINISHED, KILLED, Tracker
from aelab.tracking.trackers import Trackers, log_evaluation, open_trackers

__all__ = ["FAILED", "FINISHED", "KILLED", "Tracker", "Trackers", "log_evaluation", "open_trackers"]
