"""Pixels for the student: uint8 RGB frames → SigLIP-normalised float tensors at the vision input size.

SigLIP normalisation is ``(x / 255 - 0.5) / 0.5`` → ``[-1, 1]``; frames are resized (bicubic, antialiased,
aspect ratio not preserved, as VILA does for single-tile video frames) to ``size × size``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rgpt4d_core.types import Clip


def frames_to_pixels(frames: np.ndarray, size: int) -> torch.Tensor:
    """Resize and normalise frames.

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB (a single image may be ``[H, W, 3]``).
        size: output side in pixels (the vision tower's ``image_size``).

    Returns:
        float32 ``[T, 3, size, size]`` (``[3, size, size]`` for a single image) in ``[-1, 1]``.
    """
    single = frames.ndim == 3
    batch = frames[None] if single else frames
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 [T, H, W, 3] (or [H, W, 3]); got {frames.dtype} {frames.shape}"
        )
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(torch.float32)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(
            0, 255
        )
    x = x / 127.5 - 1.0
    return x[0] if single else x


def video_pixels(
    frames: np.ndarray, timestamps_s: np.ndarray, size: int, source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixels float32 [T, 3, size, size] in [-1, 1], timestamps_s float32 [T] seconds)`` of sampled frames.

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB; timestamps_s: ``[T]`` seconds; source: names the clip in errors.
    """
    if len(timestamps_s) != frames.shape[0]:
        raise ValueError(f"clip {source}: {frames.shape[0]} frames but {len(timestamps_s)} timestamps")
    try:
        pixels = frames_to_pixels(frames, size)
    except ValueError as exc:
        raise ValueError(f"clip {source}: {exc}") from exc
    return pixels, torch.as_tensor(np.asarray(timestamps_s, dtype=np.float32))


def preprocess_clip(clip: Clip, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`video_pixels` of a clip's frames and timestamps."""
    return video_pixels(clip.frames, clip.timestamps_s, size, clip.uri)


def stack_clips(clips: Sequence[Clip], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch clips of equal frame count: ``(videos [B, T, 3, S, S], timestamps_s [B, T])``."""
    if not clips:
        raise ValueError("stack_clips needs at least one clip")
    pairs = [preprocess_clip(c, size) for c in clips]
    counts = {p.shape[0] for p, _ in pairs}
    if len(counts) != 1:
        detail = ", ".join(f"{c.uri}: {p.shape[0]}" for c, (p, _) in zip(clips, pairs, strict=True))
        raise ValueError(f"clips in a batch need the same number of frames; got {detail}")
    return torch.stack([p for p, _ in pairs]), torch.stack([t for _, t in pairs])
