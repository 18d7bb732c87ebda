"""Ray Serve application: batched region-level video VQA over HTTP (JSON, multipart, OpenAI-compatible).

Start it (blocks, prints the URL; Ctrl-C stops it)::

    python pipelines/serve.py --config conf/serve/tiny.yaml [key=value ...]

or on a running cluster, with ``cluster/serve_config.yaml`` (import path ``pipelines.serve:build_app``, argument
``config``)::

    serve run pipelines.serve:build_app config=conf/serve/tiny.yaml
    serve deploy cluster/serve_config.yaml

One deployment, ``VQAModel``, is both the FastAPI ingress and the model holder: each replica decodes and marks its
requests' videos in worker threads (``VQAEngine.prepare``) while the previous batch generates, and
``@serve.batch`` gathers prepared requests into ONE generation (``VQAEngine.run``). Keeping ingress and model in
one replica saves a Ray hop per request and never ships decoded frames between processes; scale it with
replicas. ``max_batch_size`` / ``batch_wait_timeout_s`` live in ``user_config`` (changed in place by
``serve deploy`` without restarting replicas).

Routes: ``POST /v1/vqa``, ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /healthz``, the web page
``GET /ui/`` (``pipelines/_serve_ui.py``; ``/`` redirects there) and FastAPI's
``/openapi.json`` / ``/docs``. Hardening: bodies over ``security.max_body_bytes`` get 413 (checked on the
header and while streaming), schema errors 4xx naming the field, media confined by ``rgpt4d_core.serve.security``,
per-request errors isolated, a request id on every response (``X-Request-ID`` header and body) and one JSON log
line per request without its body.
"""

# no `from __future__ import annotations`: FastAPI resolves route signatures of Serve's ingress class at runtime

import argparse
import asyncio
import dataclasses
import importlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):  # `python pipelines/serve.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from pipelines._serve_http import (
    ApiError,
    RequestGuard,
    error_response,
    log,
    media_error,
    openapi_with_vqa_body,
    read_upload,
    status_of,
    validation_error,
)
from pipelines._serve_ui import UIConfig, UIRoutes, media_of, ui_router
from rgpt4d_core.config import load
from rgpt4d_core.regions import RegionError, validate_refs
from rgpt4d_core.serve import api
from rgpt4d_core.serve.engine import EngineConfig, VQAError, VQARequest, VQAResult, write_random_checkpoint
from rgpt4d_core.serve.security import (
    MediaAccessError,
    SecurityConfig,
    check_media_url,
    decode_base64_video,
    resolve_media_path,
)


@dataclass(frozen=True)
class ServerConfig:
    """HTTP and deployment settings.

    Attributes:
        host / port / route_prefix / app_name: where the application is served.
        num_replicas, num_cpus, num_gpus, max_ongoing_requests: ``VQAModel`` deployment options.
        max_batch_size, batch_wait_timeout_s: ``@serve.batch`` settings (``user_config``; reconfigurable).
        request_timeout_s: HTTP proxy timeout per request, seconds.
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


def _import(path: str) -> Any:
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


# ------------------------------------------------------------------------------------------------ the app

fastapi_app = FastAPI(title="rgpt4d VQA", version="1", description="Region-level 4D video question answering")
fastapi_app.openapi = openapi_with_vqa_body(fastapi_app)  # type: ignore[method-assign]
fastapi_app.add_middleware(RequestGuard)
fastapi_app.include_router(ui_router)  # the web page (GET /ui/), its config, examples and frame-1 preview


@fastapi_app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, request.state.request_id, exc.code, exc.message, exc.field)


@fastapi_app.exception_handler(RequestValidationError)
async def _schema_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    err = validation_error(list(exc.errors()))
    return error_response(err.status, request.state.request_id, err.code, err.message, err.field)


@serve.deployment(name="VQAModel")
@serve.ingress(fastapi_app)
class VQAModel(UIRoutes):
    """Ingress + engine replica (see the module docstring); the page's routes come from :class:`UIRoutes`."""

    def __init__(self, job: ServeJob) -> None:
        ensure_checkpoint(job)
        RequestGuard.max_body_bytes = job.security.max_body_bytes
        self.job = job
        self.security = job.security
        self.engine = _import(job.engine_class)(job.engine)
        self.model_id: str = self.engine.model_id
        self.created = int(time.time())
        self._batch_settings = (job.server.max_batch_size, job.server.batch_wait_timeout_s)
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
            raise ValueError(f"user_config: need max_batch_size >= 1 and batch_wait_timeout_s >= 0, got {size}, {wait}")
        self._batch_settings = (size, wait)
        self._apply_batching()

    def _apply_batching(self) -> None:
        size, wait = self._batch_settings
        self._run_batch.set_max_batch_size(size)  # type: ignore[attr-defined]
        self._run_batch.set_batch_wait_timeout_s(wait)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _run_batch(self, prepared: list[Any]) -> list[VQAResult | VQAError]:
        return await asyncio.to_thread(self.engine.run, prepared)

    async def _answer(self, request: VQARequest) -> VQAResult:
        prepared = await asyncio.to_thread(self.engine.prepare, request)
        result = prepared if isinstance(prepared, VQAError) else await self._run_batch(prepared)
        if isinstance(result, VQAError):
            raise ApiError(status_of(result.code), result.code, result.message, result.field)
        return result

    # ---------------------------------------------------------------------------- media
    def _video_source(self, video: api.VideoSpec) -> str | bytes:
        try:
            if video.data_b64 is not None:
                return decode_base64_video(video.data_b64, self.security)
            if video.path is not None:
                return resolve_media_path(video.path, self.security)
            assert video.url is not None
            return self._video_url(video.url, "video.url")
        except MediaAccessError as exc:
            raise media_error(exc) from None

    def _video_url(self, url: str, field: str) -> str | bytes:
        if url.startswith("data:"):
            return decode_base64_video(url, self.security, field)
        if "://" in url:
            return check_media_url(url, self.security, field)
        return resolve_media_path(url, self.security, field)

    async def _multipart(self, request: Request) -> tuple[api.VQAPayload, bytes]:
        form = await request.form(max_files=1, max_fields=4)
        upload, raw = form.get("video"), form.get("request")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "invalid_request", "video: multipart needs a file field 'video'", "video")
        if not isinstance(raw, str):
            raise ApiError(422, "invalid_request", "request: multipart needs a JSON field 'request'", "request")
        data = await read_upload(upload, self.security.max_upload_bytes)  # size (413) before the JSON's errors
        try:
            payload = api.VQAPayload.model_validate_json(raw)
        except ValidationError as exc:
            err = validation_error(list(exc.errors()))
            raise ApiError(err.status, err.code, f"request.{err.message}", f"request.{err.field}") from None
        if payload.video is not None:
            raise ApiError(422, "invalid_request", "video: give the upload or request.video, not both", "video")
        return payload, data

    # ---------------------------------------------------------------------------- routes
    @fastapi_app.post("/v1/vqa", response_model=api.VQAAnswer, responses={400: {"model": api.ErrorBody},
                      403: {"model": api.ErrorBody}, 413: {"model": api.ErrorBody}, 422: {"model": api.ErrorBody}})
    async def vqa(self, request: Request) -> api.VQAAnswer:
        """Answer one multiple-choice question about a video (JSON body or multipart upload)."""
        start = time.perf_counter()
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        source: str | bytes
        if ctype == "multipart/form-data":
            payload, source = await self._multipart(request)
        elif ctype == "application/json":
            try:
                payload = api.VQAPayload.model_validate_json(await request.body())
            except ValidationError as exc:
                raise validation_error(list(exc.errors())) from None
            if payload.video is None:
                raise ApiError(422, "invalid_request", "video: required (or upload it as multipart)", "video")
            source = self._video_source(payload.video)
        else:
            raise ApiError(415, "unsupported_media_type", f"content-type {ctype!r}: use JSON or multipart", "body")
        rid = request.state.request_id
        result = await self._answer(VQARequest(
            video=source, question=payload.question, options=tuple(payload.options),
            regions=tuple(r.to_region() for r in payload.regions), include_duration=payload.include_duration,
            request_id=rid, include_media=payload.include_media))
        timings = api.Timings(decode_ms=result.decode_ms, generate_ms=result.generate_ms,
                              total_ms=(time.perf_counter() - start) * 1e3)
        return api.VQAAnswer(
            request_id=rid, model=self.model_id, answer=result.answer, answer_index=result.answer_index,
            answer_letter=result.answer_letter, method=result.method, raw_output=result.raw_output,
            batch_size=result.batch_size, duration_s=result.duration_s, num_frames=result.num_frames,
            timings=timings, media=media_of(result))

    @fastapi_app.post("/v1/chat/completions", response_model=api.ChatCompletion,
                      responses={400: {"model": api.ErrorBody}, 422: {"model": api.ErrorBody}})
    async def chat_completions(self, body: api.ChatCompletionRequest, request: Request) -> api.ChatCompletion:
        """OpenAI-compatible chat completion over one video (``regions``/``options`` as extension fields)."""
        rid = request.state.request_id
        if body.model not in (None, self.model_id):
            raise ApiError(404, "model_not_found", f"model: {body.model!r} is not served (have {self.model_id!r})",
                           "model")
        try:
            url, text = body.video_and_text()
            question, options = body.question_and_options(text)
            source = self._video_url(url, "messages.content.video_url")
        except MediaAccessError as exc:
            raise media_error(exc) from None
        except ValueError as exc:
            where = str(exc).split(":")[0]
            raise ApiError(422, "invalid_request", str(exc), where) from None
        regions = tuple(r.to_region() for r in body.regions)
        try:
            validate_refs(question, regions)
        except RegionError as exc:
            raise ApiError(422, "invalid_request", f"regions: {exc}", "regions") from None
        result = await self._answer(VQARequest(video=source, question=question, options=tuple(options),
                                               regions=regions, include_duration=body.include_duration,
                                               request_id=rid))
        finish: Literal["stop", "length"] = "length" if result.completion_tokens >= self.job.engine.max_new_tokens else "stop"
        return api.ChatCompletion(
            id=f"chatcmpl-{rid}", created=int(time.time()), model=self.model_id,
            choices=[api.ChatChoice(index=0, message=api.ChatChoiceMessage(content=result.raw_output),
                                    finish_reason=finish)],
            usage=api.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                            total_tokens=result.prompt_tokens + result.completion_tokens),
            rgpt4d={"request_id": rid, "answer": result.answer, "answer_index": result.answer_index,
                    "answer_letter": result.answer_letter, "method": result.method,
                    "batch_size": result.batch_size})

    @fastapi_app.get("/v1/models", response_model=api.ModelList)
    async def models(self) -> api.ModelList:
        """The one model this application serves."""
        return api.ModelList(data=[api.ModelCard(id=self.model_id, created=self.created)])

    @fastapi_app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness and the current batching settings."""
        size, wait = self._batch_settings
        return {"status": "ok", "model": self.model_id, "max_batch_size": size, "batch_wait_timeout_s": wait}


# ------------------------------------------------------------------------------------------------ builders


def make_app(job: ServeJob, user_config: dict[str, Any] | None = None) -> serve.Application:
    """The bound application for ``job``: deployment options from ``job.server``, and ``user_config`` (batching)
    from ``job.server`` unless given. ``serve deploy`` applies a changed ``user_config`` to running replicas in
    place (``VQAModel.reconfigure``); an imperative ``serve.run`` replaces the replicas."""
    s = job.server
    batching = {"max_batch_size": s.max_batch_size, "batch_wait_timeout_s": s.batch_wait_timeout_s}
    deployment: Any = VQAModel
    return deployment.options(
        num_replicas=s.num_replicas,
        max_ongoing_requests=s.max_ongoing_requests,
        ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus},
        user_config=batching if user_config is None else user_config,
    ).bind(job)


def load_job(config: str | list[str] | None = None, overrides: list[str] | None = None) -> ServeJob:
    """:class:`ServeJob` from YAML file(s) and ``key=value`` overrides."""
    files = [config] if isinstance(config, str) else list(config or [])
    job = load(ServeJob, files, overrides or [])
    # replicas may run in another working directory: pin relative local paths to where the job was launched
    engine = dataclasses.replace(job.engine, checkpoint=_absolute(job.engine.checkpoint))
    security = dataclasses.replace(job.security, media_root=_absolute(job.security.media_root))
    ui = dataclasses.replace(job.ui, examples=_absolute(job.ui.examples))
    return dataclasses.replace(job, engine=engine, security=security, ui=ui)


def _absolute(path: str) -> str:
    return path if not path or "://" in path else str(Path(path).absolute())


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for ``serve run`` / ``serve deploy`` (``args``: ``config`` path, ``overrides`` list)."""
    unknown = set(args) - {"config", "overrides"}
    if unknown:
        raise ValueError(f"build_app args: unknown keys {sorted(unknown)} (use 'config' and 'overrides')")
    overrides = args.get("overrides", [])
    return make_app(load_job(args.get("config"), overrides.split() if isinstance(overrides, str) else overrides))


def start(job: ServeJob, user_config: dict[str, Any] | None = None) -> tuple[str, DeploymentHandle]:
    """Start Serve's HTTP proxy and the application on the running Ray; returns ``(url, handle)``."""
    s = job.server
    serve.start(http_options={"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s})
    handle = serve.run(make_app(job, user_config), name=s.app_name, route_prefix=s.route_prefix)
    return f"http://{s.host}:{s.port}{s.route_prefix.rstrip('/')}", handle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), later wins")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. server.port=8080")
    args = parser.parse_args(argv)
    job = load_job(args.config, args.overrides)
    if args.print_config:
        from rgpt4d_core.config import to_yaml

        print(to_yaml(job))
        return
    from pipelines._ray import init_ray, install_stop_signals, wait_for

    init_ray(job.ray_address)
    url, _ = start(job)
    stopping = install_stop_signals()
    print(f"rgpt4d VQA serving {job.engine.checkpoint} at {url}  (POST {url}/v1/vqa, page {url}/ui/)", flush=True)
    try:
        wait_for(stopping)
        print("shutting down", flush=True)
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()  # the private Ray's processes (raylet, agents) go with it: no orphans

if __name__ == "__main__":
    # run the importable module's main: Serve pickles the app with its classes, which must be importable by
    # name (classes of a `__main__` script are pickled by value and come back as altered copies)
    from pipelines.serve import main as module_main

    module_main()
