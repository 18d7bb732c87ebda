"""Codec: every column survives encode -> Parquet -> decode; sample ids are deterministic; bad values fail loudly."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shards_testkit import tiny_clip, tiny_item, tiny_spec, tiny_targets

from rgpt4d_core.experts.base import DENSE_TARGETS, ExpertTargets
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import (
    SampleSource,
    ShardCodecError,
    decode_row,
    encode_error,
    encode_sample,
    make_sample_id,
)


def _through_parquet(rows: list[dict], shapes: dict) -> list[dict]:
    table = pa.Table.from_pylist(rows, schema=S.arrow_schema(shapes))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    back = pq.read_table(io.BytesIO(buf.getvalue()))
    expected = S.arrow_schema(shapes)
    assert back.schema.names == expected.names and back.schema.metadata == expected.metadata
    for f in expected:  # Parquet keeps field metadata (tensor shapes) and types (list item names aside)
        assert back.schema.field(f.name).metadata == f.metadata
        assert back.schema.field(f.name).type.equals(f.type, check_metadata=False) or f.name in (
            S.FRAME_INDICES, S.TIMESTAMPS_S, S.FRAMES, S.REGIONS, S.OPTIONS)
    return back.to_pylist()


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_every_column_round_trips(image_format: str) -> None:
    spec = tiny_spec()
    shapes = S.tensor_shapes(spec)
    clip, targets, item = tiny_clip(), tiny_targets(spec), tiny_item()
    src = SampleSource(item=item, split="train", scene_id="scene-3")
    row = encode_sample(src, spec, clip, targets, shapes, image_format=image_format)
    (back,) = _through_parquet([row], shapes)

    # raw column values: identical after Parquet for every column
    for col in S.COLUMNS:
        if col.name == S.REGIONS:
            for a, b in zip(row[col.name], back[col.name], strict=True):
                assert a[S.REGION_OBJ_ID] == b[S.REGION_OBJ_ID] and a[S.REGION_LABEL] == b[S.REGION_LABEL]
                np.testing.assert_allclose(a[S.REGION_BOX], b[S.REGION_BOX], rtol=1e-6)
        else:
            assert back[col.name] == row[col.name], col.name
    nulls = {c for c in S.COLUMNS_BY_NAME if back[c] is None}
    assert nulls == {S.ERROR_REASON, S.ERROR_MESSAGE}

    # decoded types
    d = decode_row(back, shapes)
    assert d.status == S.STATUS_OK and d.sample_id == make_sample_id(item.video, clip.frame_indices, item.id)
    assert d.source.split == "train" and d.source.scene_id == "scene-3"
    assert d.expert_name == spec.name and d.expert_revision == spec.revision
    assert d.source.item.options == item.options and d.source.item.answer_letter == "B"
    assert [r.obj_id for r in d.source.item.regions] == [1, 2]
    assert d.source.item.regions[0].label == "box" and d.source.item.regions[1].label is None
    np.testing.assert_allclose(d.source.item.regions[1].box, item.regions[1].box, rtol=1e-6)
    assert d.clip is not None
    assert d.clip.frames.dtype == np.uint8 and d.clip.frames.shape == clip.frames.shape
    err = np.abs(d.clip.frames.astype(int) - clip.frames.astype(int))
    assert (err.max() == 0) if image_format == "png" else (err.mean() < 3.0)
    np.testing.assert_array_equal(d.clip.timestamps_s, clip.timestamps_s)
    np.testing.assert_array_equal(d.clip.frame_indices, clip.frame_indices)
    assert d.clip.num_source_frames == 10 and d.clip.fps == 10.0
    for name in S.TENSOR_COLUMNS:
        got = getattr(d.targets, name)
        assert got.dtype == np.float16 and got.shape == shapes[name]
        np.testing.assert_array_equal(got, getattr(targets, name).astype(np.float16))


def test_sample_id_is_deterministic_and_sensitive_to_each_input() -> None:
    base = make_sample_id("s3://b/v.mp4", [0, 5, 9], "q1")
    assert base == make_sample_id("s3://b/v.mp4", np.array([0, 5, 9]), "q1")
    assert len(base) == 32 and int(base, 16) >= 0
    others = {
        make_sample_id("s3://b/w.mp4", [0, 5, 9], "q1"),
        make_sample_id("s3://b/v.mp4", [0, 5, 8], "q1"),
        make_sample_id("s3://b/v.mp4", [0, 5, 9], "q2"),
        make_sample_id("s3://b/v.mp4", [], "q1"),
    }
    assert base not in others and len(others) == 4


def test_error_row_fits_schema_with_null_payload() -> None:
    spec = tiny_spec()
    shapes = S.tensor_shapes(spec)
    src = SampleSource(item=tiny_item(), split="val")
    row = encode_error(src, spec, "decode:corrupt", "/data/v0.mp4: moov atom not found")
    (back,) = _through_parquet([row], shapes)
    assert back[S.STATUS] == S.STATUS_ERROR and back[S.ERROR_REASON] == "decode:corrupt"
    assert "moov" in back[S.ERROR_MESSAGE]
    assert back[S.FRAMES] is None and all(back[c] is None for c in S.TENSOR_COLUMNS)
    assert back[S.QUESTION] == tiny_item().question
    d = decode_row(back, shapes)
    assert d.clip is None and d.targets.available() == ()
    assert d.sample_id == make_sample_id("/data/v0.mp4", [], "q0")


def test_expert_without_latents_leaves_columns_null() -> None:
    spec = tiny_spec(targets=("flow_2d_backward", "dyn_mask"))
    shapes = S.tensor_shapes(spec)
    assert shapes[S.LATENTS] is None and shapes[S.DEPTH] is None
    row = encode_sample(SampleSource(tiny_item(), "train"), spec, tiny_clip(), tiny_targets(spec), shapes)
    (back,) = _through_parquet([row], shapes)
    d = decode_row(back, shapes)
    assert d.targets.available() == ("flow_2d_backward", "dyn_mask")


def test_bad_targets_raise_naming_sample_and_column() -> None:
    spec = tiny_spec()
    shapes = S.tensor_shapes(spec)
    src = SampleSource(tiny_item(), "train")
    good = tiny_targets(spec)
    sid = make_sample_id(src.item.video, tiny_clip().frame_indices, src.item.id)
    wrong_shape = ExpertTargets(**{**{n: getattr(good, n) for n in ("latents", *DENSE_TARGETS)},
                                   "depth": np.ones((1, 2, 3), np.float32)})
    with pytest.raises(ShardCodecError, match=f"sample {sid}: column 'depth' has shape"):
        encode_sample(src, spec, tiny_clip(), wrong_shape, shapes)
    nan = ExpertTargets(**{**{n: getattr(good, n) for n in ("latents", *DENSE_TARGETS)},
                           "camray": np.full((2, 2, 2, 6), np.nan, np.float32)})
    with pytest.raises(ShardCodecError, match="'camray' has non-finite"):
        encode_sample(src, spec, tiny_clip(), nan, shapes)
    missing = ExpertTargets(latents=good.latents)
    with pytest.raises(ShardCodecError, match="should provide 'depth'"):
        encode_sample(src, spec, tiny_clip(), missing, shapes)
    with pytest.raises(ShardCodecError, match="frames_format"):
        encode_sample(src, spec, tiny_clip(), good, shapes, image_format="gif")
