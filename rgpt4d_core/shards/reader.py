"""Read shard sets (schema v2) with bare pyarrow (no Ray): typed training batches, tables, and resume state.

``open_shards(root)`` opens ``<root>/_manifest.json`` (refusing incomplete, v1 or other-version sets).
:meth:`ShardSet.iter_batches` streams the committed question files in order and joins each question to its clip
through a :class:`~rgpt4d_core.shards.clip_store.ClipStore` (a clip is read and decoded once per cache residency,
never once per question), yielding :class:`~rgpt4d_core.shards.batch.TrainingBatch` objects; the distill job's
Ray Data workers use the same store on their stream of question rows. :meth:`ShardSet.read_joined` materialises
the v1-style join (each question with a copy of its clip's columns) for inspection and tests only.

``scan_written(root)`` is for a job resuming into ``root``: it reads only the key columns of the data files of
both tables on disk, tells apart complete files from partial ones a killed writer left, and returns the keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rgpt4d_core import storage
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.batch import ClipData, TrainingBatch, assemble_batch, decode_clip_rows
from rgpt4d_core.shards.manifest import Manifest, ShardFile, read_manifest

__all__ = ["ClipData", "ShardSet", "TrainingBatch", "TableState", "WrittenState", "assemble_batch",
           "decode_clip_rows", "iter_batches", "list_data_files", "open_shards", "scan_written"]  # fmt: skip

#: bytes of decoded clips a reader keeps by default (``data.clip_cache_mb`` in the distill job)
DEFAULT_CACHE_BYTES = 1 << 30


def open_parquet(uri: str) -> pq.ParquetFile:
    """A Parquet file, local or ``s3://``."""
    fs, path = storage.filesystem_for(uri)
    return pq.ParquetFile(fs.open_input_file(path))


@dataclass(frozen=True)
class ShardSet:
    """A complete shard directory: its manifest and where its files are."""

    root: str
    manifest: Manifest

    def file_uris(self, table: str = S.QUESTIONS) -> list[str]:
        """URIs of the committed data files of ``table``, in manifest order."""
        return [storage.join(self.root, f.path) for f in self.manifest.files_of(table)]

    def read_table(self, table: str = S.QUESTIONS, columns: Sequence[str] | None = None) -> pa.Table:
        """All committed rows (ok and error) of ``table`` as one Arrow table."""
        tables = [open_parquet(u).read(columns=list(columns) if columns else None) for u in self.file_uris(table)]
        if not tables:
            empty = S.arrow_schema(table, self.manifest.shapes()).empty_table()
            return empty.select(list(columns)) if columns else empty
        return pa.concat_tables(tables)

    def read_joined(self) -> pa.Table:
        """Every question row with its clip's columns beside it (nulls where the clip is absent).

        This materialises a copy of a clip's frames and targets for each of its questions (the v1 layout): for
        inspection, tests and the v1 side of ``bench/shards.py``, never for training.
        """
        questions = self.read_table(S.QUESTIONS)
        clips = self.read_table(S.CLIPS)
        row_of = {cid: i for i, cid in enumerate(clips.column(S.CLIP_ID).to_pylist())}
        take = pa.array([row_of.get(cid) for cid in questions.column(S.CLIP_ID).to_pylist()], type=pa.int64())
        beside = clips.take(take)  # null index -> null row (question whose clip is absent)
        for name in beside.column_names:
            if name not in questions.column_names:
                questions = questions.append_column(beside.schema.field(name), beside.column(name))
        return questions

    def iter_batches(
        self, batch_size: int, include_partial: bool = True, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> Iterator[TrainingBatch]:
        """Typed batches of ``batch_size`` ok samples, in manifest file order (error rows skipped).

        Args:
            include_partial: yield the last, smaller batch.
            cache_bytes: decoded clips kept in memory (see :class:`~rgpt4d_core.shards.clip_store.ClipStore`).
        """
        from rgpt4d_core.shards.clip_store import ClipStore

        store = ClipStore(self, cache_bytes)
        for table in self.iter_question_tables(batch_size, include_partial):
            yield store.batch(table)

    def iter_question_tables(self, batch_size: int, include_partial: bool = True) -> Iterator[pa.Table]:
        """Ok question rows (:data:`schema.QUESTION_TRAIN_COLUMNS`) in file order, ``batch_size`` at a time."""
        pending: list[pa.Table] = []
        n_pending = 0
        for uri in self.file_uris(S.QUESTIONS):
            for rb in open_parquet(uri).iter_batches(batch_size=batch_size, columns=list(S.QUESTION_TRAIN_COLUMNS)):
                t = pa.Table.from_batches([rb])
                t = t.filter(pc.equal(t.column(S.STATUS), S.STATUS_OK))
                if len(t) == 0:
                    continue
                pending.append(t)
                n_pending += len(t)
                while n_pending >= batch_size:
                    whole = pa.concat_tables(pending).combine_chunks()
                    yield whole.slice(0, batch_size)
                    rest = whole.slice(batch_size)
                    pending, n_pending = ([rest] if len(rest) else []), len(rest)
        if include_partial and n_pending:
            yield pa.concat_tables(pending).combine_chunks()


def open_shards(root: str) -> ShardSet:
    """Open a complete shard directory (local path or ``s3://``).

    Raises:
        ShardManifestError: no manifest (incomplete), a v1 set (the message says how to convert it) or another
            schema version.
    """
    return ShardSet(root=root, manifest=read_manifest(root))


def iter_batches(root: str, batch_size: int) -> Iterator[TrainingBatch]:
    """Shorthand for ``open_shards(root).iter_batches(batch_size)``."""
    return open_shards(root).iter_batches(batch_size)


# ---- resume --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableState:
    """What one table's folder already holds, read from its data files (not the manifest).

    Attributes:
        files: complete data files (valid Parquet footer), with rows and bytes (paths relative to the root).
        partial: data-file URIs that are not readable Parquet (a writer was killed mid-file).
        keys: the table's :data:`schema.KEY_COLUMNS` of every row in ``files``.
    """

    files: list[ShardFile]
    partial: list[str]
    keys: pa.Table

    def column(self, name: str) -> list:
        return self.keys.column(name).to_pylist()


@dataclass(frozen=True)
class WrittenState:
    """Both tables' :class:`TableState` (``clips``, ``questions``)."""

    clips: TableState
    questions: TableState

    @property
    def files(self) -> list[ShardFile]:
        return [*self.clips.files, *self.questions.files]

    @property
    def partial(self) -> list[str]:
        return [*self.clips.partial, *self.questions.partial]

    @property
    def sample_ids(self) -> set[str]:
        return set(self.questions.column(S.SAMPLE_ID))

    @property
    def clip_ids(self) -> set[str]:
        return set(self.clips.column(S.CLIP_ID))


def list_data_files(root: str, table: str) -> list[str]:
    """URIs of the ``*.parquet`` files under ``<root>/<table>`` (complete or not)."""
    return [u for u in storage.listdir(storage.join(root, table)) if u.endswith(".parquet")]


def _scan_table(root: str, table: str) -> TableState:
    files: list[ShardFile] = []
    partial: list[str] = []
    tables: list[pa.Table] = []
    key_columns = list(S.KEY_COLUMNS[table])
    key_schema = pa.schema([S.arrow_schema(table).field(c) for c in key_columns])
    for uri in list_data_files(root, table):
        fs, path = storage.filesystem_for(uri)
        try:
            info = fs.get_file_info(path)
            pf = pq.ParquetFile(fs.open_input_file(path))
            keys = pf.read(columns=key_columns)
        except (OSError, pa.ArrowInvalid):
            partial.append(uri)
            continue
        rel = uri[len(root.rstrip("/")) + 1 :]
        files.append(ShardFile(path=rel, rows=pf.metadata.num_rows, bytes=int(info.size)))
        tables.append(keys.cast(key_schema))
    keys_table = pa.concat_tables(tables) if tables else key_schema.empty_table()
    return TableState(files=files, partial=partial, keys=keys_table)


def scan_written(root: str) -> WrittenState:
    """What is already written under ``root``, per table, and which data files are complete (resume, commit)."""
    return WrittenState(clips=_scan_table(root, S.CLIPS), questions=_scan_table(root, S.QUESTIONS))
