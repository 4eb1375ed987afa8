"""Hyperparameter search with Optuna (``aelab tune``): settings, search space, storage, the search, its export."""

from aelab.experiments.tune.export import summary_markdown
from aelab.experiments.tune.search import tune
from aelab.experiments.tune.settings import TuneSettings
from aelab.experiments.tune.space import SearchSpace, load_space

__all__ = ["SearchSpace", "TuneSettings", "load_space", "summary_markdown", "tune"]
