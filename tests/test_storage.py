"""Storage: the same calls on local paths and on a real S3 endpoint (moto server on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rgpt4d_core import storage


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return str(request.getfixturevalue("s3_bucket")) + "/root"


def test_write_read_exists_size_listdir(root: str) -> None:
    a, b = storage.join(root, "dir", "a.bin"), storage.join(root, "dir/", "/b.bin")
    assert not storage.exists(a)
    storage.write_bytes(a, b"hello")
    storage.write_bytes(b, b"x" * 10)
    assert storage.exists(a) and storage.exists(storage.join(root, "dir"))
    assert storage.size(b) == 10
    assert storage.read_bytes(a) == b"hello"
    with storage.open_input(b) as fh:
        fh.seek(5)
        assert fh.read() == b"x" * 5
    assert storage.listdir(storage.join(root, "dir")) == [a, b]
    assert storage.listdir(storage.join(root, "nothing-here")) == []


def test_missing_and_oversized_inputs_name_the_uri(root: str) -> None:
    missing = storage.join(root, "missing.bin")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        storage.open_input(missing)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        storage.read_bytes(missing, max_bytes=10)
    big = storage.join(root, "big.bin")
    storage.write_bytes(big, b"y" * 100)
    with pytest.raises(storage.StorageError, match="big.bin.*limit of 99"):
        storage.read_bytes(big, max_bytes=99)
    assert storage.read_bytes(big, max_bytes=100) == b"y" * 100


def test_filesystem_for_round_trips_parquet(root: str) -> None:
    uri = storage.join(root, "table", "part-0.parquet")
    fs, path = storage.filesystem_for(uri)
    assert not path.startswith("s3://")
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    table = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]})
    pq.write_table(table, path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).equals(table)
    assert storage.exists(uri)  # written through pyarrow, seen through s3fs / the local FS
    assert storage.read_bytes(uri)[:4] == b"PAR1"


def test_join_and_scheme_checks() -> None:
    assert storage.join("s3://b", "x", "y.mp4") == "s3://b/x/y.mp4"
    assert storage.join("s3://b/pre/", "/x/") == "s3://b/pre/x"
    assert storage.join("/data", "a", "", "b") == "/data/a/b"
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/s3://b")
    for bad in ("http://example.com/x.mp4", "file:///etc/passwd", "gs://b/k", "s3:///key", ""):
        with pytest.raises(storage.StorageError):
            storage.exists(bad)


def test_local_writes_are_atomic_and_create_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.txt"
    storage.write_bytes(str(target), b"1")
    storage.write_bytes(str(target), b"22")
    assert target.read_bytes() == b"22"
    assert sorted(p.name for p in target.parent.iterdir()) == ["c.txt"]  # no temp file left behind
