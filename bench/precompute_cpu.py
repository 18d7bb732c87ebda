"""Precompute CPU cost per clip at the real L4P shapes, and the CPUs a GPU expert actor needs beside it.

    .venv/bin/python bench/precompute_cpu.py [--clips 8] [--source-size 448] [--source-frames 64]
        [--frame-size 448] [--jpeg-quality 95] [--gpu-s-per-clip 0.3] [--gpus-per-node 8]

Measures CPU seconds (``time.process_time``, so other processes on a shared machine change it little) of the
precompute steps of one clip, one at a time on one core, on synthetic H.264 clips (``bench/decode.py``'s moving
squares, ``--source-size``² pixels, ``--source-frames`` frames, GOP 16):

* decode (a split-layout decode task): ``decode_requests`` = checks, PyAV probe, decord decode of 16 uniformly
  sampled frames resized to ``--frame-size`` (the stored frames, ``sampling.frame_size``);
* actor host side (the GPU actor's own CPU): the expert's ``preprocess`` (resize to 224², normalise) and the
  targets' fp16 wire bytes;
* encode + write (a split-layout write task): JPEG frames, clip and question rows at the ``l4p_vitg`` target
  shapes (29.5 MB fp16 per clip, random values: fp16 activations do not compress) and the Parquet part on local
  disk (an S3 upload is network time on top).

The GPU time per clip is a parameter (``--gpu-s-per-clip``; default 0.3 s, the paper's A100 figure, §A1.1). It
prints the decode/write CPUs that keep one GPU actor busy and what ``--gpus-per-node`` such actors need.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from decode import make_clip

from rgpt4d_core.experts.base import ExpertTargets
from rgpt4d_core.experts.l4p import get_preset, preprocess, spec_for_preset
from rgpt4d_core.shards import precompute as P
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.writer import write_part


class FixedTargets:
    """Stands in for the expert on the CPU: returns the same random targets of the real shapes for every clip."""

    def __init__(self, targets: ExpertTargets) -> None:
        self.targets = targets

    def encode(self, clips: list) -> list[ExpertTargets]:
        return [self.targets for _ in clips]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--source-size", type=int, default=448)
    ap.add_argument("--source-frames", type=int, default=64)
    ap.add_argument("--frame-size", type=int, default=448)
    ap.add_argument("--jpeg-quality", type=int, default=95)
    ap.add_argument("--gpu-s-per-clip", type=float, default=0.3)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    preset = get_preset("l4p_vitg")
    spec = spec_for_preset(preset, "bench")
    shapes = S.tensor_shapes(spec)
    rng = np.random.default_rng(0)
    fake = FixedTargets(ExpertTargets(**{k: rng.standard_normal(v).astype(np.float16) for k, v in shapes.items() if v}))
    sampling = P.SamplingConfig(num_frames=spec.num_frames, frame_size=[args.frame_size, args.frame_size],
                                jpeg_quality=args.jpeg_quality)  # fmt: skip
    cpu = {"decode": 0.0, "actor host side": 0.0, "encode + write": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        requests = []
        for i in range(args.clips + 1):  # clip 0 warms up (imports, page cache) and is not counted
            path = Path(tmp, f"clip{i}.mp4")
            make_clip(path, args.source_frames, args.source_size, seed=i)
            records = [{"id": f"q{i}", "video": str(path), "question": "What moves?", "options": ["a", "b"],
                        "answer": "a", "task": "dynamic", "regions": []}]  # fmt: skip
            requests += P.build_requests(P.qa_records("\n".join(json.dumps(r) for r in records), "train", tmp,
                                                      "q.jsonl"), set()).requests  # fmt: skip
        for i, req in enumerate(requests):
            t0 = time.process_time()
            (decoded,) = P.decode_requests([req], sampling)
            t1 = time.process_time()
            clip = P.clip_of(decoded)
            assert clip is not None, decoded.get(P.REQ_ERROR)
            preprocess([clip], spec.num_frames, spec.input_size)
            (done,) = P.expert_requests(fake, [decoded])  # type: ignore[arg-type]
            t2 = time.process_time()
            write_part(str(Path(tmp, "out")), *P.rows_tables(*P.rows_from_requests([done], spec, sampling), spec), 1)
            t3 = time.process_time()
            if i > 0:
                for name, dt in zip(cpu, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    cpu[name] += dt / args.clips
    print(f"{args.clips} clips: {args.source_frames} frames {args.source_size}x{args.source_size} H.264 -> "
          f"{spec.num_frames} frames at {args.frame_size}x{args.frame_size}, JPEG q{args.jpeg_quality}, l4p_vitg "
          f"targets ({S.tensor_nbytes(shapes) / 1e6:.1f} MB fp16 per clip)")  # fmt: skip
    for name, sec in cpu.items():
        print(f"  {name:<16} {sec:6.3f} CPU-s per clip")
    tasks = cpu["decode"] + cpu["encode + write"]
    per_gpu = tasks / args.gpu_s_per_clip
    need = math.ceil(per_gpu * 1.25)  # 25 % headroom for Ray's own processes and uneven clips
    print(f"at {args.gpu_s_per_clip:.3f} GPU-s per clip one GPU actor takes {1 / args.gpu_s_per_clip:.1f} clips/s; "
          f"decode + write tasks need {tasks:.3f} CPU-s per clip = {per_gpu:.2f} CPUs busy per GPU actor")  # fmt: skip
    print(f"  -> per GPU actor: num_cpus_per_actor 1 (its host side: {cpu['actor host side'] / args.gpu_s_per_clip:.0%}"
          f" of one core) + {need} CPUs of decode/write tasks (+25 % headroom)")  # fmt: skip
    print(f"  -> a {args.gpus_per_node}-GPU node: {args.gpus_per_node} actors + {args.gpus_per_node * need} task CPUs "
          f"= {args.gpus_per_node * (1 + need)} vCPUs for precompute")  # fmt: skip


if __name__ == "__main__":
    main()
