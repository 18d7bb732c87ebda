"""Where a request's video comes from (private to ``pipelines/serve.py``): base64 data, a path under the media
root, a URL, or a multipart upload, each checked by ``rgpt4d_core.serve.security`` before the engine sees it.
"""

# no `from __future__ import annotations`: FastAPI and Serve inspect the replica's signatures at runtime

from fastapi import Request
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from pipelines._serve_http import ApiError, media_error, read_upload, validation_error
from rgpt4d_core.serve import api
from rgpt4d_core.serve.security import (
    MediaAccessError,
    SecurityConfig,
    check_media_url,
    decode_base64_video,
    resolve_media_path,
)


class VideoInputs:
    """Video sources of a request, mixed into the ``VQAModel`` ingress (needs the replica's ``security``)."""

    security: SecurityConfig

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
