"""The per-term loss math, each per sample in float32: L_SFT (:func:`sft_loss`), L_LD (:func:`latent_loss`) and
L_ED,m for one dense task (:func:`dense_task_loss`), over the element-wise Δ of :func:`elementwise_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rgpt4d_core.experts.base import DENSE_TARGETS, LATENTS
from rgpt4d_core.losses.config import LOSS_KINDS, P4DLossConfig
from rgpt4d_core.losses.normalise import TargetNorm, log_depth
from rgpt4d_core.text.prompts import IGNORE_INDEX


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


def latent_loss(student: Tensor, teacher: Tensor, kind: str, beta: float, norm: TargetNorm | None = None) -> Tensor:
    """Per-sample L_LD: Σ over hooks of the mean Δ over each hook's ``T'·h'·w'·C'`` elements.

    Args:
        student: float ``[B, K, T', h', w', C']`` D_4DP outputs.
        teacher: float, same shape: the expert's hook latents.
        norm: when given, both sides are standardised per (hook, channel) first (``normalise.py``).

    Returns:
        float32 ``[B]``.
    """
    if student.shape != teacher.shape or student.dim() != 6:
        raise ValueError(
            f"L_LD: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}; both [B,K,T',h',w',C']"
        )
    if norm is not None:
        student, teacher = norm.standardise(LATENTS, student), norm.standardise(LATENTS, teacher)
    err = elementwise_loss(student, teacher, kind, beta)
    return err.flatten(2).mean(dim=2).sum(dim=1)


def dense_task_loss(task: str, pred: Tensor, target: Tensor, cfg: P4DLossConfig,
                    norm: TargetNorm | None = None) -> Tensor:  # fmt: skip
    """Per-sample L_ED,m for one dense task, float32 ``[B]`` (shapes in ``rgpt4d_core/experts/base.py``).

    ``depth`` [B,T,H,W] metres in log space; ``flow_2d_backward`` [B,T,H,W,2] pixels, frame 0 skipped;
    ``dyn_mask`` student logits vs teacher probability [B,T,H,W]; ``camray`` [B,Tc,hc,wc,6]. With ``norm`` the
    compared quantities (log-depth, flow, rays, the mask probability under ``sigmoid_regression``) are
    standardised per channel first, and the mask's BCE is divided by H(p̄) (``normalise.py``).
    """
    if pred.shape != target.shape:
        raise ValueError(f"L_ED[{task}]: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
    beta = cfg.smooth_l1_beta
    if task == "depth":
        pred, target = log_depth(pred, cfg.depth_eps), log_depth(target, cfg.depth_eps)
    elif task == "flow_2d_backward":
        pred, target = pred[:, 1:], target[:, 1:]
    elif task == "dyn_mask" and cfg.dyn_mask_mode == "bce":
        bce = F.binary_cross_entropy_with_logits(pred.float(), target.float(), reduction="none")
        return _per_sample_mean(bce) / (norm.bce_scale() if norm is not None else 1.0)
    elif task == "dyn_mask":
        pred = torch.sigmoid(pred.float())
    elif task != "camray":
        raise KeyError(f"unknown dense task {task!r}; known: {DENSE_TARGETS}")
    if norm is not None:
        pred, target = norm.standardise(task, pred), norm.standardise(task, target)
    return _per_sample_mean(elementwise_loss(pred, target, cfg.ed_kind, beta))
