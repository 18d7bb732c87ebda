"""Write one *part* of a shard set: a clip file and, beside it, the question file about those clips.

A part is named after a digest of the ids it holds (``part-<16 hex>.parquet`` in both ``clips/`` and
``questions/``), so a retried task rewrites the same names instead of adding duplicates. The clip file is written
first and the question file second: a job killed between the two leaves clips without their questions, which a
resumed job finds (:func:`~rgpt4d_core.shards.reader.scan_written`) and completes with question rows only;
questions without their clip cannot occur. Clip row groups are sized by bytes (a column over 2 GiB in one row
group breaks Arrow, and the training reader reads a row group at a time); a question file is one row group.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from rgpt4d_core import storage
from rgpt4d_core.shards import schema as S


@dataclass(frozen=True)
class PartWritten:
    """What :func:`write_part` wrote: relative paths (``None``: no rows of that table) and row counts."""

    clip_path: str | None
    question_path: str | None
    clip_rows: int
    question_rows: int


def part_name(clips: pa.Table, questions: pa.Table) -> str:
    """``part-<16 hex>.parquet``: a digest of the part's clip ids and sample ids (deterministic)."""
    ids = [*clips.column(S.CLIP_ID).to_pylist(), "|", *questions.column(S.SAMPLE_ID).to_pylist()]
    return f"part-{hashlib.sha256(chr(10).join(ids).encode()).hexdigest()[:16]}.parquet"


def clip_rows_per_group(row_group_bytes: int, clip_bytes: int) -> int:
    """Clip rows per Parquet row group for a byte budget (at least one)."""
    return max(1, int(row_group_bytes) // max(1, int(clip_bytes)))


def _write(root: str, table_name: str, name: str, table: pa.Table, rows_per_group: int) -> str:
    rel = f"{table_name}/{name}"
    fs, path = storage.filesystem_for(storage.join(root, rel))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs, row_group_size=max(1, rows_per_group))
    return rel


def write_part(root: str, clips: pa.Table, questions: pa.Table, clip_rows_per_group: int) -> PartWritten:
    """Write ``clips`` (clip schema) then ``questions`` (question schema) under ``root`` as one part.

    Args:
        root: shard root (local path or ``s3://``).
        clips: clip rows of the part (may be empty: every clip was written by an earlier run).
        questions: the question rows about those clips, in clip order.
        clip_rows_per_group: clip rows per row group (:func:`clip_rows_per_group`).
    """
    name = part_name(clips, questions)
    clip_path = _write(root, S.CLIPS, name, clips, clip_rows_per_group) if len(clips) else None
    question_path = _write(root, S.QUESTIONS, name, questions, len(questions)) if len(questions) else None
    return PartWritten(clip_path, question_path, len(clips), len(questions))
