"""The API routes of the serving app (private to ``pipelines/serve.py``): ``POST /v1/vqa`` (JSON or multipart),
``POST /v1/chat/completions`` (OpenAI-compatible), ``GET /v1/models`` and ``GET /healthz``, mixed into the
``VQAModel`` ingress (Serve binds them to the replica, as for the page's :class:`~pipelines._serve_ui.UIRoutes`).
"""

# no `from __future__ import annotations`: FastAPI resolves route signatures of Serve's ingress class at runtime

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request, Response

from pipelines._serve_http import ApiError, Stages, media_error
from pipelines._serve_media import VideoInputs
from pipelines._serve_ui import media_of
from rgpt4d_core.regions import RegionError, validate_refs
from rgpt4d_core.serve import api
from rgpt4d_core.serve.engine import VQARequest, VQAResult
from rgpt4d_core.serve.security import MediaAccessError

api_router = APIRouter()


class APIRoutes(VideoInputs):
    """The API's routes; the replica provides ``job``, ``model_id``, ``created``, its batching settings and
    ``_answer``."""

    job: Any  # the replica's ServeJob
    model_id: str
    created: int
    _batch_settings: tuple[int, float]

    # one request through the replica's @serve.batch (its stage times recorded in the Stages when given)
    _answer: Callable[..., Awaitable[VQAResult]]

    @api_router.post(
        "/v1/vqa",
        response_model=api.VQAAnswer,
        responses={
            400: {"model": api.ErrorBody},
            403: {"model": api.ErrorBody},
            413: {"model": api.ErrorBody},
            422: {"model": api.ErrorBody},
        },
    )
    async def vqa(self, request: Request, response: Response) -> api.VQAAnswer:
        """Answer one multiple-choice question about a video (JSON body or multipart upload)."""
        start = time.perf_counter()
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        source: str | bytes
        if ctype == "multipart/form-data":
            payload, source = await self._multipart(request)
        elif ctype == "application/json":
            payload, source = await self._json_body(await request.body())
        else:
            raise ApiError(
                415, "unsupported_media_type", f"content-type {ctype!r}: use JSON or multipart", "body"
            )
        rid = request.state.request_id
        stages = Stages(read_ms=(time.perf_counter() - start) * 1e3)
        result = await self._answer(
            VQARequest(
                video=source,
                question=payload.question,
                options=tuple(payload.options),
                regions=tuple(r.to_region() for r in payload.regions),
                include_duration=payload.include_duration,
                request_id=rid,
                include_media=payload.include_media,
            ),
            stages,
        )
        total_ms = (time.perf_counter() - start) * 1e3
        response.headers["Server-Timing"] = stages.header(result.decode_ms, result.generate_ms, total_ms)
        timings = api.Timings(decode_ms=result.decode_ms, generate_ms=result.generate_ms, total_ms=total_ms)
        return api.VQAAnswer.from_result(result, request_id=rid, model=self.model_id, timings=timings,
                                         media=media_of(result))

    @api_router.post(
        "/v1/chat/completions",
        response_model=api.ChatCompletion,
        responses={400: {"model": api.ErrorBody}, 422: {"model": api.ErrorBody}},
    )
    async def chat_completions(self, body: api.ChatCompletionRequest, request: Request) -> api.ChatCompletion:
        """OpenAI-compatible chat completion over one video (``regions``/``options`` as extension fields)."""
        rid = request.state.request_id
        if body.model not in (None, self.model_id):
            raise ApiError(
                404,
                "model_not_found",
                f"model: {body.model!r} is not served (have {self.model_id!r})",
                "model",
            )
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
        result = await self._answer(
            VQARequest(
                video=source,
                question=question,
                options=tuple(options),
                regions=regions,
                include_duration=body.include_duration,
                request_id=rid,
            )
        )
        finish: Literal["stop", "length"] = (
            "length" if result.completion_tokens >= self.job.engine.max_new_tokens else "stop"
        )
        return api.ChatCompletion(
            id=f"chatcmpl-{rid}",
            created=int(time.time()),
            model=self.model_id,
            choices=[
                api.ChatChoice(
                    index=0, message=api.ChatChoiceMessage(content=result.raw_output), finish_reason=finish
                )
            ],
            usage=api.Usage(
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                total_tokens=result.prompt_tokens + result.completion_tokens,
            ),
            rgpt4d={
                "request_id": rid,
                "answer": result.answer,
                "answer_index": result.answer_index,
                "answer_letter": result.answer_letter,
                "method": result.method,
                "batch_size": result.batch_size,
            },
        )

    @api_router.get("/v1/models", response_model=api.ModelList)
    async def models(self) -> api.ModelList:
        """The one model this application serves."""
        return api.ModelList(data=[api.ModelCard(id=self.model_id, created=self.created)])

    @api_router.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness and the current batching settings."""
        size, wait = self._batch_settings
        return {"status": "ok", "model": self.model_id, "max_batch_size": size, "batch_wait_timeout_s": wait}
