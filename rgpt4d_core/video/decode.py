"""Decode N uniformly sampled frames (+ their timestamps) from a local path, an ``s3://`` URI or bytes.

Order of work for one call of :func:`decode_clip`:

1. **Size checks without decoding**: the file/object must exist, be non-empty and at most
   ``max_file_bytes``. S3 objects are read whole into memory (bounded by that limit): one GET instead of the
   many small range requests a seeking decoder would make.
2. **Header probe** with PyAV (container + stream headers only, ~1 ms): a video stream must exist, its codec
   must be allowed and have a decoder, and frame size / duration / frame count must be within the limits. This
   bounds the work (and memory) of the decode that follows, whatever the file claims further on.
3. **Decode** with the first backend that succeeds (decord's ``get_batch``, then PyAV's sequential decode).

**Orientation.** Frames come out *as displayed*: a display-matrix rotation (what phones write for a portrait or
upside-down recording) is applied by both backends, so ``H, W`` (and ``cfg.resize``) are the display size.
decord 0.6 turns the frames itself (before its resize); for PyAV, :func:`_display_rgb` turns each sampled frame.
Everything downstream (Set-of-Marks drawing, region masks fitted to the frame, the expert's targets) therefore
sees the video the way its user saw it.

**Timeout.** Steps 2-3 run on a long-lived daemon worker thread (one per calling thread) and the caller waits
with a deadline (``timeout_s``). On expiry the caller gets ``VideoDecodeError("timeout")`` at once; a thread
cannot be killed from Python, so that worker is abandoned (it finishes, or not, on its own, its result is
dropped and it then exits) and the next call gets a fresh worker. This
was chosen over a subprocess per call (tens of ms of spawn + a copy of every clip, too slow for a Ray Data
map over thousands of videos) and over ``signal.alarm`` (main thread only, cannot interrupt native code).
Memory stays bounded because the probe limits what one decode may allocate; a thread that *never* returns
(a genuine decoder hang) keeps its buffers, so :func:`abandoned_decodes` counts them: a long-running worker
(a Ray actor) should restart itself when that count grows.

Every failure raises :class:`VideoDecodeError` with a machine-readable ``reason`` (see ``REASONS``), the URI
and a human-readable detail. Data stages store ``reason`` in the sample's ``error`` column.
"""

from __future__ import annotations

import io
import os
import queue
import stat
import threading
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from rgpt4d_core import storage
from rgpt4d_core.types import Clip
from rgpt4d_core.video.sampling import NotEnoughFramesError, timestamps_from_fps, uniform_indices

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
_FINAL = frozenset({"too_long", "too_large", "too_few_frames", "no_video_stream", "unsupported_codec"})


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


@dataclass(frozen=True)
class _Probe:
    codec: str
    width: int
    height: int
    num_frames: int  # 0 when the container does not say
    fps: float
    duration_s: float | None


_abandoned_lock = threading.Lock()
_abandoned = 0


def abandoned_decodes() -> int:
    """How many decode threads have been abandoned after a timeout in this process (see module doc)."""
    return _abandoned


# ---------------------------------------------------------------------------------------------------- sources


def _looks_like_container(head: bytes) -> bool:
    """True when ``head`` starts like an MP4/MOV (``ftyp`` box), Matroska/WebM (EBML) or AVI file."""
    return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or head[:4] == b"RIFF"


def _load_source(source: str | bytes, cfg: DecodeConfig) -> tuple[str | bytes, str]:
    """Resolve ``source`` to a local path or in-memory bytes, after the size checks. Returns ``(src, uri)``."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_size(len(data), BYTES_URI, cfg)
        return data, BYTES_URI
    if not isinstance(source, str):
        raise VideoDecodeError("bad_source", repr(type(source)), "source must be a path, an s3:// URI or bytes")
    uri = source
    try:
        storage.check_uri(uri)
    except storage.StorageError as exc:
        raise VideoDecodeError("bad_source", uri, str(exc)) from None
    try:
        if storage.is_s3(uri):
            _check_size(storage.size(uri), uri, cfg)
            return storage.read_bytes(uri), uri
        st = os.stat(uri)
    except FileNotFoundError:
        raise VideoDecodeError("missing", uri, "no such file or object") from None
    except OSError as exc:  # permissions, network, ...
        raise VideoDecodeError("unreadable", uri, f"{type(exc).__name__}: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise VideoDecodeError("missing", uri, "not a regular file")
    _check_size(st.st_size, uri, cfg)
    return uri, uri


def _check_size(n: int, uri: str, cfg: DecodeConfig) -> None:
    if n == 0:
        raise VideoDecodeError("empty", uri, "zero bytes")
    if n > cfg.max_file_bytes:
        raise VideoDecodeError("too_large", uri, f"{n} bytes > max_file_bytes={cfg.max_file_bytes}")


def _head(src: str | bytes) -> bytes:
    if isinstance(src, bytes):
        return src[:16]
    with open(src, "rb") as fh:
        return fh.read(16)


def _open_arg(src: str | bytes) -> Any:
    """What decoders take: a path string, or a fresh seekable buffer for bytes."""
    return io.BytesIO(src) if isinstance(src, bytes) else src


# ---------------------------------------------------------------------------------------------------- probe


def _probe(src: str | bytes, uri: str, cfg: DecodeConfig) -> _Probe:
    """Read container/stream headers with PyAV and enforce the limits (no frame is decoded)."""
    import av

    try:
        container = av.open(_open_arg(src), mode="r")
    except av.error.FFmpegError as exc:
        reason: Reason = "truncated" if _looks_like_container(_head(src)) else "corrupt"
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
            raise VideoDecodeError("unsupported_codec", uri, f"codec {codec!r} not in {list(cfg.allowed_codecs)}")
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
        _check_frame_count(frames, uri, cfg)
        return _Probe(codec=codec, width=width, height=height, num_frames=frames, fps=fps, duration_s=duration)


def _duration_s(stream: Any, container: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000  # AV_TIME_BASE
    return None


def _check_frame_count(frames: int, uri: str, cfg: DecodeConfig) -> None:
    if frames > cfg.max_source_frames:
        raise VideoDecodeError("too_long", uri, f"{frames} frames > max_source_frames={cfg.max_source_frames}")


def _check_complete(frames: int, fps: float, probe: _Probe, uri: str) -> None:
    """Raise ``truncated`` when the decodable frames fall well short of what the headers promise."""
    if probe.num_frames and frames < probe.num_frames:
        raise VideoDecodeError("truncated", uri, f"{frames} decodable frames, header says {probe.num_frames}")
    if probe.duration_s and fps > 0 and frames / fps < 0.75 * probe.duration_s - 1.0 / fps:
        raise VideoDecodeError(
            "truncated", uri, f"{frames} frames at {fps:g} fps cover < 75% of the {probe.duration_s:.2f} s header"
        )


def _indices(frames: int, uri: str, cfg: DecodeConfig) -> np.ndarray:
    _check_frame_count(frames, uri, cfg)
    try:
        return uniform_indices(frames, cfg.num_frames, allow_repeats=cfg.allow_repeats)
    except NotEnoughFramesError as exc:
        raise VideoDecodeError("too_few_frames", uri, str(exc)) from None
    except ValueError as exc:
        raise VideoDecodeError("corrupt", uri, str(exc)) from None


# ---------------------------------------------------------------------------------------------------- backends


def _decode_decord(src: str | bytes, uri: str, cfg: DecodeConfig, probe: _Probe) -> Clip:
    import av  # noqa: F401 - load PyAV's FFmpeg before decord's bundled one (the reverse breaks PyAV's vp9 encoder)
    import decord

    h, w = cfg.resize if cfg.resize is not None else (-1, -1)
    vr = decord.VideoReader(_open_arg(src), ctx=decord.cpu(0), width=w, height=h, num_threads=cfg.decoder_threads)
    num_frames = len(vr)
    fps = float(vr.get_avg_fps()) or probe.fps
    _check_complete(num_frames, fps, probe, uri)
    idx = _indices(num_frames, uri, cfg)
    timestamps = np.asarray(vr.get_frame_timestamp(idx.tolist())[:, 0], dtype=np.float64)
    try:
        frames = vr.get_batch(idx.tolist()).asnumpy()
    except decord.DECORDError:
        if cfg.resize is None:
            raise
        # decord 0.6 fails to scale to some small widths (< 64 px, a row-stride mismatch): decode at the
        # source size and resize the few sampled frames with OpenCV instead.
        del vr
        vr = decord.VideoReader(_open_arg(src), ctx=decord.cpu(0), num_threads=cfg.decoder_threads)
        frames = _resize(vr.get_batch(idx.tolist()).asnumpy(), cfg.resize)
    del vr
    return Clip(
        frames=np.ascontiguousarray(frames, dtype=np.uint8),
        timestamps_s=timestamps,
        frame_indices=idx,
        fps=fps,
        num_source_frames=num_frames,
        uri=uri,
    )


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, size[0], size[1], 3]`` (area interpolation when shrinking)."""
    import cv2

    h, w = size
    interp = cv2.INTER_AREA if h * w < frames.shape[1] * frames.shape[2] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


def _count_packets(src: str | bytes) -> int:
    import av

    with av.open(_open_arg(src)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0)


def _decode_pyav(src: str | bytes, uri: str, cfg: DecodeConfig, probe: _Probe) -> Clip:
    """Sequential decode, keeping only the sampled frames (O(num_frames) memory)."""
    import av

    num_frames = probe.num_frames or _count_packets(src)
    _check_complete(num_frames, probe.fps, probe, uri)
    idx = _indices(num_frames, uri, cfg)
    wanted: dict[int, list[int]] = {}
    for pos, i in enumerate(idx.tolist()):
        wanted.setdefault(i, []).append(pos)
    frames: np.ndarray | None = None  # allocated at the first sampled frame, once its display size is known
    timestamps = np.full(len(idx), np.nan, dtype=np.float64)
    last = int(idx[-1])
    seen = 0
    with av.open(_open_arg(src)) as container:
        stream = container.streams.video[0]
        stream.thread_count = max(1, cfg.decoder_threads)
        for i, frame in enumerate(container.decode(stream)):
            seen = i + 1
            if i in wanted:
                rgb = _display_rgb(frame, cfg.resize)
                if frames is None:
                    frames = np.zeros((len(idx), *rgb.shape), dtype=np.uint8)
                for pos in wanted[i]:
                    frames[pos] = rgb
                    timestamps[pos] = frame.time if frame.time is not None else np.nan
            if i >= last:
                break
    if seen <= last or frames is None:
        raise VideoDecodeError("truncated", uri, f"stream ended after {seen} of {num_frames} frames")
    fps = probe.fps
    if np.isnan(timestamps).any() and fps > 0:
        timestamps = np.where(np.isnan(timestamps), timestamps_from_fps(idx, fps), timestamps)
    return Clip(frames=frames, timestamps_s=timestamps, frame_indices=idx, fps=fps, num_source_frames=num_frames, uri=uri)


def quarter_turns(rotation_deg: float) -> int:
    """Counter-clockwise display rotation in degrees (PyAV's ``VideoFrame.rotation``) -> quarter turns in 0..3.

    Angles that are not a multiple of 90 (no phone writes them) round to the nearest quarter turn.
    """
    return round(rotation_deg / 90.0) % 4


def _display_rgb(frame: Any, size: tuple[int, int] | None) -> np.ndarray:
    """One decoded PyAV frame -> uint8 ``[H, W, 3]`` RGB *as displayed*: its display-matrix rotation applied.

    ``size`` is the wanted display ``(H, W)`` (``None``: the source's display size). The frame is scaled in its
    stored orientation (to ``(W, H)`` when it is a quarter turn off) and then turned, so no pixel is scaled twice.
    Mirroring in a display matrix (rare; phones only rotate) is not applied.
    """
    turns = quarter_turns(frame.rotation or 0)
    if size is None:
        stored_hw = (frame.height, frame.width)
    else:
        stored_hw = (size[1], size[0]) if turns % 2 else size
    rgb = frame.reformat(width=stored_hw[1], height=stored_hw[0], format="rgb24").to_ndarray()
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


_BACKENDS = {"decord": _decode_decord, "pyav": _decode_pyav}


def _decode(src: str | bytes, uri: str, cfg: DecodeConfig) -> Clip:
    probe = _probe(src, uri, cfg)
    errors: list[VideoDecodeError] = []
    for name in cfg.backends:
        try:
            return _BACKENDS[name](src, uri, cfg, probe)
        except VideoDecodeError as exc:
            if exc.reason in _FINAL:
                raise
            errors.append(exc)
        except Exception as exc:  # backend-specific error types (DECORDError, av.FFmpegError, ...)
            errors.append(VideoDecodeError("corrupt", uri, f"{name}: {type(exc).__name__}: {exc}"))
    # Prefer the most specific reason any backend found ("truncated" over a generic "corrupt").
    best = next((e for e in errors if e.reason != "corrupt"), None)
    if best is None:
        raise VideoDecodeError("corrupt", uri, "; ".join(e.detail for e in errors))
    raise best


class _Worker:
    """One long-lived daemon thread that runs decode jobs for one calling thread.

    Reusing the thread (instead of one thread per call) keeps its stack and malloc arena warm. The thread is a
    daemon so a hung decode never blocks interpreter exit. It holds only its queue, not this object, so when the
    calling thread ends (its ``threading.local`` is cleared) ``__del__`` tells the loop to exit.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=_worker_loop, args=(self._jobs,), name="rgpt4d-decode", daemon=True).start()

    def submit(self, fn: Any, timeout_s: float) -> tuple[bool, dict[str, Any]]:
        box: dict[str, Any] = {}
        done = threading.Event()
        self._jobs.put((fn, box, done))
        return done.wait(timeout_s), box

    def __del__(self) -> None:
        self._jobs.put(None)  # exits after the current job (a hung job: when, if ever, it returns)


def _worker_loop(jobs: queue.SimpleQueue[Any]) -> None:
    while (job := jobs.get()) is not None:
        fn, box, done = job
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc
        finally:
            done.set()
        del job, fn, box, done  # drop the clip now, not when the next job arrives


_workers = threading.local()


def _run_with_deadline(fn: Any, timeout_s: float, uri: str) -> Clip:
    """Run ``fn`` on this thread's worker; on timeout abandon that worker (a fresh one serves the next call)."""
    global _abandoned
    worker: _Worker | None = getattr(_workers, "worker", None)
    if worker is None:
        worker = _workers.worker = _Worker()
    finished, box = worker.submit(fn, timeout_s)
    if not finished:
        _workers.worker = None
        with _abandoned_lock:
            _abandoned += 1
        raise VideoDecodeError("timeout", uri, f"decode did not finish within timeout_s={timeout_s}")
    if "error" in box:
        raise box["error"]
    clip: Clip = box["value"]
    return clip


def decode_clip(source: str | bytes, cfg: DecodeConfig | None = None) -> Clip:
    """Decode ``cfg.num_frames`` uniformly sampled frames of a video.

    Args:
        source: a local path, an ``s3://bucket/key`` URI, or the file's bytes.
        cfg: sampling, resize, limits, timeout and backend order (defaults: 16 frames, source size).

    Returns:
        A :class:`~rgpt4d_core.types.Clip`: frames uint8 ``[T, H, W, 3]`` RGB in display orientation (``H, W`` =
        ``cfg.resize`` or the source's display size, i.e. stored ``W, H`` for a video rotated a quarter turn), timestamps_s float64 ``[T]`` (stream presentation times, seconds), frame_indices int64
        ``[T]``, fps, num_source_frames, uri.

    Raises:
        VideoDecodeError: with ``reason`` in ``REASONS``; never hangs longer than ``cfg.timeout_s`` (+ the size
            checks of step 1, which do not decode).
    """
    cfg = cfg or DecodeConfig()
    if cfg.num_frames <= 0:
        raise ValueError(f"DecodeConfig.num_frames must be positive, got {cfg.num_frames}")
    unknown = [b for b in cfg.backends if b not in _BACKENDS]
    if unknown or not cfg.backends:
        raise ValueError(f"DecodeConfig.backends: unknown {unknown}, choose from {sorted(_BACKENDS)}")
    src, uri = _load_source(source, cfg)
    return _run_with_deadline(lambda: _decode(src, uri, cfg), cfg.timeout_s, uri)
