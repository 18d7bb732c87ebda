"""Throughput of the CPU experts at the demo resolution: clips/s of ``l4p_tiny.encode`` and of ``classical``.

    .venv/bin/python bench/expert.py [--clips 8] [--threads 1] [--checkpoint runs/expert/l4p_tiny.safetensors]

Clips are 16 frames of 112×112 (``conf/synth/demo.yaml``) rendered by the synthetic world; both experts encode the
same clips in the same process, one after the other, and the ratio is printed beside the absolute numbers.
Weights do not change the cost, so the checkpoint is optional.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgpt4d_core.experts.base import Expert  # noqa: E402
from rgpt4d_core.experts.registry import ExpertConfig, build_expert  # noqa: E402
from rgpt4d_core.synth.config import SynthConfig  # noqa: E402
from rgpt4d_core.synth.render import render_scene  # noqa: E402
from rgpt4d_core.synth.scenes import make_scene  # noqa: E402
from rgpt4d_core.types import Clip  # noqa: E402


def demo_clips(n: int, size: int = 112) -> list[Clip]:
    cfg = SynthConfig(seed=3, width=size, height=size, fps_choices=(10, 12, 16), min_duration_s=2.0, max_duration_s=4.0,
                      max_frames=64)  # fmt: skip
    clips = []
    for i in range(n):
        r = render_scene(make_scene(cfg, i))
        idx = np.linspace(0, r.rgb.shape[0] - 1, 16).round().astype(np.int64)
        clips.append(Clip(r.rgb[idx], r.timestamps_s[idx], idx, 12.0, r.rgb.shape[0], f"bench://{i}"))
    return clips


def clips_per_s(expert: Expert, clips: list[Clip], repeats: int) -> float:
    expert.encode(clips[:1])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        expert.encode(clips)
        best = min(best, time.perf_counter() - start)
    return len(clips) / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch / OpenCV threads")
    p.add_argument("--checkpoint", default=None)
    args = p.parse_args()

    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    clips = demo_clips(args.clips)
    l4p = build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", checkpoint=args.checkpoint, device="cpu", batch_size=4))
    classical = build_expert(ExpertConfig(name="classical", preset="res64", device="cpu"))
    rate_l4p = clips_per_s(l4p, clips, args.repeats)
    rate_cls = clips_per_s(classical, clips, args.repeats)
    print(f"clips: {len(clips)} x 16 frames at 112x112, threads={args.threads}, best of {args.repeats}")
    print(f"l4p_tiny.encode  : {rate_l4p:8.2f} clips/s  (latents 4x8x8x8x96 + depth/flow/mask 16x32x32 + rays)")
    print(f"classical (DIS)  : {rate_cls:8.2f} clips/s  (flow + motion mask 16x64x64)")
    print(f"ratio classical / l4p_tiny: {rate_cls / rate_l4p:.2f}x")


if __name__ == "__main__":
    main()
