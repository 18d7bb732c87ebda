"""Rows of the two shard tables (schema v2): encode a clip row and question rows, decode a joined row back.

A row is a ``dict`` keyed by the column constants of :mod:`rgpt4d_core.shards.schema`, with plain Python / bytes
values that ``pyarrow.Table.from_pylist(rows, schema=arrow_schema(table, shapes))`` accepts.

* :func:`clip_row` / :func:`clip_error_row`: one row of the clip table per sampled video (frames, timestamps,
  the expert's targets; or the reason it has none);
* :func:`question_row`: one row of the question table per QA item, carrying its clip id; ``status`` is
  ``"error"`` when the QA record is bad or its clip is an error row (the reason is then copied from the clip);
* :func:`decode_row`: a *joined* row (question columns plus its clip's columns, as
  :meth:`~rgpt4d_core.shards.reader.ShardSet.read_joined` builds for inspection) back into project types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rgpt4d_core.experts.base import ExpertSpec, ExpertTargets
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import (
    ShardCodecError,
    decode_frames,
    encode_frames,
    make_sample_id,
    tensor_from_bytes,
    tensor_to_bytes,
)
from rgpt4d_core.types import Clip, Region, VQAItem


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


def _empty(table: str) -> dict[str, Any]:
    return {c.name: None for c in S.columns_of(table)}


def _clip_base(clip_id: str, video_uri: str, spec: ExpertSpec, clip: Clip | None) -> dict[str, Any]:
    row = _empty(S.CLIPS)
    row.update({S.CLIP_ID: clip_id, S.VIDEO_URI: video_uri, S.EXPERT_NAME: spec.name,
                S.EXPERT_REVISION: spec.revision})  # fmt: skip
    if clip is not None:
        row[S.FPS] = float(clip.fps)
        row[S.NUM_SOURCE_FRAMES] = int(clip.num_source_frames)
        row[S.DURATION_S] = clip.duration_s
        row[S.FRAME_INDICES] = [int(i) for i in clip.frame_indices]
        row[S.TIMESTAMPS_S] = [float(t) for t in clip.timestamps_s]
    return row


def clip_row(
    clip_id: str,
    video_uri: str,
    spec: ExpertSpec,
    clip: Clip,
    targets: ExpertTargets,
    shapes: Mapping[str, tuple[int, ...] | None],
    image_format: str = "jpeg",
    jpeg_quality: int = 90,
) -> dict[str, Any]:
    """A complete ``status == "ok"`` row of the clip table.

    Args:
        clip_id: :func:`~rgpt4d_core.shards.codec.make_clip_id` of the video and sampling config.
        video_uri: the source video.
        spec: the expert that produced ``targets`` (provenance columns).
        clip: the sampled frames, uint8 ``[T, H, W, 3]`` at student resolution, with timestamps (s) and indices.
        targets: the expert's targets for ``clip`` (layouts in ``experts/base.py``; any dtype, stored as fp16).
        shapes: the shard set's tensor shapes (``schema.tensor_shapes(spec)``).
        image_format: ``"jpeg"`` or ``"png"``.
        jpeg_quality: 1-100, used for JPEG.

    Raises:
        ShardCodecError: a tensor has the wrong shape or non-finite values, or a provided target is missing.
    """
    row = _clip_base(clip_id, video_uri, spec, clip)
    row[S.FRAMES] = encode_frames(clip.frames, image_format, jpeg_quality)
    row[S.FRAMES_FORMAT] = image_format
    row[S.FRAME_HEIGHT], row[S.FRAME_WIDTH] = int(clip.frames.shape[1]), int(clip.frames.shape[2])
    for column in S.TENSOR_COLUMNS:
        value = getattr(targets, column)
        if shapes.get(column) is None:
            continue
        if value is None:
            raise ShardCodecError(f"clip {clip_id}: expert {spec.name!r} should provide {column!r} but returned none")
        row[column] = tensor_to_bytes(value, shapes[column], column, f"clip {clip_id}")
    row[S.STATUS] = S.STATUS_OK
    return row


def clip_error_row(
    clip_id: str, video_uri: str, spec: ExpertSpec, reason: str, message: str, clip: Clip | None = None
) -> dict[str, Any]:
    """A ``status == "error"`` clip row: whatever sampling facts are known, no frames or tensors.

    Args:
        reason: short machine-readable reason (``"decode:corrupt"``, ``"expert:error"`` ...).
        message: human-readable detail naming the file at fault.
        clip: the decoded clip when the failure came later (its sampling facts are kept).
    """
    row = _clip_base(clip_id, video_uri, spec, clip)
    row[S.STATUS] = S.STATUS_ERROR
    row[S.ERROR_REASON] = reason
    row[S.ERROR_MESSAGE] = message[:2000]
    return row


def _regions_value(regions: Sequence[Region]) -> list[dict[str, Any]]:
    return [
        {S.REGION_OBJ_ID: int(r.obj_id), S.REGION_BOX: [float(v) for v in r.box], S.REGION_LABEL: r.label}
        for r in regions
    ]


def question_row(
    src: SampleSource, clip_id: str, error: tuple[str, str] | Sequence[str] | None = None
) -> dict[str, Any]:
    """A row of the question table: ``status == "ok"`` when ``error`` is ``None``, else ``(reason, message)``."""
    item = src.item
    row = _empty(S.QUESTIONS)
    row.update(
        {
            S.SAMPLE_ID: make_sample_id(clip_id, item.id),
            S.CLIP_ID: clip_id,
            S.VIDEO_URI: item.video,
            S.QUESTION_ID: item.id,
            S.SPLIT: src.split,
            S.SCENE_ID: src.scene_id,
            S.STATUS: S.STATUS_OK if error is None else S.STATUS_ERROR,
            S.REGIONS: _regions_value(item.regions),
            S.TASK: item.task,
            S.QUESTION: item.question,
            S.OPTIONS: list(item.options),
            S.ANSWER: item.answer,
            S.SOM_IMAGE: item.som_image,
        }
    )
    if error is not None:
        row[S.ERROR_REASON], row[S.ERROR_MESSAGE] = str(error[0]), str(error[1])[:2000]
    return row


@dataclass(frozen=True)
class DecodedSample:
    """One joined row (a question and its clip) decoded back into project types.

    Attributes:
        sample_id: the question row's id.
        clip_id: its clip's id.
        source: the QA item (``item.video`` is the video URI; ``duration_s``/``fps`` from the clip) with split
            and scene id.
        status: the question's ``"ok"`` or ``"error"``.
        error_reason: reason for an error row, else ``None``.
        error_message: detail for an error row, else ``None``.
        expert_name: provenance of the targets (``None`` when the clip is absent).
        expert_revision: provenance of the targets (``None`` when the clip is absent).
        clip: frames decoded from the stored images (uint8 ``[T, H, W, 3]``) with timestamps (s), or ``None``.
        targets: fp16 tensors of the clip (``None`` where absent).
    """

    sample_id: str
    clip_id: str
    source: SampleSource
    status: str
    error_reason: str | None
    error_message: str | None
    expert_name: str | None
    expert_revision: str | None
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
    """Decode a joined row (question columns, plus the clip columns or nulls when its clip is absent)."""
    item = VQAItem(
        id=row[S.QUESTION_ID],
        video=row[S.VIDEO_URI],
        question=row[S.QUESTION],
        options=tuple(row[S.OPTIONS]),
        answer=row[S.ANSWER],
        task=row[S.TASK],
        som_image=row[S.SOM_IMAGE],
        regions=regions_from_value(row[S.REGIONS]),
        duration_s=row.get(S.DURATION_S),
        fps=row.get(S.FPS),
    )
    clip = None
    if row.get(S.FRAMES) is not None:
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
        clip_id=row[S.CLIP_ID],
        source=SampleSource(item=item, split=row[S.SPLIT], scene_id=row[S.SCENE_ID]),
        status=row[S.STATUS],
        error_reason=row[S.ERROR_REASON],
        error_message=row[S.ERROR_MESSAGE],
        expert_name=row.get(S.EXPERT_NAME),
        expert_revision=row.get(S.EXPERT_REVISION),
        clip=clip,
        targets=ExpertTargets(**tensors),
    )
