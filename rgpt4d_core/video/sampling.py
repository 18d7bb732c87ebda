"""Which source frames to decode: uniform sampling as in VILA / NVILA (``round(linspace(0, F-1, N))``)."""

from __future__ import annotations

import numpy as np


class NotEnoughFramesError(ValueError):
    """The video has fewer frames than the number asked for, and repeats are not allowed."""


def uniform_indices(num_source_frames: int, n: int, allow_repeats: bool = False) -> np.ndarray:
    """``n`` frame indices spread uniformly over ``[0, num_source_frames - 1]``, first and last included.

    Args:
        num_source_frames: frames in the source video (``F``), > 0.
        n: frames wanted (``N``), > 0.
        allow_repeats: when ``F < N``, repeat frames (VILA's behaviour) instead of raising.

    Returns:
        int64 ``[n]``, non-decreasing, ``round(linspace(0, F-1, n))`` (NumPy rounds halves to even, as VILA).

    Raises:
        NotEnoughFramesError: ``F < N`` and ``allow_repeats`` is false.
        ValueError: ``F <= 0`` or ``n <= 0``.
    """
    if n <= 0:
        raise ValueError(f"number of frames to sample must be positive, got {n}")
    if num_source_frames <= 0:
        raise ValueError(f"video has no frames (num_source_frames={num_source_frames})")
    if num_source_frames < n and not allow_repeats:
        raise NotEnoughFramesError(f"video has {num_source_frames} frames, fewer than the {n} asked for")
    return np.round(np.linspace(0, num_source_frames - 1, n)).astype(np.int64)


def timestamps_from_fps(indices: np.ndarray, fps: float) -> np.ndarray:
    """Nominal timestamps (float64 ``[T]``, seconds) ``index / fps``, for streams without usable PTS."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return np.asarray(indices, dtype=np.float64) / float(fps)
