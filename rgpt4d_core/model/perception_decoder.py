"""D_4DP, the 4D perception decoder (training only): LLM hidden states of a video's visual tokens → the frozen
expert's latent layout, one projection per expert hook.

Steps (paper §4.1; released code for exact shapes):

1. gather the LLM's last hidden states at each frame's visual tokens → ``[B, T, h, w, C]``;
2. sub-sample frames to the expert's ``T'`` (every ``T // T'``-th frame when it divides, e.g. 16 → 8 is
   ``::2``; otherwise the rounded ``linspace`` indices) and bilinearly resize the ``h×w`` grid to ``h'×w'``
   (real: 11×11 → 16×16);
3. per hook ``k``, a token-wise projection ``C → C'``: the paper's 3-layer MLP (hidden 2,560, GELU, Xavier
   weights, zero biases) or the released code's single Linear (weights N(0, 0.1), zero bias).

Output float ``[B, K, T', h', w', C']`` = ``rgpt4d_core.experts.base`` latent layout. The layout (``K``,
``T'``, ``h'``, ``w'``, ``C'``) comes from the expert's :class:`~rgpt4d_core.experts.base.ExpertSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rgpt4d_core.experts.base import ExpertSpec

DECODER_VARIANTS: tuple[str, ...] = ("mlp", "linear")


@dataclass(frozen=True)
class DecoderConfig:
    """Attributes:
    enabled: build D_4DP when the expert provides latents (training); inference never needs it.
    variant: ``"mlp"`` (paper) or ``"linear"`` (released code).
    mlp_hidden: hidden width of the paper variant.
    linear_init_std: weight std of the code variant.
    hidden_layer: which LLM hidden state D_4DP reads, as an index into the ``num_layers + 1`` hidden states
        (0 = input embeddings, ``k`` = output of block ``k``); ``-1`` = the last layer after the final norm, as in
        the released code. A middle layer puts the dense signal where the answer tokens' attention reads it
        (VIRAL found middle layers matter most).
    """

    enabled: bool = True
    variant: str = "mlp"
    mlp_hidden: int = 2560
    linear_init_std: float = 0.1
    hidden_layer: int = -1

    def __post_init__(self) -> None:
        if self.variant not in DECODER_VARIANTS:
            raise ValueError(f"decoder.variant must be one of {DECODER_VARIANTS}, got {self.variant!r}")


@dataclass(frozen=True)
class LatentLayout:
    """The expert latent layout D_4DP must produce (from :class:`ExpertSpec`)."""

    num_hooks: int
    frames: int
    height: int
    width: int
    dim: int

    @classmethod
    def from_spec(cls, spec: ExpertSpec) -> LatentLayout:
        t, h, w = spec.latent_grid
        if not spec.hook_layers or min(t, h, w, spec.latent_dim) <= 0:
            raise ValueError(
                f"expert {spec.name!r} provides no latents (hooks {spec.hook_layers}, grid "
                f"{spec.latent_grid}, dim {spec.latent_dim})"
            )
        return cls(len(spec.hook_layers), t, h, w, spec.latent_dim)


def _mlp(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    mlp = nn.Sequential(
        nn.Linear(c_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, c_out)
    )
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return mlp


def _linear(c_in: int, c_out: int, std: float) -> nn.Linear:
    layer = nn.Linear(c_in, c_out)
    nn.init.normal_(layer.weight, mean=0.0, std=std)
    nn.init.zeros_(layer.bias)
    return layer


def frame_subsample_indices(frames: int, target: int) -> list[int]:
    """Indices of the ``target`` frames kept out of ``frames`` (``::frames//target`` when it divides)."""
    if target <= 0 or target > frames:
        raise ValueError(f"cannot sub-sample {frames} student frames to {target} expert frames")
    if frames % target == 0:
        return list(range(0, frames, frames // target))
    return [round(i * (frames - 1) / max(target - 1, 1)) for i in range(target)]


class PerceptionDecoder(nn.Module):
    """D_4DP for an LLM of width ``llm_dim`` and an expert latent ``layout``."""

    def __init__(self, cfg: DecoderConfig, llm_dim: int, layout: LatentLayout) -> None:
        super().__init__()
        self.cfg = cfg
        self.layout = layout
        if cfg.variant == "mlp":
            heads: list[nn.Module] = [
                _mlp(llm_dim, cfg.mlp_hidden, layout.dim) for _ in range(layout.num_hooks)
            ]
        else:
            heads = [_linear(llm_dim, layout.dim, cfg.linear_init_std) for _ in range(layout.num_hooks)]
        self.hooks = nn.ModuleList(heads)

    def rearrange(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """Sub-sample frames and resize the token grid.

        Args:
            frame_tokens: float ``[B, T, n, C]``, ``n = h*w`` row-major tokens per frame.

        Returns:
            float ``[B, T', h', w', C]``.
        """
        return self._resize(self._subsample(frame_tokens))

    def _subsample(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """float ``[B, T, n, C]`` → the kept frames as a grid, float ``[B, T', h, w, C]``."""
        b, t, n, c = frame_tokens.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"perception decoder needs a square token grid per frame, got {n} tokens")
        keep = frame_subsample_indices(t, self.layout.frames)
        return frame_tokens[:, keep].reshape(b, self.layout.frames, side, side, c)

    def _resize(self, grid: torch.Tensor) -> torch.Tensor:
        """Bilinear resize of the token grid: float ``[B, T', h, w, C]`` → ``[B, T', h', w', C]``."""
        b, t, h, w, c = grid.shape
        lay = self.layout
        if (h, w) == (lay.height, lay.width):
            return grid
        x = grid.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(lay.height, lay.width), mode="bilinear", align_corners=False)
        return x.permute(0, 2, 3, 1).reshape(b, t, lay.height, lay.width, c)

    def forward(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """``frame_tokens``: float ``[B, T, n, C]`` LLM hidden states → float ``[B, K, T', h', w', C']``.

        Equal to ``hook(rearrange(frame_tokens))`` per hook, but each hook's first ``nn.Linear`` (the whole
        projection of the ``"linear"`` variant) runs on the ``h×w`` grid *before* the resize to ``h'×w'``: a
        linear layer and a bilinear resize commute (the resize mixes tokens with weights summing to 1, so the
        bias commutes too), same value up to float rounding at ``h·w/(h'·w')`` of that layer's cost (tiny 9/64,
        real 121/256).
        """
        grid = self._subsample(frame_tokens)
        if grid.shape[2] * grid.shape[3] > self.layout.height * self.layout.width:  # shrinking: resize first
            return torch.stack([hook(self._resize(grid)) for hook in self.hooks], dim=1)
        out = []
        for hook in self.hooks:
            first, rest = (hook[0], hook[1:]) if isinstance(hook, nn.Sequential) else (hook, None)
            y = self._resize(first(grid))
            out.append(rest(y) if rest is not None else y)
        return torch.stack(out, dim=1)


def gather_frame_tokens(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick visual-token hidden states.

    Args:
        hidden: float ``[B, L, C]`` LLM hidden states.
        index: int64 ``[B, T, n]`` positions in ``L`` (from :meth:`FusedBatch.first_video_index`).

    Returns:
        float ``[B, T, n, C]``.
    """
    b, t, n = index.shape
    flat = index.reshape(b, t * n, 1).expand(b, t * n, hidden.shape[-1])
    return torch.gather(hidden, 1, flat).reshape(b, t, n, hidden.shape[-1])
