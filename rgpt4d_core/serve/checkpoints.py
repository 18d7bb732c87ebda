"""Checkpoint helpers of the engine: the tokenizer saved with a student checkpoint, and an untrained checkpoint
written for tests, demos and benches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch

from rgpt4d_core.model.checkpoint import save_student
from rgpt4d_core.model.presets import student_config
from rgpt4d_core.model.student import Student
from rgpt4d_core.text.tokenizer import TOKENIZERS, TextTokenizer


def load_tokenizer(checkpoint: str | Path) -> TextTokenizer:
    """The tokenizer saved with a checkpoint (``<root>/llm`` in the NVILA layout, or ``<root>`` itself)."""
    return TextTokenizer.load(checkpoint)


def write_random_checkpoint(
    path: str | Path, preset: str = "tiny", seed: int = 0, answer_style: str | None = None
) -> Path:
    """Save an untrained student of ``preset`` (fixed ``seed``; ``answer_style`` overrides the preset's) with its
    tokenizer: for tests, demos, benches."""
    cfg = student_config(preset)
    if answer_style is not None:
        cfg = dataclasses.replace(cfg, answer_style=answer_style)
    torch.manual_seed(seed)
    student = Student(cfg)
    builder = cast(Callable[[], TextTokenizer], TOKENIZERS[cfg.tokenizer])
    return save_student(
        student, path, tokenizer=builder(), include_decoder=False, model_id=f"{preset}-untrained-seed{seed}"
    )
