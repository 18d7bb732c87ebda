"""Manifest and reader: typed batches joined through the clip store with bare pyarrow, refusal of incomplete /
v1 / other-version sets, resume scan of both tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from shards_testkit import SAMPLING, tiny_clip, tiny_item, tiny_rows, tiny_spec, tiny_targets

from rgpt4d_core import storage
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.clip_store import ClipStore
from rgpt4d_core.shards.codec import ShardCodecError
from rgpt4d_core.shards.commit import ShardCommitError, commit
from rgpt4d_core.shards.manifest import (
    CONVERT_V1_COMMAND,
    MANIFEST_NAME,
    Counts,
    ShardManifestError,
    build_manifest,
    claim_directory,
    read_manifest,
    write_manifest,
)
from rgpt4d_core.shards.reader import open_shards, scan_written
from rgpt4d_core.shards.writer import write_part


def _write_set(root: str, parts: list[tuple[list[dict], list[dict]]], with_manifest: bool = True,
               rows_per_group: int = 2) -> None:
    """Write parts the way the precompute job lays them out (``clips/`` then ``questions/``), then commit."""
    shapes = S.tensor_shapes(tiny_spec())
    for clips, questions in parts:
        write_part(root, pa.Table.from_pylist(clips, schema=S.arrow_schema(S.CLIPS, shapes)),
                   pa.Table.from_pylist(questions, schema=S.arrow_schema(S.QUESTIONS, shapes)), rows_per_group)
    if with_manifest:
        commit(root, scan_written(root), tiny_spec(), SAMPLING)


def test_reader_joins_questions_to_clips_across_files_and_skips_errors(tmp_path: Path) -> None:
    root = str(tmp_path / "shards")
    _write_set(root, [tiny_rows(3, questions_per_clip=2, n_err=1), tiny_rows(1, questions_per_clip=3, offset=3)])
    shards = open_shards(root)
    m = shards.manifest
    assert m.counts.total == 10 and m.counts.ok == 9 and m.counts.errors_by_reason == {"decode:missing": 1}
    assert m.clip_counts.total == 5 and m.clip_counts.ok == 4
    assert m.expert_spec == tiny_spec() and m.sampling == SAMPLING and len(m.files) == 4
    assert len(m.files_of(S.CLIPS)) == len(m.files_of(S.QUESTIONS)) == 2
    assert m.bytes == sum(f.bytes for f in m.files) > 0 and m.schema_version == S.SCHEMA_VERSION
    batches = list(shards.iter_batches(batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 1]
    spec = tiny_spec()
    by_id = {sid: (b, i) for b in batches for i, sid in enumerate(b.sample_ids)}
    assert len(by_id) == 9
    for b in batches:
        assert b.frames.dtype == np.uint8 and b.frames.shape[1:] == (4, 32, 48, 3)
        assert b.timestamps_s.dtype == np.float32 and b.timestamps_s.shape[1:] == (4,)
        assert b.target(S.LATENTS).shape[1:] == (2, 2, 2, 3, 8) and b.target(S.FLOW_2D_BACKWARD).dtype == np.float16
    q = {r[S.SAMPLE_ID]: r for p in (tiny_rows(3, 2, 1), tiny_rows(1, 3, offset=3)) for r in p[1]}
    for sid, (b, i) in by_id.items():  # every question got ITS clip's frames and targets (PNG is lossless)
        clip_no = int(q[sid][S.QUESTION_ID][1:].split("-")[0])
        np.testing.assert_array_equal(b.frames[i], tiny_clip(clip_no).frames)
        np.testing.assert_array_equal(b.target(S.DEPTH)[i], tiny_targets(spec, clip_no).depth.astype(np.float16))
        assert b.questions[i] == tiny_item().question and b.options[i] == tiny_item().options
        assert b.regions[i][1].obj_id == 2
    assert shards.read_table(S.QUESTIONS).num_rows == 10 and shards.read_table(S.CLIPS).num_rows == 5
    joined = shards.read_joined()
    assert joined.num_rows == 10 and joined.column(S.STATUS).to_pylist().count("error") == 1
    err = joined.filter(pa.compute.equal(joined.column(S.STATUS), "error")).to_pylist()[0]
    assert err[S.ERROR_REASON] == "decode:missing" and err[S.LATENTS] is None


def test_clip_store_reads_each_row_group_once_in_clip_order_and_bounds_memory(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    _write_set(root, [tiny_rows(6, questions_per_clip=8)], rows_per_group=2)  # 3 row groups of 2 clips
    shards = open_shards(root)
    store = ClipStore(shards, max_bytes=1 << 30)
    for table in shards.iter_question_tables(batch_size=5):
        store.batch(table)
    assert store.stats.row_groups_read == 3 and store.stats.clips_decoded == 6  # not once per question (48)
    assert store.stats.hits + store.stats.misses == 48 and store.stats.misses == 3
    one_group = store.cached_bytes // 3
    small = ClipStore(shards, max_bytes=one_group)  # room for one row group: reversed order re-reads
    ids = shards.read_table(S.QUESTIONS).column(S.CLIP_ID).to_pylist()
    small.get(ids)
    small.get(ids[::-1])
    assert small.cached_bytes <= one_group and small.stats.row_groups_read == 5
    with pytest.raises(ShardCodecError, match="not in the committed clip table"):
        small.get(["0" * 32])


def test_an_ok_question_on_an_error_clip_is_refused(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    clips, questions = tiny_rows(0, n_err=1)
    questions[0] = {**questions[0], S.STATUS: "ok", S.ERROR_REASON: None, S.ERROR_MESSAGE: None}
    _write_set(root, [(clips, questions)], with_manifest=False)
    state = scan_written(root)
    with pytest.raises(ShardCommitError, match="1 ok questions refer to clips that are not ok"):
        commit(root, state, tiny_spec(), SAMPLING)
    assert not Path(root, MANIFEST_NAME).exists()
    one = Counts(total=1, ok=1)  # a hand-written manifest past the commit check: the reader still refuses
    write_manifest(root, build_manifest(tiny_spec(), SAMPLING, one, one, state.files))
    with pytest.raises(ShardCodecError, match="is an error row"):
        list(open_shards(root).iter_batches(batch_size=1))


def test_reader_refuses_missing_manifest_v1_and_other_schema_version(tmp_path: Path) -> None:
    root = str(tmp_path / "incomplete")
    _write_set(root, [tiny_rows(2)], with_manifest=False)
    with pytest.raises(ShardManifestError, match="no _manifest.json.*incomplete"):
        open_shards(root)
    _write_set(root, [tiny_rows(2)])
    path = Path(root) / MANIFEST_NAME
    d = json.loads(path.read_text())
    path.write_text(json.dumps({**d, "schema_version": 1}))
    with pytest.raises(ShardManifestError, match="schema version 1 .*" + CONVERT_V1_COMMAND.split("<")[0]):
        open_shards(root)
    path.write_text(json.dumps({**d, "schema_version": S.SCHEMA_VERSION + 1}))
    with pytest.raises(ShardManifestError, match=f"schema version {S.SCHEMA_VERSION + 1}"):
        open_shards(root)
    assert read_manifest(root, check_version=False).schema_version == S.SCHEMA_VERSION + 1
    path.write_text("{}")
    with pytest.raises(ShardManifestError, match="malformed"):
        open_shards(root)


def test_files_outside_the_manifest_are_not_read(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    _write_set(root, [tiny_rows(2)])
    _write_set(root, [tiny_rows(1, offset=7)], with_manifest=False)  # a later writer's part, not committed
    with pytest.raises(ShardCommitError, match="clip ids written more than once"):  # the same part twice
        _write_set(str(tmp_path / "twice"), [tiny_rows(1), (tiny_rows(1)[0], [])])
    shards = open_shards(root)
    assert shards.read_table(S.QUESTIONS).num_rows == 2 and shards.read_table(S.CLIPS).num_rows == 2
    assert sum(len(b) for b in shards.iter_batches(batch_size=8)) == 2


def test_scan_written_separates_partial_files_of_both_tables(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    _write_set(root, [tiny_rows(2), tiny_rows(2, offset=2)], with_manifest=False)
    state = scan_written(root)
    assert len(state.clips.files) == len(state.questions.files) == 2 and state.partial == []
    victim = sorted(Path(root, S.QUESTIONS).glob("*.parquet"))[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # killed mid-write
    state = scan_written(root)
    assert len(state.clips.files) == 2 and len(state.questions.files) == 1
    assert state.partial == [storage.join(root, S.QUESTIONS, victim.name)]
    assert len(state.sample_ids) == 2 and len(state.clip_ids) == 4
    assert scan_written(str(tmp_path / "nothing")).sample_ids == set()


def test_claim_directory_refuses_another_expert_or_sampling(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    assert claim_directory(root, tiny_spec(), SAMPLING) is False
    assert claim_directory(root, tiny_spec(), SAMPLING) is True  # resume
    with pytest.raises(ShardManifestError, match="another sampling"):
        claim_directory(root, tiny_spec(), {**SAMPLING, "num_frames": 8})
    other = tiny_spec(targets=("depth",))
    with pytest.raises(ShardManifestError, match="another expert"):
        claim_directory(root, other, SAMPLING)


def test_reader_on_s3(s3_bucket: str) -> None:
    root = f"{s3_bucket}/shards/v2"
    _write_set(root, [tiny_rows(2, questions_per_clip=2, n_err=1)])
    shards = open_shards(root)
    assert shards.manifest.counts.total == 5 and shards.manifest.clip_counts.total == 3
    (batch,) = list(shards.iter_batches(batch_size=8))
    assert len(batch) == 4 and batch.target(S.CAMRAY).shape == (4, 2, 2, 2, 6)
    assert scan_written(root).sample_ids == {r[S.SAMPLE_ID] for r in tiny_rows(2, 2, n_err=1)[1]}
