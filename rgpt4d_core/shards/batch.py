"""Training batches from the two shard tables: decoded clips (:class:`ClipData`) joined to question rows.

:func:`decode_clip_rows` turns ok rows of the clip table (or of any table holding the clip columns, such as a
v1-style joined table) into :class:`ClipData`: frames decoded once per clip, tensors as zero-copy ``float16``
views on the Arrow buffers. :func:`assemble_batch` stacks the clips of ``B`` question rows into a
:class:`TrainingBatch`; that stack is the only copy of a clip's targets per question, and it lives as long as
the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import ShardCodecError, decode_frames
from rgpt4d_core.shards.rows import regions_from_value
from rgpt4d_core.types import Region


@dataclass(frozen=True)
class TrainingBatch:
    """A batch of ``B`` ok samples, ready for the student's collate.

    Attributes:
        sample_ids: ``B`` ids.
        frames: uint8 ``[B, T, H, W, 3]`` RGB at student resolution.
        timestamps_s: float32 ``[B, T]``, seconds from the video start (TPE input).
        duration_s: float32 ``[B]``, seconds.
        regions: per sample, its region prompts on frame 1.
        tasks: per sample, the task category.
        questions: per sample, the question text with ``<obj_k>`` tokens.
        options: per sample, the answer options.
        answers: per sample, the correct option string.
        targets: per tensor column, float16 ``[B, *shape]`` (layouts in ``experts/base.py``; depth in metres,
            flow in pixels), or ``None`` when the shard set's expert does not provide it.
    """

    sample_ids: list[str]
    frames: np.ndarray
    timestamps_s: np.ndarray
    duration_s: np.ndarray
    regions: list[tuple[Region, ...]]
    tasks: list[str]
    questions: list[str]
    options: list[tuple[str, ...]]
    answers: list[str]
    targets: dict[str, np.ndarray | None]

    def __len__(self) -> int:
        return len(self.sample_ids)

    def target(self, name: str) -> np.ndarray:
        """The float16 ``[B, *shape]`` target ``name``; ``KeyError`` when the shard set does not provide it."""
        value = self.targets.get(name)
        if value is None:
            raise KeyError(f"target {name!r} is not in these shards (provided: "
                           f"{[k for k, v in self.targets.items() if v is not None]})")
        return value


@dataclass(frozen=True)
class ClipData:
    """One ok clip, decoded for training.

    Attributes:
        clip_id: the clip table's key.
        frames: uint8 ``[T, H, W, 3]`` RGB at student resolution.
        timestamps_s: float32 ``[T]``, seconds from the video start.
        duration_s: seconds.
        targets: per tensor column, float16 ``[*shape]`` (a read-only view on the row group's Arrow buffer), or
            ``None`` when the shard set's expert does not provide it.
    """

    clip_id: str
    frames: np.ndarray
    timestamps_s: np.ndarray
    duration_s: float
    targets: dict[str, np.ndarray | None]

    @property
    def nbytes(self) -> int:
        """Bytes this clip holds in memory (decoded frames + targets)."""
        return int(self.frames.nbytes + sum(t.nbytes for t in self.targets.values() if t is not None))


def tensor_stack(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A ``large_binary`` tensor column as float16 ``[N, *shape]`` without per-row copies (a view when the
    column is one chunk)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        raise ShardCodecError(f"column {name!r} has null values in an ok row")
    if len(arr) == 0:
        return np.zeros((0, *shape), np.float16)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    per_row = int(np.prod(shape)) * 2
    if not np.all(np.diff(offsets) == per_row):
        raise ShardCodecError(f"column {name!r}: rows are not {per_row} bytes (shape {shape})")
    flat = np.frombuffer(data, dtype="<f2", count=len(arr) * per_row // 2, offset=int(offsets[0]))
    return flat.reshape(len(arr), *shape)


def decode_clip_rows(table: pa.Table, shapes: Mapping[str, tuple[int, ...] | None]) -> list[ClipData]:
    """:class:`ClipData` for every row of ``table`` (ok rows holding :data:`schema.CLIP_TRAIN_COLUMNS`).

    Raises:
        ShardCodecError: an error row is present, or a tensor does not have its shard set's shape.
    """
    if any(s != S.STATUS_OK for s in table.column(S.STATUS).to_pylist()):
        raise ShardCodecError("decode_clip_rows got error rows; filter on status == 'ok' first")
    stacks = {n: (None if shapes.get(n) is None else tensor_stack(table.column(n), shapes[n], n))  # type: ignore[arg-type]
              for n in S.TENSOR_COLUMNS}  # fmt: skip
    ids = table.column(S.CLIP_ID).to_pylist()
    frames = table.column(S.FRAMES).to_pylist()
    stamps = table.column(S.TIMESTAMPS_S).to_pylist()
    durations = table.column(S.DURATION_S).to_pylist()
    return [
        ClipData(
            clip_id=ids[i],
            frames=decode_frames(frames[i]),
            timestamps_s=np.asarray(stamps[i], dtype=np.float32),
            duration_s=float(durations[i]) if durations[i] is not None else float("nan"),
            targets={n: (None if s is None else s[i]) for n, s in stacks.items()},
        )
        for i in range(len(ids))
    ]


def assemble_batch(questions: pa.Table, clips: Sequence[ClipData]) -> TrainingBatch:
    """A :class:`TrainingBatch` of ``B`` ok question rows (:data:`schema.QUESTION_TRAIN_COLUMNS`) and their
    ``B`` clips, in the same order (a clip appears once per question that refers to it)."""
    if len(clips) != len(questions):
        raise ShardCodecError(f"{len(questions)} questions but {len(clips)} clips")
    if any(s != S.STATUS_OK for s in questions.column(S.STATUS).to_pylist()):
        raise ShardCodecError("assemble_batch got error rows; filter on status == 'ok' first")
    wanted = questions.column(S.CLIP_ID).to_pylist()
    got = [c.clip_id for c in clips]
    if wanted != got:
        raise ShardCodecError(f"clips do not match the questions' clip ids: {got[:3]} vs {wanted[:3]}")
    b = len(clips)
    targets: dict[str, np.ndarray | None] = {}
    for name in S.TENSOR_COLUMNS:
        first = clips[0].targets.get(name) if clips else None
        targets[name] = None if first is None else np.stack([c.targets[name] for c in clips])  # type: ignore[misc]
    return TrainingBatch(
        sample_ids=questions.column(S.SAMPLE_ID).to_pylist(),
        frames=np.stack([c.frames for c in clips]) if clips else np.zeros((0, 0, 0, 0, 3), np.uint8),
        timestamps_s=np.stack([c.timestamps_s for c in clips]) if clips else np.zeros((0, 0), np.float32),
        duration_s=np.asarray([c.duration_s for c in clips], dtype=np.float32).reshape(b),
        regions=[regions_from_value(v) for v in questions.column(S.REGIONS).to_pylist()],
        tasks=questions.column(S.TASK).to_pylist(),
        questions=questions.column(S.QUESTION).to_pylist(),
        options=[tuple(o) for o in questions.column(S.OPTIONS).to_pylist()],
        answers=questions.column(S.ANSWER).to_pylist(),
        targets=targets,
    )
