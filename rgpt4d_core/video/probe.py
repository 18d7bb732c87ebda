"""The header probe: container and stream headers read with PyAV (~1 ms, no frame decoded) and checked.

A video stream must exist, its codec must be allowed and have a decoder, and frame size / duration / frame count
must be within the limits. This bounds the work (and memory) of the decode that follows, whatever the file claims
further on. Also the checks a backend makes once it knows the decodable frame count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rgpt4d_core.video.limits import DecodeConfig, Reason, VideoDecodeError, check_frame_count
from rgpt4d_core.video.sampling import NotEnoughFramesError, uniform_indices
from rgpt4d_core.video.source import looks_like_container, open_arg, read_head


@dataclass(frozen=True)
class Probe:
    """What the container and stream headers say (read before any frame is decoded)."""

    codec: str
    width: int
    height: int
    num_frames: int  # 0 when the container does not say
    fps: float
    duration_s: float | None


def probe_video(src: str | bytes, uri: str, cfg: DecodeConfig) -> Probe:
    """Read container/stream headers with PyAV and enforce the limits (no frame is decoded)."""
    import av

    try:
        container = av.open(open_arg(src), mode="r")
    except av.error.FFmpegError as exc:
        reason: Reason = "truncated" if looks_like_container(read_head(src)) else "corrupt"
        raise VideoDecodeError(reason, uri, f"cannot open container: {exc}") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoDecodeError("no_video_stream", uri, f"streams present: {', '.join(kinds)}")
        stream = container.streams.video[0]
        try:
            codec = stream.codec_context.name
        except Exception as exc:  # no decoder in this FFmpeg build
            raise VideoDecodeError("unsupported_codec", uri, f"no decoder: {exc}") from None
        if cfg.allowed_codecs is not None and codec not in cfg.allowed_codecs:
            raise VideoDecodeError(
                "unsupported_codec", uri, f"codec {codec!r} not in {list(cfg.allowed_codecs)}"
            )
        width, height = int(stream.width or 0), int(stream.height or 0)
        if width <= 0 or height <= 0:
            raise VideoDecodeError("corrupt", uri, f"invalid frame size {width}x{height}")
        if width * height > cfg.max_pixels_per_frame:
            raise VideoDecodeError(
                "too_large", uri, f"{width}x{height} > max_pixels_per_frame={cfg.max_pixels_per_frame}"
            )
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        duration = _duration_s(stream, container)
        if duration is not None and duration > cfg.max_duration_s:
            raise VideoDecodeError("too_long", uri, f"{duration:.1f} s > max_duration_s={cfg.max_duration_s}")
        frames = int(stream.frames or 0)
        check_frame_count(frames, uri, cfg)
        return Probe(codec=codec, width=width, height=height, num_frames=frames, fps=fps, duration_s=duration)


def _duration_s(stream: Any, container: Any) -> float | None:
    """Seconds from the stream header, else from the container header, else ``None``."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000  # AV_TIME_BASE
    return None


def check_complete(frames: int, fps: float, probe: Probe, uri: str) -> None:
    """Raise ``truncated`` when the decodable frames fall well short of what the headers promise."""
    if probe.num_frames and frames < probe.num_frames:
        raise VideoDecodeError("truncated", uri, f"{frames} decodable frames, header says {probe.num_frames}")
    if probe.duration_s and fps > 0 and frames / fps < 0.75 * probe.duration_s - 1.0 / fps:
        raise VideoDecodeError(
            "truncated",
            uri,
            f"{frames} frames at {fps:g} fps cover < 75% of the {probe.duration_s:.2f} s header",
        )


def sample_indices(frames: int, uri: str, cfg: DecodeConfig) -> np.ndarray:
    """int64 ``[cfg.num_frames]`` uniformly sampled indices into ``frames`` source frames, or a decode error."""
    check_frame_count(frames, uri, cfg)
    try:
        return uniform_indices(frames, cfg.num_frames, allow_repeats=cfg.allow_repeats)
    except NotEnoughFramesError as exc:
        raise VideoDecodeError("too_few_frames", uri, str(exc)) from None
    except ValueError as exc:
        raise VideoDecodeError("corrupt", uri, str(exc)) from None
