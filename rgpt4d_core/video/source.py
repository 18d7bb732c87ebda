"""Where a video comes from: a local path, an ``s3://`` URI or bytes, resolved after the size checks.

S3 objects are read whole into memory (bounded by ``max_file_bytes``): one GET instead of the many small range
requests a seeking decoder would make.
"""

from __future__ import annotations

import io
import os
import stat
from typing import Any

from rgpt4d_core import storage
from rgpt4d_core.video.limits import BYTES_URI, DecodeConfig, VideoDecodeError, check_size


def looks_like_container(head: bytes) -> bool:
    """True when ``head`` starts like an MP4/MOV (``ftyp`` box), Matroska/WebM (EBML) or AVI file."""
    return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or head[:4] == b"RIFF"


def load_source(source: str | bytes, cfg: DecodeConfig) -> tuple[str | bytes, str]:
    """Resolve ``source`` to a local path or in-memory bytes, after the size checks. Returns ``(src, uri)``."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        check_size(len(data), BYTES_URI, cfg)
        return data, BYTES_URI
    if not isinstance(source, str):
        raise VideoDecodeError(
            "bad_source", repr(type(source)), "source must be a path, an s3:// URI or bytes"
        )
    uri = source
    try:
        storage.check_uri(uri)
    except storage.StorageError as exc:
        raise VideoDecodeError("bad_source", uri, str(exc)) from None
    try:
        if storage.is_s3(uri):
            check_size(storage.size(uri), uri, cfg)
            return storage.read_bytes(uri), uri
        st = os.stat(uri)
    except FileNotFoundError:
        raise VideoDecodeError("missing", uri, "no such file or object") from None
    except OSError as exc:  # permissions, network, ...
        raise VideoDecodeError("unreadable", uri, f"{type(exc).__name__}: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise VideoDecodeError("missing", uri, "not a regular file")
    check_size(st.st_size, uri, cfg)
    return uri, uri


def read_head(src: str | bytes) -> bytes:
    """The first 16 bytes of a path or of in-memory bytes (enough for :func:`looks_like_container`)."""
    if isinstance(src, bytes):
        return src[:16]
    with open(src, "rb") as fh:
        return fh.read(16)


def open_arg(src: str | bytes) -> Any:
    """What decoders take: a path string, or a fresh seekable buffer for bytes."""
    return io.BytesIO(src) if isinstance(src, bytes) else src
