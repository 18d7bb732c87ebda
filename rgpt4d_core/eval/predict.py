"""Benchmark items -> per-item predictions with a :class:`~rgpt4d_core.serve.engine.VQAEngine` (no Ray).

* Items with ``regions`` go through :meth:`VQAEngine.prepare` (Set-of-Marks drawn on the decoded frame 1).
* Items marked by a ``som_image`` file (the real R4D-Bench) are prepared here with that image as the marked
  image, the same decode, prompt and tokenisation as the engine otherwise; then :meth:`VQAEngine.run` does ONE
  batched generation for all of them, and the shared extractor (``rgpt4d_core.text.answers``) picks the option.
* An item that cannot be answered (video fails to decode, unreadable SoM image, ...) becomes a prediction with
  ``error_code`` set: it is scored as wrong and reported, never dropped.

:func:`prediction_from_text` scores any raw model output with the same extractor (e.g. outputs of another model),
so offline re-scoring and the engine path agree by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from rgpt4d_core import storage
from rgpt4d_core.arrow_rows import row_of, row_schema
from rgpt4d_core.eval.benchmark import uses_som_file
from rgpt4d_core.eval.metrics import ScoredItem
from rgpt4d_core.serve.engine import PreparedRequest, VQAEngine, VQAError, VQARequest, VQAResult
from rgpt4d_core.text.answers import extract_answer
from rgpt4d_core.text.prompts import OPTION_LETTERS
from rgpt4d_core.types import VQAItem

#: largest SoM image file read, bytes
MAX_SOM_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Prediction:
    """The model's answer to one benchmark item.

    Attributes:
        id / task: the item's id and canonical task code.
        num_options: options of the item (random-guess row).
        answer_index: index of the correct option.
        pred_index: index of the chosen option, ``None`` when the output names none/several or on error.
        method: extractor rule (``letter``, ``option_text``, ``option_value``, ``ambiguous``, ``none``) or ``error``.
        raw_output: generated text (``""`` on error).
        error_code / error: why the item got no answer (``video_corrupt``, ``som_image_unreadable``, ...).
        duration_s: source video duration (s), ``num_frames``: frames the model saw; ``decode_ms``/``generate_ms``.
    """

    id: str
    task: str
    num_options: int
    answer_index: int
    pred_index: int | None
    method: str
    raw_output: str
    error_code: str | None = None
    error: str | None = None
    duration_s: float | None = None
    num_frames: int = 0
    decode_ms: float = 0.0
    generate_ms: float = 0.0

    @property
    def correct(self) -> bool:
        return self.error_code is None and self.pred_index == self.answer_index

    @property
    def answer_letter(self) -> str:
        """The correct option's letter (``"B"``)."""
        return OPTION_LETTERS[self.answer_index]

    @property
    def pred_letter(self) -> str | None:
        """The chosen option's letter, ``None`` when none was chosen."""
        return None if self.pred_index is None else OPTION_LETTERS[self.pred_index]

    def scored(self) -> ScoredItem:
        """The :class:`ScoredItem` the metrics consume (errors count as wrong)."""
        error = None if self.error_code is None else f"{self.error_code}: {self.error}"
        return ScoredItem(id=self.id, task=self.task, num_options=self.num_options, correct=self.correct, error=error)

    def to_row(self) -> dict[str, Any]:
        """A flat dict (Arrow/JSONL, :data:`PREDICTION_SCHEMA`) with the letters and the correctness spelled out."""
        return row_of(self, ROW_PROPERTIES)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Prediction:
        """Inverse of :meth:`to_row` (extra keys ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: row[k] for k in names if k in row})


#: the properties :meth:`Prediction.to_row` spells out after the fields
ROW_PROPERTIES = ("answer_letter", "pred_letter", "correct")
#: Arrow schema of :meth:`Prediction.to_row` (one fixed schema for every Ray Data block), derived from the dataclass
PREDICTION_SCHEMA = row_schema(Prediction, ROW_PROPERTIES)


def _answer_index(item: VQAItem) -> int:
    return item.options.index(item.answer)


def prediction_from_text(item: VQAItem, text: str) -> Prediction:
    """Score a raw model output for ``item`` with the shared extractor."""
    match = extract_answer(text, item.options)
    return Prediction(item.id, item.task, len(item.options), _answer_index(item), match.index, match.method, text)


def prediction_from_result(item: VQAItem, result: VQAResult | VQAError) -> Prediction:
    """The prediction for ``item`` from the engine's result (or its error)."""
    n, answer = len(item.options), _answer_index(item)
    if isinstance(result, VQAError):
        return Prediction(item.id, item.task, n, answer, pred_index=None, method="error", raw_output="",
                          error_code=result.code, error=result.message)  # fmt: skip
    return Prediction(
        item.id,
        item.task,
        n,
        answer,
        pred_index=result.answer_index,
        method=result.method,
        raw_output=result.raw_output,
        duration_s=result.duration_s,
        num_frames=result.num_frames,
        decode_ms=result.decode_ms,
        generate_ms=result.generate_ms,
    )


def error_prediction(item: VQAItem, code: str, message: str) -> Prediction:
    """A prediction for an item that could not be run at all (scored wrong, reported)."""
    return prediction_from_result(item, VQAError(item.id, code, message))


class SomImageError(ValueError):
    """The benchmark's SoM image could not be read."""


def read_som_image(uri: str) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB of a SoM image file (PNG/JPEG; local or ``s3://``)."""
    try:
        data = storage.read_bytes(uri, max_bytes=MAX_SOM_BYTES)
    except (OSError, ValueError) as exc:
        raise SomImageError(f"SoM image {uri}: {exc}") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SomImageError(f"SoM image {uri}: not a decodable image ({len(data)} bytes)")
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


class BenchmarkPredictor:
    """Answers benchmark items with one loaded engine.

    Args:
        engine: the loaded :class:`VQAEngine` (its config sets frames, duration sentence, limits).
        regions_from: ``"auto"`` (draw ``regions`` when an item has them, else use its ``som_image``) or
            ``"som_image"`` (always the SoM file), see :func:`rgpt4d_core.eval.benchmark.uses_som_file`.
        decode_threads: items of one batch decoded in parallel.
    """

    def __init__(self, engine: VQAEngine, regions_from: str = "auto", decode_threads: int = 2) -> None:
        self.engine = engine
        self.regions_from = regions_from
        self._pool = ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="eval-decode")

    def request_of(self, item: VQAItem, som_image: np.ndarray | None = None) -> VQARequest:
        regions = () if som_image is not None else item.regions
        return VQARequest(video=item.video, question=item.question, options=item.options, regions=regions,
                          request_id=item.id, som_image=som_image)  # fmt: skip

    def prepare(self, item: VQAItem) -> PreparedRequest | VQAError:
        """Decode, mark and tokenise one item; failures come back as :class:`VQAError`."""
        if not uses_som_file(item, self.regions_from):
            return self.engine.prepare(self.request_of(item))
        if not item.som_image:
            return VQAError(item.id, "som_image_missing", f"item {item.id} has neither regions nor a som_image", "som_image")
        try:
            som = read_som_image(item.som_image)
        except SomImageError as exc:
            return VQAError(item.id, "som_image_unreadable", str(exc), "som_image")
        return self.engine.prepare(self.request_of(item, som))

    def predict(self, items: Sequence[VQAItem]) -> list[Prediction]:
        """Predictions for ``items`` (same order): parallel decode, then ONE batched generation."""
        prepared = list(self._pool.map(self.prepare, items))
        try:
            results = self.engine.run(prepared)
        except Exception as exc:  # noqa: BLE001 - the engine isolates requests; this is a last resort
            return [error_prediction(item, "internal", f"{type(exc).__name__}: {exc}") for item in items]
        return [prediction_from_result(item, r) for item, r in zip(items, results, strict=True)]

    def close(self) -> None:
        self._pool.shutdown(wait=False)
