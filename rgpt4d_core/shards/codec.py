"""Encode one sample (QA item + sampled clip + expert targets) into a shard row, and decode it back.

A row is a ``dict`` keyed by the column constants of :mod:`rgpt4d_core.shards.schema`, with plain Python / bytes
values that ``pyarrow.Table.from_pylist(rows, schema=arrow_schema(...))`` accepts. Frames become JPEG or PNG
bytes (RGB, student resolution); tensors become little-endian ``float16`` bytes in C order whose shape is
checked against the shard set's :func:`~rgpt4d_core.shards.schema.tensor_shapes`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rgpt4d_core.experts.base import ExpertSpec, ExpertTargets
from rgpt4d_core.shards import schema as S
from rgpt4d_core.types import Clip, Region, VQAItem

#: the on-disk tensor dtype (little-endian half precision)
_FP16 = np.dtype("<f2")


class ShardCodecError(ValueError):
    """A value does not fit the shard contract; the message names the sample and column."""


def make_sample_id(video_uri: str, frame_indices: Sequence[int] | np.ndarray, question_id: str) -> str:
    """Deterministic sample id: sha256 over video URI, sampled frame indices and question id (32 hex chars).

    Args:
        video_uri: the source video's URI exactly as recorded in the row.
        frame_indices: int ``[T]`` sampled source-frame indices (empty when decoding failed).
        question_id: the QA item's id.
    """
    indices = ",".join(str(int(i)) for i in np.asarray(frame_indices, dtype=np.int64).reshape(-1))
    digest = hashlib.sha256(f"{video_uri}\n{indices}\n{question_id}".encode()).hexdigest()
    return digest[:32]


# ---- images --------------------------------------------------------------------------------------------------


def encode_frames(frames: np.ndarray, image_format: str = "jpeg", jpeg_quality: int = 90) -> list[bytes]:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` as one JPEG or PNG image each."""
    import cv2

    if image_format not in S.IMAGE_FORMATS:
        raise ShardCodecError(f"frames_format must be one of {S.IMAGE_FORMATS}, got {image_format!r}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ShardCodecError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
    ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]) if image_format == "jpeg" else (".png", [])
    out = []
    for i, frame in enumerate(frames):
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(frame[..., ::-1]), params)
        if not ok:
            raise ShardCodecError(f"could not encode frame {i} as {image_format}")
        out.append(buf.tobytes())
    return out


def decode_frames(images: Sequence[bytes]) -> np.ndarray:
    """Decode encoded images back to uint8 RGB ``[T, H, W, 3]``."""
    import cv2

    frames = []
    for i, data in enumerate(images):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ShardCodecError(f"frame {i} is not a decodable image")
        frames.append(bgr[..., ::-1])
    return np.ascontiguousarray(np.stack(frames)) if frames else np.zeros((0, 0, 0, 3), np.uint8)


# ---- tensors -------------------------------------------------------------------------------------------------


def tensor_to_bytes(value: np.ndarray, shape: tuple[int, ...] | None, column: str, sample_id: str) -> bytes:
    """``value`` as fp16 little-endian C-order bytes after checking its shape is ``shape``."""
    if shape is None:
        raise ShardCodecError(f"sample {sample_id}: column {column!r} is not provided by this shard set's expert")
    arr = np.asarray(value)
    if tuple(arr.shape) != tuple(shape):
        raise ShardCodecError(f"sample {sample_id}: column {column!r} has shape {arr.shape}, expected {tuple(shape)}")
    if not np.all(np.isfinite(arr)):
        raise ShardCodecError(f"sample {sample_id}: column {column!r} has non-finite values")
    return np.ascontiguousarray(arr, dtype=_FP16).tobytes()


def tensor_from_bytes(data: bytes, shape: tuple[int, ...], column: str = "?") -> np.ndarray:
    """fp16 ``ndarray`` of ``shape`` from the bytes of a tensor column (read-only view when possible)."""
    expected = int(np.prod(shape)) * _FP16.itemsize
    if len(data) != expected:
        raise ShardCodecError(f"column {column!r}: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=_FP16).reshape(shape)


# ---- rows ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSource:
    """Where a sample comes from: the QA item and its dataset context.

    Attributes:
        item: the QA item; ``item.video`` is the resolved video URI.
        split: dataset split name.
        scene_id: scene id from the QA manifest, if any.
    """

    item: VQAItem
    split: str
    scene_id: str | None = None


def _regions_value(regions: Sequence[Region]) -> list[dict[str, Any]]:
    return [
        {S.REGION_OBJ_ID: int(r.obj_id), S.REGION_BOX: [float(v) for v in r.box], S.REGION_LABEL: r.label}
        for r in regions
    ]


def _base_row(src: SampleSource, spec: ExpertSpec, frame_indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
    item = src.item
    row: dict[str, Any] = {c: None for c in S.COLUMNS_BY_NAME}
    row.update(
        {
            S.SAMPLE_ID: make_sample_id(item.video, frame_indices, item.id),
            S.VIDEO_URI: item.video,
            S.QUESTION_ID: item.id,
            S.SPLIT: src.split,
            S.SCENE_ID: src.scene_id,
            S.EXPERT_NAME: spec.name,
            S.EXPERT_REVISION: spec.revision,
            S.REGIONS: _regions_value(item.regions),
            S.TASK: item.task,
            S.QUESTION: item.question,
            S.OPTIONS: list(item.options),
            S.ANSWER: item.answer,
            S.SOM_IMAGE: item.som_image,
            S.DURATION_S: item.duration_s,
            S.FPS: item.fps,
        }
    )
    return row


def _clip_fields(row: dict[str, Any], clip: Clip) -> None:
    row[S.FPS] = float(clip.fps)
    row[S.NUM_SOURCE_FRAMES] = int(clip.num_source_frames)
    row[S.DURATION_S] = clip.duration_s
    row[S.FRAME_INDICES] = [int(i) for i in clip.frame_indices]
    row[S.TIMESTAMPS_S] = [float(t) for t in clip.timestamps_s]


def encode_sample(
    src: SampleSource,
    spec: ExpertSpec,
    clip: Clip,
    targets: ExpertTargets,
    shapes: Mapping[str, tuple[int, ...] | None],
    image_format: str = "jpeg",
    jpeg_quality: int = 90,
) -> dict[str, Any]:
    """A complete ``status == "ok"`` row.

    Args:
        src: the QA item and its context.
        spec: the expert that produced ``targets`` (provenance columns).
        clip: the sampled frames, uint8 ``[T, H, W, 3]`` at student resolution, with timestamps and indices.
        targets: the expert's targets for ``clip`` (layouts in ``experts/base.py``; any dtype, stored as fp16).
        shapes: the shard set's tensor shapes (``schema.tensor_shapes(spec)``).
        image_format: ``"jpeg"`` or ``"png"``.
        jpeg_quality: 1-100, used for JPEG.

    Raises:
        ShardCodecError: a tensor has the wrong shape or non-finite values, or a provided target is missing.
    """
    row = _base_row(src, spec, clip.frame_indices)
    sid = row[S.SAMPLE_ID]
    _clip_fields(row, clip)
    row[S.FRAMES] = encode_frames(clip.frames, image_format, jpeg_quality)
    row[S.FRAMES_FORMAT] = image_format
    row[S.FRAME_HEIGHT], row[S.FRAME_WIDTH] = int(clip.frames.shape[1]), int(clip.frames.shape[2])
    for column in S.TENSOR_COLUMNS:
        value = getattr(targets, column)
        if shapes.get(column) is None:
            continue
        if value is None:
            raise ShardCodecError(f"sample {sid}: expert {spec.name!r} should provide {column!r} but returned none")
        row[column] = tensor_to_bytes(value, shapes[column], column, sid)
    row[S.STATUS] = S.STATUS_OK
    return row


def encode_error(
    src: SampleSource, spec: ExpertSpec, reason: str, message: str, clip: Clip | None = None
) -> dict[str, Any]:
    """A ``status == "error"`` row: the QA fields and whatever sampling facts are known, no frames or tensors.

    Args:
        reason: short machine-readable reason (``"decode:corrupt"``, ``"qa:undefined_region"`` ...).
        message: human-readable detail naming the file/field at fault.
        clip: the decoded clip when the failure came later (its indices then enter the sample id).
    """
    row = _base_row(src, spec, clip.frame_indices if clip is not None else ())
    if clip is not None:
        _clip_fields(row, clip)
    row[S.STATUS] = S.STATUS_ERROR
    row[S.ERROR_REASON] = reason
    row[S.ERROR_MESSAGE] = message[:2000]
    return row


@dataclass(frozen=True)
class DecodedSample:
    """One shard row decoded back into project types.

    Attributes:
        sample_id: the row's id.
        source: the QA item (``item.video`` is the video URI) with split and scene id.
        status: ``"ok"`` or ``"error"``.
        error_reason: reason for an error row, else ``None``.
        error_message: detail for an error row, else ``None``.
        expert_name: provenance of the targets.
        expert_revision: provenance of the targets.
        clip: frames decoded from the stored images (uint8 ``[T, H, W, 3]``) with timestamps, or ``None``.
        targets: fp16 tensors of the row (``None`` where absent).
    """

    sample_id: str
    source: SampleSource
    status: str
    error_reason: str | None
    error_message: str | None
    expert_name: str
    expert_revision: str
    clip: Clip | None
    targets: ExpertTargets


def regions_from_value(value: Sequence[Mapping[str, Any]] | None) -> tuple[Region, ...]:
    """``Region`` tuple from the ``regions`` column value."""
    return tuple(
        Region(
            obj_id=int(r[S.REGION_OBJ_ID]),
            box=tuple(float(v) for v in r[S.REGION_BOX]),  # type: ignore[arg-type]
            label=r[S.REGION_LABEL],
        )
        for r in (value or ())
    )


def decode_row(row: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...] | None]) -> DecodedSample:
    """Decode a row (as produced by :func:`encode_sample` / read back with ``Table.to_pylist``)."""
    item = VQAItem(
        id=row[S.QUESTION_ID],
        video=row[S.VIDEO_URI],
        question=row[S.QUESTION],
        options=tuple(row[S.OPTIONS]),
        answer=row[S.ANSWER],
        task=row[S.TASK],
        som_image=row[S.SOM_IMAGE],
        regions=regions_from_value(row[S.REGIONS]),
        duration_s=row[S.DURATION_S],
        fps=row[S.FPS],
    )
    clip = None
    if row[S.FRAMES] is not None:
        clip = Clip(
            frames=decode_frames(row[S.FRAMES]),
            timestamps_s=np.asarray(row[S.TIMESTAMPS_S], dtype=np.float64),
            frame_indices=np.asarray(row[S.FRAME_INDICES], dtype=np.int64),
            fps=float(row[S.FPS]),
            num_source_frames=int(row[S.NUM_SOURCE_FRAMES]),
            uri=row[S.VIDEO_URI],
        )
    tensors: dict[str, np.ndarray | None] = {}
    for column in S.TENSOR_COLUMNS:
        data, shape = row.get(column), shapes.get(column)
        tensors[column] = None if data is None or shape is None else tensor_from_bytes(data, shape, column)
    return DecodedSample(
        sample_id=row[S.SAMPLE_ID],
        source=SampleSource(item=item, split=row[S.SPLIT], scene_id=row[S.SCENE_ID]),
        status=row[S.STATUS],
        error_reason=row[S.ERROR_REASON],
        error_message=row[S.ERROR_MESSAGE],
        expert_name=row[S.EXPERT_NAME],
        expert_revision=row[S.EXPERT_REVISION],
        clip=clip,
        targets=ExpertTargets(**tensors),
    )
