"""AdamW with decay/no-decay parameter groups, a cosine schedule with linear warm-up, and gradient clipping.

Paper recipe ([P] §4.2): lr 1e-5, cosine, warm-up ratio 0.03; the optimiser itself, weight decay and clipping
are not stated (GUESS: HF-Trainer defaults — AdamW β = (0.9, 0.999), ε = 1e-8, weight decay 0, clip 1.0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule settings.

    Attributes:
        lr: peak learning rate (after warm-up).
        weight_decay: decoupled weight decay for matrices; norms, biases and other 1-D params never decay.
        beta1, beta2, eps: AdamW moments and epsilon.
        warmup_ratio: fraction of all optimiser steps spent warming up linearly from 0 to ``lr``.
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        max_grad_norm: global L2 clipping threshold; ``<= 0`` disables clipping.
        fused: use the fused AdamW kernel when parameters live on CUDA.
    """

    lr: float = 1e-5
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    fused: bool = True

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm scales and any other 1-D parameter (and scalar gates) are excluded from weight decay."""
    lowered = name.lower()
    return param.ndim < 2 or lowered.endswith(".bias") or "norm" in lowered


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into ``[{decay params, weight_decay}, {no-decay params, 0.0}]``.

    Frozen parameters (``requires_grad=False``) are left out entirely, so their AdamW state is never allocated.
    Empty groups are dropped.

    Raises:
        ValueError: if the model has no trainable parameter.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if _no_decay(name, p) else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (check the trainable/frozen settings)")
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model`` with the decay/no-decay split of :func:`param_groups`."""
    groups = param_groups(model, cfg.weight_decay)
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=bool(cfg.fused and on_cuda) or None
    )


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Number of warm-up steps: ``ceil(total_steps * warmup_ratio)`` (HF-Trainer convention)."""
    return math.ceil(total_steps * warmup_ratio)


def cosine_with_warmup_factor(step: int, total_steps: int, warmup: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at optimiser ``step`` (0-based): linear 0→1 over ``warmup``, then cosine → min.

    ``step >= total_steps`` stays at ``min_lr_ratio``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineWithWarmup(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` driven by :func:`cosine_with_warmup_factor`. Its ``state_dict`` is plain JSON-able numbers."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, min_lr_ratio: float = 0.0):
        self.total_steps = int(total_steps)
        self.warmup = warmup_steps(self.total_steps, warmup_ratio)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        return cosine_with_warmup_factor(step, self.total_steps, self.warmup, self.min_lr_ratio)

    def state_dict(self) -> dict:
        """Scheduler position without the (un-serialisable) lambdas."""
        return {k: v for k, v in super().state_dict().items() if k != "lr_lambdas"}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the position and re-apply its lr to the optimiser (whatever order things were loaded in)."""
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "lr_lambdas"})
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> CosineWithWarmup:
    """Cosine schedule with linear warm-up over ``total_steps`` optimiser steps."""
    return CosineWithWarmup(optimizer, total_steps, cfg.warmup_ratio, cfg.min_lr_ratio)


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> float:
    """Clip the global L2 norm of the gradients to ``max_norm`` (no-op if ``<= 0``); returns the norm before clipping.

    Works for plain tensors, DDP and FSDP2 (DTensor) parameters. Parameters without gradient are skipped.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    total = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(total, "full_tensor"):
        total = total.full_tensor()
    return float(total)
