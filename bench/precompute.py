"""Precompute benchmark: single-process loop vs the Ray Data job (1 and 2 actors), streaming memory, shard bytes.

    .venv/bin/python bench/precompute.py [--clips 24] [--rss-clips 50 500] [--expert l4p] [--rss-expert classical]

In one run, on the same clips (small synthetic mp4s, 16 frames sampled at 64x64):
(a) a plain loop in this process: decode -> expert -> rows -> ``pyarrow.parquet.ParquetWriter``, using the same
    framework-free steps as the job (``rgpt4d_core.shards.precompute``);
(b) ``pipelines/precompute.run`` on a local Ray with 1 and 2 expert actors.
Prints clips/s and the ratios (target: 2 actors >= 1.6x the loop on 2 cores), the peak memory (PSS of the job's
whole process tree, sampled) for 50 vs 500 clips in fresh processes (target: flat, <= 1.2x), bytes per clip on
disk vs raw float32 targets, and the same from the schema at the real L4P shapes (paper-spec §7: ~30 MB/clip).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from pipelines._ray import init_ray
from pipelines.precompute import PrecomputeJob, estimated_clip_bytes, run
from rgpt4d_core import config as config_lib
from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.experts.registry import build_expert
from rgpt4d_core.shards import precompute as P
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.reader import open_shards
from rgpt4d_core.shards.writer import clip_rows_per_group, write_part
from rgpt4d_core.video.encode import encode_video

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "conf" / "precompute" / "tiny.yaml")
EXPERT_ARGS = {"l4p": ["expert.name=l4p", "expert.preset=l4p_tiny", "expert.checkpoint=null"],
               "classical": ["expert.name=classical", "expert.preset=res64"]}  # fmt: skip


def make_clips(root: Path, n: int, frames: int = 32, size: int = 64) -> str:
    """``n`` small mp4s (a square moving over a gradient) and one question each, in the synthetic layout."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    lines = []
    for i in range(n):
        video = np.repeat(((xx + yy + 7 * i) % 256).astype(np.uint8)[None, :, :, None], frames, 0).repeat(3, -1)
        for t in range(frames):
            x = (t * 2 + i) % (size - 12)
            video[t, 20:32, x : x + 12] = (255, 40, 40)
        encode_video(video, 12.0, root / "videos" / f"v{i}.mp4")
        lines.append(json.dumps({"id": f"q{i}", "video": f"videos/v{i}.mp4", "question": "Does <obj_1> move?",
                                 "options": ["yes", "no"], "answer": "yes", "task": "dynamic",
                                 "regions": [{"obj_id": 1, "box": [0.1, 0.3, 0.3, 0.5]}]}))  # fmt: skip
    (root / "questions").mkdir(exist_ok=True)
    (root / "questions" / "train.jsonl").write_text("\n".join(lines) + "\n")
    return str(root)


def job_for(data: str, out: str, expert: str, actors: int = 1) -> PrecomputeJob:
    args = [f"input.dataset_root={data}", "input.splits=[train]", f"output.uri={out}", *EXPERT_ARGS[expert],
            f"compute.num_actors={actors}", "compute.batch_size=2", "output.clips_per_file=16"]  # fmt: skip
    return config_lib.load(PrecomputeJob, [TINY], args)


def loop_baseline(job: PrecomputeJob, torch_threads: int) -> tuple[float, int]:
    """The same work in one process, one video at a time; returns (seconds, clips)."""
    import torch

    torch.set_num_threads(torch_threads)
    t0 = time.perf_counter()
    expert = build_expert(job.expert)
    spec = expert.spec
    plan = P.build_requests(P.qa_records(
        Path(job.input.dataset_root or "", "questions", "train.jsonl").read_text(), "train",
        job.input.dataset_root, "train.jsonl"), set())  # fmt: skip
    rows_per_group = clip_rows_per_group(job.output.row_group_bytes, estimated_clip_bytes(spec, job.sampling))
    for req in plan.requests:  # one part per video: the loop's own choice, the job bundles clips_per_file
        decoded = P.decode_requests([req], job.sampling)
        clips, questions = P.rows_from_requests(P.expert_requests(expert, decoded), spec, job.sampling)
        write_part(job.output.uri, *P.rows_tables(clips, questions, spec), rows_per_group)
    return time.perf_counter() - t0, len(plan.requests)


# ---- memory: one fresh process per size, PSS of the whole tree (driver + raylet + workers) ------------------


def _tree_pss_bytes(root_pid: int) -> int:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def rss_child(n: int, expert: str) -> None:
    """Run the job on ``n`` clips in this (fresh) process; print the peak tree PSS as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        data = make_clips(Path(tmp, "ds"), n)
        init_ray(num_cpus=2, object_store_memory=256 << 20, log_to_driver=False)
        peak, done = [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _tree_pss_bytes(os.getpid()))
                time.sleep(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        summary = run(job_for(data, str(Path(tmp, "out")), expert, actors=1))
        done.set()
        th.join()
        print(json.dumps({"clips": n, "peak_pss": peak[0], "wall_s": summary.wall_s, "rows": summary.total_rows}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--rss-clips", type=int, nargs=2, default=[50, 500])
    ap.add_argument("--expert", default="l4p", choices=sorted(EXPERT_ARGS))
    ap.add_argument("--rss-expert", default="classical", choices=sorted(EXPERT_ARGS))
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_expert)
        return

    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, load average {os.getloadavg()[0]:.1f} at start; torch threads 1 per actor")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_clips(Path(tmp, "ds"), args.clips)
        loops = {t: loop_baseline(job_for(data, str(Path(tmp, f"loop{t}")), args.expert), t)
                 for t in sorted({1, cores})}  # fmt: skip
        best = min(loops, key=lambda t: loops[t][0])
        init_ray(num_cpus=2, object_store_memory=512 << 20, log_to_driver=False)
        results = {f"loop, {t} torch thr": loops[t] for t in loops}
        for actors in (1, 2):
            out = str(Path(tmp, f"ray{actors}"))
            s = run(job_for(data, out, args.expert, actors))
            results[f"ray data, {actors} actor{'s' if actors > 1 else ''}"] = (s.wall_s, s.videos)
        print(f"\nthroughput ({args.clips} clips, expert={args.expert}, wall clock incl. start-up; "
              f"ratios vs the faster loop, {best} thread(s)):")  # fmt: skip
        base = loops[best][1] / loops[best][0]
        for name, (sec, clips) in results.items():
            print(f"  {name:<22} {clips / sec:6.2f} clips/s  ({sec:6.1f} s)  x{clips / sec / base:4.2f} vs loop")

        shards = open_shards(str(Path(tmp, "ray1")))
        spec = shards.manifest.expert_spec
        per_clip = shards.manifest.bytes / shards.manifest.clip_counts.total
        print_bytes(f"tiny {spec.name} (measured)", spec, per_clip, args.clips)
    print_bytes("real L4P shapes (schema)", REAL_L4P, None, 0)

    if not args.skip_rss:
        print("\npeak memory of the job's process tree (PSS; fresh local Ray per size; expert="
              f"{args.rss_expert}):")
        peaks = []
        for n in args.rss_clips:
            cmd = [sys.executable, __file__, "--rss-child", str(n), "--rss-expert", args.rss_expert]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            peaks.append(r["peak_pss"])
            print(f"  {n:4d} clips: {r['peak_pss'] / 2**20:7.1f} MiB  ({r['wall_s']:.1f} s, {r['rows']} rows)")
        print(f"  ratio {args.rss_clips[1]}/{args.rss_clips[0]}: x{peaks[1] / peaks[0]:.2f} (target <= 1.2)")


REAL_L4P = ExpertSpec("l4p", "v1", 16, (224, 224), (14, 21, 28, 36), (8, 16, 16), 1408, (16, 224, 224), (16, 16, 16),
                      targets=("latents", "depth", "flow_2d_backward", "dyn_mask", "camray"))  # fmt: skip


def print_bytes(label: str, spec: ExpertSpec, measured_per_clip: float | None, clips: int) -> None:
    shapes = S.tensor_shapes(spec)
    fp16 = S.tensor_nbytes(shapes)
    fp32 = 2 * fp16
    print(f"\nbytes per clip, {label}: targets {', '.join(f'{k}{list(v)}' for k, v in shapes.items() if v)}")
    print(f"  raw float32 targets {fp32 / 1e6:8.3f} MB | fp16 in the schema {fp16 / 1e6:8.3f} MB")
    if measured_per_clip is not None:
        print(f"  on disk (Parquet, incl. JPEG frames + QA), mean over {clips} clips: {measured_per_clip / 1e6:8.3f} MB"
              f" = x{measured_per_clip / fp32:.2f} of raw float32")  # fmt: skip


if __name__ == "__main__":
    main()
