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

Modules: ``config.py`` (:class:`P4DLossConfig`, :data:`LOSS_PRESETS`, :func:`loss_preset`), ``terms.py`` (the
per-term math: :func:`sft_loss`, :func:`latent_loss`, :func:`dense_task_loss`, :func:`elementwise_loss`) and
``p4d.py`` (:func:`p4d_loss`, the weighted total, and :class:`LossTerms`), ``normalise.py`` (:class:`TargetNorm`: per-channel
standardisation of the targets, ``P4DLossConfig.normalize_targets``). Import from this package.
"""

from rgpt4d_core.losses.config import DYN_MASK_MODES, LOSS_KINDS, LOSS_PRESETS, P4DLossConfig, loss_preset
from rgpt4d_core.losses.normalise import ChannelStats, MomentAccumulator, TargetNorm
from rgpt4d_core.losses.p4d import LossTerms, p4d_loss
from rgpt4d_core.losses.terms import dense_task_loss, elementwise_loss, latent_loss, sft_loss

__all__ = [
    "DYN_MASK_MODES",
    "ChannelStats",
    "MomentAccumulator",
    "TargetNorm",
    "LOSS_KINDS",
    "LOSS_PRESETS",
    "LossTerms",
    "P4DLossConfig",
    "dense_task_loss",
    "elementwise_loss",
    "latent_loss",
    "loss_preset",
    "p4d_loss",
    "sft_loss",
]
