"""NVILA's spatial-downsampling vision→LLM projectors, chosen by name from a small registry.

``mlp_downsample_3x3_fix`` (NVILA-Lite): the ``g×g`` vision token grid is zero-padded at the bottom/right to a
multiple of 3, each non-overlapping 3×3 neighbourhood is concatenated into one token of width ``9·C`` (channel
order: neighbour row, neighbour column, channel), then
``LayerNorm(9C) → Linear(9C→3C) → GELU → LayerNorm(3C) → Linear(3C→D) → GELU → Linear(D→D)``.
Real preset: 32×32×1152 → 11×11 = 121 tokens × 3584.

``mlp_downsample_2x2_fix`` (NVILA base): 2×2 neighbourhoods (pad to even),
``LayerNorm(4C) → Linear(4C→D) → GELU → Linear(D→D)``.

Layers sit in an ``nn.Sequential`` named ``layers`` whose indices match NVILA's ``mm_projector`` checkpoints
(``layers.1.weight`` … ``layers.7.bias``), so their ``model.safetensors`` loads as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ProjectorConfig:
    """Attributes:
    kind: registry name (``"mlp_downsample_3x3_fix"`` or ``"mlp_downsample_2x2_fix"``).
    """

    kind: str = "mlp_downsample_3x3_fix"

    def __post_init__(self) -> None:
        if self.kind not in PROJECTORS:
            raise ValueError(f"projector.kind must be one of {sorted(PROJECTORS)}, got {self.kind!r}")


def merge_neighbourhoods(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """Concatenate each non-overlapping ``k×k`` neighbourhood of a square token grid.

    Args:
        tokens: ``[F, g*g, C]`` row-major grid tokens.
        k: neighbourhood size.

    Returns:
        ``[F, m*m, k*k*C]`` with ``m = ceil(g / k)`` (grid zero-padded at the end of both axes); output tokens
        row-major; channel index ``(dr * k + dc) * C + c`` for neighbour offset ``(dr, dc)``.
    """
    frames, n, channels = tokens.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"projector input must be a square token grid, got {n} tokens")
    grid = tokens.reshape(frames, g, g, channels)
    pad = (-g) % k
    if pad:
        grid = F.pad(grid, (0, 0, 0, pad, 0, pad))
    m = (g + pad) // k
    grid = grid.reshape(frames, m, k, m, k, channels).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(frames, m * m, k * k * channels)


class _Merge(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return merge_neighbourhoods(tokens, self.k)


class DownsampleProjector(nn.Module):
    """Projects vision tokens ``[F, g*g, C_vision]`` to LLM tokens ``[F, m*m, D_llm]`` (``m = ceil(g/k)``)."""

    def __init__(self, kind: str, layers: nn.Sequential, k: int) -> None:
        super().__init__()
        self.kind = kind
        self.k = k
        self.layers = layers

    def output_grid(self, vision_grid: int) -> int:
        """Side ``m`` of the output token grid for a ``vision_grid × vision_grid`` input grid."""
        return -(-vision_grid // self.k)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens``: float ``[F, g*g, C_vision]`` → float ``[F, m*m, D_llm]``."""
        return self.layers(tokens)


def _build_3x3(vision_dim: int, llm_dim: int) -> DownsampleProjector:
    c = vision_dim
    layers = nn.Sequential(
        _Merge(3),
        nn.LayerNorm(9 * c),
        nn.Linear(9 * c, 3 * c),
        nn.GELU(),
        nn.LayerNorm(3 * c),
        nn.Linear(3 * c, llm_dim),
        nn.GELU(),
        nn.Linear(llm_dim, llm_dim),
    )
    return DownsampleProjector("mlp_downsample_3x3_fix", layers, 3)


def _build_2x2(vision_dim: int, llm_dim: int) -> DownsampleProjector:
    c = vision_dim
    layers = nn.Sequential(
        _Merge(2),
        nn.LayerNorm(4 * c),
        nn.Linear(4 * c, llm_dim),
        nn.GELU(),
        nn.Linear(llm_dim, llm_dim),
    )
    return DownsampleProjector("mlp_downsample_2x2_fix", layers, 2)


#: projector name → builder(vision_dim, llm_dim)
PROJECTORS: dict[str, Callable[[int, int], DownsampleProjector]] = {
    "mlp_downsample_3x3_fix": _build_3x3,
    "mlp_downsample_2x2_fix": _build_2x2,
}


def build_projector(cfg: ProjectorConfig, vision_dim: int, llm_dim: int) -> DownsampleProjector:
    """The projector named by ``cfg.kind`` for vision width ``vision_dim`` and LLM width ``llm_dim``."""
    return PROJECTORS[cfg.kind](vision_dim, llm_dim)
