"""The serve job's configuration (private to ``pipelines/serve.py``, which re-exports it): :class:`ServerConfig`,
:class:`ServeJob`, the engine class named by import path, and the bootstrap checkpoint of a demo deployment.
"""

# no `from __future__ import annotations`: the job dataclasses are read by OmegaConf and by typing.get_type_hints

import importlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines._ray import RayTarget
from pipelines._serve_http import log
from pipelines._serve_ui import UIConfig
from rgpt4d_core.serve.engine import EngineConfig, write_random_checkpoint
from rgpt4d_core.serve.security import SecurityConfig


@dataclass(frozen=True)
class ServerConfig:
    """HTTP and deployment settings.

    Attributes:
        host / port / route_prefix / app_name: where the application is served.
        num_replicas, num_cpus, num_gpus, max_ongoing_requests: ``VQAModel`` deployment options.
        max_batch_size, batch_wait_timeout_s: ``@serve.batch`` settings (``user_config``; reconfigurable).
        request_timeout_s: HTTP proxy timeout per request, seconds.
        lean_request_path: run Serve's request path without its extra event-loop threads (:data:`LEAN_SERVE_ENV`):
            the replica runs its ASGI app on its main event loop and the HTTP proxy routes on its own loop, which
            saves cross-thread hand-offs per request (each ASGI message crossed threads). Replicas get it
            through their ``runtime_env``; the proxy only when this process starts Ray (``python
            pipelines/serve.py``); on a running cluster export the variables before ``ray start``.
        direct_ingress: each replica also serves HTTP itself, on a port of its own (Ray Serve's direct ingress,
            :data:`DIRECT_INGRESS_ENV`; ports from 30000 per node, listed by :func:`replica_urls` and printed at
            start): a request sent there skips the proxy's hop and the replica's extra call back to the proxy for
            the body, about 9 ms of the 14 ms Serve adds at concurrency 1 on 2 cores (``bench/serve.py``). The
            proxy on ``port`` keeps working. A Ray Serve feature flag in Ray 2.60 (experimental); a load balancer
            in front of the replica ports is the user's (Serve's HAProxy mode is not wired here). Like
            ``lean_request_path``, Serve's controller reads it only when this process starts Ray.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    app_name: str = "rgpt4d"
    num_replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_ongoing_requests: int = 32
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.05
    request_timeout_s: float = 120.0
    lean_request_path: bool = True
    direct_ingress: bool = False


#: Ray Serve settings of :attr:`ServerConfig.lean_request_path` (read by Ray when its processes start):
#: ``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD`` is read by replicas, ``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP`` by
#: the proxy and the handles' routers. The app is async throughout (blocking work goes to worker threads), so the
#: main event loop stays free.
LEAN_SERVE_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}


#: Ray Serve settings of :attr:`ServerConfig.direct_ingress`: the flag, and a drain of 5 s (Ray's default, 30 s, waits
#: for an external load balancer to notice a stopping replica: set it back where one runs).
DIRECT_INGRESS_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5"}


def serve_env(server: ServerConfig) -> dict[str, str]:
    """The environment variables ``server`` asks of Ray Serve's processes (empty unless ``lean_request_path`` or
    ``direct_ingress``)."""
    return {**(LEAN_SERVE_ENV if server.lean_request_path else {}),
            **(DIRECT_INGRESS_ENV if server.direct_ingress else {})}  # fmt: skip


def replica_urls(server: ServerConfig, timeout_s: float = 60.0) -> list[str]:
    """``http://host:port`` + route prefix of each running replica's own HTTP server (direct ingress), waiting up
    to ``timeout_s`` for the first; ``[]`` when direct ingress is off. Asks Serve's controller for its target
    groups, as Ray's own ``get_application_urls`` does (no public API lists them in Ray 2.60)."""
    if not server.direct_ingress:
        return []
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("replica_urls: Serve is not running in this Ray (call start() first)")
    controller = client._controller
    deadline = time.monotonic() + timeout_s
    while True:
        groups = ray.get(controller.get_target_groups.remote(server.app_name))
        targets = sorted({(t.ip, t.port) for g in groups if g.protocol == "HTTP" for t in g.targets})  # a str enum
        wildcard = server.host in ("0.0.0.0", "::")  # replicas bind server.host: a node's own address only then
        urls = [f"http://{ip if wildcard else server.host}:{port}{server.route_prefix.rstrip('/')}"
                for ip, port in targets if port != server.port]  # fmt: skip
        if urls or time.monotonic() > deadline:
            return urls
        time.sleep(0.5)


@contextmanager
def serve_process_env(server: ServerConfig) -> Iterator[None]:
    """Start Ray inside this block: meanwhile this process's environment carries :func:`serve_env` (values the user
    exported win), which a Ray started here hands to Serve's controller and HTTP proxy. Restored afterwards, so that
    this process's own Serve client keeps Ray's defaults (a handle with the router on the caller's loop cannot be
    used from synchronous code, such as ``handle.reconfigure.remote(...).result()``). Import ``ray.serve`` before
    the block: Ray reads these variables when the module is imported."""
    added = {k: v for k, v in serve_env(server).items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@dataclass(frozen=True)
class ServeJob:
    """``python pipelines/serve.py`` configuration.

    Attributes:
        bootstrap_preset: when set and ``engine.checkpoint`` holds no checkpoint, write an UNTRAINED seeded
            student of this preset there first (demo/CI only; real deployments point at a trained checkpoint).
        engine_class: ``module:Class`` of the engine (``VQAEngine`` or a drop-in with ``prepare``/``run``).
        ray_address: ``None`` starts a local Ray unless ``RAY_ADDRESS`` is set.
    """

    engine: EngineConfig = field(default_factory=EngineConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    bootstrap_preset: str | None = None
    engine_class: str = "rgpt4d_core.serve.engine:VQAEngine"
    ray_address: str | None = None

    def ray_target(self) -> RayTarget:
        return RayTarget(self.ray_address)


def import_object(path: str) -> Any:
    """The object at ``"module:attr"`` (``ServeJob.engine_class``)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def ensure_checkpoint(job: ServeJob) -> None:
    """Write the bootstrap checkpoint if configured and absent (atomic rename; safe with several replicas)."""
    target = Path(job.engine.checkpoint)
    if not job.bootstrap_preset or (target / "config.json").is_file():
        return
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    write_random_checkpoint(tmp, preset=job.bootstrap_preset, seed=0)
    try:
        os.replace(tmp, target)
    except OSError:  # another replica won the race
        if not (target / "config.json").is_file():
            raise
    log.warning("serving an UNTRAINED %s checkpoint written to %s", job.bootstrap_preset, target)
