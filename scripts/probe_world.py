"""The recipe probe's world: decoded frames per video (cached), oracle dense targets, and the student's media.

Split from ``scripts/recipe_probe.py`` (which re-exports these names).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.experts.oracle import targets_from_ground_truth
from rgpt4d_core.model.preprocess import frames_to_pixels
from rgpt4d_core.synth.dataset import load_ground_truth
from rgpt4d_core.video.decode import DecodeConfig, decode_clip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tower_pretrain import cells_per_token  # noqa: E402


@dataclasses.dataclass
class World:
    """Decoded frames uint8 ``[N, T, S, S, 3]`` and timestamps float32 ``[N, T]`` (s) per video path."""

    frames: np.ndarray
    timestamps_s: np.ndarray
    index: dict[str, int]


def decode_world(root: str, videos: Sequence[str], size: int, frames: int) -> World:
    """The ``videos`` of the world at ``root`` decoded to ``frames`` frames of ``size`` px, cached in
    ``<root>/probe_cache_<size>_<frames>.npz``; a cache that lacks some of them gets them added (a probe of one
    category caches that category's videos only)."""
    cache = Path(root) / f"probe_cache_{size}_{frames}.npz"
    known: dict[str, np.ndarray] = {}
    if cache.exists():
        z = np.load(cache)
        known = {"frames": z["frames"], "timestamps_s": z["timestamps_s"], "videos": z["videos"]}
    missing = sorted(set(videos) - set(known["videos"].tolist() if known else []))
    if missing:
        cfg = DecodeConfig(num_frames=frames, resize=(size, size))
        clips = [decode_clip(os.path.join(root, v), cfg) for v in missing]
        new = {"videos": np.array(missing), "frames": np.stack([c.frames for c in clips]),
               "timestamps_s": np.stack([c.timestamps_s.astype(np.float32) for c in clips])}  # fmt: skip
        merged = {k: np.concatenate([known[k], new[k]]) for k in new} if known else new
        np.savez(cache, videos=merged["videos"], frames=merged["frames"], timestamps_s=merged["timestamps_s"])
        known = merged
    return World(known["frames"], known["timestamps_s"], {v: i for i, v in enumerate(known["videos"].tolist())})


#: sub-cells per token side of the oracle dense target (3: a 9x9 map over the 3x3 token grid of a 64-px frame)
DENSE_SUB = 3
#: channels per sub-cell: log-depth, flow x, flow y (pixels between sampled frames), moving-pixel fraction
DENSE_CHANNELS = 4


def dense_targets(root: str, videos: Sequence[str], world: World, grid: int) -> np.ndarray:
    """Oracle targets float32 ``[N, T, grid, grid, SUB*SUB*CHANNELS]``, each channel standardised over the world.

    The world's exact depth, flow between the sampled frames and moving mask (the ``oracle`` expert's maps at
    the frame size) are averaged over a ``(grid*SUB)²`` grid; each visual token gets its ``SUB x SUB`` cells.
    Cached in ``<root>/probe_dense_<size>_<frames>.npz``.
    """
    t_frames, size = world.frames.shape[1], world.frames.shape[2]
    cache = Path(root) / f"probe_dense_{size}_{t_frames}.npz"
    if not cache.exists():
        cells = grid * DENSE_SUB
        out = np.zeros((len(videos), t_frames, cells, cells, DENSE_CHANNELS), np.float32)
        for n, video in enumerate(videos):
            gt = load_ground_truth(os.path.join(root, video))
            stamps = world.timestamps_s[world.index[video]]
            idx = np.abs(np.asarray(gt.timestamps_s)[None] - stamps[:, None]).argmin(1)
            maps = targets_from_ground_truth(gt, idx, (size, size), None, video)
            assert maps.depth is not None and maps.flow_2d_backward is not None and maps.dyn_mask is not None
            depth = np.log(np.clip(maps.depth, 0.1, None))
            stack = np.concatenate([depth[..., None], maps.flow_2d_backward, maps.dyn_mask[..., None]], -1)
            chw = torch.from_numpy(np.ascontiguousarray(stack.transpose(0, 3, 1, 2)))  # [T, C, S, S]
            out[n] = F.adaptive_avg_pool2d(chw, cells).permute(0, 2, 3, 1).numpy()
        np.savez(cache, videos=np.array(videos), targets=out)
    z = np.load(cache)
    assert z["videos"].tolist() == list(videos), "dense target cache was built for other videos"
    return cells_per_token(z["targets"], grid, DENSE_SUB)


def dense_spec(frames: int, grid: int, size: int) -> ExpertSpec:
    """The latent layout D_4DP must produce for :func:`dense_targets`: one hook, ``[T, grid, grid, C]``."""
    dim = DENSE_SUB * DENSE_SUB * DENSE_CHANNELS
    return ExpertSpec(name="oracle-dense-probe", revision="ground-truth", num_frames=frames, input_size=(size, size),
                      hook_layers=(0,), latent_grid=(frames, grid, grid), latent_dim=dim)  # fmt: skip


def media_tensors(
    world: World, idx: Sequence[int], frames: np.ndarray | None, som: np.ndarray, size: int
) -> dict[str, torch.Tensor]:
    """The student's media for videos ``idx``: ``images`` [B, 3, size, size] from the SoM images ``som``
    (uint8 [B, S, S, 3]) and, unless ``frames`` is None, ``videos`` [B, T, 3, size, size] from ``frames``
    (uint8 [B, T, S, S, 3]) with their ``timestamps_s`` [B, T] (seconds); pixels in [-1, 1]."""
    out = {"images": frames_to_pixels(som, size)}
    if frames is not None:
        out["videos"] = torch.stack([frames_to_pixels(f, size) for f in frames])
        out["timestamps_s"] = torch.from_numpy(world.timestamps_s[list(idx)])
    return out
