"""How a :class:`~rgpt4d_core.serve.engine.VQAEngine` loads, decodes and generates: :class:`EngineConfig` (the
``engine:`` section of the serve and evaluate jobs) and the resolution of its device and dtype."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rgpt4d_core.inputs import InputSpec, checkpoint_input_spec
from rgpt4d_core.video.decode import DecodeConfig


@dataclass(frozen=True)
class EngineConfig:
    """How the engine loads its checkpoint, decodes videos and generates.

    The input settings (``num_frames``, ``include_duration`` and the decode limits) default to ``None``: the
    checkpoint's :class:`~rgpt4d_core.inputs.InputSpec` (``input_spec.json``, written by the distillation that
    trained it; the spec's defaults for a checkpoint without one). A value set here overrides the checkpoint's, and
    the override is logged (:meth:`input_spec`).

    Attributes:
        checkpoint: path of a student checkpoint in the NVILA layout (tokenizer in ``llm/``).
        model_id: name reported to clients; ``""`` = the id recorded in the checkpoint (a trained export is
            ``<run name>-step<N>``), else its directory's name.
        num_frames: frames sampled uniformly per video (spec default, the paper's protocol: 16).
        include_duration: add "These images are uniformly sampled from a video of X seconds." (spec default: on;
            requests may override).
        max_new_tokens: greedy decoding budget per request (an MCQ letter needs 1-2).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``/``"cuda:N"``.
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
        torch_threads: intra-op CPU threads (``0`` leaves PyTorch's default).
        decode_threads: videos of one batch decoded in parallel by :meth:`VQAEngine.answer`.
        max_file_bytes: largest video file in bytes (spec default 64 MiB).
        max_pixels_per_frame: largest source frame (``H*W``; spec default 1920x1080).
        max_duration_s: longest video in seconds (spec default 600).
        max_source_frames: most frames in the source video (spec default 36000).
        decode_timeout_s: wall-clock budget for decoding one video, seconds (spec default 30).
        allow_repeats: repeat frames of videos shorter than ``num_frames`` (spec default: on).
        show_labels: write ``"k:label"`` in Set-of-Marks tags when regions carry labels.
    """

    checkpoint: str = ""
    model_id: str = ""
    num_frames: int | None = None
    include_duration: bool | None = None
    max_new_tokens: int = 8
    device: str = "auto"
    dtype: str = "auto"
    torch_threads: int = 0
    decode_threads: int = 4
    max_file_bytes: int | None = None
    max_pixels_per_frame: int | None = None
    max_duration_s: float | None = None
    max_source_frames: int | None = None
    decode_timeout_s: float | None = None
    allow_repeats: bool | None = None
    show_labels: bool = False

    def input_overrides(self) -> dict[str, Any]:
        """The input settings this config sets explicitly, by :class:`InputSpec` / :class:`DecodeLimits` name."""
        named = {
            "num_frames": self.num_frames,
            "duration_sentence": self.include_duration,
            "max_file_bytes": self.max_file_bytes,
            "max_pixels_per_frame": self.max_pixels_per_frame,
            "max_duration_s": self.max_duration_s,
            "max_source_frames": self.max_source_frames,
            "timeout_s": self.decode_timeout_s,
            "allow_repeats": self.allow_repeats,
        }
        return {k: v for k, v in named.items() if v is not None}

    def input_spec(self) -> InputSpec:
        """The checkpoint's input spec with this config's explicit settings applied (each override logged)."""
        return checkpoint_input_spec(self.checkpoint, self.input_overrides())

    def decode_config(self) -> DecodeConfig:
        """The :class:`DecodeConfig` of :meth:`input_spec`."""
        return self.input_spec().decode_config()


def pick_device(name: str) -> torch.device:
    """``engine.device`` resolved: ``"auto"`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """``engine.dtype`` resolved: ``"auto"`` is bfloat16 on CUDA, float32 on CPU; an unknown name raises."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"engine.dtype: {name!r} is not one of {['auto', *dtypes]}")
    return dtypes[name]
