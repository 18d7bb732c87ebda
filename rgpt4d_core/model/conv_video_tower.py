"""A small convolutional *video* encoder E_V for tiny students trained from scratch (``VisionConfig.kind="conv3d"``).

Why it exists (docs/results.md, "Sixth round" and "Seventh round"): at toy scale, trained from nothing on ~10^4
questions, per-frame ViT towers memorise their training clips instead of learning motion, while a small 3-D CNN
reads the direction of motion from the same 64-px pixels. The paper's E_V is a frozen *pretrained* SigLIP, which has
none of this problem; this tower stands in for that pretraining at toy scale and is never used by the
``nvila_lite_8b`` preset.

Shape contract (the same as :class:`rgpt4d_core.model.vision.VisionTower`, so the projector, TPE, fusion and D_4DP
are unchanged): pixels ``[F, 3, S, S]`` in ``[-1, 1]``, where consecutive runs of ``frames_per_clip`` frames are one
clip in time order → features ``[F, g*g, C]`` with ``g = S / patch_size`` and ``C = hidden_size``. Each stage is a
3-D convolution (``temporal_kernel`` frames × 3×3 pixels, spatial stride 2, zero padding in time, so frame counts are
kept and a clip never sees another clip) with GroupNorm and GELU, then ``num_layers - 1`` more such convolutions at
stride 1 in the last stage. An image is a clip of one frame.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover - typing only
    from rgpt4d_core.model.vision import VisionConfig


def _norm(width: int) -> nn.GroupNorm:
    """GroupNorm with groups of 8 channels (no batch statistics: the same in training, eval and DDP)."""
    return nn.GroupNorm(max(1, width // 8), width)


def _block(inp: int, out: int, temporal_kernel: int, stride: int) -> list[nn.Module]:
    conv = nn.Conv3d(
        inp,
        out,
        (temporal_kernel, 3, 3),
        stride=(1, stride, stride),
        padding=(temporal_kernel // 2, 1, 1),
    )
    return [conv, _norm(out), nn.GELU()]


class ConvVideoTower(nn.Module):
    """Strided 3-D convolutions: ``[F, 3, S, S]`` (``frames_per_clip`` consecutive frames a clip) → ``[F, g*g, C]``.

    Stage ``i`` of ``log2(patch_size)`` halves the side; widths double towards ``hidden_size`` (patch 8, width 64:
    16, 32, 64). Parameters ≈ 0.1 M at the tiny preset's sizes.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        stages = int(math.log2(cfg.patch_size))
        if 2**stages != cfg.patch_size or cfg.image_size % cfg.patch_size:
            raise ValueError(
                f"conv3d tower needs a power-of-two patch_size dividing image_size, got "
                f"patch {cfg.patch_size} at {cfg.image_size} px"
            )
        if cfg.temporal_kernel < 1 or cfg.temporal_kernel % 2 == 0:
            raise ValueError(f"vision.temporal_kernel must be odd and >= 1, got {cfg.temporal_kernel}")
        self.cfg = cfg
        widths = [max(8, cfg.hidden_size >> (stages - 1 - i)) for i in range(stages)]
        layers: list[nn.Module] = []
        inp = 3
        for width in widths:
            layers += _block(inp, width, cfg.temporal_kernel, 2)
            inp = width
        for _ in range(cfg.num_layers - 1):
            layers += _block(inp, inp, cfg.temporal_kernel, 1)
        self.net = nn.Sequential(*layers)
        self.requires_grad_(not cfg.frozen)

    @property
    def grid(self) -> int:
        """Tokens per side of each frame's feature grid."""
        return self.cfg.grid

    def unused_parameter_names(self) -> set[str]:
        """Every parameter reaches the output (the interface :class:`VisionTower` offers for DDP)."""
        return set()

    def train(self, mode: bool = True) -> ConvVideoTower:
        """A frozen tower stays in eval mode."""
        super().train(mode and not self.cfg.frozen)
        return self

    def forward(self, pixels: torch.Tensor, frames_per_clip: int = 1) -> torch.Tensor:
        """``pixels`` float ``[F, 3, S, S]``, ``F`` a multiple of ``frames_per_clip`` → float ``[F, g*g, C]``."""
        size = self.cfg.image_size
        if pixels.dim() != 4 or pixels.shape[1:] != (3, size, size):
            raise ValueError(f"vision tower expects pixels [F, 3, {size}, {size}], got {tuple(pixels.shape)}")
        if frames_per_clip < 1 or pixels.shape[0] % frames_per_clip:
            raise ValueError(f"{pixels.shape[0]} frames do not split into clips of {frames_per_clip}")
        param = next(self.parameters())
        clips = pixels.to(param.dtype).unflatten(0, (-1, frames_per_clip)).transpose(1, 2)  # [N, 3, T, S, S]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.frozen):
            feats = self.net(clips)  # [N, C, T, g, g]
        return feats.permute(0, 2, 3, 4, 1).flatten(0, 1).flatten(1, 2)  # [N*T, g*g, C]
