"""``ray job submit`` of the precompute, distill and evaluate jobs against a real two-node Ray cluster.

Two ``ray start --block`` processes on this machine (a head and a second node, 2 logical CPUs each, every port free and
explicit, ``RAY_AUTH_MODE=disabled``) form a two-node cluster, started once for this module. Each job is submitted
through the head's job server exactly as the README and ``docs/cluster.md`` write it: ``--working-dir .
--runtime-env cluster/runtime_env.yaml``. Distillation asks for two workers with the ``SPREAD`` placement and must
finish with one worker on each node. Both processes are terminated at the end (never ``ray stop``, which would
stop other clusters on this machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, stop_process
from tests.distill_testkit import distill_result, write_shards
from tests.precompute_testkit import make_dataset
from tests.test_evaluate import ITEMS, write_r4d_fixture

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 120


def _node_ports() -> list[str]:
    return [
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        "--num-cpus=2",  # logical: room for the two 0.5-CPU workers, Ray Data read tasks and the controller
        f"--object-store-memory={256 * 1024**2}",
        "--disable-usage-stats",
        "--block",
    ]


def _alive_nodes(dashboard: str) -> list[str]:
    try:
        reply = requests.get(f"{dashboard}/api/v0/nodes", params={"limit": 10}, timeout=5).json()
    except (requests.RequestException, ValueError):
        return []
    rows = reply.get("data", {}).get("result", {}).get("result", []) if isinstance(reply, dict) else []
    return [r["node_id"] for r in rows if r.get("state") == "ALIVE"]


def _tail(path: str, chars: int = 3000) -> str:
    return Path(path).read_text(errors="replace")[-chars:]


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[tuple[str, list[str]]]:
    """A head + one more node (2 logical CPUs each); yields (dashboard URL, node ids)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="rgd", dir="/tmp")  # short: Ray's unix socket paths live under it
    # The second node needs a temp dir of its own: by default a joining node uses the head's, and two nodes on one
    # machine would then share one `runtime_resources/` directory, and the head's driver lost its CWD (the unpacked
    # --working-dir) once the job started -- most likely the second node's runtime-env agent installing the package
    # again into that same path. Real nodes have separate disks.
    node_temp_dir = tempfile.mkdtemp(prefix="rgn", dir="/tmp")
    gcs_port, dash_port = free_port(), free_port()
    dashboard = f"http://127.0.0.1:{dash_port}"
    head_log = open(Path(temp_dir) / "head.log", "w")  # noqa: SIM115 - closed in finally
    node_log = open(Path(temp_dir) / "node.log", "w")  # noqa: SIM115
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash_port}", f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}",
         "--include-dashboard=true", *_node_ports()],
        env=env, stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    procs = [head]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(_alive_nodes(dashboard)) < 1:
            assert head.poll() is None, f"ray start --head exited: {_tail(head_log.name)}"
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(1)
        second = subprocess.Popen(
            [RAY, "start", f"--address=127.0.0.1:{gcs_port}", "--node-ip-address=127.0.0.1", f"--temp-dir={node_temp_dir}",
             *_node_ports()],
            env=env, stdout=node_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        procs.append(second)
        while len(nodes := _alive_nodes(dashboard)) < 2:
            assert second.poll() is None, f"ray start (second node) exited: {_tail(node_log.name)}"
            assert time.monotonic() < deadline, "the second Ray node did not join"
            time.sleep(1)
        yield dashboard, nodes
    finally:
        for proc in reversed(procs):
            stop_process(proc, timeout_s=30)
        head_log.close()
        node_log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(node_temp_dir, ignore_errors=True)


def submit(dashboard: str, job: list[str], timeout_s: float = 420) -> str:
    """``ray job submit`` as documented (``--working-dir . --runtime-env cluster/runtime_env.yaml``); returns the
    job's output. The runtime-env file sets env vars the driver sets too (this used to fail at once with "Failed to
    merge the Job's runtime env ... because of a conflict")."""
    cmd = [RAY, "job", "submit", f"--address={dashboard}", "--working-dir", ".",
           "--runtime-env", "cluster/runtime_env.yaml", "--", sys.executable, *job]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    return out


def test_precompute_job_writes_a_complete_shard_set(two_node_cluster: tuple[str, list[str]], tmp_path: Path) -> None:
    from rgpt4d_core.shards.reader import open_shards

    dashboard, _ = two_node_cluster
    data, out = tmp_path / "ds", tmp_path / "shards"
    lines = make_dataset(str(data), num_videos=2)
    submit(dashboard, ["pipelines/precompute.py", "--config", "conf/precompute/tiny.yaml",
                       f"input.dataset_root={data}", f"output.uri={out}", "input.splits=[train]"])  # fmt: skip
    shards = open_shards(str(out))  # raises unless the manifest is there and every file it lists is complete
    assert shards.manifest.counts.total == len(lines) and shards.manifest.counts.error == 0


def test_evaluate_job_writes_its_report(two_node_cluster: tuple[str, list[str]], tmp_path: Path) -> None:
    from rgpt4d_core.serve.engine import write_random_checkpoint

    dashboard, _ = two_node_cluster
    bench = write_r4d_fixture(tmp_path / "R4D-Bench")
    ckpt = write_random_checkpoint(tmp_path / "ckpt" / "export", preset="tiny", seed=0)
    report = tmp_path / "report"
    submit(dashboard, ["pipelines/evaluate.py", "--config", "conf/eval/synthetic.yaml", f"benchmark.path={bench}",
                       f"engine.checkpoint={ckpt}", f"output.dir={report}", "benchmark.blind_from=null",
                       "compute.num_cpus_per_actor=0.5",
                       "engine.max_new_tokens=3", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])  # fmt: skip
    predictions = (report / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == len(ITEMS)
    table = json.loads((report / "table.json").read_text())
    assert "tiny-untrained-seed0" in json.dumps(table), "the report names the model by its checkpoint's id"


def test_distill_job_runs_on_both_nodes(two_node_cluster: tuple[str, list[str]], tmp_path: Path) -> None:
    dashboard, nodes = two_node_cluster
    shards = write_shards(tmp_path / "shards", num_samples=4)
    out = submit(dashboard, [
        "pipelines/distill.py", "--config", "conf/distill/tiny.yaml",
        f"data.shards={shards}", f"run.storage_path={tmp_path / 'runs'}", "run.name=two-nodes",
        "scaling.placement_strategy=SPREAD", "loop.micro_batch_size=1", "loop.global_batch_size=2", "loop.epochs=1",
    ])  # fmt: skip
    result = distill_result(out)
    assert result is not None, out[-4000:]
    assert result["steps"] == 2  # 4 rows / global batch 2
    assert result["metrics"]["workers/num_nodes"] == 2.0, "SPREAD must place one worker on each node"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'two-nodes' / 'mlflow.db'}")
    run = client.get_run(result["mlflow_run_id"])
    assert set(run.data.tags["ray.worker_nodes"].split(",")) == set(nodes)
    assert run.info.status == "FINISHED"
