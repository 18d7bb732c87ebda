"""The per-reader clip cache that joins question rows to their clips without repeating the clips' bytes.

A :class:`ClipStore` belongs to one reader (one Ray Train worker, one ``ShardSet.iter_batches``). On first use it
reads the ``clip_id`` column of every committed clip file (≈ 33 bytes per clip) to learn which file and row group
holds each clip. :meth:`ClipStore.get` then serves a clip from an LRU cache of *row groups*: a miss reads the
whole row group (the unit Parquet reads anyway), decodes every ok clip in it once (JPEG frames to uint8, targets
as zero-copy fp16 views) and keeps it until ``max_bytes`` of decoded clips push it out.

Why row groups and LRU: precompute writes a part's questions in the same clip order as its clip file, so the
question stream in file order is clip-sorted and consecutive questions hit the same row group. The training
shuffle (the local shuffle buffer of ``data.shuffle_buffer`` questions, see ``pipelines/_distill_worker.py``)
draws from a window of about ``shuffle_buffer / questions_per_clip`` clips, so the cache must hold that window
plus stragglers; :attr:`ClipStore.stats` counts hits, misses and bytes read so the re-read rate is measured
(``bench/shards.py``, the distill job's ``data/clip_*`` metrics), not assumed. Memory stays bounded by
``max_bytes`` (plus one row group) however many epochs are read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.batch import ClipData, TrainingBatch, assemble_batch, decode_clip_rows
from rgpt4d_core.shards.codec import ShardCodecError
from rgpt4d_core.shards.reader import ShardSet, open_parquet


@dataclass
class StoreStats:
    """Counters of a :class:`ClipStore` (since it was built).

    Attributes:
        hits: clip look-ups served from the cache.
        misses: look-ups that read a row group.
        row_groups_read: row groups read and decoded.
        bytes_read: compressed column-chunk bytes of those row groups (Parquet metadata).
        clips_decoded: clips decoded (JPEG frames + tensor views).
    """

    hits: int = 0
    misses: int = 0
    row_groups_read: int = 0
    bytes_read: int = 0
    clips_decoded: int = 0

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


class ClipStore:
    """Decoded clips of one shard set by clip id, read a row group at a time and cached (LRU by bytes).

    Args:
        shards: the opened shard set.
        max_bytes: decoded bytes to keep (frames uint8 + targets fp16); at least the last row group read is kept.
    """

    def __init__(self, shards: ShardSet, max_bytes: int) -> None:
        self.shards = shards
        self.max_bytes = int(max_bytes)
        self.shapes = shards.manifest.shapes()
        self.stats = StoreStats()
        self._uris = shards.file_uris(S.CLIPS)
        self._files: dict[int, pq.ParquetFile] = {}
        self._where: dict[str, tuple[int, int]] | None = None
        self._cache: OrderedDict[tuple[int, int], dict[str, ClipData]] = OrderedDict()
        self._cache_bytes: dict[tuple[int, int], int] = {}

    @property
    def cached_bytes(self) -> int:
        return sum(self._cache_bytes.values())

    def _file(self, n: int) -> pq.ParquetFile:
        if n not in self._files:
            self._files[n] = open_parquet(self._uris[n])
        return self._files[n]

    def _index(self) -> dict[str, tuple[int, int]]:
        """clip id -> (file number, row group), from the ``clip_id`` column and the row-group sizes."""
        if self._where is None:
            where: dict[str, tuple[int, int]] = {}
            for n in range(len(self._uris)):
                pf = self._file(n)
                ids = pf.read(columns=[S.CLIP_ID]).column(S.CLIP_ID).to_pylist()
                sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
                groups = np.repeat(np.arange(len(sizes)), sizes)
                where.update({cid: (n, int(g)) for cid, g in zip(ids, groups, strict=True)})
            self._where = where
        return self._where

    def _load(self, key: tuple[int, int]) -> dict[str, ClipData]:
        n, g = key
        pf = self._file(n)
        table = pf.read_row_group(g, columns=list(S.CLIP_TRAIN_COLUMNS))
        table = table.filter(pc.equal(table.column(S.STATUS), S.STATUS_OK))
        clips = {c.clip_id: c for c in decode_clip_rows(table, self.shapes)}
        rg = pf.metadata.row_group(g)
        self.stats.row_groups_read += 1
        self.stats.bytes_read += sum(rg.column(i).total_compressed_size for i in range(rg.num_columns))
        self.stats.clips_decoded += len(clips)
        self._cache[key] = clips
        self._cache_bytes[key] = sum(c.nbytes for c in clips.values())
        while len(self._cache) > 1 and self.cached_bytes > self.max_bytes:
            old, _ = self._cache.popitem(last=False)
            del self._cache_bytes[old]
        return clips

    def get(self, clip_ids: Sequence[str]) -> list[ClipData]:
        """The decoded clips, in order (a clip repeated in ``clip_ids`` is the same object each time).

        Raises:
            ShardCodecError: a clip id is not in the committed clip files, or its clip is an error row.
        """
        index = self._index()
        out = []
        for cid in clip_ids:
            key = index.get(cid)
            if key is None:
                raise ShardCodecError(f"{self.shards.root}: clip {cid} is not in the committed clip table")
            clips = self._cache.get(key)
            if clips is None:
                self.stats.misses += 1
                clips = self._load(key)
            else:
                self.stats.hits += 1
                self._cache.move_to_end(key)
            if cid not in clips:
                raise ShardCodecError(f"{self.shards.root}: clip {cid} is an error row; an ok question refers to it")
            out.append(clips[cid])
        return out

    def batch(self, questions: pa.Table) -> TrainingBatch:
        """A :class:`TrainingBatch` of ok question rows (:data:`schema.QUESTION_TRAIN_COLUMNS`) joined to their clips."""
        return assemble_batch(questions, self.get(questions.column(S.CLIP_ID).to_pylist()))
