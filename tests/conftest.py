"""Shared fixtures: ONE session-scoped local Ray cluster, a moto S3 server on 127.0.0.1, real mp4 files.

Environment defaults (set before Ray is imported anywhere): token auth off for loopback-only test clusters
(stack-notes §9.3), no usage stats, offline Hugging Face, Ray Train's 0.5 s worker poll of a local Ray.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator

import pytest

from pipelines._ray import apply_env_defaults  # imports no Ray

# the project's defaults, including those of a Ray it starts itself: the tests' clusters (in-process and
# `ray start`) are local ones
apply_env_defaults(local_ray=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """Terminate a server process started by a test; kill it if it has not exited after ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def seed_for_test(nodeid: str) -> int:
    """The seed every test starts from: a stable hash of its node id (same in every run and in any order)."""
    return zlib.crc32(nodeid.encode())


@pytest.fixture(autouse=True)
def _seed_global_generators(request: pytest.FixtureRequest) -> None:
    """Seed Python's, NumPy's and torch's global generators before every test.

    A test that draws from a global generator without seeding it (``torch.randn``, a model built without a
    seed, ``np.random.rand``) would otherwise see whatever earlier tests left behind: its result would depend on
    chance and on collection order. With this fixture each test sees the same stream in every run, whether it
    runs alone, first or last. Tests that need a particular stream still seed explicitly.
    """
    import numpy as np
    import torch

    seed = seed_for_test(request.node.nodeid)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for every Ray test (each extra ``ray.init`` costs ~7 s on 2 cores)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=512 * 1024**2,
        )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 (a real S3-protocol endpoint); yields the env it needs.

    The environment variables are exported in this process (s3fs/pyarrow in the driver reach the server).
    Workers of an already-running Ray cluster do NOT see them: jobs forward what they need through their
    runtime_env (see the ``forward_env`` settings of the pipelines). Stops by itself at the end of the session.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto S3 server did not start") from None
            time.sleep(0.2)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        stop_process(proc, timeout_s=10)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def s3_bucket(s3_server: dict[str, str]) -> str:
    """A fresh, empty bucket on the moto server; returns ``s3://<bucket>``."""
    import uuid

    import boto3

    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return f"s3://{name}"
