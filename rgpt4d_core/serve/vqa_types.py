"""The values a :class:`~rgpt4d_core.serve.engine.VQAEngine` takes and gives: :class:`VQARequest` in,
:class:`PreparedRequest` between its two halves (``prepare`` and ``run``), :class:`VQAResult` or :class:`VQAError` out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rgpt4d_core.sample_prep import SampleInputs
from rgpt4d_core.serve.media import ClipMedia
from rgpt4d_core.types import Region, VQAItem


@dataclass(frozen=True)
class VQARequest:
    """One question about one video (already validated and access-checked by the caller).

    Attributes:
        video: a local path, an ``s3://`` URI, or the file's bytes.
        question: text with ``<obj_k>`` tokens for the regions.
        options: 1-8 option strings (index 0 = ``"A"``).
        regions: region prompts on frame 1 (masks may have any resolution; they are resized to the frame).
        include_duration: overrides the engine's ``duration_sentence`` (its input spec) when not ``None``.
        request_id: echoed in the result.
        som_image: an already marked frame 1, uint8 ``[H, W, 3]`` RGB (e.g. R4D-Bench's ``som_image`` file); when
            given it is used as is and ``regions`` are neither drawn nor required for the ``<obj_k>`` tokens.
        include_media: also return the sampled frames and the SoM image as JPEGs (:attr:`VQAResult.media`).
    """

    video: str | bytes
    question: str
    options: tuple[str, ...]
    regions: tuple[Region, ...] = ()
    include_duration: bool | None = None
    request_id: str = ""
    som_image: np.ndarray | None = None
    include_media: bool = False

    @classmethod
    def from_item(cls, item: VQAItem, video: str | bytes | None = None) -> VQARequest:
        """The request for a benchmark item (``request_id = item.id``); ``video`` overrides ``item.video``
        (e.g. the path joined with the dataset root, or the bytes)."""
        return cls(
            video=item.video if video is None else video,
            question=item.question,
            options=tuple(item.options),
            regions=tuple(item.regions),
            request_id=item.id,
        )


@dataclass(frozen=True)
class VQAResult:
    """The model's answer to one request.

    Attributes:
        answer: the chosen option string, or ``None`` when the output names no option (or several).
        answer_index: 0-based option index or ``None``; ``answer_letter`` likewise (``"B"``).
        method: how the extractor decided (``letter``, ``option_text``, ``option_value``, ``ambiguous``,
            ``none``), or ``option_likelihood`` for a student of the ``"option"`` answer style.
        raw_output: the generated text (special tokens removed); the chosen option for ``option_likelihood``.
        batch_size: requests in the generation batch this one ran in.
        duration_s: source video duration in seconds; ``num_frames``: frames the model saw.
        prompt_tokens: prompt length in LLM positions (text + visual tokens); ``completion_tokens``: new tokens.
        decode_ms / generate_ms: wall time of this request's decode and of its batch's generation.
        media: the frames the model saw and its SoM image, when the request asked (``include_media``).
    """

    request_id: str
    answer: str | None
    answer_index: int | None
    answer_letter: str | None
    method: str
    raw_output: str
    batch_size: int
    duration_s: float
    num_frames: int
    prompt_tokens: int
    completion_tokens: int
    decode_ms: float
    generate_ms: float
    media: ClipMedia | None = None


@dataclass(frozen=True)
class VQAError:
    """Why one request got no answer.

    Attributes:
        code: ``video_<reason>`` (a :class:`VideoDecodeError` reason, e.g. ``video_corrupt``), ``invalid_region``,
            ``invalid_request`` or ``internal``.
        message: human-readable, names the field or video.
        field: request field at fault (``"video"``, ``"regions"``, ``"question"``) or ``None``.
    """

    request_id: str
    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class PreparedRequest:
    """A request ready for generation (output of :meth:`VQAEngine.prepare`).

    Attributes:
        request: the request it answers.
        inputs: the student's inputs (prompt ids, pixels, timestamps, SoM image, token boxes), prepared by the
            training collate's own path (:func:`rgpt4d_core.sample_prep.prepare_sample`, no answer).
        duration_s: source video duration in seconds; ``decode_ms``: wall time of the decode and preparation.
        media: JPEGs for the client when the request asked for them.
    """

    request: VQARequest
    inputs: SampleInputs
    duration_s: float
    decode_ms: float
    media: ClipMedia | None = None
