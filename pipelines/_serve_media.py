"""Where a request's video comes from (private to ``pipelines/serve.py``): base64 data, a path under the media
root, a URL, or a multipart upload, each checked by ``rgpt4d_core.serve.security`` before the engine sees it.

Copies of the video's bytes, per transport: a media-root path has none in the server (the decoder reads the file);
a multipart upload is copied once from the request into its in-memory part and read out as one ``bytes``
(:func:`keep_uploads_in_memory`: no spill to a temporary file and back); JSON base64 is the body, the base64
string pydantic validates, and the decoded bytes. Large JSON bodies are parsed and decoded in a worker thread
(:data:`INLINE_PARSE_BYTES`), so a big video does not stall the replica's event loop and the requests behind it.
"""

# no `from __future__ import annotations`: FastAPI and Serve inspect the replica's signatures at runtime

import asyncio

from fastapi import Request
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from pipelines._serve_http import ApiError, media_error, read_upload, validation_error
from rgpt4d_core.serve import api
from rgpt4d_core.serve.security import (
    MediaAccessError,
    SecurityConfig,
    check_media_url,
    decode_base64_video,
    resolve_media_path,
)

INLINE_PARSE_BYTES = 256 * 1024
"""JSON bodies up to this size are parsed on the event loop (under a millisecond); larger ones in a worker thread."""


def keep_uploads_in_memory(limit: int) -> None:
    """Keep multipart parts of up to ``limit`` bytes in memory: Starlette spools a part to a temporary file past
    1 MiB, and then writes every 64 KiB chunk through a thread-pool hop and reads the whole file back. The body is
    capped at ``security.max_body_bytes`` anyway, as a JSON body held in memory is. (A class attribute of
    Starlette's parser: it applies to the whole replica process, which serves this one app.)"""
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, limit)


class VideoInputs:
    """Video sources of a request, mixed into the ``VQAModel`` ingress (needs the replica's ``security``)."""

    security: SecurityConfig

    async def _json_body(self, body: bytes) -> tuple[api.VQAPayload, str | bytes]:
        """A JSON ``/v1/vqa`` body: the validated payload and its video (bytes or a checked path / URL); bodies over
        :data:`INLINE_PARSE_BYTES` are parsed in a worker thread."""
        if len(body) <= INLINE_PARSE_BYTES:
            return self._parse_json(body)
        return await asyncio.to_thread(self._parse_json, body)

    def _parse_json(self, body: bytes) -> tuple[api.VQAPayload, str | bytes]:
        try:
            payload = api.VQAPayload.model_validate_json(body)
        except ValidationError as exc:
            raise validation_error(list(exc.errors())) from None
        if payload.video is None:
            raise ApiError(422, "invalid_request", "video: required (or upload it as multipart)", "video")
        return payload, self._video_source(payload.video)

    def _video_source(self, video: api.VideoSpec) -> str | bytes:
        """The JSON body's ``video`` (base64 data, a path under the media root, or a URL) as a path or bytes."""
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
        """A ``data:`` URL, an allowed remote URL or a path under the media root; errors name ``field``."""
        if url.startswith("data:"):
            return decode_base64_video(url, self.security, field)
        if "://" in url:
            return check_media_url(url, self.security, field)
        return resolve_media_path(url, self.security, field)

    async def _multipart(self, request: Request) -> tuple[api.VQAPayload, bytes]:
        """A multipart ``/v1/vqa`` body: the ``request`` JSON field and the ``video`` upload's bytes."""
        try:
            form = await request.form(max_files=1, max_fields=4)
        except (HTTPException, MultiPartException) as exc:  # no boundary, too many parts or fields, ...
            # Starlette's own HTTPException (not FastAPI's subclass), or its parser's error outside an app scope
            msg = f"body: malformed multipart/form-data: {getattr(exc, 'detail', None) or exc}"
            raise ApiError(400, "invalid_multipart", msg, "body") from None
        upload, raw = form.get("video"), form.get("request")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "invalid_request", "video: multipart needs a file field 'video'", "video")
        if not isinstance(raw, str):
            raise ApiError(
                422, "invalid_request", "request: multipart needs a JSON field 'request'", "request"
            )
        data = await read_upload(
            upload, self.security.max_upload_bytes
        )  # size (413) before the JSON's errors
        try:
            payload = api.VQAPayload.model_validate_json(raw)
        except ValidationError as exc:
            err = validation_error(list(exc.errors()))
            raise ApiError(err.status, err.code, f"request.{err.message}", f"request.{err.field}") from None
        if payload.video is not None:
            raise ApiError(
                422, "invalid_request", "video: give the upload or request.video, not both", "video"
            )
        return payload, data
