"""One optimisation step, framework-free: micro-batch forward/backward with gradient accumulation, clip, step.

The same function runs in a Ray Train worker (DDP or FSDP2 model), in a single process (benchmarks, notebooks)
and in unit tests. What a "forward + loss" is for the distillation job lives in :mod:`rgpt4d_core.train.distill`
as a :data:`LossFn`; this module only knows the accumulation mechanics:

* each micro-batch's total loss is divided by the number of micro-batches, so the gradient is the mean over the
  step's micro-batches (and, with DDP/FSDP averaging, over the global batch);
* gradient all-reduce is skipped for all but the last micro-batch (DDP ``no_sync``, FSDP2
  ``set_requires_gradient_sync``);
* gradients are clipped to ``max_grad_norm`` before ``optimizer.step()``, then the scheduler advances once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rgpt4d_core.losses import P4DLossConfig, TargetNorm, loss_preset, p4d_loss
from rgpt4d_core.model.region_tracks import RegionTrackConfig
from rgpt4d_core.train.optim import clip_gradients
from rgpt4d_core.train.region_distill import RegionDistillation


@dataclass(frozen=True)
class LossOutput:
    """What a loss function returns for one micro-batch.

    Attributes:
        total: float scalar tensor attached to the graph (the weighted sum that is back-propagated).
        terms: per-term float scalars for logging (detached), e.g. ``{"sft": ..., "ld": ..., "ed/depth": ...}``.
        num_samples: samples in the micro-batch.
        num_tokens: tokens the model processed (text + visual, padding excluded).
    """

    total: torch.Tensor
    terms: Mapping[str, torch.Tensor]
    num_samples: int
    num_tokens: int


#: ``loss_fn(model, micro_batch) -> LossOutput``
LossFn = Callable[[nn.Module, Any], LossOutput]


@dataclass(frozen=True)
class StepStats:
    """Result of one optimiser step on this worker.

    Attributes:
        losses: mean of each loss term over the step's micro-batches (``"total"`` included), this worker only.
        grad_norm: global L2 gradient norm before clipping (all workers: gradients are synchronised).
        lr: learning rate used by this step (first parameter group).
        samples: samples this worker processed.
        tokens: tokens this worker processed.
        seconds: wall time of the step on this worker.
    """

    losses: dict[str, float]
    grad_norm: float
    lr: float
    samples: int
    tokens: int
    seconds: float


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Context in which backward passes all-reduce gradients only if ``enabled`` (DDP and FSDP2; no-op otherwise)."""
    if enabled:
        yield
        return
    if isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
        return
    setter = getattr(model, "set_requires_gradient_sync", None)  # FSDP2 (torch.distributed.fsdp.fully_shard)
    if setter is None:
        yield
        return
    setter(False)
    try:
        yield
    finally:
        setter(True)


def optimizer_step(
    model: nn.Module,
    micro_batches: Sequence[Any],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    max_grad_norm: float,
) -> StepStats:
    """Run one optimiser step over ``micro_batches`` (gradient accumulation) and return its statistics.

    Raises:
        ValueError: if ``micro_batches`` is empty or a loss is not finite (the message names the micro-batch).
    """
    if not micro_batches:
        raise ValueError("optimizer_step needs at least one micro-batch")
    start = time.perf_counter()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    lr = float(optimizer.param_groups[0]["lr"])
    sums: dict[str, float] = {}
    samples = tokens = 0
    n = len(micro_batches)
    for i, batch in enumerate(micro_batches):
        with gradient_sync(model, enabled=i == n - 1):
            out = loss_fn(model, batch)
            if not torch.isfinite(out.total.detach()):
                raise ValueError(f"non-finite loss {float(out.total.detach())} at micro-batch {i} (terms: {_floats(out.terms)})")
            (out.total / n).backward()
        for k, v in {"total": out.total, **out.terms}.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        samples += out.num_samples
        tokens += out.num_tokens
    grad_norm = clip_gradients((p for g in optimizer.param_groups for p in g["params"]), max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return StepStats(
        losses={k: v / n for k, v in sums.items()},
        grad_norm=grad_norm,
        lr=lr,
        samples=samples,
        tokens=tokens,
        seconds=time.perf_counter() - start,
    )


def loss_config(cfg: Any) -> P4DLossConfig:
    """The loss of a ``DistillJobConfig``: ``losses.preset`` ⊕ ``losses.ed`` (depth, flow and dynamic-mask weights
    at once) ⊕ single-weight overrides ⊕ ``losses.normalize`` ⊕ ``ablation.variant`` (which terms are on)."""
    sec = cfg.losses
    loss_cfg = loss_preset(sec.preset).with_weights(ld=sec.ld, depth=sec.ed, flow_2d_backward=sec.ed, dyn_mask=sec.ed)
    loss_cfg = loss_cfg.with_weights(
        depth=sec.depth, flow_2d_backward=sec.flow_2d_backward, dyn_mask=sec.dyn_mask, camray=sec.camray
    )
    if sec.normalize is not None:
        loss_cfg = dataclasses.replace(loss_cfg, normalize_targets=bool(sec.normalize))
    if not cfg.ablation.latent_distillation:
        loss_cfg = loss_cfg.with_weights(ld=0.0)
    if not cfg.ablation.explicit_distillation:
        loss_cfg = loss_cfg.with_weights(depth=0.0, flow_2d_backward=0.0, dyn_mask=0.0, camray=0.0)
    return loss_cfg


def _floats(terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in terms.items()}


class DistillLoss:
    """The P4D :data:`LossFn`: forward the student on a :class:`~rgpt4d_core.train.collate.StudentBatch`, then
    L = L_SFT + w_LD·L_LD + Σ_m w_m·L_ED,m with :func:`rgpt4d_core.losses.p4d_loss`, plus w_region·L_region with
    ``region`` (region-level ED, :mod:`rgpt4d_core.train.region_distill`; logged as ``region``).

    Args:
        loss_cfg: kinds and weights (a preset of ``rgpt4d_core.losses`` with the job's overrides and ablation).
        heads: the expert's frozen dense heads (``None``: no L_ED).
        compute_latents: run D_4DP (any distillation term on).
        norm: the targets' statistics (needed when ``loss_cfg.normalize_targets``).
        region: the region-ED term (``losses.region``), or ``None``.
    """

    def __init__(self, loss_cfg: P4DLossConfig, heads: nn.Module | None, compute_latents: bool,
                 norm: TargetNorm | None = None, region: RegionDistillation | None = None) -> None:  # fmt: skip
        self.loss_cfg = loss_cfg
        self.heads = heads
        self.compute_latents = compute_latents
        self.norm = norm
        self.region = region
        #: the statistics region ED standardises with (``None``: raw targets), resolved once as p4d_loss does
        self.region_norm = norm if loss_cfg.normalize_targets else None
        if region is not None and loss_cfg.normalize_targets and norm is None:
            raise ValueError("region ED with standardised targets needs the targets' statistics (norm=TargetNorm)")

    @classmethod
    def from_config(cls, cfg: Any, heads: nn.Module | None, norm: TargetNorm | None = None,
                    tracks: RegionTrackConfig | None = None) -> DistillLoss:  # fmt: skip
        """From a ``DistillJobConfig`` (:func:`loss_config`); ``tracks``: the student's region tracks (needed
        with ``losses.region``)."""
        distills = cfg.ablation.latent_distillation or cfg.ablation.explicit_distillation
        region = None
        if cfg.losses.region:
            if tracks is None or not tracks.dense_head:
                raise ValueError("losses.region needs the student's region tracks with their dense head")
            region = RegionDistillation(float(cfg.losses.region), tracks)
        return cls(loss_config(cfg), heads, compute_latents=distills, norm=norm, region=region)

    def __call__(self, model: nn.Module, batch: Any) -> LossOutput:
        out = model(
            input_ids=batch.input_ids,
            labels=batch.labels,
            videos=batch.videos,
            timestamps_s=batch.timestamps_s,
            images=batch.images,
            image_owner=batch.image_owner,
            compute_latents=self.compute_latents,
            supervised_logits_only=True,
            token_boxes=batch.token_boxes,
        )
        terms = p4d_loss(
            self.loss_cfg,
            out.logits,
            out.labels,
            student_latents=out.latents,
            targets=batch.targets,
            sample_mask=out.latent_mask,
            heads=self.heads,
            norm=self.norm,
        )
        total = terms.total
        logged = {**terms.terms, **{f"weighted/{k}": v for k, v in terms.weighted.items()}}
        if self.region is not None:
            term = self.region.term(
                out.region_dense, batch.targets, len(batch), self.region_norm, self.loss_cfg.depth_eps
            )
            if term is not None:
                total = total + self.region.weight * term
                logged |= {"region": term, "weighted/region": self.region.weight * term}
        return LossOutput(
            total=total,
            terms={k: v.detach() for k, v in logged.items()},
            num_samples=len(batch),
            num_tokens=int(batch.num_tokens),
        )
