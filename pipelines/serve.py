"""Ray Serve application: batched region-level video VQA over HTTP (JSON, multipart, OpenAI-compatible).

Start it (blocks, prints the URL; Ctrl-C stops it)::

    python pipelines/serve.py --config conf/serve/tiny.yaml [key=value ...]

or on a running cluster, with ``cluster/serve_config.yaml`` (import path ``pipelines.serve:build_app``, argument
``config``)::

    serve run pipelines.serve:build_app config=conf/serve/tiny.yaml
    serve deploy cluster/serve_config.yaml

One deployment, ``VQAModel``, is both the FastAPI ingress and the model holder: each replica decodes and marks its
requests' videos in worker threads (``VQAEngine.prepare``) while the previous batch generates, and
``@serve.batch`` gathers prepared requests into ONE generation (``VQAEngine.run``); a batch waits up to
``batch_wait_timeout_s`` only while the replica is busy preparing or generating other requests
(``_serve_batch.py``), so a lone request never waits. Keeping ingress and model in one replica saves a Ray hop per request and never
ships decoded frames between processes; scale it with replicas. ``server.lean_request_path`` runs the replica's app
on its main event loop (no cross-thread hop per ASGI message; ``pipelines/_serve_job.py``). ``max_batch_size`` / ``batch_wait_timeout_s`` live in ``user_config`` (changed in place by
``serve deploy`` without restarting replicas).

Routes: ``POST /v1/vqa``, ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /healthz``, the web page
``GET /ui/`` (``pipelines/_serve_ui.py``; ``/`` redirects there) and FastAPI's
``/openapi.json`` / ``/docs``. Hardening: bodies over ``security.max_body_bytes`` get 413 (checked on the
header and while streaming), schema errors 4xx naming the field, media confined by ``rgpt4d_core.serve.security``,
per-request errors isolated, a request id on every response (``X-Request-ID`` header and body) and one JSON log
line per request without its body. ``/v1/vqa`` answers carry a ``Server-Timing`` header with the replica's stages.

This file holds the app, the replica's batching and the entry point; beside it: ``_serve_job.py`` (``ServeJob``,
``ServerConfig``), ``_serve_api.py`` (the API routes), ``_serve_media.py`` (video sources of a request),
``_serve_ui.py`` (the page), ``_serve_http.py`` (errors, request guard, OpenAPI body) and ``_serve_batch.py``
(when a forming batch stops waiting).
"""

# no `from __future__ import annotations`: FastAPI resolves route signatures of Serve's ingress class at runtime

import asyncio
import dataclasses
import time
from typing import Any

if __package__ in (None, ""):  # `python pipelines/<job>.py`: put this repository first on sys.path
    import _paths  # noqa: F401  (pipelines/_paths.py, found beside the script)

if __name__ == "__main__":
    # run the importable module's main, before this script defines anything: Serve pickles the app with its
    # classes, which must be importable by name, and a second copy of this module (the script's, then the
    # import's) would give the shared API router's routes to the script's app only: the deployed app had none
    from pipelines.serve import main as _module_main

    _module_main()
    raise SystemExit(0)

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from pipelines._cli import job_from_args, job_parser
from pipelines._paths import absolute
from pipelines._serve_api import APIRoutes, api_router
from pipelines._serve_batch import BatchGate, Ticket, batch_size
from pipelines._serve_http import (
    ApiError,
    RequestGuard,
    Stages,
    error_response,
    openapi_with_vqa_body,
    status_of,
    validation_error,
)
from pipelines._serve_job import (
    ServeJob,
    ServerConfig,
    ensure_checkpoint,
    import_object,
    replica_urls,
    serve_env,
    serve_process_env,
)
from pipelines._serve_media import keep_uploads_in_memory
from pipelines._serve_ui import UIRoutes, ui_router
from rgpt4d_core.config import load
from rgpt4d_core.inputs import InputSpec
from rgpt4d_core.serve.engine import VQAError, VQARequest, VQAResult

__all__ = [
    "ServeJob",
    "ServerConfig",
    "VQAModel",
    "build_app",
    "ensure_checkpoint",
    "load_job",
    "main",
    "make_app",
    "replica_urls",
    "start",
]


# ------------------------------------------------------------------------------------------------ the app

fastapi_app = FastAPI(title="rgpt4d VQA", version="1", description="Region-level 4D video question answering")
fastapi_app.openapi = openapi_with_vqa_body(fastapi_app)  # type: ignore[method-assign]
fastapi_app.add_middleware(RequestGuard)
fastapi_app.include_router(ui_router)  # the web page (GET /ui/), its config, examples and frame-1 preview
fastapi_app.include_router(
    api_router
)  # POST /v1/vqa, POST /v1/chat/completions, GET /v1/models, GET /healthz


@fastapi_app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, request.state.request_id, exc.code, exc.message, exc.field)


@fastapi_app.exception_handler(RequestValidationError)
async def _schema_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    err = validation_error(list(exc.errors()))
    return error_response(err.status, request.state.request_id, err.code, err.message, err.field)


@serve.deployment(name="VQAModel")
@serve.ingress(fastapi_app)
class VQAModel(UIRoutes, APIRoutes):
    """Ingress + engine replica (see the module docstring); the API's routes come from :class:`APIRoutes`, the
    page's from :class:`UIRoutes`."""

    def __init__(self, job: ServeJob) -> None:
        ensure_checkpoint(job)
        RequestGuard.max_body_bytes = job.security.max_body_bytes
        keep_uploads_in_memory(job.security.max_body_bytes)
        self.job = job
        self.security = job.security
        self.engine = import_object(job.engine_class)(job.engine)
        self.model_id: str = self.engine.model_id
        #: the input the engine runs with (the checkpoint's spec, overrides applied); a drop-in engine without one
        #: gets it from the config
        self.input_spec: InputSpec = getattr(self.engine, "input", None) or job.engine.input_spec()
        self.created = int(time.time())
        self._batch_settings = (job.server.max_batch_size, job.server.batch_wait_timeout_s)
        self._gate = BatchGate()
        self._apply_batching()

    # ---------------------------------------------------------------------------- batching
    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``user_config``: ``max_batch_size`` (int >= 1) and ``batch_wait_timeout_s`` (float >= 0)."""
        unknown = set(user_config) - {"max_batch_size", "batch_wait_timeout_s"}
        if unknown:
            raise ValueError(f"user_config: unknown keys {sorted(unknown)}")
        size = int(user_config.get("max_batch_size", self._batch_settings[0]))
        wait = float(user_config.get("batch_wait_timeout_s", self._batch_settings[1]))
        if size < 1 or wait < 0:
            raise ValueError(
                f"user_config: need max_batch_size >= 1 and batch_wait_timeout_s >= 0, got {size}, {wait}"
            )
        self._batch_settings = (size, wait)
        self._apply_batching()

    def _apply_batching(self) -> None:
        size, wait = self._batch_settings
        self._gate.max_batch_size = size
        self._run_batch.set_max_batch_size(size)  # type: ignore[attr-defined]
        self._run_batch.set_batch_wait_timeout_s(wait)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05, batch_size_fn=batch_size)
    async def _run_batch(self, tickets: list[Ticket]) -> list[VQAResult | VQAError]:
        # a forming batch waits for batch-mates only while the replica is busy (pipelines/_serve_batch.py)
        self._gate.running += 1
        try:
            return await asyncio.to_thread(self.engine.run, [t.prepared for t in tickets])
        finally:
            self._gate.running -= 1

    async def _answer(self, request: VQARequest, stages: Stages | None = None) -> VQAResult:
        start = time.perf_counter()
        self._gate.preparing += 1
        try:
            prepared = await asyncio.to_thread(self.engine.prepare, request)
        finally:
            self._gate.preparing -= 1
        ready = time.perf_counter()
        # a failed prepare goes through the batch too (``run`` passes errors through): its arrival wakes a batch
        # that was waiting for it, which would otherwise sleep out its whole timeout
        result = await self._run_batch(Ticket(prepared, self._gate))
        if stages is not None:
            stages.prepare_ms, stages.batch_ms = (ready - start) * 1e3, (time.perf_counter() - ready) * 1e3
        if isinstance(result, VQAError):
            raise ApiError(status_of(result.code), result.code, result.message, result.field)
        return result


# ------------------------------------------------------------------------------------------------ builders


def make_app(job: ServeJob, user_config: dict[str, Any] | None = None) -> serve.Application:
    """The bound application for ``job``: deployment options from ``job.server``, and ``user_config`` (batching)
    from ``job.server`` unless given. ``serve deploy`` applies a changed ``user_config`` to running replicas in
    place (``VQAModel.reconfigure``); an imperative ``serve.run`` replaces the replicas."""
    s = job.server
    batching = {"max_batch_size": s.max_batch_size, "batch_wait_timeout_s": s.batch_wait_timeout_s}
    actor: dict[str, Any] = {"num_cpus": s.num_cpus, "num_gpus": s.num_gpus}
    if serve_env(s):  # read by the replica's process when it starts (ServerConfig.lean_request_path)
        actor["runtime_env"] = {"env_vars": serve_env(s)}
    deployment: Any = VQAModel
    return deployment.options(
        num_replicas=s.num_replicas,
        max_ongoing_requests=s.max_ongoing_requests,
        ray_actor_options=actor,
        user_config=batching if user_config is None else user_config,
    ).bind(job)


def load_job(config: str | list[str] | None = None, overrides: list[str] | None = None,
             values: dict[str, Any] | None = None) -> ServeJob:  # fmt: skip
    """:class:`ServeJob` from YAML file(s), ``key=value`` overrides and typed ``values`` (``rgpt4d_core.config.load``)."""
    files = [config] if isinstance(config, str) else list(config or [])
    job = load(ServeJob, files, overrides or [], values)
    # replicas may run in another working directory: pin relative local paths to where the job was launched
    engine = dataclasses.replace(job.engine, checkpoint=absolute(job.engine.checkpoint))
    security = dataclasses.replace(job.security, media_root=absolute(job.security.media_root))
    ui = dataclasses.replace(job.ui, examples=absolute(job.ui.examples))
    return dataclasses.replace(job, engine=engine, security=security, ui=ui)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run`` / ``serve deploy`` (``args``: ``config`` path, ``overrides`` list)."""
    unknown = set(args) - {"config", "overrides"}
    if unknown:
        raise ValueError(f"build_app args: unknown keys {sorted(unknown)} (use 'config' and 'overrides')")
    overrides = args.get("overrides", [])
    return make_app(
        load_job(args.get("config"), overrides.split() if isinstance(overrides, str) else overrides)
    )


def start(job: ServeJob, user_config: dict[str, Any] | None = None) -> tuple[str, DeploymentHandle]:
    """Start Serve's HTTP proxy and the application on the running Ray; returns ``(url, handle)``."""
    s = job.server
    serve.start(http_options={"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s})
    handle = serve.run(make_app(job, user_config), name=s.app_name, route_prefix=s.route_prefix)
    return f"http://{s.host}:{s.port}{s.route_prefix.rstrip('/')}", handle


def main(argv: list[str] | None = None) -> None:
    args = job_parser(__doc__, "conf/serve/*.yaml", "server.port=8080").parse_args(argv)
    job = job_from_args(ServeJob, args, loader=load_job)
    if job is None:
        return
    from pipelines._ray import install_stop_signals, wait_for

    with serve_process_env(job.server):  # a Ray started here hands them to Serve's proxy (lean_request_path)
        job.ray_target().init()
    url, _ = start(job)
    stopping = install_stop_signals()
    print(
        f"rgpt4d VQA serving {job.engine.checkpoint} at {url}  (POST {url}/v1/vqa, page {url}/ui/)",
        flush=True,
    )
    for replica in replica_urls(job.server):
        print(f"  replica's own endpoint (server.direct_ingress, no proxy hop): {replica}/v1/vqa", flush=True)
    try:
        wait_for(stopping)
        print("shutting down", flush=True)
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()  # the private Ray's processes (raylet, agents) go with it: no orphans

