"""Decode N uniformly sampled frames (+ their timestamps) from a local path, an ``s3://`` URI or bytes.

Order of work for one call of :func:`decode_clip` (each step is its own module of ``rgpt4d_core/video/``):

1. **Size checks without decoding** (``source.py``): the file/object must exist, be non-empty and at most
   ``max_file_bytes``. S3 objects are read whole into memory (bounded by that limit).
2. **Header probe** with PyAV (``probe.py``; container + stream headers only, ~1 ms): a video stream must exist,
   its codec must be allowed and have a decoder, and frame size / duration / frame count must be within the
   limits. This bounds the work (and memory) of the decode that follows, whatever the file claims further on.
3. **Decode** with the first backend that succeeds (``backends.py``: decord's ``get_batch``, then PyAV's
   sequential decode).

**Orientation.** Frames come out *as displayed*: a display-matrix rotation (what phones write for a portrait or
upside-down recording) is applied by both backends, so ``H, W`` (and ``cfg.resize``) are the display size.
Everything downstream (Set-of-Marks drawing, region masks fitted to the frame, the expert's targets) therefore
sees the video the way its user saw it.

**Timeout** (``deadline.py``). Steps 2-3 run on a long-lived daemon worker thread (one per calling thread) and the
caller waits with a deadline (``timeout_s``); on expiry it gets ``VideoDecodeError("timeout")`` at once and the
worker is abandoned; :func:`abandoned_decodes` counts those threads.

Every failure raises :class:`VideoDecodeError` with a machine-readable ``reason`` (see ``REASONS``), the URI
and a human-readable detail (``limits.py``, with :class:`DecodeConfig`). Data stages store ``reason`` in the
sample's ``error`` column. The names of this module are the public API of video decoding.
"""

from __future__ import annotations

from rgpt4d_core.types import Clip
from rgpt4d_core.video.backends import BACKENDS, quarter_turns
from rgpt4d_core.video.deadline import abandoned_decodes, run_with_deadline
from rgpt4d_core.video.limits import BYTES_URI, FINAL_REASONS, REASONS, DecodeConfig, Reason, VideoDecodeError
from rgpt4d_core.video.probe import probe_video
from rgpt4d_core.video.source import load_source

__all__ = [
    "BYTES_URI",
    "REASONS",
    "DecodeConfig",
    "Reason",
    "VideoDecodeError",
    "abandoned_decodes",
    "decode_clip",
    "quarter_turns",
]


def _decode(src: str | bytes, uri: str, cfg: DecodeConfig) -> Clip:
    """Probe, then the first backend of ``cfg.backends`` that succeeds; otherwise the most specific error."""
    probe = probe_video(src, uri, cfg)
    errors: list[VideoDecodeError] = []
    for name in cfg.backends:
        try:
            return BACKENDS[name](src, uri, cfg, probe)
        except VideoDecodeError as exc:
            if exc.reason in FINAL_REASONS:
                raise
            errors.append(exc)
        except Exception as exc:  # backend-specific error types (DECORDError, av.FFmpegError, ...)
            errors.append(VideoDecodeError("corrupt", uri, f"{name}: {type(exc).__name__}: {exc}"))
    # Prefer the most specific reason any backend found ("truncated" over a generic "corrupt").
    best = next((e for e in errors if e.reason != "corrupt"), None)
    if best is None:
        raise VideoDecodeError("corrupt", uri, "; ".join(e.detail for e in errors))
    raise best


def decode_clip(source: str | bytes, cfg: DecodeConfig | None = None) -> Clip:
    """Decode ``cfg.num_frames`` uniformly sampled frames of a video.

    Args:
        source: a local path, an ``s3://bucket/key`` URI, or the file's bytes.
        cfg: sampling, resize, limits, timeout and backend order (defaults: 16 frames, source size).

    Returns:
        A :class:`~rgpt4d_core.types.Clip`: frames uint8 ``[T, H, W, 3]`` RGB in display orientation (``H, W`` =
        ``cfg.resize`` or the source's display size, i.e. stored ``W, H`` for a video rotated a quarter turn),
        timestamps_s float64 ``[T]`` (stream presentation times, seconds), frame_indices int64 ``[T]``, fps,
        num_source_frames, uri.

    Raises:
        VideoDecodeError: with ``reason`` in ``REASONS``; never hangs longer than ``cfg.timeout_s`` (+ the size
            checks of step 1, which do not decode).
    """
    cfg = cfg or DecodeConfig()
    if cfg.num_frames <= 0:
        raise ValueError(f"DecodeConfig.num_frames must be positive, got {cfg.num_frames}")
    unknown = [b for b in cfg.backends if b not in BACKENDS]
    if unknown or not cfg.backends:
        raise ValueError(f"DecodeConfig.backends: unknown {unknown}, choose from {sorted(BACKENDS)}")
    src, uri = load_source(source, cfg)
    return run_with_deadline(lambda: _decode(src, uri, cfg), cfg.timeout_s, uri)
