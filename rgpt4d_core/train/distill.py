"""What the distillation job trains, framework-free: the student, the frozen heads, the collator and the loss.

:func:`build_setup` turns a :class:`~rgpt4d_core.train.config.DistillJobConfig` plus the shard set's expert spec
into a :class:`DistillSetup`; a Ray Train worker, the single-process benchmark loop and a notebook all use it.

Trainable / frozen (paper-spec §4, "Tune-P+LLM"): projector + LLM + D_4DP train, SigLIP and the expert heads are
frozen; each switch is in ``student.*``. Only the expert's *heads* are loaded (the latents come from the shards);
``data.targets=online`` instead loads the whole expert and computes targets inside the worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from rgpt4d_core.experts.base import Expert, ExpertSpec
from rgpt4d_core.inputs import InputSpec, write_input_spec
from rgpt4d_core.losses import TargetNorm
from rgpt4d_core.model.checkpoint import load_student, save_student
from rgpt4d_core.model.presets import student_config
from rgpt4d_core.model.student import Student
from rgpt4d_core.model.tpe import TPEConfig
from rgpt4d_core.sample_prep import SampleFormat
from rgpt4d_core.shards.reader import TrainingBatch
from rgpt4d_core.text.tokenizer import TOKENIZERS, TextTokenizer
from rgpt4d_core.train.collate import Collator, StudentBatch
from rgpt4d_core.train.config import DistillJobConfig
from rgpt4d_core.train.step import DistillLoss
from rgpt4d_core.types import Clip


@dataclass
class DistillSetup:
    """Everything one training process needs besides data and optimiser.

    Attributes:
        student: the student (with D_4DP unless ``sft_only``), on ``device``, trainable flags set.
        heads: the expert's frozen dense heads (``None`` unless explicit distillation is on), on ``device``.
        tokenizer: the student's tokenizer (exported with the inference checkpoint).
        collate: ``TrainingBatch -> StudentBatch``.
        loss: the P4D loss (``LossFn`` for :func:`rgpt4d_core.train.step.optimizer_step`).
        online_expert: the full expert for ``data.targets=online`` (else ``None``).
    """

    student: Student
    heads: nn.Module | None
    tokenizer: TextTokenizer
    collate: Collator
    loss: DistillLoss
    online_expert: Expert | None = None

    def prepare(self, batch: TrainingBatch, device: torch.device,
                distill_only: TrainingBatch | None = None) -> StudentBatch:  # fmt: skip
        """Collate a shard batch (and the distillation-only rows that follow it, without answers) onto ``device``;
        in ``online`` mode replace their targets by the expert's."""
        if self.online_expert is not None:
            batch = online_targets(self.online_expert, batch)
            distill_only = None if distill_only is None else online_targets(self.online_expert, distill_only)
        return self.collate(batch, distill_only).to(device)


def online_targets(expert: Expert, batch: TrainingBatch) -> TrainingBatch:
    """``batch`` with its expert targets recomputed by ``expert`` on its frames (float16, shard layouts)."""
    clips = [
        Clip(
            frames=batch.frames[i],
            timestamps_s=batch.timestamps_s[i].astype(np.float64),
            frame_indices=np.arange(batch.frames.shape[1], dtype=np.int64),
            fps=float(batch.frames.shape[1] / max(float(batch.duration_s[i]), 1e-6)),
            num_source_frames=int(batch.frames.shape[1]),
            uri=batch.sample_ids[i],
        )
        for i in range(len(batch))
    ]
    produced = expert.encode(clips)
    targets: dict[str, np.ndarray | None] = {}
    for name, old in batch.targets.items():
        values = [getattr(t, name) for t in produced]
        targets[name] = None if old is None or any(v is None for v in values) else np.stack(values).astype(np.float16)
    return dataclasses.replace(batch, targets=targets)


def build_student(cfg: DistillJobConfig, expert_spec: ExpertSpec | None) -> Student:
    """The student of ``cfg.student`` (preset or ``init_checkpoint``), D_4DP sized for ``expert_spec``.

    D_4DP is built only when a distillation term is on (``sft_only`` trains no decoder). ``ablation.tpe=false``
    switches timestamp encoding off.
    """
    needs_decoder = cfg.ablation.latent_distillation or cfg.ablation.explicit_distillation
    spec = expert_spec if needs_decoder else None
    if cfg.student.init_checkpoint:
        base = load_student(cfg.student.init_checkpoint)
        scfg = _student_overrides(base.cfg, cfg)
        student = Student(scfg, spec, vision=base.vision, projector=base.projector, llm=base.llm)
        student.adopt_region_modules(base)
    else:
        scfg = _student_overrides(student_config(cfg.student.preset), cfg)
        student = Student(scfg, spec)
    if needs_decoder and student.decoder is None:
        raise ValueError(
            f"ablation.variant={cfg.ablation.variant!r} needs D_4DP but the expert spec has no latents "
            f"({expert_spec.name if expert_spec else None})"
        )
    set_trainable(student, cfg)
    return student


def _student_overrides(scfg: Any, cfg: DistillJobConfig) -> Any:
    vision = dataclasses.replace(scfg.vision, frozen=not cfg.student.train_vision)
    tpe = scfg.tpe if cfg.ablation.tpe else TPEConfig(placement="off", base=scfg.tpe.base)
    if cfg.ablation.tpe and tpe.placement == "off":
        tpe = TPEConfig(placement="pre_projector", base=scfg.tpe.base)
    style = cfg.student.answer_style or scfg.answer_style
    decoder = scfg.decoder
    layer = cfg.student.decoder_layer
    if layer is not None:
        if not -1 <= layer <= scfg.llm.num_layers:
            raise ValueError(
                f"student.decoder_layer={layer} is not a hidden state of a {scfg.llm.num_layers}-layer LLM "
                f"(0..{scfg.llm.num_layers}, or -1 for the last layer after the final norm)"
            )
        decoder = dataclasses.replace(decoder, hidden_layer=layer)
    tracks = scfg.region_tracks
    if cfg.losses.region:
        if not tracks.enabled:
            raise ValueError("losses.region (region-level distillation) needs a student preset with region tracks")
        tracks = dataclasses.replace(tracks, dense_head=True)
    return dataclasses.replace(
        scfg, vision=vision, tpe=tpe, answer_style=style, decoder=decoder, region_tracks=tracks
    )


def set_trainable(student: Student, cfg: DistillJobConfig) -> None:
    """Apply ``student.train_*``: ``requires_grad`` per part (vision, projector, LLM, decoder)."""
    parts: Mapping[str, tuple[nn.Module | None, bool]] = {
        "vision": (student.vision, cfg.student.train_vision),
        "projector": (student.projector, cfg.student.train_projector),
        "llm": (student.llm, cfg.student.train_llm),
        "decoder": (student.decoder, cfg.student.train_decoder),
    }
    for module, flag in parts.values():
        if module is not None:
            module.requires_grad_(flag)
    if not any(p.requires_grad for p in student.parameters()):
        raise ValueError("student.train_* leave nothing to train")


def build_heads(cfg: DistillJobConfig, device: torch.device) -> nn.Module | None:
    """The expert's frozen dense heads only (no encoder), from ``expert.checkpoint`` (``None`` without L_ED)."""
    if not cfg.ablation.explicit_distillation:
        return None
    if cfg.expert.name != "l4p":
        raise ValueError(f"expert {cfg.expert.name!r} has no dense heads; L_ED needs expert.name=l4p")
    from rgpt4d_core.experts.l4p import build_frozen_heads

    heads_cfg = dataclasses.replace(cfg.expert, device=str(device), dtype="float32")
    return build_frozen_heads(heads_cfg)


def build_setup(cfg: DistillJobConfig, expert_spec: ExpertSpec | None, device: torch.device,
                norm: TargetNorm | None = None) -> DistillSetup:  # fmt: skip
    """Student + heads + collator + loss for one training process, on ``device`` (seeded by ``loop.seed``);
    ``norm``: the targets' statistics, for a loss that standardises them."""
    torch.manual_seed(cfg.loop.seed)
    student = build_student(cfg, expert_spec).to(device)
    heads = build_heads(cfg, device)
    llm_dir = Path(cfg.student.init_checkpoint or "") / "llm"
    if cfg.student.init_checkpoint and _has_tokenizer(llm_dir):
        tokenizer = TextTokenizer.load(llm_dir)
    else:
        build = cast(Callable[[], TextTokenizer], TOKENIZERS[student.cfg.tokenizer])
        tokenizer = build()
    sample_format = SampleFormat.for_student(
        tokenizer, student.cfg, som_image=cfg.data.som_image, duration_sentence=cfg.data.duration_prompt
    )
    collate = Collator(sample_format, student.tokens_per_frame)
    online = None
    if cfg.data.targets == "online":
        from rgpt4d_core.experts.registry import build_expert

        online = build_expert(dataclasses.replace(cfg.expert, device=str(device)))
    loss = DistillLoss.from_config(cfg, heads, norm, student.cfg.region_tracks)
    return DistillSetup(student, heads, tokenizer, collate, loss, online)


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in ("tokenizer.json", "rgpt4d_tokenizer.json"))


def export_inference_checkpoint(
    student: Student,
    tokenizer: TextTokenizer,
    directory: str | Path,
    model_id: str = "",
    input_spec: InputSpec | None = None,
) -> Path:
    """Write the inference checkpoint (NVILA layout, D_4DP stripped) of a trained, unwrapped ``student``.

    ``model_id`` is recorded in it as the name servers report (see :func:`trained_model_id`); ``input_spec`` (the
    input it was trained on, :func:`trained_input_spec`) as ``input_spec.json``, which eval and serve read back.
    """
    root = save_student(student, directory, tokenizer=tokenizer, include_decoder=False, model_id=model_id)
    if input_spec is not None:
        write_input_spec(root, input_spec)
    return root


def trained_input_spec(cfg: DistillJobConfig, num_frames: int, image_size: int) -> InputSpec:
    """The input a student of ``cfg`` trains on: clips of ``num_frames`` frames (the shards' sampling) resized to
    ``image_size`` pixels, the SoM image and duration sentence of ``cfg.data``, the default decode limits."""
    return InputSpec(
        num_frames=num_frames,
        frame_size=image_size,
        som_image=cfg.data.som_image,
        duration_sentence=cfg.data.duration_prompt,
    )


def trained_model_id(run_name: str, optimizer_step: int) -> str:
    """The id of a model trained by run ``run_name`` for ``optimizer_step`` steps, e.g. ``"p4d-tiny-step120"``."""
    return f"{run_name}-step{optimizer_step}"
