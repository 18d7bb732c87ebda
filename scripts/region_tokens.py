"""Experiment: each ``<obj_k>`` text token also carries its region's SoM-image features (``--region-tokens``).

4D-RGPT has no region encoder: the region is only a mark drawn on the SoM image, and the student must find that
mark (a few visual tokens) from the ``<obj_k>`` text token by attention. ``scripts/visual_probe.py`` showed that a
from-scratch tiny student does not learn such a sparse lookup at our budget. This variant removes the lookup
without new parameters: the embedding of every ``<obj_k>`` token in the prompt gets the area-weighted mean of the
SoM image's visual tokens under region ``k``'s frame-1 box. It is an experiment on the probe, not a product option.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rgpt4d_core.model import student as student_module
from rgpt4d_core.model.fusion import fuse
from rgpt4d_core.types import Region


def box_weights(box: tuple[float, float, float, float], size: int, patch: int, merge: int) -> torch.Tensor:
    """Area weights ``[g*g]`` (summing to 1) of the projector's token grid under a normalised box.

    The tower sees ``size/patch`` patches per side, padded up to a multiple of ``merge``; token ``(r, c)`` of the
    ``g x g`` grid covers pixels ``[c*merge*patch, (c+1)*merge*patch)`` (and the same in rows).
    """
    g = -(-(size // patch) // merge)
    cell = merge * patch
    edges = torch.arange(g + 1, dtype=torch.float32) * cell
    x0, y0, x1, y1 = (v * size for v in box)

    def overlap(a: float, b: float) -> torch.Tensor:
        return (torch.minimum(edges[1:], torch.tensor(b)) - torch.maximum(edges[:-1], torch.tensor(a))).clamp(
            min=0
        )

    w = overlap(y0, y1)[:, None] * overlap(x0, x1)[None, :]
    return (w / w.sum().clamp(min=1e-6)).flatten()


def box_features(box: tuple[float, float, float, float], octaves: int = 4) -> torch.Tensor:
    """Fourier features ``[8 * 2 * octaves]`` of a normalised box: ``x0, y0, x1, y1``, centre, width, height, each
    as ``sin``/``cos`` of ``pi * v * 2**k`` for ``k < octaves`` (a number the LM can read linearly at any scale)."""
    x0, y0, x1, y1 = box
    v = torch.tensor([x0, y0, x1, y1, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dtype=torch.float32)
    angles = torch.pi * v[:, None] * (2.0 ** torch.arange(octaves, dtype=torch.float32))[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).flatten()


class RegionContext:
    """Regions of the batch being fused (set per batch by the probe) and the ``<obj_k>`` token ids.

    ``pool``: add the region's pooled SoM-image tokens; ``coords``: add a learned projection of the region box's
    Fourier features (:func:`box_features`) — explicit position, as CoordConv / Relation Networks give their inputs.
    """

    def __init__(self, obj_ids: dict[int, int], size: int, patch: int, merge: int, pool: bool = True,
                 coords: torch.nn.Module | None = None) -> None:  # fmt: skip
        self.obj_ids, self.size, self.patch, self.merge = obj_ids, size, patch, merge
        self.pool, self.coords = pool, coords
        self.regions: list[Sequence[Region]] | None = None

    def add_region_features(
        self,
        input_ids: Sequence[torch.Tensor],
        text: Sequence[torch.Tensor],
        images: Sequence[Sequence[torch.Tensor]],
    ) -> list[torch.Tensor]:
        """``text`` with, at every ``<obj_k>`` position of sample ``b``, the pooled SoM tokens of region ``k``."""
        if self.regions is None or len(self.regions) != len(text):
            return list(text)
        out = []
        for ids, emb, imgs, regions in zip(input_ids, text, images, self.regions, strict=True):
            add = torch.zeros_like(emb)
            for region in regions:
                pos = torch.nonzero(ids == self.obj_ids.get(region.obj_id, -1)).flatten()
                if not len(pos):
                    continue
                if self.pool and imgs:
                    som = imgs[0]  # [g*g, D]
                    w = box_weights(region.box, self.size, self.patch, self.merge).to(som.dtype)
                    add[pos] = add[pos] + (w[:, None] * som).sum(0)
                if self.coords is not None:
                    add[pos] = add[pos] + self.coords(box_features(region.box).to(emb.dtype))
            out.append(emb + add)
        return out


def install(context: RegionContext) -> None:
    """Route the student's fusion through ``context`` (the student module's ``fuse``)."""

    def fuse_with_regions(input_ids, text_embeds, tokens, videos=None, images=None, labels=None,
                          frame_separator=None, cfg=None):  # fmt: skip
        if images is not None or context.coords is not None:
            text_embeds = context.add_region_features(input_ids, text_embeds, images)
        return fuse(input_ids, text_embeds, tokens, videos, images, labels, frame_separator, cfg)

    student_module.fuse = fuse_with_regions  # type: ignore[assignment]
