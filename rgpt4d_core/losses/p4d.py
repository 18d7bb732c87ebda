"""The P4D total of a batch: L_SFT plus the present, weighted distillation terms, with per-sample values and
counts for logging (:func:`p4d_loss` → :class:`LossTerms`). The L_LD term is added by :func:`_add_latent_term`,
the L_ED terms (decoded by the expert's frozen heads) by :func:`_add_dense_terms`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rgpt4d_core.experts.base import DENSE_TARGETS, LATENTS
from rgpt4d_core.losses.config import P4DLossConfig
from rgpt4d_core.losses.normalise import TargetNorm
from rgpt4d_core.losses.terms import dense_task_loss, latent_loss, sft_loss


@dataclass(frozen=True)
class LossTerms:
    """Every loss term of one batch, for the backward pass and for logging.

    Term names: ``"sft"``, ``"ld"``, ``"ed/depth"``, ``"ed/flow_2d_backward"``, ``"ed/dyn_mask"``, ``"ed/camray"``.

    Attributes:
        total: float32 scalar to backpropagate: sft + Σ weight·term over present terms with weight > 0.
        terms: unweighted float32 scalars of the present terms (weight-0 terms are detached).
        weighted: ``weight·term`` for the terms inside ``total``.
        per_sample: float32 ``[B]`` per present term; 0 for samples that do not take part.
        counts: int64 scalars: samples taking part (for ``"sft"``: supervised tokens).
        absent: term name → why it was not computed.
    """

    total: Tensor
    terms: dict[str, Tensor]
    weighted: dict[str, Tensor]
    per_sample: dict[str, Tensor]
    counts: dict[str, Tensor]
    absent: dict[str, str] = field(default_factory=dict)

    @property
    def sft(self) -> Tensor:
        return self.terms["sft"]

    def log_dict(self, prefix: str = "loss/") -> dict[str, float]:
        """Floats for a tracker: ``loss/total``, ``loss/<term>`` (unweighted) and ``loss/weighted/<term>``."""
        out = {f"{prefix}total": float(self.total.detach())}
        out |= {f"{prefix}{k}": float(v.detach()) for k, v in self.terms.items()}
        out |= {f"{prefix}weighted/{k}": float(v.detach()) for k, v in self.weighted.items()}
        return out


def _participants(name: str, batch: int, sample_mask: Tensor, target_masks: Mapping[str, Tensor]) -> Tensor:
    """bool ``[B]``: ``sample_mask`` and, when given, the own mask of target ``name`` (bool ``[B]``)."""
    mask = sample_mask
    if name in target_masks:
        own = target_masks[name].to(device=mask.device, dtype=torch.bool)
        if own.shape != (batch,):
            raise ValueError(f"target mask {name!r} must be bool [B={batch}], got {tuple(own.shape)}")
        mask = mask & own
    return mask


class _Collector:
    """Accumulates present terms into :class:`LossTerms` (private helper of :func:`p4d_loss`)."""

    def __init__(self, batch: int, device: torch.device) -> None:
        self.batch, self.device = batch, device
        self.terms: dict[str, Tensor] = {}
        self.weighted: dict[str, Tensor] = {}
        self.per_sample: dict[str, Tensor] = {}
        self.counts: dict[str, Tensor] = {}
        self.absent: dict[str, str] = {}

    def add(self, name: str, weight: float, idx: Tensor, values: Tensor, anchor: Tensor) -> None:
        """``values`` float32 [len(idx)] for the participating rows ``idx``; ``anchor`` keeps a 0 in the graph."""
        full = torch.zeros(self.batch, dtype=torch.float32, device=self.device).index_copy(0, idx, values)
        term = values.sum() / idx.numel() if idx.numel() else anchor.float().sum() * 0.0
        self.terms[name], self.per_sample[name] = term, full
        self.counts[name] = torch.tensor(idx.numel(), device=self.device)
        if weight > 0:
            self.weighted[name] = weight * term


@dataclass(frozen=True)
class _Inputs:
    """The inputs of :func:`p4d_loss` that the distillation terms read (shapes there; ``sample_mask`` bool ``[B]``)."""

    cfg: P4DLossConfig
    student_latents: Tensor | None
    targets: Mapping[str, Tensor]
    target_masks: Mapping[str, Tensor]
    sample_mask: Tensor
    heads: nn.Module | None
    norm: TargetNorm | None = None

    def skip_reason(self, target: str, weight: float) -> str | None:
        """Why the term of ``target`` (``LATENTS`` or a dense task) is absent, or ``None`` when it can be computed."""
        if weight == 0 and not self.cfg.log_zero_weight_terms:
            return "weight 0"
        if self.student_latents is None:
            return "no student latents"
        if target not in self.targets:
            return "target not provided"
        return None

    def participants(self, target: str) -> Tensor:
        """bool ``[B]``: the samples that take part in the term of ``target``."""
        return _participants(target, self.sample_mask.shape[0], self.sample_mask, self.target_masks)


def _add_latent_term(out: _Collector, x: _Inputs) -> None:
    """L_LD (``"ld"``) over the samples that take part, or its absence reason (shapes as in :func:`p4d_loss`)."""
    cfg, student_latents, targets, device = x.cfg, x.student_latents, x.targets, out.device
    if (reason := x.skip_reason(LATENTS, cfg.ld_weight)) is not None:
        out.absent["ld"] = reason
        return
    assert student_latents is not None
    idx = x.participants(LATENTS).nonzero(as_tuple=True)[0]
    student = student_latents if cfg.ld_weight > 0 else student_latents.detach()
    values = latent_loss(
        student[idx],
        targets[LATENTS][idx.to(targets[LATENTS].device)].to(device),
        cfg.ld_kind,
        cfg.smooth_l1_beta,
        x.norm,
    )
    out.add("ld", cfg.ld_weight, idx, values, student)


def _add_dense_terms(out: _Collector, x: _Inputs) -> None:
    """The L_ED terms (``"ed/<task>"``): one pass of ``heads`` over the rows of every sample that takes part in
    any present task, then each task's per-sample loss; absent tasks get their reason (shapes as in
    :func:`p4d_loss`)."""
    cfg, student_latents, targets, heads, device = x.cfg, x.student_latents, x.targets, x.heads, out.device
    dense_tasks: list[str] = []
    for task in DENSE_TARGETS:
        name = f"ed/{task}"
        reason = x.skip_reason(task, cfg.ed_weight(task))
        if reason is None and heads is None:
            reason = "no heads module"
        if reason is None and task == "flow_2d_backward" and targets[task].shape[1] < 2:
            reason = "needs >= 2 frames"
        if reason is not None:
            out.absent[name] = reason
        else:
            dense_tasks.append(task)
    if not dense_tasks:
        return
    assert student_latents is not None and heads is not None
    masks = {t: x.participants(t) for t in dense_tasks}
    rows = torch.stack(list(masks.values())).any(dim=0).nonzero(as_tuple=True)[0]
    needs_grad = any(cfg.ed_weight(t) > 0 for t in dense_tasks)
    preds: Mapping[str, Tensor] = {}
    if rows.numel():
        with torch.set_grad_enabled(needs_grad and torch.is_grad_enabled()):
            preds = heads(student_latents[rows])
    for task in dense_tasks:
        name = f"ed/{task}"
        if rows.numel() and task not in preds:
            out.absent[name] = "heads do not predict it"
            continue
        # positions (within ``rows``) of the samples that have this task's target
        keep = masks[task][rows].nonzero(as_tuple=True)[0]
        idx = rows[keep]
        weight = cfg.ed_weight(task)
        if idx.numel():
            pred = preds[task][keep] if weight > 0 else preds[task][keep].detach()
            target = targets[task][idx.to(targets[task].device)].to(device)
            values = dense_task_loss(task, pred, target, cfg, x.norm)
        else:
            values = torch.zeros(0, dtype=torch.float32, device=device)
        out.add(name, weight, idx, values, student_latents)


def p4d_loss(
    cfg: P4DLossConfig,
    logits: Tensor,
    labels: Tensor,
    *,
    student_latents: Tensor | None = None,
    targets: Mapping[str, Tensor] | None = None,
    target_masks: Mapping[str, Tensor] | None = None,
    sample_mask: Tensor | None = None,
    heads: nn.Module | None = None,
    norm: TargetNorm | None = None,
) -> LossTerms:
    """All P4D terms of a batch of ``B`` samples and their weighted total.

    Args:
        cfg: kinds and weights.
        logits: float ``[B, L, V]``; labels: int64 ``[B, L]`` (see :func:`sft_loss`).
        student_latents: float ``[B, K, T', h', w', C']`` from D_4DP, or ``None`` (no distillation).
        targets: teacher targets by name (``"latents"`` and ``DENSE_TARGETS``), each ``[B, ...]`` in the
            expert-contract layout; a missing name makes its term absent.
        target_masks: optional bool ``[B]`` per target name: which samples have that target (default all).
        sample_mask: optional bool ``[B]``: samples eligible for distillation (False for image-only samples).
        heads: the expert's frozen heads (``latents -> {task: prediction}``), needed for L_ED.
        norm: the targets' statistics; required when ``cfg.normalize_targets`` (else ignored).

    Returns:
        :class:`LossTerms`.

    Raises:
        ValueError: ``cfg.normalize_targets`` without ``norm`` while a distillation term is on.
    """
    if not cfg.normalize_targets:
        norm = None
    elif norm is None and cfg.distills:
        raise ValueError("P4DLossConfig.normalize_targets needs the targets' statistics (norm=TargetNorm)")
    targets = targets or {}
    target_masks = target_masks or {}
    batch, device = logits.shape[0], logits.device
    sft_mean, sft_per_sample, sft_count = sft_loss(logits, labels)
    out = _Collector(batch, device)
    out.terms["sft"], out.per_sample["sft"], out.counts["sft"] = sft_mean, sft_per_sample, sft_count
    if sample_mask is None:
        sample_mask = torch.ones(batch, dtype=torch.bool, device=device)
    elif sample_mask.shape != (batch,):
        raise ValueError(f"sample_mask must be bool [B={batch}], got {tuple(sample_mask.shape)}")
    sample_mask = sample_mask.to(device=device, dtype=torch.bool)

    inputs = _Inputs(cfg, student_latents, targets, target_masks, sample_mask, heads, norm)
    _add_latent_term(out, inputs)
    _add_dense_terms(out, inputs)
    total = sft_mean + sum(out.weighted.values(), torch.zeros((), device=device))
    return LossTerms(total, out.terms, out.weighted, out.per_sample, out.counts, out.absent)
