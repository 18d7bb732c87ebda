"""Where a served request may read media from, and how much it may send.

Rules (each refusal raises :class:`MediaAccessError` naming the request field):

* **Paths** are relative to a configured media root and must stay inside it after resolving every symlink and
  ``..``: ``../etc/passwd``, absolute paths outside the root, and symlinks (anywhere on the path) that lead out
  of the root are refused. With no media root configured, paths are refused altogether.
* **URLs**: ``file://`` is always refused. Any other ``scheme://`` address (``s3://``, ``https://``) is refused
  unless it starts with one of the configured ``allow_url_prefixes``; only schemes the storage layer reads
  (``s3://``) can be allowed, so the server never fetches arbitrary remote URLs.
* **Sizes**: request bodies and uploads above their limits are refused (HTTP 413 upstream); inline base64
  videos are measured before decoding.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: schemes the storage layer can read; only these may appear in ``allow_url_prefixes``
READABLE_SCHEMES = ("s3",)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")

AccessReason = Literal["forbidden", "not_found", "too_large", "invalid"]


class MediaAccessError(ValueError):
    """A media reference or payload was refused.

    Attributes:
        field: the request field at fault (``"video.path"``, ``"video.url"``, ``"video.data_b64"``).
        reason: ``"forbidden"`` (outside the root, not allow-listed), ``"not_found"``, ``"too_large"`` or
            ``"invalid"`` (malformed).
    """

    def __init__(self, field: str, reason: AccessReason, message: str) -> None:
        self.field = field
        self.reason: AccessReason = reason
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class SecurityConfig:
    """Limits and the media policy of a server.

    Attributes:
        media_root: directory that ``video.path`` values are confined to; ``""`` disables paths.
        allow_url_prefixes: URL prefixes that may be read (e.g. ``"s3://bucket/videos/"``); empty = none.
        max_body_bytes: largest request body in bytes (JSON with base64 video included).
        max_upload_bytes: largest video in bytes, whether uploaded, inline base64 or read from the root.
    """

    media_root: str = ""
    allow_url_prefixes: tuple[str, ...] = ()
    max_body_bytes: int = 96 * 1024 * 1024
    max_upload_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for prefix in self.allow_url_prefixes:
            match = _SCHEME.match(prefix)
            if not match or match.group(1).lower() not in READABLE_SCHEMES or "://" not in prefix:
                raise ValueError(
                    f"security.allow_url_prefixes: {prefix!r} must be a URL prefix with a scheme in "
                    f"{READABLE_SCHEMES} (e.g. 's3://bucket/videos/')"
                )


def resolve_media_path(path: str, cfg: SecurityConfig, field: str = "video.path") -> str:
    """The real path of ``path`` inside ``cfg.media_root``.

    Args:
        path: relative to the media root (an absolute path is accepted only if it lies inside the root).
        cfg: the policy.
        field: request field named in errors.

    Returns:
        The resolved absolute path (no symlink or ``..`` left), of an existing regular file inside the root.

    Raises:
        MediaAccessError: no media root, a URL/``file://``, a NUL byte, a path leaving the root (also through a
            symlink), or a missing / non-regular file.
    """
    if not cfg.media_root:
        raise MediaAccessError(field, "forbidden", "paths are disabled on this server (no media root configured)")
    if not path or "\x00" in path:
        raise MediaAccessError(field, "invalid", "empty path or NUL byte")
    if "://" in path or path.lower().startswith("file:"):
        raise MediaAccessError(field, "forbidden", "a path must not carry a scheme (file:// and URLs are refused)")
    try:
        root = Path(cfg.media_root).resolve(strict=True)
    except OSError:
        raise MediaAccessError(field, "not_found", "the server's media root does not exist") from None
    candidate = Path(path) if os.path.isabs(path) else root / path
    try:
        real = candidate.resolve(strict=True)
    except FileNotFoundError:
        if not Path(os.path.normpath(candidate)).is_relative_to(root):
            raise MediaAccessError(field, "forbidden", "path leaves the media root") from None
        raise MediaAccessError(field, "not_found", f"no such file under the media root: {path!r}") from None
    except (OSError, RuntimeError) as exc:  # symlink loops, permissions
        raise MediaAccessError(field, "forbidden", f"cannot resolve path: {type(exc).__name__}") from None
    if not real.is_relative_to(root):
        raise MediaAccessError(field, "forbidden", "path leaves the media root (via '..' or a symlink)")
    if not real.is_file():
        raise MediaAccessError(field, "not_found", f"not a regular file under the media root: {path!r}")
    size = real.stat().st_size
    if size > cfg.max_upload_bytes:
        raise MediaAccessError(field, "too_large", f"{size} bytes > max_upload_bytes={cfg.max_upload_bytes}")
    return str(real)


def check_media_url(url: str, cfg: SecurityConfig, field: str = "video.url") -> str:
    """``url`` if it is allow-listed; ``file://``, unknown schemes and non-allow-listed URLs are refused."""
    match = _SCHEME.match(url)
    if not match or "://" not in url:
        raise MediaAccessError(field, "invalid", f"not a URL: {url[:80]!r}")
    scheme = match.group(1).lower()
    if scheme == "file":
        raise MediaAccessError(field, "forbidden", "file:// URLs are refused; use video.path under the media root")
    if "/../" in url or url.endswith("/.."):
        raise MediaAccessError(field, "forbidden", "URL contains '..' segments")
    if not any(url.startswith(prefix) for prefix in cfg.allow_url_prefixes):
        raise MediaAccessError(
            field, "forbidden", f"{scheme}:// URLs are not allowed on this server unless allow-listed"
        )
    return url


def decode_base64_video(data: str, cfg: SecurityConfig, field: str = "video.data_b64") -> bytes:
    """Bytes of an inline base64 video (plain base64 or a ``data:video/...;base64,`` URL), size-checked first."""
    payload = data
    if data.startswith("data:"):
        head, sep, rest = data.partition(",")
        if not sep or not head.endswith(";base64"):
            raise MediaAccessError(field, "invalid", "data URL must be 'data:<mime>;base64,<payload>'")
        payload = rest
    estimated = len(payload) * 3 // 4
    if estimated > cfg.max_upload_bytes:
        raise MediaAccessError(
            field, "too_large", f"~{estimated} bytes > max_upload_bytes={cfg.max_upload_bytes}"
        )
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise MediaAccessError(field, "invalid", "not valid base64") from None
    if not raw:
        raise MediaAccessError(field, "invalid", "empty video")
    return raw
