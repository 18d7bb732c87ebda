"""HTTP plumbing of the serving app (private to ``pipelines/serve.py``): error bodies, the request guard
middleware (request id, body-size limit, one JSON log line per request without the body), the ``Server-Timing``
header of ``/v1/vqa`` and the OpenAPI schema of its two request bodies."""

# no `from __future__ import annotations`: FastAPI and Serve inspect these signatures at runtime

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema

from rgpt4d_core.serve import api
from rgpt4d_core.serve.security import MediaAccessError, SecurityConfig

log = logging.getLogger("ray.serve.rgpt4d")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class ApiError(Exception):
    """A request-level failure turned into an :class:`api.ErrorBody` with ``status``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class _BodyTooLarge(Exception):
    pass


_ACCESS_STATUS = {"forbidden": 403, "not_found": 404, "too_large": 413, "invalid": 422}


def media_error(exc: MediaAccessError) -> ApiError:
    """The 4xx of a refused media reference (403 forbidden, 404 not found, 413 too large, 422 malformed)."""
    return ApiError(_ACCESS_STATUS[exc.reason], f"media_{exc.reason}", str(exc), exc.field)


async def read_upload(upload: Any, limit: int, field: str = "video") -> bytes:
    """The bytes of a multipart file field (``None`` or a plain string: 422), refused over ``limit`` (413)."""
    if upload is None or isinstance(upload, str):
        raise ApiError(422, "invalid_request", f"{field}: multipart needs a file field '{field}'", field)
    if (upload.size or 0) > limit:
        raise ApiError(413, "media_too_large", f"{field}: upload exceeds max_upload_bytes={limit}", field)
    data: bytes = await upload.read()
    if not data:
        raise ApiError(422, "invalid_request", f"{field}: the uploaded file is empty", field)
    return data


def status_of(code: str) -> int:
    """HTTP status of an engine error code (``VQAError.code``, e.g. ``video_corrupt``)."""
    if code == "internal":
        return 500
    return {"video_missing": 404, "video_too_large": 413}.get(code, 422)


@dataclass
class Stages:
    """Wall-clock milliseconds of one ``/v1/vqa`` request inside the replica, sent back in its ``Server-Timing``
    header (W3C Server Timing: ``name;dur=ms``) so that a client can split its latency without a profiler
    (``bench/serve.py`` does).

    Attributes:
        read_ms: the body received and parsed (JSON validated and its base64 decoded, or the multipart form read).
        prepare_ms: ``engine.prepare`` (decode, Set-of-Marks, prompt), the hop to its worker thread included.
        batch_ms: from prepared to answered: waiting for batch-mates, the hop into ``engine.run`` and the run.
    """

    read_ms: float = 0.0
    prepare_ms: float = 0.0
    batch_ms: float = 0.0

    def header(self, decode_ms: float, generate_ms: float, handler_ms: float) -> str:
        """The header value; ``decode_ms``/``generate_ms`` are the engine's own times (``VQAResult``), ``handler_ms``
        the route's whole time. ``handler - decode - generate`` is what the replica adds to the engine's work."""
        stages = {"read": self.read_ms, "prepare": self.prepare_ms, "decode": decode_ms, "batch": self.batch_ms,
                  "generate": generate_ms, "handler": handler_ms}  # fmt: skip
        return ", ".join(f"{name};dur={ms:.3f}" for name, ms in stages.items())


def server_timing(header: str) -> dict[str, float]:
    """``{name: ms}`` of a ``Server-Timing`` header value written by :meth:`Stages.header`."""
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


# ------------------------------------------------------------------------------------------------ middleware


def error_response(status: int, request_id: str, code: str, message: str, field: str | None) -> JSONResponse:
    body = api.ErrorBody(request_id=request_id, error=api.ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(), status_code=status)  # RequestGuard / Serve add X-Request-ID


class RequestGuard:
    """ASGI middleware: request id, body-size limit (413, header and streamed), one JSON log line per request.

    The request id is the incoming ``X-Request-ID`` (Serve's proxy always forwards one: the client's, or a
    fresh UUID that also appears in Serve's own logs), else a new one.

    ``max_body_bytes`` is a class attribute set by the replica from its config: Serve pickles the FastAPI app
    (middleware included) when the module is imported, before any config is known.
    """

    max_body_bytes: int = SecurityConfig().max_body_bytes

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start, status, received = time.perf_counter(), [0], [0]

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if not given:  # Serve's proxy sets the header itself (with the id it forwarded to us)
                    message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        async def counted_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            received[0] += len(message.get("body", b""))
            if received[0] > self.max_body_bytes:
                raise _BodyTooLarge
            return message

        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            declared = 0
        try:
            if declared > self.max_body_bytes:
                raise _BodyTooLarge
            await self.app(scope, counted_receive, send_with_id)
        except _BodyTooLarge:
            if status[0]:
                raise
            msg = f"request body exceeds max_body_bytes={self.max_body_bytes}"
            await error_response(413, request_id, "body_too_large", msg, "body")(scope, receive, send_with_id)
        finally:
            log.info(json.dumps({
                "event": "request", "request_id": request_id, "method": scope.get("method"),
                "path": scope.get("path"), "status": status[0], "bytes_in": received[0] or declared,
                "latency_ms": round((time.perf_counter() - start) * 1e3, 2),
            }))


# ------------------------------------------------------------------------------------------------ helpers


def field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def validation_error(errors: list[Any]) -> ApiError:
    first = errors[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, "invalid_json", f"body is not valid JSON: {first.get('msg')}", "body")
    where = field_of(tuple(first.get("loc", ())))
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return ApiError(422, "invalid_request", f"{where}: {first.get('msg')}{more}", where)


def openapi_with_vqa_body(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema plus the two request bodies of ``/v1/vqa`` (JSON and multipart)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
        _, defs = models_json_schema([(api.VQAPayload, "validation")], ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        ref = {"$ref": "#/components/schemas/VQAPayload"}
        multipart = {"type": "object", "required": ["video", "request"], "properties": {
            "video": {"type": "string", "format": "binary"},
            "request": {"type": "string", "description": "VQAPayload as JSON, without 'video'"}}}
        schema["paths"]["/v1/vqa"]["post"]["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": ref}, "multipart/form-data": {"schema": multipart}}}
        app.openapi_schema = schema
        return schema

    return openapi
