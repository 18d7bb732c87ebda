"""Per-channel standardisation of the distillation targets (issue 16: distillation that matters in the loss).

With raw targets the distillation terms live on the units of the expert (latent activations, log-metres, pixels):
the released code's weights make them ≈ 4 % of the loss at the end of training (``docs/results.md``). With
``P4DLossConfig.normalize_targets`` each compared quantity is standardised per channel, *both sides* with the
same affine map, from statistics of the training shards' targets (:class:`TargetNorm`):

    Δ((s − μ_c) / σ_c, (t − μ_c) / σ_c)

so that predicting the channel mean costs ≈ 1 per element under MSE, whatever the target's units: a weight of 1
then means "as much as the SFT loss" (itself O(1) nats). Because the student's latents are compared in the
expert's space through the same map, they stay in that space, and L_ED's frozen heads still decode them.

Channels (the statistics' layout, :func:`channel_values`): ``latents`` ``[B, K, T', h', w', C']`` → one channel
per (hook, feature), ``K·C'`` values hook-major; ``depth`` → one channel of log(depth + ε); ``flow_2d_backward``
→ its 2 components (frame 0, invalid by contract, excluded); ``camray`` → its 6 components; ``dyn_mask`` → one
channel, whose binary cross-entropy is divided by the binary entropy H(p̄) of the mean target probability (the
loss of predicting p̄ everywhere) instead: a probability compared by BCE has no affine standardisation.

A near-constant channel is amplified: σ is floored at :data:`MIN_STD` (target units), no more.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rgpt4d_core.experts.base import LATENTS

#: the smallest standard deviation a channel is divided by (in the target's units)
MIN_STD = 1e-3
#: the smallest H(p̄) (nats) the dynamic-mask BCE is divided by
MIN_ENTROPY = 1e-3
DYN_MASK = "dyn_mask"
DEPTH = "depth"
FLOW = "flow_2d_backward"


@dataclass(frozen=True)
class ChannelStats:
    """Mean and standard deviation per channel (layout in the module docstring) over ``count`` elements each."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    count: int = 0


def _view(name: str, values: Tensor, like: Tensor) -> Tensor:
    """``values`` [channels] shaped to broadcast against ``like`` (a target of ``name``, batch first)."""
    if values.numel() == 1:
        return values.reshape(())
    if name == LATENTS:  # [B, K, T', h', w', C'], channels hook-major
        return values.reshape(1, like.shape[1], 1, 1, 1, like.shape[-1])
    return values.reshape(*([1] * (like.dim() - 1)), like.shape[-1])


@dataclass(frozen=True)
class TargetNorm:
    """The statistics of every target that has them (a name without statistics is left as it is)."""

    stats: dict[str, ChannelStats] = field(default_factory=dict)

    def standardise(self, name: str, x: Tensor) -> Tensor:
        """``(x − μ) / max(σ, MIN_STD)`` per channel of target ``name`` (float32), or ``x`` without statistics."""
        s = self.stats.get(name)
        if s is None:
            return x
        mean = torch.tensor(s.mean, dtype=torch.float32, device=x.device)
        std = torch.tensor(s.std, dtype=torch.float32, device=x.device).clamp(min=MIN_STD)
        return (x.float() - _view(name, mean, x)) / _view(name, std, x)

    def bce_scale(self) -> float:
        """H(p̄) in nats of the mean dynamic-mask probability (floored at :data:`MIN_ENTROPY`); 1 without statistics."""
        s = self.stats.get(DYN_MASK)
        if s is None:
            return 1.0
        p = min(max(s.mean[0], 1e-7), 1 - 1e-7)
        return max(-(p * math.log(p) + (1 - p) * math.log(1 - p)), MIN_ENTROPY)

    def to_json(self) -> str:
        return json.dumps({k: {"mean": list(v.mean), "std": list(v.std), "count": v.count}
                           for k, v in sorted(self.stats.items())}, indent=1)  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> TargetNorm:
        raw = json.loads(text)
        return cls({k: ChannelStats(tuple(v["mean"]), tuple(v["std"]), int(v.get("count", 0))) for k, v in raw.items()})


def log_depth(depth: Tensor, eps: float) -> Tensor:
    """The compared depth quantity, float32 ``log(max(depth, 0) + eps)`` (metres in, any shape) — what L_ED and
    region ED compare and :func:`channel_values` takes statistics of."""
    return torch.log(depth.float().clamp(min=0) + eps)


def channel_values(name: str, target: np.ndarray, depth_eps: float) -> np.ndarray:
    """One clip's target ``name`` (no batch axis) as float64 ``[elements, channels]`` in the statistics' layout."""
    x = np.asarray(target, dtype=np.float64)
    if name == LATENTS:  # [K, T', h', w', C'] -> [T'h'w', K*C']
        k, c = x.shape[0], x.shape[-1]
        return np.moveaxis(x, 0, -2).reshape(-1, k * c)
    if name == DEPTH:
        return np.log(np.clip(x, 0, None) + depth_eps).reshape(-1, 1)
    if name == FLOW:
        return x[1:].reshape(-1, x.shape[-1])
    if name == DYN_MASK:
        return x.reshape(-1, 1)
    return x.reshape(-1, x.shape[-1])  # camray [Tc, hc, wc, 6]


class MomentAccumulator:
    """Running per-channel sums (float64) of targets, clip by clip; :meth:`result` gives the :class:`TargetNorm`."""

    def __init__(self, depth_eps: float) -> None:
        self.depth_eps = depth_eps
        self.sums: dict[str, np.ndarray] = {}
        self.squares: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def add(self, targets: Mapping[str, np.ndarray | None]) -> None:
        """Add one clip's targets (name → array without batch axis; ``None`` = not provided)."""
        for name, value in targets.items():
            if value is None:
                continue
            v = channel_values(name, value, self.depth_eps)
            v = v[np.isfinite(v).all(axis=1)]
            self.sums[name] = self.sums.get(name, 0.0) + v.sum(axis=0)
            self.squares[name] = self.squares.get(name, 0.0) + (v * v).sum(axis=0)
            self.counts[name] = self.counts.get(name, 0) + v.shape[0]

    def result(self) -> TargetNorm:
        stats = {}
        for name, n in self.counts.items():
            if n == 0:
                continue
            mean = self.sums[name] / n
            var = np.clip(self.squares[name] / n - mean * mean, 0.0, None)
            stats[name] = ChannelStats(tuple(float(m) for m in mean), tuple(float(s) for s in np.sqrt(var)), n)
        return TargetNorm(stats)
