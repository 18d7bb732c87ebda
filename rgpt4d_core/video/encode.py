"""Write frames to a real video file with PyAV (H.264 by default). Used by the synthetic world and tests."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np


def encode_video(
    frames: np.ndarray,
    fps: float,
    dest: str | Path | io.BytesIO,
    codec: str = "libx264",
    gop: int = 16,
    crf: int = 18,
    container: str = "mp4",
    rotation_deg: int = 0,
) -> None:
    """Encode ``frames`` to ``dest``.

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB; ``H`` and ``W`` must be even for yuv420p codecs.
        fps: frames per second (may be fractional, e.g. 29.97).
        dest: a file path or a writable binary buffer.
        codec: any encoder PyAV has (``libx264``, ``mpeg4``, ``libvpx-vp9`` ...).
        gop: keyframe interval in frames.
        crf: constant rate factor for x264 (lower = better quality).
        container: container format used when ``dest`` is a buffer.
        rotation_deg: display rotation written as the stream's display matrix, counter-clockwise degrees (a
            multiple of 90; PyAV's ``VideoFrame.rotation`` reads it back). ``frames`` are the *stored* pixels, so a
            player shows ``np.rot90(frames, rotation_deg // 90, axes=(1, 2))``: what a phone held sideways writes.
    """
    import av

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise ValueError("cannot encode an empty clip")
    if rotation_deg % 90:
        raise ValueError(f"rotation_deg must be a multiple of 90, got {rotation_deg}")
    target = str(dest) if isinstance(dest, str | Path) else dest
    with av.open(target, mode="w", format=container) as out:
        rate = Fraction(fps).limit_denominator(1001)
        stream = out.add_stream(codec, rate=rate)
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"codec {codec!r} is not a video encoder")
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if rotation_deg % 360:
            stream.set_display_rotation(rotation_deg % 360)
        opts: dict[str, str] = {"g": str(gop)}
        if codec == "libx264":
            opts.update({"crf": str(crf), "preset": "veryfast", "bf": "0"})
        stream.options = dict(opts)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
