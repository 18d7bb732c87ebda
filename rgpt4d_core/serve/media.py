"""What the model was shown, as small JPEGs for a human: the sampled frames, their timestamps, the Set-of-Marks image.

Used by the engine when a request asks for its media (``VQARequest.include_media``) and by the web page's frame-1
preview. Pure NumPy / OpenCV: no web framework here; the HTTP layer turns the bytes into ``data:`` URLs.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from rgpt4d_core.types import Clip
from rgpt4d_core.video.decode import DecodeConfig, decode_clip

THUMB_SIDE = 160
"""Longest side of a frame thumbnail, pixels."""
SOM_SIDE = 512
"""Longest side of the returned Set-of-Marks image and of the frame-1 preview, pixels."""


@dataclass(frozen=True)
class ClipMedia:
    """The media of one answered request.

    Attributes:
        frames_jpeg: one JPEG per sampled frame (longest side <= :data:`THUMB_SIDE`), in sampling order.
        timestamps_s: presentation time of each sampled frame, seconds.
        frame_indices: index of each sampled frame in the source video.
        som_jpeg: frame 1 with the Set-of-Marks drawn (longest side <= :data:`SOM_SIDE`).
        width / height: frame 1 as displayed (before any resizing here), pixels.
    """

    frames_jpeg: tuple[bytes, ...]
    timestamps_s: tuple[float, ...]
    frame_indices: tuple[int, ...]
    som_jpeg: bytes
    width: int
    height: int


def encode_jpeg(image: np.ndarray, max_side: int, quality: int = 85) -> bytes:
    """JPEG bytes of a uint8 ``[H, W, 3]`` RGB image, downscaled (area) so its longest side is <= ``max_side``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def jpeg_data_url(jpeg: bytes) -> str:
    """``data:image/jpeg;base64,...`` of JPEG bytes."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def clip_media(clip: Clip, som: np.ndarray) -> ClipMedia:
    """Thumbnails of ``clip``'s sampled frames and the Set-of-Marks image ``som`` (uint8 ``[H, W, 3]`` RGB)."""
    return ClipMedia(
        frames_jpeg=tuple(encode_jpeg(f, THUMB_SIDE) for f in clip.frames),
        timestamps_s=tuple(float(t) for t in clip.timestamps_s),
        frame_indices=tuple(int(i) for i in clip.frame_indices),
        som_jpeg=encode_jpeg(som, SOM_SIDE),
        width=int(clip.frames.shape[2]),
        height=int(clip.frames.shape[1]),
    )


def first_frame(source: str | bytes, cfg: DecodeConfig) -> Clip:
    """Frame 1 of a video (source frame 0, in display orientation), decoded under ``cfg``'s limits.

    It is the frame the engine marks with Set-of-Marks: uniform sampling always starts at source frame 0.

    Raises:
        VideoDecodeError: as :func:`~rgpt4d_core.video.decode.decode_clip`.
    """
    return decode_clip(source, dataclasses.replace(cfg, num_frames=1))
