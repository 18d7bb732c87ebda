"""Precompute benchmark: single-process loop vs the Ray Data job (1 and 2 actors), streaming memory, shard bytes.

    .venv/bin/python bench/precompute.py [--clips 288] [--split] [--skip-rss] [--rss-clips 50 500] [--expert l4p]

In one run, on the same clips (small synthetic mp4s, 16 frames sampled at 64x64), in this order:
(a) a plain loop in this process with 1 and with 2 torch/OpenCV threads: the job's own part function
    (``pipelines.precompute.PartActor``, called directly, no Ray) over parts of ``output.clips_per_file`` = 16
    videos: decode -> expert (``compute.batch_size`` clips at a time) -> rows -> one Parquet part;
(b) ``pipelines/precompute.run`` on a local 2-CPU Ray with 1 and 2 expert actors in the default fused layout
    (each actor decodes, runs the expert on and writes whole parts), and with ``--split`` also in the split layout
    (decode tasks -> expert actors -> write tasks).
For each: start-up seconds (loop: building the expert + the first part; job: the expert's spec, actor start-up
and the first part of ``output.clips_per_file`` = 16 clips; Ray's own init is printed once, apart), the
steady-state clips/s after it (job: after the first part of each actor, timed where the work ran, see
``pipelines/_precompute_timing.py``) with its ratio to each loop, the wall
clock and the overhead it holds beyond the steady rate, each figure with the 1-minute load average when it was
taken (the machine may be shared), then the ratios the targets name: steady-state 2 actors >= 1.6x the
1-thread loop, >= 1.15x the 2-thread loop, >= 1.7x 1 actor. Then the peak memory (PSS of the job's whole
process tree, sampled) for 50 vs 500 clips in fresh processes (target: flat, <= 1.2x), bytes per clip on disk vs
raw float32 targets, and the same from the schema at the real L4P shapes (paper-spec §7: ~30 MB/clip).
``bench/precompute_nodes.py`` runs the same job on a simulated cluster of 1, 2, 3 nodes.
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from pipelines._ray import init_ray
from pipelines.precompute import PartActor, PrecomputeJob, estimated_clip_bytes, run
from rgpt4d_core import config as config_lib
from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.experts.registry import build_expert, spec_without_weights
from rgpt4d_core.shards import precompute as P
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.reader import open_shards
from rgpt4d_core.shards.writer import clip_rows_per_group
from rgpt4d_core.video.encode import encode_video

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "conf" / "precompute" / "tiny.yaml")
#: the split layout on 2 CPUs: 0.5-CPU decode and write tasks beside 0.5-CPU actors
SPLIT = ["compute.fuse_stages=false", "compute.num_cpus_per_actor=0.5", "compute.num_cpus_per_task=0.5"]
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


def job_for(data: str, out: str, expert: str, actors: int = 1, *extra: str) -> PrecomputeJob:
    args = [f"input.dataset_root={data}", "input.splits=[train]", f"output.uri={out}", *EXPERT_ARGS[expert],
            f"compute.num_actors={actors}", "output.clips_per_file=16", *extra]  # fmt: skip
    return config_lib.load(PrecomputeJob, [TINY], args)


@dataclass(frozen=True)
class Timing:
    """One variant: start-up seconds and the steady-state rate after it, each with the load average then."""

    startup_s: float
    startup_load: float
    steady_clips_per_s: float
    steady_load: float
    wall_s: float
    clips: int

    @property
    def wall_clips_per_s(self) -> float:
        return self.clips / self.wall_s if self.wall_s else 0.0

    @property
    def overhead_s(self) -> float:
        """Wall-clock seconds the steady rate does not explain: start-up plus an uneven tail."""
        return self.wall_s - self.clips / self.steady_clips_per_s if self.steady_clips_per_s else float("nan")


def loop_baseline(job: PrecomputeJob, torch_threads: int) -> Timing:
    """The same work in one process without Ray: the job's own part function (decode ``output.clips_per_file``
    videos, the expert ``compute.batch_size`` clips at a time, encode, write) over the parts in turn. Start-up =
    building the expert + the first part, as for the job; steady = the remaining clips over their time."""
    P.limit_threads(torch_threads)  # torch and OpenCV, as in the job's actors
    t0 = time.perf_counter()
    spec = spec_without_weights(job.expert) or build_expert(job.expert).spec
    plan = P.build_requests(P.qa_records(
        Path(job.input.dataset_root or "", "questions", "train.jsonl").read_text(), "train",
        job.input.dataset_root, "train.jsonl"), set())  # fmt: skip
    rows_per_group = clip_rows_per_group(job.output.row_group_bytes, estimated_clip_bytes(spec, job.sampling))
    part = PartActor(job.expert, [], torch_threads, spec.to_dict(), job.sampling, job.output.uri, rows_per_group,
                     job.compute.batch_size)  # fmt: skip
    per_part, n = job.output.clips_per_file, len(plan.requests)
    t_first, load_first = 0.0, 0.0
    for i in range(0, n, per_part):
        part(P.to_table(plan.requests[i : i + per_part]))
        if i == 0:
            t_first, load_first = time.perf_counter(), os.getloadavg()[0]
    t_end = time.perf_counter()
    steady = (n - min(per_part, n)) / (t_end - t_first) if t_end > t_first else 0.0
    return Timing(t_first - t0, load_first, steady, os.getloadavg()[0], t_end - t0, n)


def start_ray_data() -> None:
    """Run a one-row dataset, so that Ray Data's own helper actors (stats, autoscaling) are up before the first
    timed job and its start-up counts only the job's own; progress logs off (they would drown the table)."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.range(1).take_all()


def ray_job(job: PrecomputeJob) -> Timing:
    """``pipelines/precompute.run``; start-up = expert spec task + actor construction + the first part."""
    load0 = os.getloadavg()[0]
    s = run(job)
    return Timing(s.startup_s, load0, s.steady_clips_per_s, os.getloadavg()[0], s.wall_s, s.videos)


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


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=288,
                    help="clips per variant: 288 = 18 parts of 16, 8 per actor after the first; at 96 the 2-actor"
                         " steady window holds only 4 parts (about 2 s) and its rate is noisy")
    ap.add_argument("--split", action="store_true", help="also run the split layout (decode tasks, write tasks)")
    ap.add_argument("--rss-clips", type=int, nargs=2, default=[50, 500])
    ap.add_argument("--expert", default="l4p", choices=sorted(EXPERT_ARGS))
    ap.add_argument("--rss-expert", default="classical", choices=sorted(EXPERT_ARGS))
    ap.add_argument("--skip-rss", action="store_true", help="skip the peak-memory runs (two fresh processes)")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    return ap.parse_args()


def run_variants(data: str, tmp: str, expert: str, layouts: dict[str, list[str]]) -> dict[str, Timing]:
    """The plain loop with 1 and 2 torch threads, then a local 2-CPU Ray and the job with 1 and 2 actors per
    layout, in this order on the same clips; prints Ray's own start-up (once, not counted in any variant)."""
    results = {f"loop, {t} thread{'s' if t > 1 else ''}": loop_baseline(
        job_for(data, str(Path(tmp, f"loop{t}")), expert), t) for t in (1, 2)}  # fmt: skip
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    init_ray(num_cpus=2, object_store_memory=512 << 20, log_to_driver=False)
    start_ray_data()
    print(f"ray init + Ray Data's helpers (once, before the ray runs, not counted below): "
          f"{time.perf_counter() - t0:5.2f} s (load {load0:.2f})")  # fmt: skip
    for layout, extra in layouts.items():
        for actors in (1, 2):
            out = str(Path(tmp, f"ray-{layout}{actors}"))
            results[f"ray {layout}, {actors} actor{'s' if actors > 1 else ''}"] = ray_job(
                job_for(data, out, expert, actors, *extra))  # fmt: skip
    return results


def print_throughput(results: dict[str, Timing]) -> None:
    loop1, loop2 = results["loop, 1 thread"], results["loop, 2 threads"]
    print(f"  {'variant':<22} {'start-up':>8} {'load':>5} | {'steady':>13} {'load':>5} {'/loop1':>6} {'/loop2':>6}"
          f" | {'wall clock':>20} {'overhead':>8}")  # fmt: skip
    for name, r in results.items():
        steady = r.steady_clips_per_s
        print(f"  {name:<22} {r.startup_s:6.2f} s {r.startup_load:5.2f} | {steady:6.2f} clips/s {r.steady_load:5.2f} "
              f"x{steady / loop1.steady_clips_per_s:5.2f} x{steady / loop2.steady_clips_per_s:5.2f} | "
              f"{r.wall_clips_per_s:6.2f} clips/s {r.wall_s:6.1f} s {r.overhead_s:6.2f} s")  # fmt: skip
    print("  start-up: loop = build the expert + the first part; ray = expert spec + actor start-up + the first part"
          " (output.clips_per_file = 16 clips).\n  steady: clips/s after it (ray: after the first part of each"
          " actor). load: 1-min load average then.\n  overhead: wall clock - clips / steady rate (start-up and an"
          " uneven tail).")  # fmt: skip


def print_ratios(results: dict[str, Timing], layout: str) -> None:
    loop1, loop2 = results["loop, 1 thread"], results["loop, 2 threads"]
    one, two = results[f"ray {layout}, 1 actor"], results[f"ray {layout}, 2 actors"]
    print(f"\nratios, {layout} layout (steady state | wall clock incl. start-up, ray init not counted):")
    for label, num, den, target in (("2 actors / loop 1 thread ", two, loop1, 1.6),
                                    ("2 actors / loop 2 threads", two, loop2, 1.15),
                                    ("2 actors / 1 actor       ", two, one, 1.7),
                                    ("1 actor  / loop 1 thread ", one, loop1, None)):  # fmt: skip
        steady = num.steady_clips_per_s / den.steady_clips_per_s if den.steady_clips_per_s else float("nan")
        verdict = f"target >= {target:4.2f}: {'met' if steady >= target else 'NOT met'}" if target else "for reference"
        loads = sorted((num.steady_load, den.steady_load))
        print(f"  {label}  x{steady:4.2f} ({verdict:<23}) | x{num.wall_clips_per_s / den.wall_clips_per_s:4.2f}"
              f"   (load {loads[0]:.2f}-{loads[1]:.2f})")  # fmt: skip


def print_peak_memory(sizes: list[int], expert: str) -> None:
    print(f"\npeak memory of the job's process tree (PSS; fresh local Ray per size; expert={expert}):")
    peaks = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--rss-child", str(n), "--rss-expert", expert]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        peaks.append(r["peak_pss"])
        print(f"  {n:4d} clips: {r['peak_pss'] / 2**20:7.1f} MiB  ({r['wall_s']:.1f} s, {r['rows']} rows)")
    print(f"  ratio {sizes[1]}/{sizes[0]}: x{peaks[1] / peaks[0]:.2f} (target <= 1.2)")


def main() -> None:
    args = parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_expert)
        return

    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, load average {os.getloadavg()[0]:.2f} at start; 1 torch/OpenCV thread per actor")
    layouts = {"fused": ["compute.fuse_stages=true"], **({"split": SPLIT} if args.split else {})}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_clips(Path(tmp, "ds"), args.clips)
        results = run_variants(data, tmp, args.expert, layouts)
        print(f"\nthroughput ({args.clips} clips, expert={args.expert}; load = 1-min load average beside each figure)")
        print_throughput(results)
        for layout in layouts:
            print_ratios(results, layout)
        shards = open_shards(str(Path(tmp, "ray-fused1")))
        spec = shards.manifest.expert_spec
        per_clip = shards.manifest.bytes / shards.manifest.clip_counts.total
        print_bytes(f"tiny {spec.name} (measured)", spec, per_clip, args.clips)
    print_bytes("real L4P shapes (schema)", REAL_L4P, None, 0)
    if not args.skip_rss:
        print_peak_memory(args.rss_clips, args.rss_expert)

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
