"""Read shard sets with bare pyarrow (no Ray): typed training batches, whole tables, and resume state.

``iter_batches(root)`` opens ``<root>/_manifest.json`` (refusing incomplete or other-version sets), then streams
the committed files with ``pyarrow.parquet`` (local or ``s3://`` through :mod:`rgpt4d_core.storage`) and yields
:class:`TrainingBatch` objects. ``batch_from_table`` turns any Arrow table of shard rows into the same type, for
callers that stream rows themselves (the distill job's Ray Data shard).

``scan_written(root)`` is for a job resuming into ``root``: it reads only the key columns of the data files on
disk, tells apart complete files from partial ones a killed writer left, and returns the sample ids present.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rgpt4d_core import storage
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import ShardCodecError, decode_frames, regions_from_value
from rgpt4d_core.shards.manifest import DATA_DIR, Manifest, ShardFile, read_manifest
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


def _fs_path(uri: str) -> tuple[pafs.FileSystem, str]:
    return storage.filesystem_for(uri)


def _tensor_stack(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Stack a ``large_binary`` tensor column into float16 ``[B, *shape]`` without per-row copies."""
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


def batch_from_table(table: pa.Table, shapes: Mapping[str, tuple[int, ...] | None]) -> TrainingBatch:
    """A :class:`TrainingBatch` from ok rows of ``table`` (must contain :data:`schema.TRAIN_COLUMNS`).

    Raises:
        ShardCodecError: an error row is present, or a tensor does not have its shard set's shape.
    """
    statuses = table.column(S.STATUS).to_pylist()
    if any(s != S.STATUS_OK for s in statuses):
        raise ShardCodecError("batch_from_table got error rows; filter on status == 'ok' first")
    frames_col = table.column(S.FRAMES).to_pylist()
    frames = np.stack([decode_frames(f) for f in frames_col]) if frames_col else np.zeros((0, 0, 0, 0, 3), np.uint8)
    targets: dict[str, np.ndarray | None] = {}
    for name in S.TENSOR_COLUMNS:
        shape = shapes.get(name)
        targets[name] = None if shape is None else _tensor_stack(table.column(name), shape, name)
    return TrainingBatch(
        sample_ids=table.column(S.SAMPLE_ID).to_pylist(),
        frames=frames,
        timestamps_s=np.asarray(table.column(S.TIMESTAMPS_S).to_pylist(), dtype=np.float32).reshape(len(table), -1),
        duration_s=np.asarray(table.column(S.DURATION_S).to_pylist(), dtype=np.float32),
        regions=[regions_from_value(v) for v in table.column(S.REGIONS).to_pylist()],
        tasks=table.column(S.TASK).to_pylist(),
        questions=table.column(S.QUESTION).to_pylist(),
        options=[tuple(o) for o in table.column(S.OPTIONS).to_pylist()],
        answers=table.column(S.ANSWER).to_pylist(),
        targets=targets,
    )


@dataclass(frozen=True)
class ShardSet:
    """A complete shard directory: its manifest and where its files are."""

    root: str
    manifest: Manifest

    def file_uris(self) -> list[str]:
        return [storage.join(self.root, f.path) for f in self.manifest.files]

    def open_file(self, uri: str) -> pq.ParquetFile:
        fs, path = _fs_path(uri)
        return pq.ParquetFile(fs.open_input_file(path))

    def read_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All committed rows (ok and error) as one Arrow table."""
        tables = [self.open_file(u).read(columns=list(columns) if columns else None) for u in self.file_uris()]
        if not tables:
            empty = S.arrow_schema(self.manifest.shapes()).empty_table()
            return empty.select(list(columns)) if columns else empty
        return pa.concat_tables(tables)

    def iter_batches(
        self, batch_size: int, columns: Sequence[str] = S.TRAIN_COLUMNS, include_partial: bool = True
    ) -> Iterator[TrainingBatch]:
        """Typed batches of ``batch_size`` ok samples, in manifest file order (error rows skipped).

        Args:
            include_partial: yield the last, smaller batch.
        """
        shapes = self.manifest.shapes()
        pending: list[pa.Table] = []
        n_pending = 0
        for uri in self.file_uris():
            pf = self.open_file(uri)
            for rb in pf.iter_batches(batch_size=batch_size, columns=list(columns)):
                t = pa.Table.from_batches([rb])
                t = t.filter(pc.equal(t.column(S.STATUS), S.STATUS_OK))
                if len(t) == 0:
                    continue
                pending.append(t)
                n_pending += len(t)
                while n_pending >= batch_size:
                    whole = pa.concat_tables(pending).combine_chunks()
                    yield batch_from_table(whole.slice(0, batch_size), shapes)
                    rest = whole.slice(batch_size)
                    pending, n_pending = ([rest] if len(rest) else []), len(rest)
        if include_partial and n_pending:
            yield batch_from_table(pa.concat_tables(pending).combine_chunks(), shapes)


def open_shards(root: str) -> ShardSet:
    """Open a complete shard directory (local path or ``s3://``).

    Raises:
        ShardManifestError: no manifest (incomplete) or another schema version.
    """
    return ShardSet(root=root, manifest=read_manifest(root))


def iter_batches(root: str, batch_size: int, columns: Sequence[str] = S.TRAIN_COLUMNS) -> Iterator[TrainingBatch]:
    """Shorthand for ``open_shards(root).iter_batches(batch_size, columns)``."""
    return open_shards(root).iter_batches(batch_size, columns)


# ---- resume --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenState:
    """What a shard directory already holds, read from its data files (not its manifest).

    Attributes:
        files: complete data files (valid Parquet footer), with rows and bytes.
        partial: data-file URIs that are not readable Parquet (a writer was killed mid-file).
        keys: the :data:`schema.KEY_COLUMNS` of every row in ``files``.
    """

    files: list[ShardFile]
    partial: list[str]
    keys: pa.Table

    @property
    def sample_ids(self) -> set[str]:
        return set(self.keys.column(S.SAMPLE_ID).to_pylist())


def list_data_files(root: str) -> list[str]:
    """URIs of the ``*.parquet`` files under ``<root>/data`` (complete or not)."""
    return [u for u in storage.listdir(storage.join(root, DATA_DIR)) if u.endswith(".parquet")]


def scan_written(root: str) -> WrittenState:
    """Sample ids already written under ``root`` and which data files are complete (for resume and commit)."""
    files: list[ShardFile] = []
    partial: list[str] = []
    tables: list[pa.Table] = []
    key_schema = pa.schema([S.arrow_schema().field(c) for c in S.KEY_COLUMNS])
    for uri in list_data_files(root):
        fs, path = _fs_path(uri)
        try:
            info = fs.get_file_info(path)
            pf = pq.ParquetFile(fs.open_input_file(path))
            keys = pf.read(columns=list(S.KEY_COLUMNS))
        except (OSError, pa.ArrowInvalid):
            partial.append(uri)
            continue
        rel = uri[len(root.rstrip("/")) + 1 :]
        files.append(ShardFile(path=rel, rows=pf.metadata.num_rows, bytes=int(info.size)))
        tables.append(keys.cast(key_schema))
    keys_table = pa.concat_tables(tables) if tables else key_schema.empty_table()
    return WrittenState(files=files, partial=partial, keys=keys_table)


def written_sample_ids(root: str) -> set[str]:
    """Sample ids present in the complete data files under ``root``."""
    return scan_written(root).sample_ids
