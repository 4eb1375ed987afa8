"""Training: the loop over in-memory tensors (early stopping, checkpoints, exact resume), losses, optimizers."""

from aelab.training.losses import make_loss
from aelab.training.optim import make_optimizer, make_scheduler
from aelab.training.trainer import HISTORY_FIELDS, LoopState, Trainer

__all__ = ["HISTORY_FIELDS", "LoopState", "Trainer", "make_loss", "make_optimizer", "make_scheduler"]
