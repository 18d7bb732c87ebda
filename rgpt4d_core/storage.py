"""Uniform access to local paths and ``s3://bucket/key`` URIs.

One small module so that precompute, the synthetic writer, distillation and serving all read and write the
same way:

* a URI is either a local path (``/data/x.mp4``, ``runs/a``) or ``s3://bucket/key``;
* S3 goes through s3fs (byte streams) and ``pyarrow.fs.S3FileSystem`` (Parquet / Ray Data writes);
* the endpoint comes from :class:`StorageConfig` or, when unset, the ``AWS_ENDPOINT_URL_S3`` /
  ``AWS_ENDPOINT_URL`` environment variables (moto, MinIO, Ceph); credentials come **only** from the
  environment / the standard AWS credential chain and are never passed around or logged here.

Other schemes (``http://``, ``file://``, ``gs://`` ...) are refused with :class:`StorageError`: deciding whether
a caller may read arbitrary local files or URLs is the job of the layer that accepts user input (serving).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

S3_SCHEME = "s3://"


class StorageError(OSError):
    """A URI could not be read or written; the message names the URI."""


@dataclass(frozen=True)
class StorageConfig:
    """Where S3 lives. Empty fields fall back to the environment (``AWS_ENDPOINT_URL[_S3]``, ``AWS_DEFAULT_REGION``)."""

    endpoint_url: str | None = None
    region: str | None = None


def is_s3(uri: str) -> bool:
    """True for ``s3://bucket/key`` URIs."""
    return uri.startswith(S3_SCHEME)


def check_uri(uri: str) -> None:
    """Raise :class:`StorageError` unless ``uri`` is a local path or ``s3://bucket[/key]``."""
    if not uri:
        raise StorageError("empty URI")
    if is_s3(uri):
        if not uri[len(S3_SCHEME) :].split("/", 1)[0]:
            raise StorageError(f"S3 URI without a bucket: {uri!r}")
        return
    if "://" in uri:
        raise StorageError(f"unsupported URI scheme in {uri!r} (use a local path or s3://bucket/key)")


#: the environment variables :func:`_endpoint` and :func:`_region` read: what jobs forward into their Ray
#: runtime_env by default (``forward_env``), since workers of a running cluster do not see the driver's environment
S3_ENV_VARS: tuple[str, ...] = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")


def _endpoint(cfg: StorageConfig | None) -> str | None:
    if cfg is not None and cfg.endpoint_url:
        return cfg.endpoint_url
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region(cfg: StorageConfig | None) -> str:
    if cfg is not None and cfg.region:
        return cfg.region
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def s3fs_for(cfg: StorageConfig | None = None) -> Any:
    """An ``s3fs.S3FileSystem`` for the configured endpoint (credentials from the environment).

    Listing caches are off so that objects written by other processes (Ray workers) are seen at once.
    """
    import s3fs

    endpoint = _endpoint(cfg)
    client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
    return s3fs.S3FileSystem(client_kwargs=client_kwargs, use_listings_cache=False)


def _s3_key(uri: str) -> str:
    """``s3://bucket/key`` -> ``bucket/key`` (the form s3fs and pyarrow take)."""
    return uri[len(S3_SCHEME) :].rstrip("/")


def filesystem_for(uri: str, cfg: StorageConfig | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for ``pyarrow.parquet`` and Ray Data ``filesystem=``.

    Returns:
        ``(pyarrow.fs.S3FileSystem, "bucket/key")`` for S3 URIs (pass the path *without* ``s3://`` together
        with ``filesystem=``), ``(pyarrow.fs.LocalFileSystem, "/abs/path")`` for local paths.
    """
    check_uri(uri)
    if not is_s3(uri):
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    kwargs: dict[str, Any] = {"region": _region(cfg)}
    endpoint = _endpoint(cfg)
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**kwargs), _s3_key(uri)


def join(uri: str, *parts: str) -> str:
    """Join path components onto a local path or S3 URI with ``/`` (no normalisation of ``..``)."""
    check_uri(uri)
    out = uri.rstrip("/") if uri not in ("/", S3_SCHEME) else uri
    for p in parts:
        p = p.strip("/")
        if p:
            out = f"{out}/{p}" if not out.endswith("/") else f"{out}{p}"
    return out


def exists(uri: str, cfg: StorageConfig | None = None) -> bool:
    """Whether a file or directory (prefix) exists at ``uri``."""
    check_uri(uri)
    if is_s3(uri):
        return bool(s3fs_for(cfg).exists(_s3_key(uri)))
    return Path(uri).exists()


def size(uri: str, cfg: StorageConfig | None = None) -> int:
    """Size of the object/file at ``uri`` in bytes; :class:`FileNotFoundError` when it does not exist."""
    check_uri(uri)
    try:
        if is_s3(uri):
            return int(s3fs_for(cfg).size(_s3_key(uri)))
        return Path(uri).stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {uri}") from None


def open_input(uri: str, cfg: StorageConfig | None = None) -> IO[bytes]:
    """Open ``uri`` for binary reading (seekable). The caller closes it (use ``with``).

    Raises:
        FileNotFoundError: nothing at ``uri`` (message names it).
        StorageError: unsupported scheme or an I/O failure.
    """
    check_uri(uri)
    try:
        if is_s3(uri):
            fh: IO[bytes] = s3fs_for(cfg).open(_s3_key(uri), "rb")
            return fh
        return open(uri, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {uri}") from None
    except IsADirectoryError:
        raise StorageError(f"is a directory, not a file: {uri}") from None


def read_bytes(uri: str, max_bytes: int | None = None, cfg: StorageConfig | None = None) -> bytes:
    """The whole content of ``uri``.

    Args:
        max_bytes: refuse (``StorageError``) objects larger than this, checked *before* reading.
    """
    if max_bytes is not None:
        n = size(uri, cfg)
        if n > max_bytes:
            raise StorageError(f"{uri} is {n} bytes, more than the limit of {max_bytes}")
    with open_input(uri, cfg) as fh:
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # grew between size() and read()
        raise StorageError(f"{uri} is more than the limit of {max_bytes} bytes")
    return data


def write_bytes(uri: str, data: bytes, cfg: StorageConfig | None = None) -> None:
    """Write ``data`` to ``uri``, creating local parent directories. Local writes are atomic (rename)."""
    check_uri(uri)
    if is_s3(uri):
        with s3fs_for(cfg).open(_s3_key(uri), "wb") as fh:
            fh.write(data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def listdir(uri: str, cfg: StorageConfig | None = None) -> list[str]:
    """Full URIs of the direct children of directory/prefix ``uri``, sorted. Empty when nothing is there."""
    check_uri(uri)
    if is_s3(uri):
        fs = s3fs_for(cfg)
        key = _s3_key(uri)
        try:
            names = fs.ls(key, detail=False)
        except FileNotFoundError:
            return []
        return sorted(S3_SCHEME + n.rstrip("/") for n in names if n.rstrip("/") != key)
    path = Path(uri)
    if not path.is_dir():
        return []
    return sorted(join(uri, p.name) for p in path.iterdir())
