"""The shard schema contract: snapshot per version, derived Arrow schema, real-preset sizing."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pyarrow as pa
import pytest

from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.shards import schema as S

#: fingerprint of the column list for each released schema version. A schema change must bump
#: SCHEMA_VERSION and add a line here (never edit an existing line).
SNAPSHOTS = {
    1: "fbb7991389ed6f1cb372cc9cb3debede507323ec6fb6a2e21f453d2127bdb862",
    2: "b081d1b767b00cebbbb6d27dadc9acb439e4c9ada8ce4f1c99691793a98e79d6",
}

ROOT = Path(__file__).resolve().parents[1]


def test_schema_matches_snapshot_of_its_version() -> None:
    assert S.SCHEMA_VERSION in SNAPSHOTS, (
        f"schema version {S.SCHEMA_VERSION} has no snapshot; add {S.fingerprint()!r} to SNAPSHOTS"
    )
    assert S.fingerprint() == SNAPSHOTS[S.SCHEMA_VERSION], (
        "the shard schema changed without a SCHEMA_VERSION bump; columns now:\n"
        + json.dumps(S.describe(), indent=1)
    )


def test_snapshot_detects_a_column_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fingerprint moves when any attribute of a column changes (so the snapshot test can fail)."""
    before = S.fingerprint()
    for table, columns in S.TABLES.items():
        first = columns[0]
        for changed in (
            S.ColumnSpec(first.name + "_x", first.arrow_type, first.shape, first.dtype, first.unit, first.description),
            S.ColumnSpec(first.name, pa.large_string(), first.shape, first.dtype, first.unit, first.description),
            S.ColumnSpec(first.name, first.arrow_type, first.shape, first.dtype, "m", first.description),
        ):
            monkeypatch.setattr(S, "TABLES", {**S.TABLES, table: (changed, *columns[1:])})
            assert S.fingerprint() != before
        monkeypatch.undo()


def test_arrow_schema_has_every_column_once_with_metadata() -> None:
    spec = ExpertSpec("x", "r", 16, (224, 224), (1, 2), (8, 16, 16), 64, (16, 224, 224), (0, 0, 0),
                      targets=("latents", "depth", "flow_2d_backward", "dyn_mask"))
    for table in (S.CLIPS, S.QUESTIONS):
        other = S.arrow_schema(table, S.tensor_shapes(spec))
        assert other.names == [c.name for c in S.TABLES[table]] and len(set(other.names)) == len(other.names)
        assert other.metadata[S.META_SCHEMA_VERSION] == str(S.SCHEMA_VERSION).encode()
        assert other.metadata[S.META_TABLE] == table.encode()
        assert set(S.KEY_COLUMNS[table]) <= set(other.names) and S.CLIP_ID in other.names
    schema = S.arrow_schema(S.CLIPS, S.tensor_shapes(spec))
    latents = schema.field(S.LATENTS)
    assert json.loads(latents.metadata[S.META_SHAPE]) == [2, 8, 16, 16, 64]
    assert latents.metadata[S.META_DTYPE] == b"float16"
    assert json.loads(schema.field(S.DEPTH).metadata[S.META_SHAPE]) == [16, 224, 224]
    assert schema.field(S.DEPTH).metadata[S.META_UNIT] == b"m"
    # camray not provided: the field keeps its symbolic shape
    assert json.loads(schema.field(S.CAMRAY).metadata[S.META_SHAPE]) == ["Tc", "hc", "wc", "6"]
    assert S.tensor_shapes(spec)[S.CAMRAY] is None
    for name in S.TENSOR_COLUMNS:
        assert schema.field(name).type == pa.large_binary()  # no 2 GiB int32-offset limit per row group
    assert set(S.CLIP_TRAIN_COLUMNS) <= set(schema.names)
    assert not set(S.TENSOR_COLUMNS) & set(S.arrow_schema(S.QUESTIONS).names)  # targets live in the clip table only
    assert S.FRAMES not in S.arrow_schema(S.QUESTIONS).names
    for train in (S.CLIP_TRAIN_COLUMNS, S.QUESTION_TRAIN_COLUMNS):
        assert S.STATUS in train and S.CLIP_ID in train and S.EXPERT_NAME not in train
    with pytest.raises(KeyError, match="tables are"):
        S.arrow_schema("data")


def test_real_preset_bytes_per_clip_match_paper_sizing() -> None:
    """L4P shapes (4 hooks x 8x16x16x1408, 16x224x224 dense, 16x16x16 rays) give paper-spec §7's ~29.5 MB."""
    l4p = ExpertSpec("l4p", "v1", 16, (224, 224), (14, 21, 28, 36), (8, 16, 16), 1408, (16, 224, 224),
                     (16, 16, 16), targets=("latents", "depth", "flow_2d_backward", "dyn_mask", "camray"))
    shapes = S.tensor_shapes(l4p)
    assert shapes[S.LATENTS] == (4, 8, 16, 16, 1408)
    assert shapes[S.FLOW_2D_BACKWARD] == (16, 224, 224, 2)
    per_clip = S.tensor_nbytes(shapes)
    latent = 2 * 4 * 2048 * 1408
    dense = 2 * 16 * 224 * 224 * (1 + 2 + 1)
    rays = 2 * 16 * 16 * 16 * 6
    assert per_clip == latent + dense + rays
    assert 29e6 < per_clip < 30e6


@pytest.mark.parametrize("rel", ["rgpt4d_core/shards/codec.py", "rgpt4d_core/shards/reader.py",
                                 "rgpt4d_core/shards/manifest.py", "pipelines/precompute.py",
                                 "rgpt4d_core/shards/rows.py", "rgpt4d_core/shards/batch.py",
                                 "rgpt4d_core/shards/clip_store.py", "rgpt4d_core/shards/writer.py",
                                 "rgpt4d_core/shards/convert_v1.py", "rgpt4d_core/shards/precompute.py",
                                 "pipelines/distill.py", "pipelines/_distill_worker.py"])
def test_no_other_shard_module_spells_a_column_name(rel: str) -> None:
    path = ROOT / rel
    if not path.exists():
        pytest.skip(f"{rel} not written yet")
    names = set(S.COLUMNS_BY_NAME) - {"video", "answer", "question", "options", "task", "regions", "fps",
                                      "duration_s", "scene_id", "som_image", "split"}
    literals = [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)]
    spelled = sorted({v for v in literals if isinstance(v, str) and v in names})
    assert not spelled, f"{rel} spells shard column names {spelled}; import them from rgpt4d_core.shards.schema"
