"""The v1 -> v2 converter: a v1 set (one row per question, clip columns repeated) is refused by the reader with the
command to run, and that command writes a v2 set holding the same questions, clips, frames and targets."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from shards_testkit import SAMPLING, tiny_item, tiny_rows, tiny_spec, write_v1_copy

from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import make_clip_id
from rgpt4d_core.shards.commit import commit
from rgpt4d_core.shards.convert_v1 import convert, main
from rgpt4d_core.shards.manifest import CONVERT_V1_COMMAND, ShardManifestError
from rgpt4d_core.shards.reader import open_shards, scan_written
from rgpt4d_core.shards.rows import SampleSource, question_row
from rgpt4d_core.shards.writer import write_part


def _v2_set(root: str) -> str:
    shapes = S.tensor_shapes(tiny_spec())
    clips, questions = tiny_rows(3, questions_per_clip=3, n_err=1)
    bad = SampleSource(tiny_item("qa-bad", "/data/v0.mp4"), "val")
    questions.append(question_row(bad, make_clip_id("/data/v0.mp4", SAMPLING), ("qa:undefined_region", "<obj_9>")))
    write_part(root, pa.Table.from_pylist(clips, schema=S.arrow_schema(S.CLIPS, shapes)),
               pa.Table.from_pylist(questions, schema=S.arrow_schema(S.QUESTIONS, shapes)), 2)
    commit(root, scan_written(root), tiny_spec(), SAMPLING)
    return root


def _by_question(root: str) -> dict[str, dict]:
    return {r[S.QUESTION_ID]: r for r in open_shards(root).read_joined().to_pylist()}


def test_v1_is_refused_with_the_command_and_converts_to_the_same_data(tmp_path: Path) -> None:
    original = _v2_set(str(tmp_path / "v2"))
    v1 = write_v1_copy(original, str(tmp_path / "v1"))
    with pytest.raises(ShardManifestError, match="schema version 1") as info:
        open_shards(v1)
    assert CONVERT_V1_COMMAND in str(info.value)

    m = convert(v1, str(tmp_path / "converted"), clips_per_file=2)
    assert m.schema_version == S.SCHEMA_VERSION and m.extra["converted_from"]["schema_version"] == 1
    want = open_shards(original).manifest
    assert (m.counts, m.clip_counts) == (want.counts, want.clip_counts)  # 11 questions (2 error), 4 clips (1 error)
    assert m.clip_counts.total == 4 and m.counts.errors_by_reason == {"decode:missing": 1, "qa:undefined_region": 1}
    assert len(m.files_of(S.CLIPS)) == 2 and sum(f.rows for f in m.files_of(S.CLIPS)) == 4  # each clip once
    got, ref = _by_question(str(tmp_path / "converted")), _by_question(original)
    assert sorted(got) == sorted(ref)
    for qid, row in got.items():
        for name in (S.SAMPLE_ID, S.CLIP_ID, S.STATUS, S.ERROR_REASON, S.SPLIT, S.QUESTION, S.FRAMES, S.LATENTS,
                     S.DEPTH, S.TIMESTAMPS_S):
            assert row[name] == ref[qid][name], (qid, name)
    batches = list(open_shards(str(tmp_path / "converted")).iter_batches(batch_size=4))
    assert sum(len(b) for b in batches) == 9


def test_converter_cli_refuses_v2_sources_and_existing_targets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    original = _v2_set(str(tmp_path / "v2"))
    v1 = write_v1_copy(original, str(tmp_path / "v1"))
    main([v1, str(tmp_path / "out"), "--clips-per-file", "8"])
    assert json.loads(capsys.readouterr().out) == {"questions": 11, "clips": 4,
                                                   "bytes": open_shards(str(tmp_path / "out")).manifest.bytes}
    with pytest.raises(ShardManifestError, match="already holds a shard set"):
        convert(v1, str(tmp_path / "out"))
    with pytest.raises(ShardManifestError, match="not a v1 shard set"):
        convert(original, str(tmp_path / "again"))
