"""Manifest and reader: typed batches with bare pyarrow, refusal of incomplete / other-version sets, resume scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shards_testkit import tiny_clip, tiny_item, tiny_spec, tiny_targets

from rgpt4d_core import storage
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import SampleSource, encode_error, encode_sample
from rgpt4d_core.shards.manifest import (
    DATA_DIR,
    MANIFEST_NAME,
    Counts,
    ShardManifestError,
    build_manifest,
    claim_directory,
    read_manifest,
    write_manifest,
)
from rgpt4d_core.shards.reader import open_shards, scan_written, written_sample_ids

SAMPLING = {"num_frames": 4, "size": [32, 48], "image_format": "png"}


def _rows(n: int, n_err: int = 0, offset: int = 0) -> list[dict]:
    spec = tiny_spec()
    shapes = S.tensor_shapes(spec)
    rows = []
    for i in range(offset, offset + n):
        item = tiny_item(qid=f"q{i}", video=f"/data/v{i}.mp4")
        rows.append(encode_sample(SampleSource(item, "train"), spec, tiny_clip(i, item.video), tiny_targets(spec, i),
                                  shapes, image_format="png"))
    for i in range(n_err):
        item = tiny_item(qid=f"bad{offset + i}", video="/data/missing.mp4")
        rows.append(encode_error(SampleSource(item, "train"), spec, "decode:missing", "no such file"))
    return rows


def _write_set(root: str, chunks: list[list[dict]], with_manifest: bool = True) -> None:
    """Write data files the way the precompute job lays them out (``data/*.parquet``), then the manifest."""
    spec = tiny_spec()
    schema = S.arrow_schema(S.tensor_shapes(spec))
    fs, base = storage.filesystem_for(storage.join(root, DATA_DIR))
    fs.create_dir(base, recursive=True)
    for i, rows in enumerate(chunks):
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), f"{base}/part-{i}.parquet", filesystem=fs,
                       row_group_size=2)
    if with_manifest:
        state = scan_written(root)
        statuses = state.keys.column(S.STATUS).to_pylist()
        counts = Counts(total=len(statuses), ok=statuses.count("ok"), error=statuses.count("error"),
                        errors_by_reason={"decode:missing": statuses.count("error")} if "error" in statuses else {})
        write_manifest(root, build_manifest(spec, SAMPLING, counts, state.files))


def test_reader_yields_typed_batches_across_files_and_skips_errors(tmp_path: Path) -> None:
    root = str(tmp_path / "shards")
    _write_set(root, [_rows(3, n_err=1), _rows(2, offset=3)])
    shards = open_shards(root)
    m = shards.manifest
    assert m.counts.total == 6 and m.counts.ok == 5 and m.counts.errors_by_reason == {"decode:missing": 1}
    assert m.expert_spec == tiny_spec() and m.sampling == SAMPLING and len(m.files) == 2
    assert m.bytes == sum(f.bytes for f in m.files) > 0 and m.schema_version == S.SCHEMA_VERSION
    batches = list(shards.iter_batches(batch_size=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    spec = tiny_spec()
    b = batches[0]
    assert b.frames.dtype == np.uint8 and b.frames.shape == (2, 4, 32, 48, 3)
    assert b.timestamps_s.dtype == np.float32 and b.timestamps_s.shape == (2, 4)
    assert b.target(S.LATENTS).shape == (2, 2, 2, 2, 3, 8)
    assert b.target(S.FLOW_2D_BACKWARD).dtype == np.float16
    np.testing.assert_array_equal(b.frames[1], tiny_clip(1).frames)  # PNG is lossless
    np.testing.assert_array_equal(b.target(S.DEPTH)[1], np.asarray(tiny_targets(spec, 1).depth).astype(np.float16))
    ids = [s for x in batches for s in x.sample_ids]
    assert len(ids) == len(set(ids)) == 5
    assert b.questions[0] == tiny_item().question and b.options[0] == tiny_item().options
    assert b.regions[0][1].obj_id == 2
    full = shards.read_table()
    assert full.num_rows == 6 and full.column(S.STATUS).to_pylist().count("error") == 1


def test_reader_refuses_missing_manifest_and_other_schema_version(tmp_path: Path) -> None:
    root = str(tmp_path / "incomplete")
    _write_set(root, [_rows(2)], with_manifest=False)
    with pytest.raises(ShardManifestError, match="no _manifest.json.*incomplete"):
        open_shards(root)
    _write_set(root, [_rows(2)])
    path = Path(root) / MANIFEST_NAME
    d = json.loads(path.read_text())
    d["schema_version"] = S.SCHEMA_VERSION + 1
    path.write_text(json.dumps(d))
    with pytest.raises(ShardManifestError, match=f"schema version {S.SCHEMA_VERSION + 1}"):
        open_shards(root)
    assert read_manifest(root, check_version=False).schema_version == S.SCHEMA_VERSION + 1
    path.write_text("{}")
    with pytest.raises(ShardManifestError, match="malformed"):
        open_shards(root)


def test_files_outside_the_manifest_are_not_read(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    _write_set(root, [_rows(2)])
    # a later writer leaves a file the manifest does not list
    extra = pa.Table.from_pylist(_rows(1, offset=7), schema=S.arrow_schema(S.tensor_shapes(tiny_spec())))
    pq.write_table(extra, str(Path(root) / DATA_DIR / "stray.parquet"))
    assert open_shards(root).read_table().num_rows == 2


def test_scan_written_separates_partial_files(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    _write_set(root, [_rows(2), _rows(2, offset=2)], with_manifest=False)
    whole = (Path(root) / DATA_DIR / "part-1.parquet").read_bytes()
    (Path(root) / DATA_DIR / "part-1.parquet").write_bytes(whole[: len(whole) // 2])  # killed mid-write
    state = scan_written(root)
    assert [f.path for f in state.files] == [f"{DATA_DIR}/part-0.parquet"]
    assert state.partial == [storage.join(root, DATA_DIR, "part-1.parquet")]
    assert written_sample_ids(root) == {r[S.SAMPLE_ID] for r in _rows(2)}
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
    root = f"{s3_bucket}/shards/v1"
    _write_set(root, [_rows(2, n_err=1)])
    shards = open_shards(root)
    assert shards.manifest.counts.total == 3
    (batch,) = list(shards.iter_batches(batch_size=8))
    assert len(batch) == 2 and batch.target(S.CAMRAY).shape == (2, 2, 2, 2, 6)
    assert written_sample_ids(root) == {r[S.SAMPLE_ID] for r in _rows(2, n_err=1)}
