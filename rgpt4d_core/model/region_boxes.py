"""Region-box embedding: an explicit position for each region a question names (a ``tiny`` recipe option).

4D-RGPT gives regions to the model only visually, as Set-of-Marks on the first frame (its Fig. 3 also lists them as
normalised boxes ``⟨R1⟩: [x0, y0, x1, y1]``); a pretrained 8B model binds ``<obj_k>`` to its mark zero-shot. A
from-scratch tiny student does not learn that binding at our budget (``docs/results.md``, "Where the signal is
lost"), and with the SoM image alone even "is ``<obj_3>`` left of ``<obj_4>``" stays at chance. With this option the
text embedding of every token of a region reference gets a learned projection of the region box's Fourier features
(:func:`box_fourier_features`), so that "left of" becomes a comparison of two numbers the LM reads linearly
(CoordConv / Relation Networks give their inputs coordinates for the same reason). It adds ``64 * D_llm + D_llm``
parameters; the paper preset keeps it off.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: octaves of the Fourier features per box value (scales 1, 1/2, 1/4, 1/8 of the frame)
OCTAVES = 4
#: box values encoded: x0, y0, x1, y1, centre x, centre y, width, height
BOX_VALUES = 8
FEATURES = BOX_VALUES * 2 * OCTAVES


def box_fourier_features(boxes: torch.Tensor) -> torch.Tensor:
    """Fourier features of normalised boxes.

    Args:
        boxes: float ``[N, 4]`` ``x0, y0, x1, y1`` in ``[0, 1]`` of the frame.

    Returns:
        float ``[N, 64]``: ``sin`` then ``cos`` of ``pi * v * 2**k`` (``k < 4``) for each of the 8 box values.
    """
    x0, y0, x1, y1 = boxes.unbind(-1)
    values = torch.stack([x0, y0, x1, y1, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
    scales = torch.pi * 2.0 ** torch.arange(OCTAVES, dtype=boxes.dtype, device=boxes.device)
    angles = (values[..., None] * scales).flatten(-2)  # [N, 8 * OCTAVES], value-major
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def grid_cell_boxes(grid: int, cell: float) -> torch.Tensor:
    """Normalised boxes ``[grid * grid, 4]`` (row-major) of a token grid whose cells are ``cell`` of the frame wide
    (a projector that pads the patch grid makes the last cells reach past the frame: clipped to 1)."""
    edges = (torch.arange(grid + 1, dtype=torch.float32) * cell).clamp(max=1.0)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    r, c = rows.flatten(), cols.flatten()
    return torch.stack([edges[c], edges[r], edges[c + 1], edges[r + 1]], dim=-1)


def keep_in_graph(module: nn.Module, out: list[torch.Tensor]) -> None:
    """Add ``0 x`` the sum of ``module``'s parameters to ``out[0]`` (in place in the list), for a batch in which the
    module contributed nothing: DDP expects every parameter's gradient in every step (``find_unused_parameters`` is
    off), so each parameter stays in the graph with a zero gradient."""
    if out:
        zero = torch.stack([p.sum() for p in module.parameters()]).sum() * 0.0
        out[0] = out[0] + zero.to(out[0].dtype)


class RegionBoxEmbedding(nn.Module):
    """Adds ``Linear(box_fourier_features(box))`` to the text embedding at each token that names a region."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(FEATURES, hidden)

    def forward(
        self, text: Sequence[torch.Tensor], token_boxes: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Args:
            text: ``B`` float ``[L_b, D]`` text embeddings.
            token_boxes: ``B`` float ``[L_b, 4]``: the normalised box of the region each token names, NaN rows
                where the token names none (:func:`rgpt4d_core.text.region_refs.token_region_boxes`).

        Returns:
            ``B`` float ``[L_b, D]``: ``text`` plus the box embedding at the region tokens.
        """
        if len(text) != len(token_boxes):
            raise ValueError(f"token_boxes has {len(token_boxes)} samples for a batch of {len(text)}")
        out, used = [], False
        for emb, boxes in zip(text, token_boxes, strict=True):
            if boxes.shape != (emb.shape[0], 4):
                raise ValueError(
                    f"token_boxes must be [L_b={emb.shape[0]}, 4] per sample, got {tuple(boxes.shape)}"
                )
            named = torch.isfinite(boxes).all(dim=1)
            if not bool(named.any()):
                out.append(emb)
                continue
            add = self.proj(box_fourier_features(boxes[named].to(emb.dtype)))
            out.append(emb.index_add(0, torch.nonzero(named).flatten(), add))
            used = True
        if not used:
            keep_in_graph(self, out)
        return out

    def cell_codes(self, grid: int, cell: float, dtype: torch.dtype) -> torch.Tensor:
        """``[grid * grid, D]``: the embedding of each visual-token cell's box (``StudentConfig.visual_positions``),
        added to the visual tokens of every frame so that they and the region references share one spatial code."""
        boxes = grid_cell_boxes(grid, cell).to(self.proj.weight.device, dtype)
        return self.proj(box_fourier_features(boxes))
