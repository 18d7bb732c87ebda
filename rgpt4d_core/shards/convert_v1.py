"""Convert a schema-v1 shard set (one row per question, the clip's columns repeated) into a v2 set, no expert run.

    python -m rgpt4d_core.shards.convert_v1 <v1-root> <new-v2-root> [--clips-per-file 16] [--row-group-mb 64]

Each v1 data file is read in turn (all columns); its rows are keyed by ``make_clip_id(video_uri, sampling)`` with
the v1 manifest's sampling config. The first ok row of a clip gives the clip row (frames, timestamps, targets),
or, when a video has no ok row, its first clip-level error row (``decode:``/``expert:``/``encode:``) gives an
error clip row; rows failing only their QA (``qa:``) carry no clip in v1 and give none. Every v1 row becomes a
question row with the v2 sample id (``make_sample_id(clip_id, question_id)``: v2 ids differ from v1 ids). The
output is committed under the v2 rules (:mod:`rgpt4d_core.shards.commit`) with the v1 set's expert, sampling and
tensor shapes; the v1 directory is not modified.

Memory: one v1 data file plus the clip ids seen so far. A clip whose questions span several v1 files is written
once (with the first file's part); its later questions land in later parts, which the reader joins all the same.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from rgpt4d_core import storage
from rgpt4d_core.shards import manifest as M
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import make_clip_id, make_sample_id
from rgpt4d_core.shards.commit import commit
from rgpt4d_core.shards.reader import open_parquet, scan_written
from rgpt4d_core.shards.writer import clip_rows_per_group, write_part

#: error reasons that are about the question, not the clip (v1 stored no clip data for them)
QA_REASON_PREFIX = "qa:"


def read_v1_manifest(root: str) -> M.Manifest:
    """The manifest of a complete v1 set; :class:`~rgpt4d_core.shards.manifest.ShardManifestError` otherwise."""
    manifest = M.read_manifest(root, check_version=False)
    if manifest.schema_version != 1:
        raise M.ShardManifestError(f"{root}: schema version {manifest.schema_version}, not a v1 shard set")
    return manifest


def _with(table: pa.Table, table_name: str, extra: dict[str, list[str]], shapes: dict) -> pa.Table:
    """``table``'s columns of ``table_name`` plus ``extra``, in the v2 schema's order and types."""
    schema = S.arrow_schema(table_name, shapes)
    arrays = [pa.array(extra[f.name], f.type) if f.name in extra else table.column(f.name) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def split_v1_table(
    table: pa.Table, sampling: dict, shapes: dict, written: set[str]
) -> tuple[pa.Table, pa.Table]:
    """The clip rows (clips not in ``written``, which is updated) and question rows of one v1 table."""
    videos, statuses = table.column(S.VIDEO_URI).to_pylist(), table.column(S.STATUS).to_pylist()
    reasons, qids = table.column(S.ERROR_REASON).to_pylist(), table.column(S.QUESTION_ID).to_pylist()
    cids = [make_clip_id(v, sampling) for v in videos]
    pick: dict[str, int] = {}
    for i, cid in enumerate(cids):
        if cid in written:
            continue
        better = statuses[i] == S.STATUS_OK and statuses[pick[cid]] != S.STATUS_OK if cid in pick else False
        clip_level = statuses[i] == S.STATUS_OK or not (reasons[i] or "").startswith(QA_REASON_PREFIX)
        if (cid not in pick and clip_level) or better:
            pick[cid] = i
    written.update(pick)
    rows = sorted(pick.values())
    clips = _with(table.take(pa.array(rows, pa.int64())), S.CLIPS, {S.CLIP_ID: [cids[i] for i in rows]}, shapes)
    rank = {cid: k for k, cid in enumerate(cids[i] for i in rows)}  # questions in clip order, then the rest
    order = sorted(range(len(cids)), key=lambda i: (rank.get(cids[i], len(rows)), i))
    ordered = table.take(pa.array(order, pa.int64()))
    questions = _with(ordered, S.QUESTIONS, {S.CLIP_ID: [cids[i] for i in order],
                                             S.SAMPLE_ID: [make_sample_id(cids[i], qids[i]) for i in order]}, shapes)
    return clips, questions


def convert(src: str, dst: str, clips_per_file: int = 16, row_group_bytes: int = 64 << 20) -> M.Manifest:
    """Write the v2 form of the v1 set at ``src`` into the new directory ``dst``; returns its manifest.

    Raises:
        ShardManifestError: ``src`` is not a complete v1 set, or ``dst`` already holds a manifest.
    """
    v1 = read_v1_manifest(src)
    if storage.exists(storage.join(dst, M.MANIFEST_NAME)):
        raise M.ShardManifestError(f"{dst} already holds a shard set; convert into a new directory")
    spec, shapes, sampling = v1.expert_spec, v1.shapes(), dict(v1.sampling)
    per_group = clip_rows_per_group(row_group_bytes, S.tensor_nbytes(shapes))
    written: set[str] = set()
    for f in v1.files:
        clips, questions = split_v1_table(open_parquet(storage.join(src, f.path)).read(), sampling, shapes, written)
        for lo in range(0, max(1, len(clips)), clips_per_file):
            part = clips.slice(lo, clips_per_file)
            ids = part.column(S.CLIP_ID)
            last = lo + clips_per_file >= len(clips)
            mine = pc.is_in(questions.column(S.CLIP_ID), value_set=ids)
            if last:  # the rest: questions about this part's clips and about clips written before
                mine = pc.or_(mine, pc.invert(pc.is_in(questions.column(S.CLIP_ID), value_set=clips.column(S.CLIP_ID))))
            write_part(dst, part, questions.filter(mine), per_group)
    extra = {"converted_from": {"root": src, "schema_version": 1, "git_sha": v1.git_sha, "created_at": v1.created_at}}
    return commit(dst, scan_written(dst), spec, sampling, extra)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="complete v1 shard root (local path or s3://)")
    parser.add_argument("dst", help="new v2 shard root (local path or s3://)")
    parser.add_argument("--clips-per-file", type=int, default=16)
    parser.add_argument("--row-group-mb", type=int, default=64)
    args = parser.parse_args(argv)
    m = convert(args.src, args.dst, args.clips_per_file, args.row_group_mb << 20)
    print(json.dumps({"questions": m.counts.total, "clips": m.clip_counts.total, "bytes": m.bytes}))


if __name__ == "__main__":
    main()
