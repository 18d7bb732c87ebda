"""Codec and rows: every column of both tables survives encode -> Parquet -> decode; ids are deterministic;
bad values fail loudly."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shards_testkit import SAMPLING, tiny_clip, tiny_item, tiny_spec, tiny_targets

from rgpt4d_core.experts.base import DENSE_TARGETS, ExpertTargets
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import ShardCodecError, make_clip_id, make_sample_id
from rgpt4d_core.shards.requests import REQ_VIDEO, clip_fields, clip_of, target_fields, targets_of, to_table
from rgpt4d_core.shards.rows import SampleSource, clip_error_row, clip_row, decode_row, question_row

LIST_COLUMNS = (S.FRAME_INDICES, S.TIMESTAMPS_S, S.FRAMES, S.REGIONS, S.OPTIONS)


def _through_parquet(table_name: str, rows: list[dict], shapes: dict) -> list[dict]:
    expected = S.arrow_schema(table_name, shapes)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=expected), buf)
    back = pq.read_table(io.BytesIO(buf.getvalue()))
    assert back.schema.names == expected.names and back.schema.metadata == expected.metadata
    for f in expected:  # Parquet keeps field metadata (tensor shapes) and types (list item names aside)
        assert back.schema.field(f.name).metadata == f.metadata
        assert back.schema.field(f.name).type.equals(f.type, check_metadata=False) or f.name in LIST_COLUMNS
    return back.to_pylist()


def _same(table_name: str, row: dict, back: dict) -> None:
    for col in S.TABLES[table_name]:
        if col.name == S.REGIONS:
            for a, b in zip(row[col.name], back[col.name], strict=True):
                assert a[S.REGION_OBJ_ID] == b[S.REGION_OBJ_ID] and a[S.REGION_LABEL] == b[S.REGION_LABEL]
                np.testing.assert_allclose(a[S.REGION_BOX], b[S.REGION_BOX], rtol=1e-6)
        else:
            assert back[col.name] == row[col.name], col.name


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_every_column_of_both_tables_round_trips(image_format: str) -> None:
    spec = tiny_spec()
    shapes = S.tensor_shapes(spec)
    clip, targets, item = tiny_clip(), tiny_targets(spec), tiny_item()
    cid = make_clip_id(item.video, SAMPLING)
    crow = clip_row(cid, item.video, spec, clip, targets, shapes, image_format=image_format)
    qrow = question_row(SampleSource(item=item, split="train", scene_id="scene-3"), cid)
    (cback,) = _through_parquet(S.CLIPS, [crow], shapes)
    (qback,) = _through_parquet(S.QUESTIONS, [qrow], shapes)
    _same(S.CLIPS, crow, cback)
    _same(S.QUESTIONS, qrow, qback)
    assert {c for c, v in cback.items() if v is None} == {S.ERROR_REASON, S.ERROR_MESSAGE}
    assert {c for c, v in qback.items() if v is None} == {S.ERROR_REASON, S.ERROR_MESSAGE}

    d = decode_row({**cback, **qback}, shapes)  # a joined row (question columns win, as in read_joined)
    assert d.status == S.STATUS_OK and d.sample_id == make_sample_id(cid, item.id) and d.clip_id == cid
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


def test_ids_are_deterministic_and_sensitive_to_each_input() -> None:
    base = make_clip_id("s3://b/v.mp4", SAMPLING)
    assert base == make_clip_id("s3://b/v.mp4", dict(reversed(list(SAMPLING.items()))))  # key order is irrelevant
    assert len(base) == 32 and int(base, 16) >= 0
    others = {make_clip_id("s3://b/w.mp4", SAMPLING), make_clip_id("s3://b/v.mp4", {**SAMPLING, "num_frames": 8})}
    assert base not in others and len(others) == 2
    sid = make_sample_id(base, "q1")
    assert sid == make_sample_id(base, "q1") and len(sid) == 32
    assert len({sid, make_sample_id(base, "q2"), *(make_sample_id(o, "q1") for o in others)}) == 4


def test_error_rows_fit_their_schemas_with_null_payload() -> None:
    spec = tiny_spec()
    shapes = S.tensor_shapes(spec)
    cid = make_clip_id("/data/v0.mp4", SAMPLING)
    crow = clip_error_row(cid, "/data/v0.mp4", spec, "decode:corrupt", "/data/v0.mp4: moov atom not found")
    qrow = question_row(SampleSource(item=tiny_item(), split="val"), cid, ("decode:corrupt", "moov atom not found"))
    (cback,) = _through_parquet(S.CLIPS, [crow], shapes)
    (qback,) = _through_parquet(S.QUESTIONS, [qrow], shapes)
    assert cback[S.STATUS] == qback[S.STATUS] == S.STATUS_ERROR
    assert cback[S.ERROR_REASON] == qback[S.ERROR_REASON] == "decode:corrupt" and "moov" in cback[S.ERROR_MESSAGE]
    assert cback[S.FRAMES] is None and all(cback[c] is None for c in S.TENSOR_COLUMNS)
    assert qback[S.QUESTION] == tiny_item().question
    d = decode_row(qback, shapes)  # a question whose clip is absent from the join
    assert d.clip is None and d.targets.available() == () and d.expert_name is None
    assert d.sample_id == make_sample_id(cid, "q0")


def test_expert_without_latents_leaves_columns_null() -> None:
    spec = tiny_spec(targets=("flow_2d_backward", "dyn_mask"))
    shapes = S.tensor_shapes(spec)
    assert shapes[S.LATENTS] is None and shapes[S.DEPTH] is None
    row = clip_row("c0", "/data/v0.mp4", spec, tiny_clip(), tiny_targets(spec), shapes)
    (back,) = _through_parquet(S.CLIPS, [row], shapes)
    d = decode_row({**back, **question_row(SampleSource(tiny_item(), "train"), "c0")}, shapes)
    assert d.targets.available() == ("flow_2d_backward", "dyn_mask")


def test_bad_targets_raise_naming_clip_and_column() -> None:
    spec = tiny_spec()
    shapes = S.tensor_shapes(spec)
    good = tiny_targets(spec)
    cid = make_clip_id("/data/v0.mp4", SAMPLING)

    def encode(targets: ExpertTargets, image_format: str = "jpeg") -> dict:
        return clip_row(cid, "/data/v0.mp4", spec, tiny_clip(), targets, shapes, image_format=image_format)

    wrong_shape = ExpertTargets(**{**{n: getattr(good, n) for n in ("latents", *DENSE_TARGETS)},
                                   "depth": np.ones((1, 2, 3), np.float32)})
    with pytest.raises(ShardCodecError, match=f"clip {cid}: column 'depth' has shape"):
        encode(wrong_shape)
    nan = ExpertTargets(**{**{n: getattr(good, n) for n in ("latents", *DENSE_TARGETS)},
                           "camray": np.full((2, 2, 2, 6), np.nan, np.float32)})
    with pytest.raises(ShardCodecError, match="'camray' has non-finite"):
        encode(nan)
    with pytest.raises(ShardCodecError, match=f"clip {cid}: .*should provide 'depth'"):
        encode(ExpertTargets(latents=good.latents))
    with pytest.raises(ShardCodecError, match="frames_format"):
        encode(good, image_format="gif")


def test_precompute_wire_format_carries_a_clip_and_its_targets_through_arrow() -> None:
    """``shards/requests.py`` writes and reads the precompute steps' wire format: a clip and its fp16 targets come
    back from an Arrow table of ``REQUEST_SCHEMA`` as they went in."""
    spec = tiny_spec()
    clip, targets = tiny_clip(), tiny_targets(spec)
    req = {REQ_VIDEO: clip.uri, **clip_fields(clip), **target_fields(targets)}
    [back] = to_table([req]).to_pylist()
    got = clip_of(back)
    assert got is not None and got.uri == clip.uri and got.fps == clip.fps
    assert got.num_source_frames == clip.num_source_frames
    for name in ("frames", "timestamps_s", "frame_indices"):
        np.testing.assert_array_equal(getattr(got, name), getattr(clip, name))
    shapes = S.tensor_shapes(spec)
    got_targets = targets_of(back, shapes)
    for name, shape in shapes.items():
        want = getattr(targets, name)
        if shape is None or want is None:
            assert getattr(got_targets, name) is None
        else:
            np.testing.assert_array_equal(getattr(got_targets, name), np.asarray(want, np.float16))
    assert clip_of({REQ_VIDEO: "v.mp4"}) is None  # a request whose clip was not decoded
