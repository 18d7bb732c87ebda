"""HTTP request/response schema of the VQA service (pydantic; framework-free, so the OpenAPI schema and tests use it).

Two request shapes:

* :class:`VQAPayload` (``POST /v1/vqa``): ``video`` (inline base64, a path under the server's media root, or an
  allow-listed URL; absent when the video is a multipart upload), ``question`` with ``<obj_k>`` tokens,
  ``options`` (1-8 strings), ``regions`` (boxes ``[x0, y0, x1, y1]`` normalised to ``[0, 1]``, or COCO RLE masks).
* :class:`ChatCompletionRequest` (``POST /v1/chat/completions``): OpenAI chat messages whose last user turn holds
  a ``video_url`` part (a ``data:video/mp4;base64,...`` URL, or a media-root path / allow-listed URL) and text
  parts; ``regions`` and ``options`` are extension fields (``extra_body`` in the OpenAI client). Without
  ``options``, option lines ``(A) ...`` are read from the text.

Validation errors carry the field's location, which the server turns into 4xx messages naming the field.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rgpt4d_core.regions import RegionError, region_from_box, region_from_mask, validate_refs
from rgpt4d_core.text.prompts import ANSWER_DIRECTLY, ANSWER_WITH_OPTION, OPTION_LETTERS
from rgpt4d_core.types import Region

MAX_REGIONS = 32
MAX_QUESTION_CHARS = 4000
MAX_OPTION_CHARS = 500
_OPTION_LINE = re.compile(r"^\s*\(?([A-H])[).:]\s*(.+?)\s*$")
_DURATION_LINE = re.compile(r"^These images are uniformly sampled from a video of [\d.]+ seconds\.$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RLEMask(_Strict):
    """COCO uncompressed RLE: column-major runs over an ``[H, W]`` mask, first run counting zeros."""

    size: list[int] = Field(min_length=2, max_length=2, description="[H, W] in pixels")
    counts: list[int] = Field(min_length=1, max_length=1_000_000)


class RegionSpec(_Strict):
    """One region on frame 1, referenced as ``<obj_{obj_id}>``: exactly one of ``box`` or ``mask``."""

    obj_id: int = Field(ge=1, le=99, description="1-based id; the Set-of-Marks number")
    box: list[float] | None = Field(default=None, description="normalised [x0, y0, x1, y1] in [0, 1]")
    mask: RLEMask | None = None
    label: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _one_shape(self) -> RegionSpec:
        if (self.box is None) == (self.mask is None):
            raise ValueError("give exactly one of 'box' or 'mask'")
        self.to_region()  # box range / RLE consistency
        return self

    def to_region(self) -> Region:
        """The validated :class:`Region` (``ValueError`` naming the region on bad geometry)."""
        try:
            if self.box is not None:
                return region_from_box(self.obj_id, self.box, self.label)
            assert self.mask is not None
            return region_from_mask(self.obj_id, self.mask.model_dump(), self.label)
        except RegionError as exc:
            raise ValueError(str(exc)) from None


class VideoSpec(_Strict):
    """Where the video comes from: exactly one of ``data_b64``, ``path``, ``url``."""

    data_b64: str | None = Field(default=None, description="base64 file bytes, or a data:video/...;base64, URL")
    path: str | None = Field(default=None, description="path relative to the server's media root")
    url: str | None = Field(default=None, description="allow-listed URL (e.g. s3://bucket/key)")

    @model_validator(mode="after")
    def _exactly_one(self) -> VideoSpec:
        given = [k for k in ("data_b64", "path", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of 'data_b64', 'path', 'url' (got {given or 'none'})")
        return self


def _check_options(options: list[str]) -> list[str]:
    if len(set(options)) != len(options):
        raise ValueError("options must be distinct")
    if any(not o.strip() for o in options):
        raise ValueError("options must be non-empty strings")
    return options


def _check_regions(regions: list[RegionSpec], question: str | None) -> list[RegionSpec]:
    ids = [r.obj_id for r in regions]
    if len(set(ids)) != len(ids):
        raise ValueError(f"region obj_id values must be distinct, got {ids}")
    if question is not None:
        try:
            validate_refs(question, [r.to_region() for r in regions])
        except RegionError as exc:
            raise ValueError(str(exc)) from None
    return regions


class VQAPayload(_Strict):
    """``POST /v1/vqa`` body (JSON), or the ``request`` form field of a multipart upload (without ``video``)."""

    video: VideoSpec | None = Field(default=None, description="absent only for multipart uploads")
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="may contain <obj_k> tokens")
    options: list[str] = Field(min_length=1, max_length=len(OPTION_LETTERS))
    regions: list[RegionSpec] = Field(default_factory=list, max_length=MAX_REGIONS, validate_default=True)
    include_duration: bool | None = Field(default=None, description="override the duration sentence")
    include_media: bool = Field(default=False, description="also return the sampled frames and the SoM image")

    @field_validator("options")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        if any(len(o) > MAX_OPTION_CHARS for o in v):
            raise ValueError(f"each option must have at most {MAX_OPTION_CHARS} characters")
        return _check_options(v)

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: list[RegionSpec], info: ValidationInfo) -> list[RegionSpec]:
        return _check_regions(v, info.data.get("question"))


class Timings(BaseModel):
    """Milliseconds spent per stage for one request."""

    decode_ms: float
    generate_ms: float
    total_ms: float


class FrameThumb(BaseModel):
    """One frame the model was given."""

    index: int = Field(description="frame index in the source video")
    timestamp_s: float = Field(description="presentation time, seconds")
    image: str = Field(description="data:image/jpeg;base64 thumbnail")


class Media(BaseModel):
    """What the model saw (``include_media: true``): the sampled frames and frame 1 with its Set-of-Marks."""

    frames: list[FrameThumb]
    som_image: str = Field(description="data:image/jpeg;base64 of frame 1 with the marks")
    width: int = Field(description="frame 1 as displayed, pixels")
    height: int


class VQAAnswer(BaseModel):
    """``POST /v1/vqa`` success body."""

    request_id: str
    model: str
    answer: str | None = Field(description="the chosen option, or null when the output names none")
    answer_index: int | None
    answer_letter: str | None
    method: str = Field(description="extractor rule: letter | option_text | option_value | ambiguous | none")
    raw_output: str
    batch_size: int = Field(description="requests in the generation batch this one ran in")
    duration_s: float
    num_frames: int
    timings: Timings
    media: Media | None = Field(default=None, description="only when the request set include_media")

    @classmethod
    def from_result(
        cls, result: Any, *, request_id: str, model: str, timings: Timings, media: Media | None
    ) -> VQAAnswer:
        """The body of an engine's :class:`~rgpt4d_core.serve.vqa_types.VQAResult`: every field but the four
        given here is the result's field of the same name (the result has more: token counts, stage timings)."""
        given: dict[str, Any] = {"request_id": request_id, "model": model, "timings": timings, "media": media}
        return cls(**given, **{name: getattr(result, name) for name in cls.model_fields if name not in given})


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx body."""

    request_id: str
    error: ErrorDetail


# ------------------------------------------------------------------------------------------------ OpenAI shapes


class VideoURL(BaseModel):
    url: str


class ContentPart(BaseModel):
    """A part of a message's content: ``{"type": "text", "text": ...}`` or ``{"type": "video_url", ...}``."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "video_url"]
    text: str | None = None
    video_url: VideoURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI ``/v1/chat/completions`` body, with ``regions``/``options``/``include_duration`` extensions."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    n: int = Field(default=1, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    regions: list[RegionSpec] = Field(default_factory=list, max_length=MAX_REGIONS)
    options: list[str] | None = Field(default=None, min_length=1, max_length=len(OPTION_LETTERS))
    include_duration: bool | None = None

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v: bool) -> bool:
        if v:
            raise ValueError("streaming is not supported; set stream=false")
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_options(v)

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: list[RegionSpec]) -> list[RegionSpec]:
        return _check_regions(v, None)

    def video_and_text(self) -> tuple[str, str]:
        """``(video url, text)`` of the last user message; ``ValueError`` naming ``messages`` otherwise."""
        users = [i for i, m in enumerate(self.messages) if m.role == "user"]
        if not users:
            raise ValueError("messages: no user message")
        msg = self.messages[users[-1]]
        where = f"messages[{users[-1]}].content"
        parts = [ContentPart(type="text", text=msg.content)] if isinstance(msg.content, str) else msg.content or []
        videos = [p.video_url.url for p in parts if p.type == "video_url" and p.video_url is not None]
        text = "\n".join(p.text for p in parts if p.type == "text" and p.text).strip()
        if len(videos) != 1:
            raise ValueError(f"{where}: need exactly one video_url part, got {len(videos)}")
        if not text:
            raise ValueError(f"{where}: no text part with the question")
        return videos[0], text

    def question_and_options(self, text: str) -> tuple[str, list[str]]:
        """Split the user text into the question and the options (from ``options`` or ``(A) ...`` lines)."""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        instructions = (ANSWER_DIRECTLY, ANSWER_WITH_OPTION)
        keep = [ln for ln in lines if not _DURATION_LINE.match(ln.strip()) and ln.strip() not in instructions]
        if self.options is not None:
            question = "\n".join(ln for ln in keep if ln.strip() != "Options:")
            return question, list(self.options)
        options: list[str] = []
        question_lines: list[str] = []
        for ln in keep:
            m = _OPTION_LINE.match(ln)
            if m and m.group(1) == OPTION_LETTERS[len(options)]:
                options.append(m.group(2))
            elif ln.strip() != "Options:":
                question_lines.append(ln)
        if not options:
            raise ValueError("options: none given and no '(A) ...' option lines found in the message text")
        return "\n".join(question_lines), _check_options(options)


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """OpenAI-shaped completion; ``rgpt4d`` carries the parsed answer and batch size."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    rgpt4d: dict[str, Any]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rgpt4d"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
