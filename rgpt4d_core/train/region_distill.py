"""Region-level explicit distillation ("region ED"): the expert's dense maps, sampled where the region tracks look.

An option of the tiny recipe, not part of 4D-RGPT (which has no region encoder). The tiny student answers region
questions through the region tracks (``rgpt4d_core/model/region_tracks.py``), which read the vision tower's
features on a ``k x k`` grid over each named region's window and over the whole frame. P4D's L_LD and L_ED shape the
LLM's visual tokens, which that read-out does not see; the issue-16 experiment found the student fits those targets
while its motion answers do not improve (``docs/results.md``, "Where issue 16 stands"). Region ED asks the region
tracks' own per-frame codes to predict the expert's log-depth, backward flow and dynamic-mask probability at the
same sample points (:class:`~rgpt4d_core.model.region_tracks.RegionTrackEncoder.predict_dense`, from each frame's
and the previous frame's codes), so the teacher's motion is delivered to the path the answers read.

Each compared channel is standardised with the training shards' statistics (``losses/normalise.py``: log-depth,
the two flow components, the mask probability), both sides alike, so the mean squared error is O(1) like L_SFT and
a weight of 1 means "as much as the answers".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rgpt4d_core.losses.normalise import DEPTH, DYN_MASK, FLOW, TargetNorm, log_depth
from rgpt4d_core.model.region_tracks import RegionDense, RegionTrackConfig, sample_windows

#: the teacher's dense targets region ED reads
REGION_TARGETS = (DEPTH, FLOW, DYN_MASK)


def dense_maps(targets: Mapping[str, Tensor], sample: int, norm: TargetNorm | None, depth_eps: float) -> Tensor:
    """One sample's expert maps as the region dense head predicts them.

    Args:
        targets: the batch's expert targets: ``depth`` float ``[B, T, H, W]`` (metres), ``flow_2d_backward``
            ``[B, T, H, W, 2]`` (pixels at the heads' size), ``dyn_mask`` ``[B, T, H, W]`` (probability).
        sample: the sample's row.
        norm: per-channel statistics; ``None`` leaves the values in their units.
        depth_eps: ε of log(depth + ε), metres (the statistics' own).

    Returns:
        float32 ``[T, 4, H, W]``: log-depth, flow x, flow y, mask probability (standardised with ``norm``).
    """
    missing = [n for n in REGION_TARGETS if n not in targets]
    if missing:
        raise ValueError(f"region ED needs the expert targets {list(REGION_TARGETS)}; the batch lacks {missing}")
    depth = log_depth(targets[DEPTH][sample], depth_eps)
    flow = targets[FLOW][sample].float()
    mask = targets[DYN_MASK][sample].float()
    if norm is not None:
        depth, flow = norm.standardise(DEPTH, depth), norm.standardise(FLOW, flow)
        mask = norm.standardise(DYN_MASK, mask)
    return torch.cat([depth[:, None], flow.permute(0, 3, 1, 2), mask[:, None]], dim=1)


def region_dense_loss(
    dense: Sequence[RegionDense],
    targets: Mapping[str, Tensor],
    cfg: RegionTrackConfig,
    batch: int,
    norm: TargetNorm | None,
    depth_eps: float,
) -> tuple[Tensor, Tensor]:
    """Per-sample region ED: the mean squared error of each sample's region predictions against the expert's maps
    sampled at the same points (frames 1..T-1: frame 0 has no backward flow).

    Args:
        dense: the student's predictions (``StudentOutput.region_dense``).
        targets: the batch's expert targets (see :func:`dense_maps`).
        cfg: the region tracks' window sizes.
        batch: ``B``.
        norm, depth_eps: as in :func:`dense_maps`.

    Returns:
        (float32 ``[B]`` loss per sample, 0 where it has no prediction; bool ``[B]``, which samples have one).
    """
    if not dense:
        raise ValueError("region ED: the batch has no region predictions")
    device = dense[0].pred.device
    errors = []
    for item in dense:
        maps = dense_maps(targets, item.sample, norm, depth_eps).to(device)
        if maps.shape[0] != item.pred.shape[1] + 1:
            raise ValueError(
                f"region ED: the expert's maps have {maps.shape[0]} frames, the student's video "
                f"{item.pred.shape[1] + 1}"
            )
        target = sample_windows(maps, item.boxes.to(maps.dtype), cfg)[:, 1:]  # [U, T-1, 2, k, k, 4]
        errors.append((item.pred.float() - target).pow(2).mean())
    rows = torch.tensor([item.sample for item in dense], device=device)
    values = torch.zeros(batch, dtype=torch.float32, device=device).index_put((rows,), torch.stack(errors))
    present = torch.zeros(batch, dtype=torch.bool, device=device).index_fill(0, rows, True)
    return values, present


@dataclass(frozen=True)
class RegionDistillation:
    """The region-ED term of a job: its weight and the student's region-track windows."""

    weight: float
    tracks: RegionTrackConfig

    def term(
        self,
        dense: Sequence[RegionDense],
        targets: Mapping[str, Tensor],
        batch: int,
        norm: TargetNorm | None,
        depth_eps: float,
    ) -> Tensor | None:
        """float32 scalar: the mean of :func:`region_dense_loss` over the samples with region predictions, or
        ``None`` when the batch has none (no named region with a video)."""
        if not dense:
            return None
        values, present = region_dense_loss(dense, targets, self.tracks, batch, norm, depth_eps)
        return values.sum() / present.sum()
