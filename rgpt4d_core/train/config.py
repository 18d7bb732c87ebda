"""``DistillJobConfig``: the typed configuration of the P4D distillation job (``pipelines/distill.py``).

Loaded with :func:`rgpt4d_core.config.load` from the defaults below ⊕ ``conf/distill/*.yaml`` ⊕ ``key=value``
overrides. Sections: ``data`` (shards), ``student`` (preset, init weights, what trains), ``expert`` (which frozen
heads, :class:`~rgpt4d_core.experts.config.ExpertConfig`), ``losses`` (per-term weights), ``ablation`` (P4D
variant, TPE), ``optim``, ``loop`` (epochs, batches, checkpoints), ``scaling`` (Ray Train workers), ``run``
(name, storage), ``mlflow`` and ``debug`` (fault injection for tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from rgpt4d_core.config import OMIT_AT_DEFAULT
from rgpt4d_core.experts.config import ExpertConfig
from rgpt4d_core.train.job_sections import MLflowSection, RunSection, WorkerScaling
from rgpt4d_core.train.optim import OptimConfig

#: P4D variants of the paper's ablations ([P] Tab. 5/6): which distillation terms are on
ABLATIONS: dict[str, tuple[bool, bool]] = {
    "sft_only": (False, False),  # (latent distillation, explicit distillation)
    "ld_only": (True, False),
    "ed_only": (False, True),
    "ld_ed": (True, True),
}
TARGET_MODES: tuple[str, ...] = ("shards", "online")
STRATEGIES: tuple[str, ...] = ("auto", "ddp", "fsdp")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


@dataclass
class DataConfig:
    """Attributes:
    shards: shard directory written by ``pipelines/precompute.py`` (local path or ``s3://``).
    split: train on rows of this split only (``""`` = every split).
    max_samples: use at most this many ok rows (0 = all); for smoke runs.
    targets: ``"shards"`` (expert targets read from the shards) or ``"online"`` (the full expert runs inside each
        worker on the shard's frames; for ablations and checks only, it is far slower).
    prefetch_batches: micro-batches Ray Data prepares ahead of each worker.
    som_image: prepend the Set-of-Marks image (frame 1 with the region boxes) to each prompt, as R4D-Bench does.
    duration_prompt: add the "uniformly sampled from a video of X seconds" sentence ([P] Tab. 6 prompt trick).
    shuffle_buffer: question rows in each worker's local shuffle buffer (0 = shard order). The question table is
        clip-sorted (a video's questions side by side), so without it a micro-batch is several questions about one
        video; with it each micro-batch is drawn at random from a sliding window of about
        ``shuffle_buffer / questions_per_clip`` consecutive clips of the stream (the draw changes every epoch
        with the seed; the clip order itself is the files' order). Question rows are a few hundred bytes (clips
        are joined after the buffer), so a large buffer is cheap; the clips it spans must fit ``clip_cache_mb``
        or they are re-read (``data/clip_cache_hit_rate``): RAM per worker ≈ window x decoded clip. The buffer is
        seeded from ``loop.seed`` and the epoch (:func:`shuffle_seed`), the stream is read in order, and each of
        the ``W`` workers keeps every ``W``-th row of the same shuffled stream, so a run is repeatable bit for bit
        with any number of workers.
    clip_cache_mb: MiB of decoded clips (frames + targets) each worker keeps (``ClipStore``); at the real
        L4P shapes a clip is ≈ 39 MB decoded (29.5 MB targets + 16 x 448 x 448 x 3 frames), so 1 GiB holds ≈ 26.
    distill_only_per_micro_batch: distillation-only samples appended to every micro-batch (0 = none): one question
        row per clip of ``split`` (every usable clip, those beyond ``max_samples`` included), drawn in a seeded
        order (:mod:`rgpt4d_core.train.distill_only`), fed without their answers. They add L_LD / L_ED (and region
        ED) on clips whose questions the run does not supervise, the teacher labelling unlabelled video; the SFT
        term sees the same questions as without them. Needs a distillation term. Left out of the job's YAML
        while 0, so earlier runs keep their reuse keys.
    """

    shards: str = MISSING
    split: str = "train"
    max_samples: int = 0
    targets: str = "shards"
    prefetch_batches: int = 1
    som_image: bool = True
    duration_prompt: bool = False
    shuffle_buffer: int = 256
    clip_cache_mb: int = 1024
    distill_only_per_micro_batch: int = field(default=0, metadata={OMIT_AT_DEFAULT: True})


@dataclass
class StudentSection:
    """Attributes:
    preset: student preset (``"tiny"``, ``"nvila_lite_8b"``).
    init_checkpoint: NVILA-layout directory to start from (``None`` = seeded random init of the preset).
    train_vision: train SigLIP (paper: frozen).
    train_projector: train the projector E_P (paper: trained).
    train_llm: train the LLM (paper: trained, full fine-tuning).
    train_decoder: train the 4D perception decoder D_4DP (paper: trained; unused and frozen under ``sft_only``).
    lora_rank: LoRA rank for the LLM (0 = full fine-tuning, the paper's setting). Not implemented: must be 0.
    answer_style: ``"letter"`` (supervise the option letter, R4D-Bench's format) or ``"option"`` (supervise the
        option's text; inference scores each option's likelihood); ``None`` keeps the preset's / checkpoint's.
        Recorded in the exported checkpoint, so evaluation and Serve answer the way the student was trained.
    decoder_layer: which LLM hidden state D_4DP reads (``DecoderConfig.hidden_layer``: 0 = the input embeddings,
        i.e. the projected visual tokens, ``k`` = block ``k``'s output, ``-1`` = the last layer after the final
        norm); ``None`` keeps the preset's (the released code's last layer). Left out of the job's YAML while
        ``None``, so earlier runs keep their reuse keys.
    """

    preset: str = "tiny"
    init_checkpoint: str | None = None
    train_vision: bool = False
    train_projector: bool = True
    train_llm: bool = True
    train_decoder: bool = True
    lora_rank: int = 0
    answer_style: str | None = None
    decoder_layer: int | None = field(default=None, metadata={OMIT_AT_DEFAULT: True})


@dataclass
class LossSection:
    """Per-term loss weights (paper Eq. A8 with the released code's tuned weights, paper-spec §2.5).

    Attributes:
        preset: preset of ``rgpt4d_core.losses.LOSS_PRESETS`` (``"released_code"``: the code's tuned weights,
            ``"paper"``: Eq. A8's α/β·λ, ``"normalized"``: standardised targets, every weight 1); the fields below,
            when not ``None``, override single weights.
        ld: weight of L_LD.
        ed: weight of the depth, flow and dynamic-mask L_ED terms at once (the per-task fields override it).
        depth, flow_2d_backward, dyn_mask, camray: weights of the L_ED terms.
        normalize: standardise the targets per channel (``rgpt4d_core/losses/normalise.py``; statistics of the
            training shards, computed by the job's driver); ``None`` keeps the preset's choice.
        region: weight of region-level explicit distillation (``rgpt4d_core/train/region_distill.py``; needs the
            preset's region tracks, builds their dense head; independent of ``ablation.variant``, an option of the
            tiny recipe that 4D-RGPT does not have). ``None`` = off, left out of the job's YAML.
    """

    preset: str = "released_code"
    ld: float | None = None
    ed: float | None = None
    depth: float | None = None
    flow_2d_backward: float | None = None
    dyn_mask: float | None = None
    camray: float | None = None
    normalize: bool | None = None
    region: float | None = field(default=None, metadata={OMIT_AT_DEFAULT: True})


@dataclass
class AblationConfig:
    """Attributes:
    variant: one of :data:`ABLATIONS` (``"ld_ed"`` = full P4D).
    tpe: timestamp positional encoding on/off.
    """

    variant: str = "ld_ed"
    tpe: bool = True

    @property
    def latent_distillation(self) -> bool:
        return ABLATIONS[self.variant][0]

    @property
    def explicit_distillation(self) -> bool:
        return ABLATIONS[self.variant][1]


@dataclass
class LoopConfig:
    """Attributes:
    epochs: passes over the shards (paper: 5).
    global_batch_size: samples per optimiser step over all workers (paper: 1024); reached by gradient accumulation:
        ``global = micro_batch_size * workers * accumulation`` must hold exactly.
    micro_batch_size: samples per forward pass per worker.
    max_steps: stop after this many optimiser steps (0 = ``epochs`` full passes).
    checkpoint_every_steps: report a checkpoint every N optimiser steps (and at every epoch end); 0 = epoch ends only.
    num_checkpoints_to_keep: how many checkpoints Ray Train keeps.
    log_every_steps: MLflow logging period (optimiser steps).
    seed: seed of model init, data order and dropout.
    torch_threads: intra-op threads per worker (0 = leave torch's default).
    """

    epochs: int = 1
    global_batch_size: int = 8
    micro_batch_size: int = 2
    max_steps: int = 0
    checkpoint_every_steps: int = 0
    num_checkpoints_to_keep: int = 2
    log_every_steps: int = 1
    seed: int = 0
    torch_threads: int = 0


@dataclass
class ScalingSection(WorkerScaling):
    """:class:`~rgpt4d_core.train.job_sections.WorkerScaling` and how the student is spread over it. Attributes:
    use_gpu: one GPU per worker.
    strategy: ``"ddp"``, ``"fsdp"`` (FSDP2 ``fully_shard``) or ``"auto"`` (FSDP2 on GPUs, DDP on CPU).
    precision: ``"bf16"`` mixed precision, ``"fp32"``, or ``"auto"`` (bf16 on GPUs).
    activation_checkpointing: recompute LLM layer activations in backward (GPU memory for compute).
    find_unused_parameters: DDP flag for students whose trainable parts can be skipped by a batch.
    """

    use_gpu: bool = False
    strategy: str = "auto"
    precision: str = "auto"
    activation_checkpointing: bool = False
    find_unused_parameters: bool = False

    def resolved_strategy(self) -> str:
        return ("fsdp" if self.use_gpu else "ddp") if self.strategy == "auto" else self.strategy

    def resolved_precision(self) -> str:
        return ("bf16" if self.use_gpu else "fp32") if self.precision == "auto" else self.precision


@dataclass
class DistillMLflowSection(MLflowSection):
    """:class:`~rgpt4d_core.train.job_sections.MLflowSection` and: registered_model_name: name the final inference
    checkpoint is registered under (``""`` = do not register); parent_run_id: nest the job's run under this MLflow
    run (``""`` = top level), e.g. an experiment's parent run (``pipelines/ablate.py``); set when the run is created.
    """

    experiment: str = "rgpt4d-distill"
    registered_model_name: str = "rgpt4d-student"
    parent_run_id: str = ""


@dataclass
class DebugSection:
    """Test hooks. Attributes:
    fail_at_step: rank ``fail_rank`` raises right after optimiser step N on the job's first attempt (-1 = never).
    fail_rank: which worker raises.
    step_sleep_ms: every rank sleeps this long after each optimiser step, a slower step simulated (0 = never;
        ``bench/input_wait.py`` uses it to see whether the input keeps up with a step as slow as a real one).
    """

    fail_at_step: int = -1
    fail_rank: int = 1
    step_sleep_ms: float = 0.0


@dataclass
class DistillJobConfig:
    """The whole distillation job (see module docstring for the sections)."""

    data: DataConfig = field(default_factory=DataConfig)
    student: StudentSection = field(default_factory=StudentSection)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    losses: LossSection = field(default_factory=LossSection)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    run: RunSection = field(default_factory=lambda: RunSection(name="distill"))
    mlflow: DistillMLflowSection = field(default_factory=DistillMLflowSection)
    debug: DebugSection = field(default_factory=DebugSection)

    def validate(self) -> None:
        """Cross-field checks; raises ``ValueError`` naming the offending key."""
        checks = [
            (self.data.targets in TARGET_MODES, f"data.targets must be one of {TARGET_MODES}"),
            (self.ablation.variant in ABLATIONS, f"ablation.variant must be one of {tuple(ABLATIONS)}"),
            (self.scaling.strategy in STRATEGIES, f"scaling.strategy must be one of {STRATEGIES}"),
            (self.scaling.precision in PRECISIONS, f"scaling.precision must be one of {PRECISIONS}"),
            (self.scaling.num_workers >= 1, "scaling.num_workers must be >= 1"),
            (self.loop.micro_batch_size >= 1, "loop.micro_batch_size must be >= 1"),
            (self.loop.epochs >= 1, "loop.epochs must be >= 1"),
            (self.data.distill_only_per_micro_batch >= 0, "data.distill_only_per_micro_batch must be >= 0"),
            (self.student.lora_rank == 0, "student.lora_rank > 0 (LoRA) is not implemented; the paper fine-tunes fully"),
            (
                self.scaling.resolved_strategy() != "fsdp" or self.scaling.use_gpu,
                "scaling.strategy=fsdp needs scaling.use_gpu=true (FSDP2 + NCCL); use ddp on CPU",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.data.distill_only_per_micro_batch and not self.distills():
            raise ValueError(
                "data.distill_only_per_micro_batch adds samples without answers, which only the distillation terms "
                f"use; ablation.variant={self.ablation.variant} without losses.region has none"
            )
        self.accumulation_steps()

    def distills(self) -> bool:
        """Whether any distillation term is on: L_LD, L_ED (``ablation.variant``) or region ED (``losses.region``)."""
        ablation = self.ablation
        return ablation.latent_distillation or ablation.explicit_distillation or bool(self.losses.region)

    def accumulation_steps(self) -> int:
        """Micro-batches per worker per optimiser step (``global / (micro * workers)``, must divide exactly)."""
        per_pass = self.loop.micro_batch_size * self.scaling.num_workers
        if self.loop.global_batch_size % per_pass:
            raise ValueError(
                f"loop.global_batch_size={self.loop.global_batch_size} is not a multiple of "
                f"loop.micro_batch_size ({self.loop.micro_batch_size}) x scaling.num_workers ({self.scaling.num_workers})"
            )
        return self.loop.global_batch_size // per_pass
