"""Ray start-up shared by every job entry point (the only place that decides how a job attaches to Ray).

* ``address=None`` (embedded default): start a private local Ray sized to this machine;
* ``address="auto"`` or ``"ray://..."``/``"host:port"``: attach to a running cluster — this is what happens under
  ``ray job submit``, where ``RAY_ADDRESS`` is set by the job runner.

Env defaults applied before Ray starts: token auth off for loopback-only dev/CI clusters unless the user set
``RAY_AUTH_MODE`` (stack-notes §9.3), no usage stats, Hugging Face offline (weights only from local paths). A
private local Ray also has Ray Train's controller poll its workers every 0.5 s instead of 2 s (Ray's default suits
large clusters; on one machine the poll is free, and a short job waited up to 2 s at each worker-group start, report
and finish: 24.6 s → 16.4 s of ``fit`` for the 4-step test job on 2 cores).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rgpt4d_core.train.job_sections import RunSection

_ENV_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
#: defaults for a Ray this process starts itself (inherited by its raylet, hence by the Train controller)
_LOCAL_RAY_ENV_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def apply_env_defaults(local_ray: bool = False) -> None:
    """Set the project's environment defaults without overriding anything the user exported; with ``local_ray``
    also those of a Ray this process starts itself."""
    for k, v in {**_ENV_DEFAULTS, **(_LOCAL_RAY_ENV_DEFAULTS if local_ray else {})}.items():
        os.environ.setdefault(k, v)


def job_runtime_env() -> dict[str, Any]:
    """The runtime env of the submitted job this driver runs in (``ray job submit --runtime-env``), else ``{}``."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    return dict(json.loads(raw).get("runtime_env") or {}) if raw else {}


def without_job_settings(runtime_env: dict[str, Any], job_env: dict[str, Any]) -> dict[str, Any]:
    """``runtime_env`` less what the submitted job's runtime env already sets: its env var keys and fields.

    Ray refuses to start a driver whose ``ray.init(runtime_env=...)`` names a field or an env var key that the
    job's runtime env also names, even with the same value; the job's settings are what the user submitted, so
    they win.
    """
    job_vars = job_env.get("env_vars") or {}
    out = {k: v for k, v in runtime_env.items() if k != "env_vars" and k not in job_env}
    env_vars = {k: v for k, v in (runtime_env.get("env_vars") or {}).items() if k not in job_vars}
    if env_vars:
        out["env_vars"] = env_vars
    return out


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs: Any) -> None:
    """Attach to (or start) Ray once per process.

    Args:
        address: ``None`` starts a local instance unless ``RAY_ADDRESS`` is set (as under ``ray job submit``);
            anything else is passed to ``ray.init``.
        num_cpus: logical CPUs of a *local* instance (ignored when attaching to a cluster).
        kwargs: extra ``ray.init`` arguments (e.g. ``object_store_memory``).
    """
    apply_env_defaults()
    import ray

    if ray.is_initialized():
        return
    env_vars = {k: os.environ[k] for k in _ENV_DEFAULTS}
    runtime_env = kwargs.pop("runtime_env", {}) or {}
    runtime_env.setdefault("env_vars", {}).update({k: v for k, v in env_vars.items() if k not in runtime_env["env_vars"]})
    runtime_env = without_job_settings(runtime_env, job_runtime_env())
    if address is None and not os.environ.get("RAY_ADDRESS"):
        apply_env_defaults(local_ray=True)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, **kwargs)
    else:
        ray.init(address=address, runtime_env=runtime_env, **kwargs)


def forwarded_env(names: Iterable[str]) -> dict[str, Any]:
    """The ``runtime_env`` that carries the driver's values of the environment variables ``names`` (those that are
    set) to a job's tasks and actors: workers of an already running cluster do not see the driver's environment."""
    return {"env_vars": {k: os.environ[k] for k in names if k in os.environ}}


@dataclass(frozen=True)
class RayTarget:
    """Which Ray a job attaches to and what its tasks see of the driver's environment: the one value every entry
    point reads from its own config keys (``ray_address``/``num_cpus``/``forward_env``, ``run.ray_address``/
    ``run.ray_num_cpus``/``run.forward_env``, ...; the YAML keys stay each job's own).

    Attributes:
        address: ``None`` starts a local Ray (or attaches when ``RAY_ADDRESS`` is set, as under ``ray job submit``);
            else the address to attach to (see :func:`init_ray`).
        num_cpus: logical CPUs of a locally started Ray (``None`` = all cores).
        forward_env: environment variables copied from the driver into the job's tasks and actors when set.
    """

    address: str | None = None
    num_cpus: int | None = None
    forward_env: tuple[str, ...] = ()

    @classmethod
    def of_run(cls, run: RunSection) -> RayTarget:
        """The Ray of a training job: its ``run`` section's ``ray_address``, ``ray_num_cpus`` and ``forward_env``."""
        return cls(run.ray_address, run.ray_num_cpus, tuple(run.forward_env))

    def runtime_env(self) -> dict[str, Any]:
        """``{"env_vars": ...}`` of :attr:`forward_env` (see :func:`forwarded_env`)."""
        return forwarded_env(self.forward_env)

    def remote_args(self) -> dict[str, Any]:
        """Ray remote arguments carrying :meth:`runtime_env`: ``{"runtime_env": ...}``, or ``{}`` when no forwarded
        variable is set."""
        env = self.runtime_env()
        return {"runtime_env": env} if env["env_vars"] else {}

    def init(self, **kwargs: Any) -> None:
        """:func:`init_ray` with this address and CPU count (``kwargs``: further ``ray.init`` arguments)."""
        init_ray(self.address, num_cpus=self.num_cpus, **kwargs)


def install_stop_signals() -> threading.Event:
    """An event set by Ctrl-C (SIGINT) or SIGTERM; install it after Ray and Serve are up and BEFORE announcing
    that the server is ready (a signal sent on seeing that line must find the handler).

    Ray replaces the SIGTERM handler with one that exits without stopping Serve, and a blocked sleep did not
    reliably see Ctrl-C; both signals set one event, so ``kill`` stops a server as cleanly as Ctrl-C and the
    caller's ``finally`` shuts Serve and Ray down.
    """
    import signal

    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return stopping


def wait_for(stopping: threading.Event, poll_s: float = 1.0) -> None:
    """Block until ``stopping`` (from :func:`install_stop_signals`) is set."""
    while not stopping.wait(timeout=poll_s):
        pass


@contextmanager
def simulated_cluster(head_node_args: dict[str, Any]) -> Iterator[Any]:
    """A ``ray.cluster_utils.Cluster`` of real Ray nodes on this machine (separate raylets and object stores, one
    GCS): a head started with ``head_node_args``, worker nodes added with ``cluster.add_node``. On exit Ray is shut
    down in this process, the nodes are stopped, and Ray's per-machine "current cluster" file (where ``Cluster()``
    records its address) is put back as it was, so that a bare ``ray.init()`` elsewhere on this machine is not
    pointed at a cluster that no longer exists."""
    import ray
    from ray.cluster_utils import Cluster

    address_file = Path(ray._private.utils.get_ray_address_file(None))
    previous_address = address_file.read_text() if address_file.is_file() else None
    cluster = Cluster(initialize_head=True, head_node_args=head_node_args)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous_address is None:
            address_file.unlink(missing_ok=True)
        else:
            address_file.write_text(previous_address)
