"""Precompute on a simulated multi-node Ray cluster: throughput with 1, 2, 3 nodes (issue 18).

    .venv/bin/python bench/precompute_nodes.py [--clips 144] [--nodes 1 2 3] [--cpus-per-node 1] [--expert l4p]

``ray.cluster_utils.Cluster`` (as in ``tests/test_multinode.py``) starts real Ray nodes on this machine (separate
raylets and object stores, one GCS): a head with no CPUs (it holds the driver only, as a cluster's head does)
and worker nodes of ``--cpus-per-node`` CPUs, added one at a time. For each node count the job runs on the same
clips (``bench/precompute.py``'s) in the default fused layout with one expert actor per node
(``num_cpus_per_actor`` = ``torch_threads`` = ``--cpus-per-node``, so no two actors share a node) and prints the
start-up, the steady-state clips/s and its ratio to 1 node, the wall clock, each with the 1-minute load average.
The nodes share this machine's cores: throughput can grow only while nodes x CPUs per node <= the cores (on 2
cores: 1 -> 2 nodes; a third node of 1 CPU can only hold its own). Ray's start-up (cluster, nodes) is not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from precompute import EXPERT_ARGS, Timing, job_for, make_clips, ray_job, start_ray_data

from pipelines._ray import simulated_cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=144, help="clips per node count (9 parts: 3 rounds of 3 actors)")
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3], help="node counts, ascending")
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--expert", default="l4p", choices=sorted(EXPERT_ARGS))
    args = ap.parse_args()
    import ray

    cores, per = os.cpu_count() or 1, args.cpus_per_node
    print(f"machine: {cores} cores, load average {os.getloadavg()[0]:.2f} at start; nodes of {per} CPU(s), "
          f"one expert actor per node, {per} torch/OpenCV thread(s) each")  # fmt: skip
    results: dict[int, Timing] = {}
    head = {"num_cpus": 0, "include_dashboard": False, "object_store_memory": 150 << 20}
    with tempfile.TemporaryDirectory() as tmp, simulated_cluster(head) as cluster:
        data = make_clips(Path(tmp, "ds"), args.clips)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.add_node(num_cpus=per, object_store_memory=100 << 20)
        start_ray_data()
        for n in sorted(args.nodes):
            while len(cluster.worker_nodes) < n:
                cluster.add_node(num_cpus=per, object_store_memory=100 << 20)
            cluster.wait_for_nodes()
            time.sleep(1.0)  # let the new raylets settle before the clock starts
            extra = [f"compute.num_cpus_per_actor={per}", f"compute.torch_threads={per}"]
            results[n] = ray_job(job_for(data, str(Path(tmp, f"out{n}")), args.expert, n, *extra))
    print_nodes(results, args.clips, args.expert, cores, per)


def print_nodes(results: dict[int, Timing], clips: int, expert: str, cores: int, per: int) -> None:
    print(f"\nthroughput by node count ({clips} clips, expert={expert}; load = 1-min load average beside each figure)")
    print(f"  {'nodes':>5} {'start-up':>8} {'load':>5} | {'steady':>13} {'load':>5} {'/1 node':>7} {'ideal':>6} | "
          f"{'wall clock':>20} {'/1 node':>7}")  # fmt: skip
    base = results[min(results)]
    for n, r in results.items():
        ratio = r.steady_clips_per_s / base.steady_clips_per_s if base.steady_clips_per_s else float("nan")
        ideal = min(n * per, cores) / min(min(results) * per, cores)  # what the shared cores allow at best
        print(f"  {n:5d} {r.startup_s:6.2f} s {r.startup_load:5.2f} | {r.steady_clips_per_s:6.2f} clips/s "
              f"{r.steady_load:5.2f} x{ratio:5.2f} x{ideal:4.2f} | {r.wall_clips_per_s:6.2f} clips/s {r.wall_s:6.1f} s "
              f"x{r.wall_clips_per_s / base.wall_clips_per_s:5.2f}")  # fmt: skip
    print("  start-up: expert spec + actor start-up + the first part (16 clips); steady: clips/s after the first part"
          " of each actor;\n  ideal: the steady ratio the machine's cores allow (the nodes share them).")


if __name__ == "__main__":
    main()
