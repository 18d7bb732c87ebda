"""P4D training losses: L_SFT, latent distillation L_LD, explicit distillation L_ED, and their weighted total.

    L = L_SFT + α·L_LD + Σ_m w_m·L_ED,m          (paper-spec §2.5)

Reductions (GUESS, paper-spec §8.5): L_SFT is the mean cross-entropy over all supervised tokens of the batch.
L_LD per sample = Σ_hooks mean over the hook's elements; L_ED,m per sample = mean over the task's elements. A
distillation term is the mean of its per-sample values over the samples that take part (``sample_mask`` ∧ the
target's own mask), so image-only or target-less samples get only L_SFT. A term whose target or prediction is
not available at all is *absent*: not computed, not in the total, listed in :attr:`LossTerms.absent` with the
reason. Terms with weight 0 are computed on detached inputs for logging (``log_zero_weight_terms``) but never
enter the total. All loss math runs in float32.

L_ED decodes the student latents with the expert's frozen ``heads`` module inside autograd (layouts in
``rgpt4d_core/experts/base.py``); only the rows of samples that take part are decoded. The heads' parameters are
not touched here: freeze them (``requires_grad_(False)``, ``eval()``) where the expert is built.
Per task: ``depth`` is compared in log space (log(x + eps), metres); ``flow_2d_backward`` skips frame 0 (invalid
by contract); ``dyn_mask`` compares the student's *logits* with the teacher's *probability* by binary
cross-entropy with soft targets (``dyn_mask_mode="bce"``, our choice: bounded, well-conditioned gradients
``sigmoid(x) − p`` even for hard 0/1 targets) or by Δ between ``sigmoid(logits)`` and the probability
(``"sigmoid_regression"``, closer to the paper's Smooth-L1 on scores); ``camray`` compares the raw rays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rgpt4d_core.experts.base import DENSE_TARGETS, LATENTS
from rgpt4d_core.text.prompts import IGNORE_INDEX

LOSS_KINDS = ("smooth_l1", "mse")
DYN_MASK_MODES = ("bce", "sigmoid_regression")


@dataclass(frozen=True)
class P4DLossConfig:
    """Loss kinds and weights. Defaults = the released code's "paper run" (:data:`LOSS_PRESETS`).

    Attributes:
        ld_weight: α, weight of L_LD.
        ld_kind: Δ_LD, ``"smooth_l1"`` or ``"mse"``.
        ed_kind: Δ_m for every dense task, ``"smooth_l1"`` or ``"mse"``.
        smooth_l1_beta: the Smooth-L1 transition point β (> 0), in the unit of the compared quantity.
        depth_weight: effective weight of L_ED,depth (log-depth).
        flow_weight: effective weight of L_ED,flow_2d_backward (pixels).
        dyn_mask_weight: effective weight of L_ED,dyn_mask.
        camray_weight: effective weight of L_ED,camray.
        dyn_mask_mode: ``"bce"`` or ``"sigmoid_regression"`` (module docstring).
        depth_eps: ε of log(depth + ε), metres.
        log_zero_weight_terms: compute weight-0 terms (detached) so they can be logged.
    """

    ld_weight: float = 0.01
    ld_kind: str = "mse"
    ed_kind: str = "smooth_l1"
    smooth_l1_beta: float = 1.0
    depth_weight: float = 0.1
    flow_weight: float = 0.001
    dyn_mask_weight: float = 0.01
    camray_weight: float = 0.0
    dyn_mask_mode: str = "bce"
    depth_eps: float = 1e-8
    log_zero_weight_terms: bool = True

    def __post_init__(self) -> None:
        for name in ("ld_kind", "ed_kind"):
            if getattr(self, name) not in LOSS_KINDS:
                raise ValueError(
                    f"P4DLossConfig.{name} must be one of {LOSS_KINDS}, got {getattr(self, name)!r}"
                )
        if self.dyn_mask_mode not in DYN_MASK_MODES:
            raise ValueError(
                f"P4DLossConfig.dyn_mask_mode must be one of {DYN_MASK_MODES}, got {self.dyn_mask_mode!r}"
            )
        if self.smooth_l1_beta <= 0:
            raise ValueError(f"P4DLossConfig.smooth_l1_beta must be > 0, got {self.smooth_l1_beta}")
        for name in ("ld_weight", "depth_weight", "flow_weight", "dyn_mask_weight", "camray_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"P4DLossConfig.{name} must be >= 0, got {getattr(self, name)}")

    def ed_weight(self, task: str) -> float:
        """Weight of dense task ``task`` (one of ``DENSE_TARGETS``)."""
        return {
            "depth": self.depth_weight,
            "flow_2d_backward": self.flow_weight,
            "dyn_mask": self.dyn_mask_weight,
            "camray": self.camray_weight,
        }[task]

    def with_weights(self, **weights: float | None) -> P4DLossConfig:
        """A copy with some weights replaced, keyed by term name: ``ld`` and the ``DENSE_TARGETS`` names
        (``depth``, ``flow_2d_backward``, ``dyn_mask``, ``camray``); ``None`` values are ignored."""
        fields = {"ld": "ld_weight", "depth": "depth_weight", "flow_2d_backward": "flow_weight"}
        fields |= {"dyn_mask": "dyn_mask_weight", "camray": "camray_weight"}
        unknown = set(weights) - set(fields)
        if unknown:
            raise KeyError(f"unknown loss weight(s) {sorted(unknown)}; known: {sorted(fields)}")
        changes: dict[str, Any] = {fields[k]: float(v) for k, v in weights.items() if v is not None}
        return replace(self, **changes)

    @property
    def distills(self) -> bool:
        """True if any distillation term has a positive weight."""
        return self.ld_weight > 0 or any(self.ed_weight(t) > 0 for t in DENSE_TARGETS)


_PAPER_BETA = 0.1  # the paper's β multiplying every λ_m (paper-spec §2.4-2.5)
#: named presets (paper-spec §2.5): effective weights, i.e. β·λ_m already multiplied out for the paper
LOSS_PRESETS: dict[str, P4DLossConfig] = {
    "paper": P4DLossConfig(
        ld_weight=0.5,
        ld_kind="smooth_l1",
        ed_kind="smooth_l1",
        depth_weight=_PAPER_BETA * 1.0,
        flow_weight=_PAPER_BETA * 0.1,
        dyn_mask_weight=_PAPER_BETA * 0.05,
        camray_weight=_PAPER_BETA * 0.05,
    ),
    "released_code": P4DLossConfig(),
    "sft_only": P4DLossConfig(
        ld_weight=0.0,
        depth_weight=0.0,
        flow_weight=0.0,
        dyn_mask_weight=0.0,
        camray_weight=0.0,
        log_zero_weight_terms=False,
    ),
}


def loss_preset(name: str, **overrides: object) -> P4DLossConfig:
    """The preset ``name`` (``paper``, ``released_code``, ``sft_only``) with optional field overrides."""
    if name not in LOSS_PRESETS:
        raise KeyError(f"unknown loss preset {name!r}; known: {sorted(LOSS_PRESETS)}")
    return replace(LOSS_PRESETS[name], **overrides)  # type: ignore[arg-type]


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


def sft_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Next-token cross-entropy on supervised tokens.

    Args:
        logits: float ``[B, L, V]`` LM outputs for the input ids.
        labels: int64 ``[B, L]`` aligned with the input ids (NOT shifted); :data:`IGNORE_INDEX` = unsupervised.
            Position ``i`` of ``logits`` is scored against ``labels[i + 1]``.

    Returns:
        ``(mean, per_sample, count)``: float32 scalar mean over all supervised tokens of the batch; float32
        ``[B]`` mean over each sample's supervised tokens (0 if it has none); int64 scalar token count.
        With no supervised token at all the mean is a graph-connected 0.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"sft_loss: logits [B, L, V] and labels [B, L] expected, got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    target = labels[:, 1:]
    supervised = target != IGNORE_INDEX
    rows, cols = supervised.nonzero(as_tuple=True)
    token_ce = F.cross_entropy(logits[:, :-1][rows, cols].float(), target[rows, cols], reduction="none")
    batch = logits.shape[0]
    per_tok_sum = torch.zeros(batch, dtype=torch.float32, device=logits.device).index_add(0, rows, token_ce)
    per_count = supervised.sum(dim=1)
    per_sample = per_tok_sum / per_count.clamp(min=1)
    count = per_count.sum()
    mean = token_ce.sum() / count.clamp(min=1) if token_ce.numel() else logits.sum().float() * 0.0
    return mean, per_sample, count


def elementwise_loss(pred: Tensor, target: Tensor, kind: str, beta: float) -> Tensor:
    """Δ(pred, target) per element, float32, same shape: Smooth-L1 with transition ``beta`` or squared error."""
    pred, target = pred.float(), target.float()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    if kind == "mse":
        return F.mse_loss(pred, target, reduction="none")
    raise ValueError(f"unknown loss kind {kind!r}; known: {LOSS_KINDS}")


def _per_sample_mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(dim=1)


def latent_loss(student: Tensor, teacher: Tensor, kind: str, beta: float) -> Tensor:
    """Per-sample L_LD: Σ over hooks of the mean Δ over each hook's ``T'·h'·w'·C'`` elements.

    Args:
        student: float ``[B, K, T', h', w', C']`` D_4DP outputs.
        teacher: float, same shape: the expert's hook latents.

    Returns:
        float32 ``[B]``.
    """
    if student.shape != teacher.shape or student.dim() != 6:
        raise ValueError(
            f"L_LD: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}; both [B,K,T',h',w',C']"
        )
    err = elementwise_loss(student, teacher, kind, beta)
    return err.flatten(2).mean(dim=2).sum(dim=1)


def dense_task_loss(task: str, pred: Tensor, target: Tensor, cfg: P4DLossConfig) -> Tensor:
    """Per-sample L_ED,m for one dense task, float32 ``[B]`` (shapes in ``rgpt4d_core/experts/base.py``).

    ``depth`` [B,T,H,W] metres in log space; ``flow_2d_backward`` [B,T,H,W,2] pixels, frame 0 skipped;
    ``dyn_mask`` student logits vs teacher probability [B,T,H,W]; ``camray`` [B,Tc,hc,wc,6].
    """
    if pred.shape != target.shape:
        raise ValueError(f"L_ED[{task}]: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
    beta = cfg.smooth_l1_beta
    if task == "depth":
        log_pred = torch.log(pred.float().clamp(min=0) + cfg.depth_eps)
        log_target = torch.log(target.float().clamp(min=0) + cfg.depth_eps)
        return _per_sample_mean(elementwise_loss(log_pred, log_target, cfg.ed_kind, beta))
    if task == "flow_2d_backward":
        return _per_sample_mean(elementwise_loss(pred[:, 1:], target[:, 1:], cfg.ed_kind, beta))
    if task == "dyn_mask":
        if cfg.dyn_mask_mode == "bce":
            return _per_sample_mean(
                F.binary_cross_entropy_with_logits(pred.float(), target.float(), reduction="none")
            )
        return _per_sample_mean(elementwise_loss(torch.sigmoid(pred.float()), target, cfg.ed_kind, beta))
    if task == "camray":
        return _per_sample_mean(elementwise_loss(pred, target, cfg.ed_kind, beta))
    raise KeyError(f"unknown dense task {task!r}; known: {DENSE_TARGETS}")


def _participants(name: str, batch: int, sample_mask: Tensor, target_masks: Mapping[str, Tensor]) -> Tensor:
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

    Returns:
        :class:`LossTerms`.
    """
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

    def skip_reason(target: str, weight: float) -> str | None:
        if weight == 0 and not cfg.log_zero_weight_terms:
            return "weight 0"
        if student_latents is None:
            return "no student latents"
        if target not in targets:
            return "target not provided"
        return None

    if (reason := skip_reason(LATENTS, cfg.ld_weight)) is not None:
        out.absent["ld"] = reason
    else:
        assert student_latents is not None
        idx = _participants(LATENTS, batch, sample_mask, target_masks).nonzero(as_tuple=True)[0]
        student = student_latents if cfg.ld_weight > 0 else student_latents.detach()
        values = latent_loss(
            student[idx],
            targets[LATENTS][idx.to(targets[LATENTS].device)].to(device),
            cfg.ld_kind,
            cfg.smooth_l1_beta,
        )
        out.add("ld", cfg.ld_weight, idx, values, student)

    dense_tasks: list[str] = []
    for task in DENSE_TARGETS:
        name = f"ed/{task}"
        reason = skip_reason(task, cfg.ed_weight(task))
        if reason is None and heads is None:
            reason = "no heads module"
        if reason is None and task == "flow_2d_backward" and targets[task].shape[1] < 2:
            reason = "needs >= 2 frames"
        if reason is not None:
            out.absent[name] = reason
        else:
            dense_tasks.append(task)
    if dense_tasks:
        assert student_latents is not None and heads is not None
        masks = {t: _participants(t, batch, sample_mask, target_masks) for t in dense_tasks}
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
                values = dense_task_loss(task, pred, target, cfg)
            else:
                values = torch.zeros(0, dtype=torch.float32, device=device)
            out.add(name, weight, idx, values, student_latents)

    total = sft_mean + sum(out.weighted.values(), torch.zeros((), device=device))
    return LossTerms(total, out.terms, out.weighted, out.per_sample, out.counts, out.absent)
