"""Timestamp Positional Encoding (TPE), paper Eq. (5): a fixed sinusoid of each frame's time in seconds.

For a frame sampled at ``t`` seconds and a feature width ``D`` (even)::

    p(t)[2i]   = sin(t / base ** (2i / D))
    p(t)[2i+1] = cos(t / base ** (2i / D)),      i = 0 .. D/2 - 1,  base = 10,000

The vector is *added* to every spatial token of that frame. No learned parameters. Placement (paper: before
the projector, ``D`` = vision width; released README wording: before the LLM, ``D`` = LLM width) is chosen by
:class:`TPEConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: where the encoding is added
TPE_PLACEMENTS: tuple[str, ...] = ("pre_projector", "post_projector", "off")


@dataclass(frozen=True)
class TPEConfig:
    """Attributes:
    placement: ``"pre_projector"`` (paper; adds to vision features of width ``D_vision``),
        ``"post_projector"`` (adds to projected tokens of width ``D_llm``) or ``"off"``.
    base: the wavelength base ``T`` of Eq. (5).
    """

    placement: str = "pre_projector"
    base: float = 10_000.0

    def __post_init__(self) -> None:
        if self.placement not in TPE_PLACEMENTS:
            raise ValueError(f"tpe.placement must be one of {TPE_PLACEMENTS}, got {self.placement!r}")
        if self.base <= 1.0:
            raise ValueError(f"tpe.base must be > 1, got {self.base}")


def timestamp_encoding(timestamps_s: torch.Tensor, dim: int, base: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal encodings of timestamps.

    Args:
        timestamps_s: float ``[...]`` times in seconds (any leading shape).
        dim: even encoding width ``D``.
        base: wavelength base ``T``.

    Returns:
        float32 ``[..., D]``: interleaved ``sin`` (even channels) / ``cos`` (odd channels), computed in float64
        for accuracy at long times and returned as float32.
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"TPE width must be a positive even number, got {dim}")
    t = timestamps_s.to(torch.float64).unsqueeze(-1)  # [..., 1]
    two_i = torch.arange(0, dim, 2, dtype=torch.float64, device=timestamps_s.device)  # [D/2]
    angles = t / torch.pow(torch.tensor(base, dtype=torch.float64, device=timestamps_s.device), two_i / dim)
    enc = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1)  # [..., D/2, 2]
    return enc.flatten(-2).to(torch.float32)


def add_timestamp_encoding(
    features: torch.Tensor, timestamps_s: torch.Tensor, base: float = 10_000.0
) -> torch.Tensor:
    """Add each frame's encoding to all of its tokens.

    Args:
        features: float ``[F, N, D]`` tokens of ``F`` frames (``N`` tokens each, width ``D``).
        timestamps_s: float ``[F]`` seconds of each frame.
        base: wavelength base.

    Returns:
        ``features + p(t)[:, None, :]`` in ``features``' dtype, shape ``[F, N, D]``.
    """
    if features.dim() != 3 or timestamps_s.shape != features.shape[:1]:
        raise ValueError(
            f"TPE expects features [F, N, D] and timestamps [F]; got {tuple(features.shape)} and "
            f"{tuple(timestamps_s.shape)}"
        )
    enc = timestamp_encoding(timestamps_s, features.shape[-1], base).to(features.dtype)
    return features + enc.unsqueeze(1)
