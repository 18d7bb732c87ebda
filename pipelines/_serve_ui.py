"""The web page of the serving app (private to ``pipelines/serve.py``): routes of the ``VQAModel`` replica.

``GET /ui/`` is a dependency-free static page (``pipelines/ui/index.html``, ``ui.js``, ``regions.js``, ``ui.css``,
shipped as package data; no CDN, no fonts, nothing fetched from outside this server, enforced by its Content-Security-Policy).
It talks to the same replica that serves the API, so its questions go through ``POST /v1/vqa`` and the same
``@serve.batch`` as every other client. Helper routes, all under ``/ui/`` and left out of the OpenAPI schema:

* ``GET /ui/config``: the Set-of-Marks palette (``rgpt4d_core.regions.PALETTE``), the upload limit, option counts;
* ``GET /ui/examples``: questions of the configured benchmark (``ui.examples``, e.g. the synthetic world) whose
  videos lie under the media root, offered as one-click examples;
* ``POST /ui/frame``: frame 1 of a video (multipart ``video`` upload, or JSON ``{"path": ...}`` under the media
  root) as a JPEG, decoded under the engine's limits: the frame the user draws boxes on is the frame the engine
  marks. Errors are the API's (4xx bodies naming ``video`` / ``video.path``).
"""

# no `from __future__ import annotations`: FastAPI and Serve inspect these signatures at runtime

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from pipelines._serve_http import ApiError, log, media_error, read_upload, status_of
from rgpt4d_core.inputs import InputSpec
from rgpt4d_core.regions import PALETTE
from rgpt4d_core.serve import api
from rgpt4d_core.serve.media import encode_jpeg, first_frame, jpeg_data_url
from rgpt4d_core.serve.security import MediaAccessError, SecurityConfig, resolve_media_path
from rgpt4d_core.text.prompts import OPTION_LETTERS
from rgpt4d_core.video.decode import VideoDecodeError

UI_DIR = Path(__file__).resolve().with_name("ui")
PREVIEW_SIDE = 960
"""Longest side of the frame-1 preview the boxes are drawn on, pixels (boxes are normalised, so any size works)."""
MIN_OPTIONS = 2
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip
_JS = "text/javascript; charset=utf-8"
_ASSETS = {"index.html": "text/html; charset=utf-8", "ui.js": _JS, "regions.js": _JS, "ui.css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class UIConfig:
    """The web page.

    Attributes:
        enabled: serve the page and its ``/ui/...`` helpers (the API is served either way).
        examples: a benchmark in R4D-Bench format under the media root (e.g. the synthetic world's directory) whose
            region questions the page offers as one-click examples; ``""`` = none.
        split: the benchmark split the examples come from.
        max_examples: how many examples, one per question category first.
    """

    enabled: bool = True
    examples: str = ""
    split: str = "test"
    max_examples: int = 8


class FramePreview(BaseModel):
    """``POST /ui/frame``: frame 1 as displayed (``width`` x ``height`` pixels) and facts of the video."""

    image: str
    width: int
    height: int
    duration_s: float
    fps: float
    num_source_frames: int


def media_of(result: Any) -> api.Media | None:
    """The ``media`` field of a ``/v1/vqa`` answer: the engine's JPEGs as ``data:`` URLs (``None`` if not asked)."""
    media = getattr(result, "media", None)  # a drop-in engine may not know include_media
    if media is None:
        return None
    frames = [api.FrameThumb(index=i, timestamp_s=round(t, 4), image=jpeg_data_url(j))
              for j, t, i in zip(media.frames_jpeg, media.timestamps_s, media.frame_indices, strict=True)]  # fmt: skip
    return api.Media(frames=frames, som_image=jpeg_data_url(media.som_jpeg), width=media.width, height=media.height)


def load_examples(ui: UIConfig, security: SecurityConfig) -> list[dict[str, Any]]:
    """Up to ``ui.max_examples`` region questions of ``ui.examples`` (one per category first) as JSON objects whose
    ``video`` is a path relative to the media root (items whose video lies outside it are skipped)."""
    if not ui.examples or not security.media_root:
        return []
    from rgpt4d_core.eval.benchmark import load_benchmark

    root = Path(security.media_root).resolve()
    items = [i for i in load_benchmark(ui.examples, ui.split).items
             if i.regions and MIN_OPTIONS <= len(i.options) <= len(OPTION_LETTERS)]  # fmt: skip
    seen: set[str] = set()
    first = [i for i in items if not (i.task in seen or seen.add(i.task))]  # type: ignore[func-returns-value]
    firsts = {i.id for i in first}
    out: list[dict[str, Any]] = []
    for item in [*first, *(i for i in items if i.id not in firsts)]:
        video = Path(item.video).resolve()
        if not video.is_relative_to(root) or not video.is_file():
            continue
        out.append({"id": item.id, "task": item.task, "video": str(video.relative_to(root)),
                    "question": item.question, "options": list(item.options), "answer": item.answer,
                    "regions": [{"obj_id": r.obj_id, "box": [round(v, 4) for v in r.box], "label": r.label}
                                for r in item.regions]})  # fmt: skip
        if len(out) >= ui.max_examples:
            break
    return out


ui_router = APIRouter(include_in_schema=False)


class UIRoutes:
    """Routes of the page, mixed into the ``VQAModel`` ingress (Serve binds them to the replica)."""

    job: Any  # the replica's ServeJob (pipelines.serve imports this module, not the other way round)
    input_spec: InputSpec  # the input the replica's engine runs with
    security: SecurityConfig
    model_id: str
    _examples: dict[str, Any] | None = None

    def _ui_on(self) -> None:
        if not self.job.ui.enabled:
            raise ApiError(404, "not_found", "the web page is disabled on this server (ui.enabled=false)", None)

    def _asset(self, name: str) -> Response:
        self._ui_on()
        headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response((UI_DIR / name).read_bytes(), media_type=_ASSETS[name], headers=headers)

    @ui_router.get("/")
    async def ui_root(self, request: Request) -> RedirectResponse:
        self._ui_on()
        return RedirectResponse(f"{request.scope.get('root_path', '')}/ui/", status_code=307)

    @ui_router.get("/ui")
    async def ui_no_slash(self, request: Request) -> RedirectResponse:
        return await self.ui_root(request)

    @ui_router.get("/ui/")
    async def ui_page(self) -> Response:
        return self._asset("index.html")

    @ui_router.get("/ui/ui.js")
    async def ui_script(self) -> Response:
        return self._asset("ui.js")

    @ui_router.get("/ui/regions.js")
    async def ui_regions_script(self) -> Response:
        return self._asset("regions.js")

    @ui_router.get("/ui/ui.css")
    async def ui_style(self) -> Response:
        return self._asset("ui.css")

    @ui_router.get("/ui/config")
    async def ui_config(self) -> dict[str, Any]:
        self._ui_on()
        return {
            "model": self.model_id,
            "palette": [list(c) for c in PALETTE],
            "option_letters": OPTION_LETTERS,
            "min_options": MIN_OPTIONS,
            "max_options": len(OPTION_LETTERS),
            "max_regions": api.MAX_REGIONS,
            "max_upload_bytes": self.security.max_upload_bytes,
            "max_body_bytes": self.security.max_body_bytes,
            "media_root": bool(self.security.media_root),
            "num_frames": self.input_spec.num_frames,
            "request_timeout_s": self.job.server.request_timeout_s,
        }

    @ui_router.get("/ui/examples")
    async def ui_examples(self) -> dict[str, Any]:
        self._ui_on()
        if self._examples is None:
            try:
                self._examples = {"examples": await asyncio.to_thread(load_examples, self.job.ui, self.security)}
            except Exception as exc:  # noqa: BLE001 - a misconfigured example set must not break the page
                log.warning("ui.examples=%s could not be read: %s", self.job.ui.examples, exc)
                self._examples = {"examples": [], "note": f"ui.examples could not be read: {exc}"}
        return self._examples

    @ui_router.post("/ui/frame")
    async def ui_frame(self, request: Request) -> FramePreview:
        self._ui_on()
        source, field = await self._preview_source(request)
        try:
            clip = await asyncio.to_thread(first_frame, source, self.input_spec.decode_config())
        except VideoDecodeError as exc:
            code = f"video_{exc.reason}"
            raise ApiError(status_of(code), code, f"{field}: {exc}", field) from None
        frame = clip.frames[0]
        return FramePreview(image=jpeg_data_url(encode_jpeg(frame, PREVIEW_SIDE)), width=int(frame.shape[1]),
                            height=int(frame.shape[0]), duration_s=round(clip.duration_s, 3),
                            fps=round(clip.fps, 3), num_source_frames=clip.num_source_frames)  # fmt: skip

    async def _preview_source(self, request: Request) -> tuple[str | bytes, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=1)
            return await read_upload(form.get("video"), self.security.max_upload_bytes), "video"
        if ctype != "application/json":
            raise ApiError(415, "unsupported_media_type", f"content-type {ctype!r}: use JSON or multipart", "body")
        try:
            path = json.loads(await request.body())["path"]
        except (ValueError, KeyError, TypeError):
            raise ApiError(422, "invalid_request", 'video.path: send {"path": "<file under the media root>"}',
                           "video.path") from None  # fmt: skip
        if not isinstance(path, str):
            raise ApiError(422, "invalid_request", "video.path: must be a string", "video.path")
        try:
            return resolve_media_path(path, self.security), "video.path"
        except MediaAccessError as exc:
            raise media_error(exc) from None
