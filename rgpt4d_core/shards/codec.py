"""The value codecs of the shard contract: deterministic ids, frames as JPEG/PNG bytes, tensors as fp16 bytes.

Frames become JPEG or PNG bytes (RGB, student resolution); tensors become little-endian ``float16`` bytes in C
order whose shape is checked against the shard set's :func:`~rgpt4d_core.shards.schema.tensor_shapes`. Whole
rows of the clip and question tables are built in :mod:`rgpt4d_core.shards.rows`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rgpt4d_core.shards import schema as S

#: the on-disk tensor dtype (little-endian half precision)
_FP16 = np.dtype("<f2")


class ShardCodecError(ValueError):
    """A value does not fit the shard contract; the message names the sample and column."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def make_clip_id(video_uri: str, sampling: Mapping[str, Any]) -> str:
    """Deterministic clip id: sha256 over the video URI and the sampling config (canonical JSON), 32 hex chars.

    Known before the video is decoded (so resume can skip a clip already written), and the same for every
    question about the video.

    Args:
        video_uri: the source video's URI exactly as recorded in the rows.
        sampling: the shard set's sampling config (``SamplingConfig.to_dict()``, as in the manifest).
    """
    return _digest(video_uri, json.dumps(dict(sampling), sort_keys=True, default=str))


def make_sample_id(clip_id: str, question_id: str) -> str:
    """Deterministic sample id of a question row: sha256 over its clip id and question id (32 hex chars)."""
    return _digest(clip_id, question_id)


# ---- images --------------------------------------------------------------------------------------------------


def encode_frames(frames: np.ndarray, image_format: str = "jpeg", jpeg_quality: int = 90) -> list[bytes]:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` as one JPEG or PNG image each."""
    import cv2

    if image_format not in S.IMAGE_FORMATS:
        raise ShardCodecError(f"frames_format must be one of {S.IMAGE_FORMATS}, got {image_format!r}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ShardCodecError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
    ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]) if image_format == "jpeg" else (".png", [])
    out = []
    for i, frame in enumerate(frames):
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(frame[..., ::-1]), params)
        if not ok:
            raise ShardCodecError(f"could not encode frame {i} as {image_format}")
        out.append(buf.tobytes())
    return out


def decode_frames(images: Sequence[bytes]) -> np.ndarray:
    """Decode encoded images back to uint8 RGB ``[T, H, W, 3]``."""
    import cv2

    frames = []
    for i, data in enumerate(images):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ShardCodecError(f"frame {i} is not a decodable image")
        frames.append(bgr[..., ::-1])
    return np.ascontiguousarray(np.stack(frames)) if frames else np.zeros((0, 0, 0, 3), np.uint8)


# ---- tensors -------------------------------------------------------------------------------------------------


def tensor_to_bytes(value: np.ndarray, shape: tuple[int, ...] | None, column: str, row: str) -> bytes:
    """``value`` as fp16 little-endian C-order bytes after checking its shape is ``shape`` (``row`` names the row
    in errors, e.g. ``"clip <id>"``)."""
    if shape is None:
        raise ShardCodecError(f"{row}: column {column!r} is not provided by this shard set's expert")
    arr = np.asarray(value)
    if tuple(arr.shape) != tuple(shape):
        raise ShardCodecError(f"{row}: column {column!r} has shape {arr.shape}, expected {tuple(shape)}")
    if not np.all(np.isfinite(arr)):
        raise ShardCodecError(f"{row}: column {column!r} has non-finite values")
    return np.ascontiguousarray(arr, dtype=_FP16).tobytes()


def tensor_from_bytes(data: bytes, shape: tuple[int, ...], column: str = "?") -> np.ndarray:
    """fp16 ``ndarray`` of ``shape`` from the bytes of a tensor column (read-only view when possible)."""
    expected = int(np.prod(shape)) * _FP16.itemsize
    if len(data) != expected:
        raise ShardCodecError(f"column {column!r}: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=_FP16).reshape(shape)
