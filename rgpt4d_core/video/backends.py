"""The two decoders behind :func:`~rgpt4d_core.video.decode.decode_clip`: decord (``get_batch``) and PyAV
(sequential decode). Each takes a resolved source and its header :class:`~rgpt4d_core.video.probe.Probe` and returns
a :class:`~rgpt4d_core.types.Clip` of the uniformly sampled frames, or raises ``VideoDecodeError``.

**Orientation.** Frames come out *as displayed*: a display-matrix rotation (what phones write for a portrait or
upside-down recording) is applied by both backends, so ``H, W`` (and ``cfg.resize``) are the display size.
decord 0.6 turns the frames itself (before its resize); for PyAV, :func:`display_rgb` turns each sampled frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rgpt4d_core.types import Clip
from rgpt4d_core.video.limits import DecodeConfig, VideoDecodeError
from rgpt4d_core.video.probe import Probe, check_complete, sample_indices
from rgpt4d_core.video.sampling import timestamps_from_fps
from rgpt4d_core.video.source import open_arg


def decode_decord(src: str | bytes, uri: str, cfg: DecodeConfig, probe: Probe) -> Clip:
    """decord's ``get_batch`` of the sampled frames (decord turns rotated frames itself, before its resize)."""
    import av  # noqa: F401 - load PyAV's FFmpeg before decord's bundled one (the reverse breaks PyAV's vp9 encoder)
    import decord

    h, w = cfg.resize if cfg.resize is not None else (-1, -1)
    vr = decord.VideoReader(
        open_arg(src), ctx=decord.cpu(0), width=w, height=h, num_threads=cfg.decoder_threads
    )
    num_frames = len(vr)
    fps = float(vr.get_avg_fps()) or probe.fps
    check_complete(num_frames, fps, probe, uri)
    idx = sample_indices(num_frames, uri, cfg)
    timestamps = np.asarray(vr.get_frame_timestamp(idx.tolist())[:, 0], dtype=np.float64)
    try:
        frames = vr.get_batch(idx.tolist()).asnumpy()
    except decord.DECORDError:
        if cfg.resize is None:
            raise
        # decord 0.6 fails to scale to some small widths (< 64 px, a row-stride mismatch): decode at the
        # source size and resize the few sampled frames with OpenCV instead.
        del vr
        vr = decord.VideoReader(open_arg(src), ctx=decord.cpu(0), num_threads=cfg.decoder_threads)
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
    """Non-empty video packets of the first video stream (the frame count when the header has none)."""
    import av

    with av.open(open_arg(src)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0)


def decode_pyav(src: str | bytes, uri: str, cfg: DecodeConfig, probe: Probe) -> Clip:
    """Sequential decode, keeping only the sampled frames (O(num_frames) memory)."""
    import av

    num_frames = probe.num_frames or _count_packets(src)
    check_complete(num_frames, probe.fps, probe, uri)
    idx = sample_indices(num_frames, uri, cfg)
    wanted: dict[int, list[int]] = {}
    for pos, i in enumerate(idx.tolist()):
        wanted.setdefault(i, []).append(pos)
    frames: np.ndarray | None = None  # allocated at the first sampled frame, once its display size is known
    timestamps = np.full(len(idx), np.nan, dtype=np.float64)
    last = int(idx[-1])
    seen = 0
    with av.open(open_arg(src)) as container:
        stream = container.streams.video[0]
        stream.thread_count = max(1, cfg.decoder_threads)
        for i, frame in enumerate(container.decode(stream)):
            seen = i + 1
            if i in wanted:
                rgb = display_rgb(frame, cfg.resize)
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
    return Clip(
        frames=frames,
        timestamps_s=timestamps,
        frame_indices=idx,
        fps=fps,
        num_source_frames=num_frames,
        uri=uri,
    )


def quarter_turns(rotation_deg: float) -> int:
    """Counter-clockwise display rotation in degrees (PyAV's ``VideoFrame.rotation``) -> quarter turns in 0..3.

    Angles that are not a multiple of 90 (no phone writes them) round to the nearest quarter turn.
    """
    return round(rotation_deg / 90.0) % 4


def display_rgb(frame: Any, size: tuple[int, int] | None) -> np.ndarray:
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


Backend = Callable[[str | bytes, str, DecodeConfig, Probe], Clip]
#: backend name (``DecodeConfig.backends``) -> decoder
BACKENDS: dict[str, Backend] = {"decord": decode_decord, "pyav": decode_pyav}
