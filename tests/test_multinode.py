"""A simulated multi-node cluster on this machine: the real jobs spread over nodes and survive losing one.

``ray.cluster_utils.Cluster`` starts three real Ray nodes (separate raylets and object stores, one GCS): a head
with 1 CPU and two worker nodes with 1 CPU and one unit of the custom resource ``rgpt4d_worker`` each. Against it
the real entry points run as they would under ``ray job submit``:

1. ``pipelines/make_synthetic.py`` writes a tiny synthetic 4D world;
2. ``pipelines/precompute.py`` runs the tiny L4P expert in an actor pool of two 1-CPU actors, which no single node
   can hold, so the pool spans two nodes;
3. ``pipelines/distill.py`` trains the tiny student with two Ray Train workers that each need ``rgpt4d_worker``,
   i.e. one worker per worker node. As soon as Ray Train has registered the first checkpoint, one worker node is killed
   (its raylet and every process on it) and a replacement node joins, as an autoscaler or KubeRay would provide.
   ``FailureConfig`` restarts the worker group, which resumes from that checkpoint and finishes all steps; the
   job's single MLflow run records each attempt's start step.

The scenario runs in a child process (its own Ray driver), so the session's local Ray fixture is untouched; the
child prints one JSON line that the test asserts on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "MULTINODE_RESULT "
WORKER_RESOURCE = "rgpt4d_worker"
TRAIN_STEPS = 8
CHECKPOINT_EVERY = 2
ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def test_jobs_spread_over_nodes_and_distill_recovers_from_a_lost_node(tmp_path: Path) -> None:
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert proc.returncode == 0 and lines, f"scenario failed (rc={proc.returncode}):\n{output[-6000:]}"
    r = json.loads(lines[-1][len(RESULT_PREFIX) :])

    # the cluster really had three nodes, and the killed node was a worker node, replaced by a new one
    assert len(r["initial_nodes"]) == 3
    assert r["killed_node"] in r["initial_nodes"] and r["killed_node"] != r["head_node"]
    assert r["replacement_node"] not in r["initial_nodes"]

    # precompute: every clip written, by expert actors on two different nodes
    assert r["precompute"]["ok"] > 0 and r["precompute"]["errors"] == 0, r["precompute"]
    assert r["precompute"]["ok"] == r["manifest_ok"]
    assert len(set(r["precompute_actor_nodes"])) >= 2, f"expert actors all on one node: {r['precompute_actor_nodes']}"

    # distill, first attempt: one worker on each worker node, none on the head
    first = r["first_attempt_worker_nodes"]
    assert len(first) == 2 and len(set(first)) == 2 and r["head_node"] not in first, first
    assert r["killed_node"] in first, "the killed node did not host a training worker"
    # after the kill: the restarted group used the replacement node, and the job finished every step
    second = r["later_worker_nodes"]
    assert second and r["replacement_node"] in second and r["killed_node"] not in second, second
    assert r["final_step"] == TRAIN_STEPS, r
    # resumed from the checkpoint taken before the kill (not from scratch): one MLflow run, attempts logged
    starts = r["attempt_start_steps"]
    assert starts[0] == 0 and len(starts) >= 2, starts
    assert r["checkpointed_step_at_kill"] <= starts[-1] < TRAIN_STEPS, (starts, r["checkpointed_step_at_kill"])
    assert starts[-1] > 0 and starts[-1] % CHECKPOINT_EVERY == 0, starts


# ---- the scenario (runs in the child process) ---------------------------------------------------------------------


def _actor_nodes(class_fragment: str) -> dict[str, str]:
    """``{actor_id: node_id}`` of every actor (alive or dead) whose class name contains ``class_fragment``."""
    import ray._private.state as state

    return {
        aid: info["Address"]["NodeID"]
        for aid, info in state.actors().items()
        if class_fragment in info.get("ActorClassName", "") and info.get("Address", {}).get("NodeID")
    }


class DistillThread(threading.Thread):
    """Runs the distill job (its Ray driver side) while the main thread, which owns the cluster, kills a node."""

    def __init__(self, run: Any, cfg: Any) -> None:
        super().__init__(daemon=True)
        self._run, self._cfg = run, cfg
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._run(self._cfg)
        except BaseException as exc:  # re-raised by the scenario
            self.error = exc


def _wait_for(predicate: Any, what: str, timeout_s: float, job: DistillThread) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if not job.is_alive():
            raise RuntimeError(f"distill ended before {what}") from job.error
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def _registered_checkpoint_step(run_dir: Path) -> int | None:
    """Step of the newest checkpoint Ray Train has *registered* (its checkpoint manager snapshot, written after the
    upload completes), ``None`` before the first one. Every report carries ``step`` in its metrics."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):  # not written yet, or being written
        return None
    steps: list[int] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("step"), int | float):
                steps.append(int(node["step"]))
            for value in node.values():
                walk(value if not isinstance(value, str) or not value.startswith("{") else json.loads(value))
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(snapshot)
    return max(steps) if steps else None


def scenario(tmp: Path) -> dict[str, Any]:
    os.environ.update(ENV)
    import ray

    from pipelines import distill, make_synthetic, precompute
    from pipelines._ray import simulated_cluster
    from rgpt4d_core.config import load
    from rgpt4d_core.train.config import DistillJobConfig

    with simulated_cluster({"num_cpus": 1, "include_dashboard": False, "object_store_memory": 150 * 1024**2}) as cluster:
        marks = {"start": time.perf_counter()}
        workers = [
            cluster.add_node(num_cpus=1, resources={WORKER_RESOURCE: 1}, object_store_memory=100 * 1024**2)
            for _ in range(2)
        ]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        assert cluster.head_node is not None
        head = cluster.head_node.node_id
        out: dict[str, Any] = {"head_node": head, "initial_nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]]}

        marks["cluster_up"] = time.perf_counter()
        synth, shards, runs = tmp / "synth", tmp / "shards", tmp / "runs"
        rc = make_synthetic.main(["--config", "conf/synth/tiny.yaml", "--out", str(synth), "--address", cluster.address,
                                  "--no-progress", "synth.num_scenes=2", "workers=1"])  # fmt: skip
        assert rc == 0, f"make_synthetic exited {rc}"
        marks["synthetic_written"] = time.perf_counter()

        summary = precompute.main([
            "--config", "conf/precompute/tiny.yaml", f"input.dataset_root={synth}", "input.splits=[train]",
            f"output.uri={shards}", "compute.num_actors=2", "compute.num_cpus_per_actor=1",
            "compute.num_cpus_per_task=0.25",
        ])  # fmt: skip
        out["precompute"] = {"ok": summary.written_ok, "errors": summary.written_error}
        out["manifest_ok"] = json.loads((shards / "_manifest.json").read_text())["counts"]["ok"]
        out["precompute_actor_nodes"] = sorted(set(_actor_nodes("MapWorker").values()))
        marks["precomputed"] = time.perf_counter()

        cfg = load(DistillJobConfig, [ROOT / "conf" / "distill" / "tiny.yaml"], [
            f"data.shards={shards}", f"run.storage_path={runs}", "run.name=multinode", "run.max_failures=2",
            "scaling.num_workers=2", f"scaling.resources_per_worker={{CPU: 0.25, {WORKER_RESOURCE}: 1}}",
            "loop.micro_batch_size=1", "loop.global_batch_size=2", f"loop.max_steps={TRAIN_STEPS}",
            f"loop.checkpoint_every_steps={CHECKPOINT_EVERY}", "loop.torch_threads=1",
        ])  # fmt: skip
        run_dir = runs / "multinode"
        job = DistillThread(distill.run, cfg)
        job.start()
        # mid-training: as soon as the first checkpoint is durable, a worker node dies (raylet and all its processes)
        _wait_for(lambda: _registered_checkpoint_step(run_dir), "the first registered checkpoint", 300, job)
        marks["first_checkpoint"] = time.perf_counter()
        first = _actor_nodes("RayTrainWorker")
        checkpointed_at_kill = _registered_checkpoint_step(run_dir)
        victim = workers[-1]
        cluster.remove_node(victim, allow_graceful=False)
        # ... and a fresh node joins, as the autoscaler or KubeRay would provide
        replacement = cluster.add_node(num_cpus=1, resources={WORKER_RESOURCE: 1}, object_store_memory=100 * 1024**2)
        job.join(timeout=300)
        if job.is_alive():
            raise TimeoutError("distill did not finish within 300 s of the node loss")
        if job.error is not None:
            raise job.error
        result = job.result
        marks["distilled"] = time.perf_counter()
        later = {a: n for a, n in _actor_nodes("RayTrainWorker").items() if a not in first}
        out.update(
            killed_node=victim.node_id,
            replacement_node=replacement.node_id,
            checkpointed_step_at_kill=checkpointed_at_kill,
            first_attempt_worker_nodes=sorted(first.values()),
            later_worker_nodes=sorted(set(later.values())),
            final_step=int(result.metrics["step"]),
            attempt_start_steps=_attempt_start_steps(distill.tracking_uri_of(cfg), result.mlflow_run_id),
            phase_seconds={k: round(marks[k] - marks["start"], 1) for k in marks},
        )
        return out


def _attempt_start_steps(tracking_uri: str, run_id: str | None) -> list[int]:
    """``attempt/start_step`` values of the job's MLflow run, in logging order (one per training attempt)."""
    from mlflow.tracking import MlflowClient

    assert run_id, "the distill job created no MLflow run"
    history = MlflowClient(tracking_uri=tracking_uri).get_metric_history(run_id, "attempt/start_step")
    return [int(m.value) for m in sorted(history, key=lambda m: (m.timestamp, m.step))]


if __name__ == "__main__":
    record = scenario(Path(sys.argv[1]))
    print(RESULT_PREFIX + json.dumps(record, sort_keys=True), flush=True)
