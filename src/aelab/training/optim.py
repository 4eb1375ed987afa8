"""The optimizer and the learning-rate schedule a run configuration names."""

from __future__ import annotations

import torch

from aelab.config import RunConfig


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = list(model.parameters())
    # One fused kernel per step instead of a loop over tensors: the base model's Adam step takes 0.25 ms
    # instead of 1.7 ms on 2 CPU cores (~2.5% of a training step). Same update rule.
    fused = {"fused": True} if params and params[0].device.type in ("cpu", "cuda") else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay, **fused)


def make_scheduler(cfg: RunConfig, opt: torch.optim.Optimizer, total_steps: int
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps), eta_min=cfg.lr * 0.01)
    if cfg.schedule == "onecycle":
        # OneCycleLR divides by its warm-up length: at least 8 planned steps keep that above one step.
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(8, total_steps),
                                                   pct_start=0.25)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
