"""Time-mention embedding: one learned code for "the time t", added both to the text tokens that state a time and
to the visual tokens of the frame sampled at that time (a ``tiny`` recipe option, ``StudentConfig.time_refs``).

Most synthetic (and R4D-Bench) questions are anchored in time ("At 2.0 s, …", "Between 1.0 s and 3.0 s, …"). TPE
(``tpe.py``) tells the LM each frame's time as a fixed sinusoid, but the question states its times as digits that a
from-scratch byte-level LM would have to parse and then compare with that sinusoid. With this option the tokens of a
mention and the frames at that time carry the same learned vector, so that "attend to the frames of the window"
becomes a dot product, as the region-box embedding (``region_boxes.py``) made "where is ``<obj_k>``" one. It adds
``16 * D_llm + D_llm`` parameters; the paper preset keeps it off.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: periods (seconds) of the Fourier features: from half a second (neighbouring frames at 10–16 fps stay apart) to a
#: minute (long videos do not wrap around)
PERIODS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
FEATURES = 2 * len(PERIODS_S)


def time_fourier_features(times_s: torch.Tensor) -> torch.Tensor:
    """Fourier features of times.

    Args:
        times_s: float ``[N]`` seconds.

    Returns:
        float ``[N, 16]``: ``sin`` then ``cos`` of ``2 pi t / P`` for each period ``P`` of :data:`PERIODS_S`.
    """
    periods = torch.tensor(PERIODS_S, dtype=times_s.dtype, device=times_s.device)
    angles = 2.0 * torch.pi * times_s[..., None] / periods
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimeMentionEmbedding(nn.Module):
    """``Linear(time_fourier_features(t))``, added to time-mention tokens (:meth:`forward`) and to each frame's
    visual tokens (:meth:`frame_codes`)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(FEATURES, hidden)

    def code(self, times_s: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """float ``[N] → [N, D]``: the code of each time."""
        return self.proj(time_fourier_features(times_s.to(self.proj.weight.device, torch.float32))).to(dtype)

    def forward(self, text: Sequence[torch.Tensor], token_times: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Args:
            text: ``B`` float ``[L_b, D]`` text embeddings.
            token_times: ``B`` float ``[L_b]``: the seconds each token states, NaN where it states none
                (:class:`rgpt4d_core.text.time_refs.TimeMentionReader`).

        Returns:
            ``B`` float ``[L_b, D]``: ``text`` plus the time code at the mention tokens.
        """
        out, used = [], False
        for emb, times in zip(text, token_times, strict=True):
            if times.shape != emb.shape[:1]:
                raise ValueError(f"token_times must be [L_b={emb.shape[0]}] per sample, got {tuple(times.shape)}")
            stated = torch.isfinite(times)
            if not bool(stated.any()):
                out.append(emb)
                continue
            rows = torch.nonzero(stated).flatten().to(emb.device)
            out.append(emb.index_add(0, rows, self.code(times[stated], emb.dtype)))
            used = True
        if not used and out:  # keep the projection in the graph (zero gradient) for DDP, as RegionBoxEmbedding does
            out[0] = out[0] + 0.0 * (self.proj.weight.sum() + self.proj.bias.sum()).to(out[0].dtype)
        return out

    def frame_codes(self, timestamps_s: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """float ``[F] → [F, 1, D]``: the code of each frame's time, to add to all of its ``n`` visual tokens."""
        return self.code(timestamps_s, dtype).unsqueeze(1)
