"""What one decode may cost, and how it fails: :class:`DecodeConfig` (sampling, limits, timeout, backends) and
:class:`VideoDecodeError` with its machine-readable ``reason`` (one of ``REASONS``).

Every failure of :func:`~rgpt4d_core.video.decode.decode_clip` raises :class:`VideoDecodeError` with a ``reason``,
the URI and a human-readable detail. Data stages store ``reason`` in the sample's ``error`` column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

Reason = Literal[
    "missing",
    "empty",
    "corrupt",
    "truncated",
    "no_video_stream",
    "unsupported_codec",
    "too_large",
    "too_long",
    "too_few_frames",
    "timeout",
    "bad_source",
    "unreadable",
]
REASONS: tuple[str, ...] = get_args(Reason)
BYTES_URI = "<bytes>"
# Reasons that are facts about the video, not about a backend: no point trying the next backend.
FINAL_REASONS = frozenset({"too_long", "too_large", "too_few_frames", "no_video_stream", "unsupported_codec"})


class VideoDecodeError(Exception):
    """A video could not be decoded.

    Attributes:
        reason: one of ``REASONS`` (stable, machine-readable; goes into shard ``error`` columns).
        uri: the source (path, ``s3://`` URI or ``"<bytes>"``).
        detail: human-readable explanation.
    """

    def __init__(self, reason: Reason, uri: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        self.reason: Reason = reason
        self.uri = uri
        self.detail = detail
        super().__init__(f"[{reason}] {uri}: {detail}" if detail else f"[{reason}] {uri}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across Ray workers
        return (VideoDecodeError, (self.reason, self.uri, self.detail))


@dataclass(frozen=True)
class DecodeConfig:
    """How to decode one clip, and the limits that keep one bad file from taking a worker down.

    Attributes:
        num_frames: frames sampled uniformly over the whole video (VILA's ``round(linspace)``).
        resize: optional output ``(H, W)`` in pixels; ``None`` keeps the source size.
        max_file_bytes: larger files/objects are refused before reading (``too_large``).
        max_pixels_per_frame: source ``H*W`` above this is refused (``too_large``).
        max_duration_s: longer videos are refused (``too_long``).
        max_source_frames: videos with more frames are refused (``too_long``).
        timeout_s: wall-clock budget for probe + decode of one clip (``timeout``).
        backends: decoders tried in order (``"decord"``, ``"pyav"``).
        allow_repeats: when the video has fewer than ``num_frames`` frames, repeat frames instead of failing.
        allowed_codecs: if set, codec names (FFmpeg's, e.g. ``h264``) accepted; others are ``unsupported_codec``.
        decoder_threads: decoder threads per clip (1 suits many clips in parallel, e.g. Ray Data tasks).
    """

    num_frames: int = 16
    resize: tuple[int, int] | None = None
    max_file_bytes: int = 1 << 30
    max_pixels_per_frame: int = 3840 * 2160
    max_duration_s: float = 3600.0
    max_source_frames: int = 200_000
    timeout_s: float = 120.0
    backends: tuple[str, ...] = ("decord", "pyav")
    allow_repeats: bool = False
    allowed_codecs: tuple[str, ...] | None = None
    decoder_threads: int = 1


def check_size(n: int, uri: str, cfg: DecodeConfig) -> None:
    """Raise ``empty`` for 0 bytes, ``too_large`` above ``cfg.max_file_bytes`` (``n`` in bytes)."""
    if n == 0:
        raise VideoDecodeError("empty", uri, "zero bytes")
    if n > cfg.max_file_bytes:
        raise VideoDecodeError("too_large", uri, f"{n} bytes > max_file_bytes={cfg.max_file_bytes}")


def check_frame_count(frames: int, uri: str, cfg: DecodeConfig) -> None:
    """Raise ``too_long`` when ``frames`` exceeds ``cfg.max_source_frames``."""
    if frames > cfg.max_source_frames:
        raise VideoDecodeError(
            "too_long", uri, f"{frames} frames > max_source_frames={cfg.max_source_frames}"
        )
