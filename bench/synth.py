"""Synthetic-world generation speed: scenes/s with 1 vs 2 worker processes, measured side by side in one run.

    .venv/bin/python bench/synth.py [--scenes 12] [--size 112] [--max-frames 48]

Each worker builds complete scenes (render + H.264 encode + ground-truth npz + SoM + questions) in memory, exactly
what one make_synthetic task does minus the file write. Both runs build the same scenes in fresh processes (after
a warm-up scene per worker for imports). Prints the speed-up (target >= 1.7x on 2 free cores).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from rgpt4d_core.synth.config import SynthConfig  # noqa: E402
from rgpt4d_core.synth.writer import build_scene  # noqa: E402


def _build(args: tuple[SynthConfig, int]) -> int:
    out = build_scene(*args)
    return sum(len(b) for b in out.files.values())


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def control_speedup(workers: int = 2, jobs: int = 4, n: int = 3_000_000) -> float:
    """Speed-up of a pure-Python CPU loop on ``workers`` processes vs 1: what the machine offers right now."""
    rates = []
    for w in (1, workers):
        with mp.get_context("spawn").Pool(w) as pool:
            pool.map(_burn, [10] * w)
            start = time.perf_counter()
            pool.map(_burn, [n] * jobs, chunksize=1)
            rates.append(jobs / (time.perf_counter() - start))
    return rates[1] / rates[0]


def scenes_per_s(cfg: SynthConfig, indices: list[int], workers: int) -> tuple[float, float]:
    """(scenes/s, MB written per scene) building ``indices`` on ``workers`` processes (pool start excluded)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_build, [(cfg, 10_000 + w) for w in range(workers)])  # warm-up: imports in every worker
        start = time.perf_counter()
        sizes = pool.map(_build, [(cfg, i) for i in indices], chunksize=1)
        elapsed = time.perf_counter() - start
    return len(indices) / elapsed, sum(sizes) / len(sizes) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=12)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--max-frames", type=int, default=48)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    load = os.getloadavg()
    cfg = SynthConfig(width=a.size, height=a.size, fps_choices=(10, 12, 16), min_duration_s=2.0, max_duration_s=4.0,
                      max_frames=a.max_frames, max_objects=6)
    idx = list(range(a.scenes))
    runs: dict[int, list[float]] = {1: [], 2: []}
    mb = 0.0
    for _ in range(a.rounds):  # interleaved rounds; best-of per setting damps other processes' load
        for workers in (1, 2):
            rate, mb = scenes_per_s(cfg, idx, workers)
            runs[workers].append(rate)
    one, two = max(runs[1]), max(runs[2])
    control = control_speedup()
    print(f"synth {a.size}x{a.size}, <= {a.max_frames} frames, {a.scenes} scenes x {a.rounds} rounds, {mb:.2f} MB/scene, "
          f"cpus={os.cpu_count()}, load average before={load[0]:.1f} after={os.getloadavg()[0]:.1f}")
    print(f"1 worker : {one:.2f} scenes/s (rounds: {', '.join(f'{r:.2f}' for r in runs[1])})")
    print(f"2 workers: {two:.2f} scenes/s (rounds: {', '.join(f'{r:.2f}' for r in runs[2])})")
    print(f"speed-up : {two / one:.2f}x (target >= 1.7x on 2 free cores)")
    print(f"control  : {control:.2f}x for a pure CPU loop on the same machine now (the ceiling when others load it)")


if __name__ == "__main__":
    main()
