"""Does training input keep up? The fraction of a distill step spent waiting for data, per prefetch setting.

    python bench/input_wait.py [--samples 64] [--prefetch 0 1 2 4] [--shuffle 256] [--sleep-ms 0 200]

Runs the tiny distillation job (``pipelines/distill.py``, Ray Train + Ray Data, the tiny preset on CPU, one epoch)
once per combination of a simulated step time (``debug.step_sleep_ms``: every rank sleeps this long after each
optimiser step, as a slower model would take; 0 = the tiny step as it is), ``data.prefetch_batches`` and
``data.shuffle_buffer``, all on one local Ray. For each run it prints rank 0's steady input fractions (from the end
of the first step to the end of the run, start-up excluded; the job's ``data/steady_*`` metrics):

* wait fraction: time blocked in ``next()`` of the Ray Data batch iterator / wall time (target <= 5 %);
* join fraction: time joining question rows to their clips and collating on the training thread / wall time
  (input work that no prefetch setting hides);

with steady samples/s and the 1-minute load average when the run ended. Compare the rows of one run, not across
runs. Smoke run (checks that it runs; its figures mean nothing)::

    python bench/input_wait.py --samples 16 --prefetch 1 --sleep-ms 0 50
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.distill import config  # noqa: E402
from pipelines.distill import run  # noqa: E402
from rgpt4d_core.train.config import DistillJobConfig  # noqa: E402
from tests.distill_testkit import write_shards  # noqa: E402


def variant(cfg: DistillJobConfig, sleep_ms: float, prefetch: int, shuffle: int) -> DistillJobConfig:
    """``cfg`` with the step sleep, prefetch depth and shuffle buffer of one row, under its own run name."""
    name = f"input-wait-s{sleep_ms:g}-p{prefetch}-b{shuffle}"
    return dataclasses.replace(
        cfg,
        run=dataclasses.replace(cfg.run, name=name),
        data=dataclasses.replace(cfg.data, prefetch_batches=prefetch, shuffle_buffer=shuffle),
        debug=dataclasses.replace(cfg.debug, step_sleep_ms=sleep_ms),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=64, help="questions in the synthetic shards (one epoch)")
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers")
    p.add_argument("--prefetch", type=int, nargs="+", default=[0, 1, 2, 4], help="data.prefetch_batches values")
    p.add_argument("--shuffle", type=int, nargs="+", default=[256], help="data.shuffle_buffer values")
    p.add_argument("--sleep-ms", type=float, nargs="+", default=[0.0, 200.0], help="debug.step_sleep_ms values")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-input-wait-"))
    shards = write_shards(work / "shards", num_samples=args.samples)
    base = config(shards, work / "runs", args.workers, args)
    rows = []
    for sleep_ms in args.sleep_ms:
        for shuffle in args.shuffle:
            for prefetch in args.prefetch:
                m = run(variant(base, sleep_ms, prefetch, shuffle)).metrics
                rows.append((sleep_ms, prefetch, shuffle, m.get("data/steady_wait_fraction", float("nan")),
                             m.get("data/steady_join_fraction", float("nan")),
                             m.get("throughput/steady_samples_per_s", float("nan")), os.getloadavg()[0], m["step"]))
                print(f"  done: sleep {sleep_ms:g} ms, prefetch {prefetch}, shuffle {shuffle}", flush=True)
    print(f"\ntiny preset, CPU, {args.samples} samples, global batch {args.global_batch}, micro-batch "
          f"{args.micro_batch}, {args.workers} worker(s), {args.threads} torch thread(s); rank 0, steady "
          "(after the first step); target wait fraction <= 5 %")
    print("| step sleep ms | data.prefetch_batches | data.shuffle_buffer | wait fraction | join fraction | "
          "steady samples/s | steps | load avg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for sleep_ms, prefetch, shuffle, wait, join, rate, load, steps in rows:
        print(f"| {sleep_ms:g} | {prefetch} | {shuffle} | {wait:.1%} | {join:.1%} | {rate:.2f} | {steps} | "
              f"load {load:.2f} |")


if __name__ == "__main__":
    main()
