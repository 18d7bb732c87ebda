"""The private wire format between the precompute steps (not shard columns): one *request* is one video and
the QA records about it, a plain dict with the ``REQ_*`` keys below (Arrow-friendly values), so that Ray can
move a batch of them as an Arrow table of :data:`REQUEST_SCHEMA`. Decoded frames travel as uint8 bytes with their
shape, expert targets as fp16 bytes (``REQ_TARGET_PREFIX`` + tensor column name); both directions are here
(:func:`clip_fields` / :func:`clip_of`, :func:`target_fields` / :func:`targets_of`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from rgpt4d_core.experts.base import ExpertTargets
from rgpt4d_core.shards import schema as S
from rgpt4d_core.types import Clip

REQ_VIDEO = "_video"
REQ_RECORDS = "_records"
REQ_ERROR = "_error"
REQ_FRAMES = "_frames"
REQ_FRAMES_SHAPE = "_frames_shape"
REQ_TIMESTAMPS = "_timestamps_s"
REQ_INDICES = "_frame_indices"
REQ_FPS = "_fps"
REQ_NUM_SOURCE_FRAMES = "_num_source_frames"
REQ_TARGET_PREFIX = "_target_"
#: set (JSON ``[status, reason, message]``) when the request's clip is already in the output (resume)
REQ_CLIP_DONE = "_clip_done"

#: the Arrow schema of a request batch after any step (absent values are null)
REQUEST_SCHEMA = pa.schema(
    [
        pa.field(REQ_VIDEO, pa.string()),
        pa.field(REQ_RECORDS, pa.string()),
        pa.field(REQ_ERROR, pa.string()),
        pa.field(REQ_CLIP_DONE, pa.string()),
        pa.field(REQ_FRAMES, pa.large_binary()),
        pa.field(REQ_FRAMES_SHAPE, pa.list_(pa.int64())),
        pa.field(REQ_TIMESTAMPS, pa.list_(pa.float64())),
        pa.field(REQ_INDICES, pa.list_(pa.int64())),
        pa.field(REQ_FPS, pa.float64()),
        pa.field(REQ_NUM_SOURCE_FRAMES, pa.int64()),
        *[pa.field(REQ_TARGET_PREFIX + name, pa.large_binary()) for name in S.TENSOR_COLUMNS],
    ]
)


def to_table(requests: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A request batch as an Arrow table of :data:`REQUEST_SCHEMA` (missing keys are null)."""
    return pa.Table.from_pylist(
        [{f: r.get(f) for f in REQUEST_SCHEMA.names} for r in requests], schema=REQUEST_SCHEMA
    )


def clip_fields(clip: Clip) -> dict[str, Any]:
    """The request fields that carry a decoded clip (the inverse of :func:`clip_of`)."""
    return {
        REQ_FRAMES: np.ascontiguousarray(clip.frames).tobytes(),
        REQ_FRAMES_SHAPE: list(clip.frames.shape),
        REQ_TIMESTAMPS: [float(t) for t in clip.timestamps_s],
        REQ_INDICES: [int(i) for i in clip.frame_indices],
        REQ_FPS: float(clip.fps),
        REQ_NUM_SOURCE_FRAMES: int(clip.num_source_frames),
    }


def clip_of(req: Mapping[str, Any]) -> Clip | None:
    """The decoded clip carried by a request, or ``None`` (decode failed / skipped)."""
    if req.get(REQ_FRAMES) is None:
        return None
    frames = np.frombuffer(req[REQ_FRAMES], dtype=np.uint8).reshape(req[REQ_FRAMES_SHAPE]).copy()
    return Clip(
        frames=frames,
        timestamps_s=np.asarray(req[REQ_TIMESTAMPS], dtype=np.float64),
        frame_indices=np.asarray(req[REQ_INDICES], dtype=np.int64),
        fps=float(req[REQ_FPS]),
        num_source_frames=int(req[REQ_NUM_SOURCE_FRAMES]),
        uri=req[REQ_VIDEO],
    )


def target_fields(targets: ExpertTargets) -> dict[str, bytes | None]:
    """The request fields that carry a clip's expert targets as fp16 bytes (the inverse of :func:`targets_of`)."""
    fields: dict[str, bytes | None] = {}
    for name in S.TENSOR_COLUMNS:
        value = getattr(targets, name)
        fields[REQ_TARGET_PREFIX + name] = None if value is None else np.ascontiguousarray(value, "<f2").tobytes()
    return fields


def targets_of(req: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...] | None]) -> ExpertTargets:
    """The expert targets a request carries, float16 in ``shapes`` (``schema.tensor_shapes``); absent ones ``None``."""
    return ExpertTargets(**{
        name: np.frombuffer(data, "<f2").reshape(shape)
        for name, shape in shapes.items()
        if shape is not None and (data := req.get(REQ_TARGET_PREFIX + name)) is not None
    })  # fmt: skip
