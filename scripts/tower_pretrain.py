"""Pretrain the tiny vision tower on the synthetic world's exact per-pixel ground truth (then freeze it, as SigLIP is
frozen in the paper): the issue-15 option "a tower pretrained on the synthetic world and then frozen".

Why: at 64 px an object covers a few pixels of a 21-px visual token; a randomly initialised tower's tokens vary
mostly with position and background (measured: their spread across videos is ~3 % of their norm), so the LM has
almost no object signal to learn from. Pretraining asks every patch to describe what is under it at sub-patch
resolution: log-depth, object coverage and moving-object coverage on a ``2 x 2`` grid per patch.

Used by ``scripts/recipe_probe.py --pretrain-tower STEPS``; the head is discarded after pretraining.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rgpt4d_core.experts.oracle import targets_from_ground_truth
from rgpt4d_core.model.preprocess import frames_to_pixels
from rgpt4d_core.model.vision import VisionTower
from rgpt4d_core.synth.dataset import load_ground_truth

#: sub-cells per patch side and channels per cell (log-depth, object coverage, moving-object coverage)
SUB, CHANNELS = 2, 3


def tower_targets(
    root: str, videos: Sequence[str], timestamps_s: np.ndarray, size: int, patch: int
) -> np.ndarray:
    """float32 ``[N, T, g, g, SUB*SUB*CHANNELS]`` per-patch targets (``g = size // patch``), standardised per
    channel; cached in ``<root>/tower_targets_<size>_<patch>_<T>.npz``. ``timestamps_s``: ``[N, T]`` sampled times."""
    n_frames = timestamps_s.shape[1]
    cache = Path(root) / f"tower_targets_{size}_{patch}_{n_frames}.npz"
    cells = (size // patch) * SUB
    if not cache.exists():
        out = np.zeros((len(videos), n_frames, cells, cells, CHANNELS), np.float32)
        for n, video in enumerate(videos):
            gt = load_ground_truth(os.path.join(root, video))
            idx = np.abs(np.asarray(gt.timestamps_s)[None] - timestamps_s[n][:, None]).argmin(1)
            maps = targets_from_ground_truth(gt, idx, (size, size), None, video)
            assert maps.depth is not None and maps.dyn_mask is not None
            objects = np.stack([cv2.resize((np.asarray(gt.instance[i]) > 0).astype(np.float32), (size, size),
                                           interpolation=cv2.INTER_AREA) for i in idx])  # fmt: skip
            stack = np.stack(
                [np.log(np.clip(maps.depth, 0.1, None)), objects, maps.dyn_mask], -1
            )  # [T, S, S, 3]
            chw = torch.from_numpy(np.ascontiguousarray(stack.transpose(0, 3, 1, 2)))
            out[n] = F.adaptive_avg_pool2d(chw, cells).permute(0, 2, 3, 1).numpy()
        np.savez(cache, videos=np.array(videos), targets=out)
    z = np.load(cache)
    assert z["videos"].tolist() == list(videos), "tower target cache was built for other videos"
    t = z["targets"]
    return cells_per_token(t, size // patch, SUB)


def cells_per_token(maps: np.ndarray, grid: int, sub: int) -> np.ndarray:
    """Standardise ``maps`` float32 ``[N, T, grid*sub, grid*sub, C]`` per channel and group each token's
    ``sub x sub`` cells: float32 ``[N, T, grid, grid, sub*sub*C]`` (cell-major, channel-minor)."""
    t = (maps - maps.mean(axis=(0, 1, 2, 3))) / (maps.std(axis=(0, 1, 2, 3)) + 1e-6)
    n, f, _, _, c = t.shape
    t = t.reshape(n, f, grid, sub, grid, sub, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return np.ascontiguousarray(t.reshape(n, f, grid, grid, sub * sub * c))


def pretrain_tower(tower: VisionTower, frames: np.ndarray, targets: np.ndarray, train_rows: np.ndarray, steps: int,
                   seed: int, batch_frames: int = 64, lr: float = 2e-3) -> list[float]:  # fmt: skip
    """Train ``tower`` (in place) with a linear per-patch head on ``frames`` uint8 ``[N, T, S, S, 3]`` against
    ``targets`` ``[N, T, g, g, C]``, drawing random frames of the videos ``train_rows``; returns the loss per 100
    steps (MSE on standardised targets: 1.0 = predicting the mean). The tower is left trainable; freeze it after."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(tower.cfg.hidden_size, targets.shape[-1])
    tower.requires_grad_(True)
    tower.train()
    params = [p for p in tower.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    n_frames, side = frames.shape[1], targets.shape[2]
    log, recent, start = [], [], time.perf_counter()
    for step in range(steps):
        v = train_rows[torch.randint(len(train_rows), (batch_frames,), generator=g).numpy()]
        f = torch.randint(n_frames, (batch_frames,), generator=g).numpy()
        pix = frames_to_pixels(frames[v, f], tower.cfg.image_size)
        pred = head(tower(pix))  # [B, g*g, C]
        loss = F.mse_loss(pred, torch.from_numpy(targets[v, f]).reshape(batch_frames, side * side, -1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        recent.append(float(loss.detach()))
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log.append(round(float(np.mean(recent)), 4))
            recent = []
            print(f"  tower step {step + 1}/{steps}  loss {log[-1]:.3f}  "
                  f"{batch_frames * (step + 1) / (time.perf_counter() - start):.0f} frames/s", flush=True)  # fmt: skip
    return log
