"""Typed configuration of the expert-pretraining job (``pipelines/pretrain_expert.py``, ``conf/pretrain_expert/``).

Loaded with :func:`rgpt4d_core.config.load`: these defaults ⊕ YAML ⊕ ``key=value`` overrides. Sections: ``data`` (the
synthetic world to train on), ``loss`` (:class:`~rgpt4d_core.experts.l4p_training.LossWeights`), ``optim``
(:class:`~rgpt4d_core.train.optim.OptimConfig`), ``loop``, and the sections every training job shares
(:mod:`rgpt4d_core.train.job_sections`): ``scaling`` (Ray Train workers), ``run`` (name, storage: re-submitting
resumes; Ray; forwarded env) and ``mlflow``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rgpt4d_core.experts.l4p_training import LossWeights
from rgpt4d_core.synth.config import SynthConfig
from rgpt4d_core.train.job_sections import MLflowSection, RunSection, WorkerScaling
from rgpt4d_core.train.optim import OptimConfig


def _expert_world() -> SynthConfig:
    # the demo world's distribution (conf/synth/demo.yaml) with another seed: the expert never sees demo scenes
    return SynthConfig(seed=1000, num_scenes=64, width=112, height=112, fps_choices=(10, 12, 16), min_duration_s=2.0,
                       max_duration_s=4.0, max_frames=64, min_objects=2, max_objects=6)  # fmt: skip


@dataclass(frozen=True)
class DataSection:
    """Attributes:
    root: the synthetic world to train on (local path or ``s3://``).
    generate: generate ``synth`` at ``root`` when it has no ``dataset.json``.
    synth: generator config used when generating.
    windows_per_video: 16-frame examples per training video (the first is the uniform whole-video clip).
    max_videos: use at most this many training videos (0 = all); for smoke runs.
    workers: parallel Ray Data tasks for generation and example building.
    """

    root: str = "data/synth_expert"
    generate: bool = True
    synth: SynthConfig = field(default_factory=_expert_world)
    windows_per_video: int = 4
    max_videos: int = 0
    workers: int = 2


@dataclass(frozen=True)
class LoopSection:
    """Attributes:
    steps: optimiser steps (each worker does all of them on its shard; DDP averages gradients).
    batch_size: examples per worker per step.
    checkpoint_every_steps: report a checkpoint every N steps (and at the end).
    log_every_steps: MLflow logging period.
    flip_prob: probability of a left-right flip of a batch.
    seed: model init and augmentation seed.
    torch_threads: intra-op threads per worker.
    """

    steps: int = 300
    batch_size: int = 2
    checkpoint_every_steps: int = 100
    log_every_steps: int = 10
    flip_prob: float = 0.5
    seed: int = 0
    torch_threads: int = 1


@dataclass(frozen=True)
class PretrainExpertJob:
    """The whole job; ``output`` is the safetensors file the frozen expert loads (``conf/expert/l4p_tiny.yaml``)."""

    preset: str = "l4p_tiny"
    init_checkpoint: str | None = None
    output: str = "runs/expert/l4p_tiny.safetensors"
    data: DataSection = field(default_factory=DataSection)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=1e-4, warmup_ratio=0.05,
                                                                  min_lr_ratio=0.05, max_grad_norm=1.0))  # fmt: skip
    loop: LoopSection = field(default_factory=LoopSection)
    scaling: WorkerScaling = field(default_factory=WorkerScaling)
    run: RunSection = field(default_factory=lambda: RunSection(name="pretrain_expert", storage_path="runs"))
    mlflow: MLflowSection = field(default_factory=lambda: MLflowSection(experiment="rgpt4d-expert"))
