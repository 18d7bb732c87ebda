"""Small builders shared by the shard tests: a tiny expert spec, a clip, targets and a QA item (seeded)."""

from __future__ import annotations

import numpy as np

from rgpt4d_core.experts.base import DENSE_TARGETS, LATENTS, ExpertSpec, ExpertTargets
from rgpt4d_core.types import Clip, Region, VQAItem

T, H, W = 4, 32, 48


def tiny_spec(targets: tuple[str, ...] = (LATENTS, *DENSE_TARGETS)) -> ExpertSpec:
    """A tiny expert spec: 2 hooks, latent grid 2x2x3 of width 8, dense 4x8x12, camray 2x2x2."""
    return ExpertSpec(
        name="testexpert",
        revision="rev-test",
        num_frames=T,
        input_size=(16, 16),
        hook_layers=(1, 2),
        latent_grid=(2, 2, 3),
        latent_dim=8,
        dense_shape=(T, 8, 12),
        camray_shape=(2, 2, 2),
        targets=targets,
    )


def tiny_clip(seed: int = 0, uri: str = "/data/v0.mp4") -> Clip:
    """Smooth seeded colour gradients (JPEG-friendly), uint8 [T, H, W, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, size=(T, 1, 1, 3))
    wave = np.sin(2 * np.pi * (xx + 0.5 * yy)[None, :, :, None] + phase)
    frames = (127.5 + 100.0 * wave).astype(np.uint8)
    idx = np.array([0, 3, 6, 9], dtype=np.int64)
    return Clip(frames=frames, timestamps_s=idx / 10.0, frame_indices=idx, fps=10.0, num_source_frames=10, uri=uri)


def tiny_targets(spec: ExpertSpec, seed: int = 0) -> ExpertTargets:
    """Random targets of ``spec``'s shapes (float32) for the targets it provides."""
    rng = np.random.default_rng(seed)
    t, h, w = spec.dense_shape
    full = {
        "latents": rng.normal(size=(len(spec.hook_layers), *spec.latent_grid, spec.latent_dim)),
        "depth": rng.uniform(0.5, 20.0, size=(t, h, w)),
        "flow_2d_backward": rng.normal(scale=3.0, size=(t, h, w, 2)),
        "dyn_mask": rng.uniform(0, 1, size=(t, h, w)),
        "camray": rng.normal(size=(*spec.camray_shape, 6)),
    }
    return ExpertTargets(**{k: v.astype(np.float32) for k, v in full.items() if spec.provides(k)})


def tiny_item(qid: str = "q0", video: str = "/data/v0.mp4") -> VQAItem:
    return VQAItem(
        id=qid,
        video=video,
        question="How far does <obj_1> move relative to <obj_2>?",
        options=("1 m", "2 m", "3 m", "4 m"),
        answer="2 m",
        task="displacement",
        som_image="som/v0.png",
        regions=(Region(1, (0.1, 0.2, 0.3, 0.4), label="box"), Region(2, (0.5, 0.5, 0.9, 1.0), label=None)),
        duration_s=1.0,
        fps=10.0,
    )
