"""The input spec: what one model input is made of (DESIGN.md §4 "Input spec"), defined once.

:class:`InputSpec` holds the frames per clip, the frame size, whether the Set-of-Marks image is prepended, whether
the duration sentence is in the prompt, and the decode limits (:class:`DecodeLimits`). A distillation writes the
spec it trained with into its exported checkpoint (``input_spec.json`` beside ``config.json``,
:func:`write_input_spec`); evaluation and serving read it back (:func:`read_input_spec`) and apply only the
settings a job sets explicitly (:func:`apply_overrides`, each override logged). A checkpoint without the file (one
written before the spec existed, or an untrained one) gets the defaults below, which are the values eval and serve
used before.

Precompute's sampling must give the expert the frames it takes: :func:`check_expert_frames` fails on the driver
before any video is decoded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rgpt4d_core.video.limits import DecodeConfig

log = logging.getLogger(__name__)

#: file of the input spec in an exported checkpoint (beside the NVILA ``config.json``)
INPUT_SPEC_FILE = "input_spec.json"
#: version tag written into :data:`INPUT_SPEC_FILE`
INPUT_SPEC_FORMAT = "rgpt4d.input_spec/1"


@dataclass(frozen=True)
class DecodeLimits:
    """What decoding one video of a request may cost, and how short videos are handled.

    Attributes:
        max_file_bytes: largest video file in bytes (``too_large``).
        max_pixels_per_frame: largest source frame ``H*W`` in pixels (``too_large``).
        max_duration_s: longest video in seconds (``too_long``).
        max_source_frames: most frames in the source video (``too_long``).
        timeout_s: wall-clock budget for decoding one video, seconds (``timeout``).
        allow_repeats: a video with fewer frames than ``num_frames`` repeats frames (VILA's behaviour) instead of
            failing with ``too_few_frames``.
    """

    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels_per_frame: int = 1920 * 1080
    max_duration_s: float = 600.0
    max_source_frames: int = 36_000
    timeout_s: float = 30.0
    allow_repeats: bool = True


@dataclass(frozen=True)
class InputSpec:
    """The input a model was trained on, and is therefore served and evaluated with.

    Attributes:
        num_frames: frames sampled uniformly per video (paper protocol: 16).
        frame_size: the vision tower's input side ``S`` in pixels (frames are resized to ``S x S``); ``None`` = the
            checkpoint's ``vision.image_size``.
        som_image: the Set-of-Marks image (frame 1 with the region boxes) is prepended to the video.
        duration_sentence: the prompt says "These images are uniformly sampled from a video of X seconds."
        decode: the limits of one decode.
    """

    num_frames: int = 16
    frame_size: int | None = None
    som_image: bool = True
    duration_sentence: bool = True
    decode: DecodeLimits = field(default_factory=DecodeLimits)

    def __post_init__(self) -> None:
        if self.num_frames <= 0:
            raise ValueError(f"input spec: num_frames must be positive, got {self.num_frames}")

    def decode_config(self) -> DecodeConfig:
        """The :class:`DecodeConfig` of one video under this spec (source size kept; the model resizes)."""
        return DecodeConfig(num_frames=self.num_frames, **dataclasses.asdict(self.decode))  # same field names

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """The spec of ``data`` (as :meth:`to_dict` writes it); missing keys take the defaults, unknown keys raise."""
        data = dict(data)
        decode = dict(data.pop("decode", None) or {})
        _check_keys(data, cls, "input spec")
        _check_keys(decode, DecodeLimits, "input spec decode")
        return cls(**data, decode=DecodeLimits(**decode))


def _check_keys(data: Mapping[str, Any], cls: type, where: str) -> None:
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")


def write_input_spec(checkpoint: str | Path, spec: InputSpec) -> Path:
    """Write ``spec`` into the checkpoint directory ``checkpoint``; returns the file's path."""
    path = Path(checkpoint) / INPUT_SPEC_FILE
    path.write_text(
        json.dumps({"format": INPUT_SPEC_FORMAT, **spec.to_dict()}, indent=2, sort_keys=True) + "\n"
    )
    return path


def read_input_spec(checkpoint: str | Path) -> InputSpec | None:
    """The spec saved in the checkpoint directory ``checkpoint``, or ``None`` when it has none (an older export)."""
    path = Path(checkpoint) / INPUT_SPEC_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    fmt = data.pop("format", None)
    if fmt != INPUT_SPEC_FORMAT:
        raise ValueError(f"{path}: format {fmt!r}, expected {INPUT_SPEC_FORMAT!r}")
    return InputSpec.from_dict(data)


def apply_overrides(spec: InputSpec, overrides: Mapping[str, Any], source: str = "") -> InputSpec:
    """``spec`` with each setting of ``overrides`` that is not ``None`` replacing its own (keys are
    :class:`InputSpec` fields, or :class:`DecodeLimits` fields for the decode limits); every change is logged."""
    top = {f.name for f in dataclasses.fields(InputSpec)} - {"decode"}
    limits = {f.name for f in dataclasses.fields(DecodeLimits)}
    changed: dict[str, Any] = {}
    decode_changed: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in top:
            old, changed[key] = getattr(spec, key), value
        elif key in limits:
            old, decode_changed[key] = getattr(spec.decode, key), value
        else:
            raise ValueError(f"input spec: no setting {key!r}")
        if old != value:
            log.info("input spec: %s=%r overrides %r of %s", key, value, old, source or "the checkpoint")
    if decode_changed:
        changed["decode"] = dataclasses.replace(spec.decode, **decode_changed)
    return dataclasses.replace(spec, **changed) if changed else spec


def checkpoint_input_spec(checkpoint: str | Path, overrides: Mapping[str, Any] | None = None) -> InputSpec:
    """The input spec to run ``checkpoint`` with: its saved spec (the defaults when it has none), then
    ``overrides`` (``None`` values ignored; see :func:`apply_overrides`)."""
    saved = read_input_spec(checkpoint) if checkpoint else None
    if saved is None and checkpoint:
        log.info("input spec: %s has no %s, using the defaults", checkpoint, INPUT_SPEC_FILE)
    source = f"{checkpoint}/{INPUT_SPEC_FILE}" if saved is not None else "the default input spec"
    return apply_overrides(saved or InputSpec(), overrides or {}, source)


def check_expert_frames(sampling_frames: int, expert_name: str, expert_frames: int) -> None:
    """Raise when a clip of ``sampling_frames`` frames cannot feed an expert that takes ``expert_frames``."""
    if sampling_frames != expert_frames:
        raise ValueError(
            f"sampling.num_frames={sampling_frames} but the expert {expert_name!r} takes {expert_frames} frames per "
            f"clip: set sampling.num_frames={expert_frames} (or configure the expert for {sampling_frames})"
        )
