"""The framework-free work of the precompute job: QA manifest -> requests -> decode -> expert -> shard rows.

The Ray Data job (``pipelines/precompute.py``) and the single-process baseline (``bench/precompute.py``) run
the same four steps on batches of *requests* (one request = one video and the QA records about it, so a video
is decoded and encoded by the expert once however many questions it has):

1. :func:`build_requests` (driver): parse R4D-format JSONL / a plain list of videos, drop what is already
   written (resume), group by video;
2. :func:`decode_requests` (CPU): validate every QA record, decode the video's sampled frames;
3. :func:`expert_requests` (GPU/CPU actor): run the frozen expert on the decoded clips of a batch;
4. :func:`rows_from_requests` (CPU): one clip-table row per video and one question-table row per QA record via
   :mod:`rgpt4d_core.shards.rows` (:mod:`rgpt4d_core.shards.writer` writes them as one part of both tables).

A request whose clip is already in the output (a resumed run that was killed between a part's clip file and its
question file) carries the clip's status (``REQ_CLIP_DONE``): it is not decoded or encoded again, and only its
missing question rows are written, so every clip and every question is written exactly once.

Between steps a batch is a list of plain dicts with the private ``REQ_*`` keys below (Arrow-friendly values),
so that Ray can move them as Arrow tables. Every failure becomes data: a clip that cannot be decoded, encoded by
the expert or stored becomes a clip error row (``decode:<VideoDecodeError.reason>``, ``expert:error``,
``encode:error``) and each of its questions a question error row with the same reason; a bad QA record becomes a
question error row (``qa:malformed``, ``qa:undefined_region``, ``qa:bad_region``) with the message.

Modules: ``qa_records.py`` (step 1 and the record checks), ``requests.py`` (the ``REQ_*`` wire format); this
module holds :class:`SamplingConfig` and steps 2-4, and re-exports the others' names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from rgpt4d_core.experts.base import Expert, ExpertSpec
from rgpt4d_core.shards import rows as R
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.codec import ShardCodecError, make_clip_id
from rgpt4d_core.shards.qa_records import (
    RequestPlan,
    build_requests,
    check_record,
    fallback_source,
    qa_records,
    record_source,
    resolve_video,
    video_records,
)
from rgpt4d_core.shards.requests import (
    REQ_CLIP_DONE,
    REQ_ERROR,
    REQ_FPS,
    REQ_FRAMES,
    REQ_FRAMES_SHAPE,
    REQ_INDICES,
    REQ_NUM_SOURCE_FRAMES,
    REQ_RECORDS,
    REQ_TARGET_PREFIX,
    REQ_TIMESTAMPS,
    REQ_VIDEO,
    REQUEST_SCHEMA,
    clip_fields,
    clip_of,
    target_fields,
    targets_of,
    to_table,
)
from rgpt4d_core.video.decode import DecodeConfig, VideoDecodeError, decode_clip

__all__ = [
    "REQUEST_SCHEMA",
    "REQ_CLIP_DONE",
    "REQ_ERROR",
    "REQ_FPS",
    "REQ_FRAMES",
    "REQ_FRAMES_SHAPE",
    "REQ_INDICES",
    "REQ_NUM_SOURCE_FRAMES",
    "REQ_RECORDS",
    "REQ_TARGET_PREFIX",
    "REQ_TIMESTAMPS",
    "REQ_VIDEO",
    "RequestPlan",
    "SamplingConfig",
    "build_requests",
    "check_record",
    "clip_of",
    "decode_requests",
    "expert_requests",
    "limit_threads",
    "qa_records",
    "resolve_video",
    "rows_from_requests",
    "rows_tables",
    "to_table",
    "video_records",
]


@dataclass(frozen=True)
class SamplingConfig:
    """How clips are sampled and stored (the ``sampling`` section; recorded in the manifest).

    Attributes:
        num_frames: frames sampled uniformly per video (16 in the paper).
        frame_size: ``[H, W]`` student resolution of the stored frames (pixels); ``None`` keeps the source size.
        image_format: ``"jpeg"`` or ``"png"`` for the stored frames.
        jpeg_quality: 1-100.
        allow_repeats: repeat frames of videos shorter than ``num_frames`` instead of an error row.
        max_file_bytes: larger videos become ``decode:too_large`` error rows.
        max_pixels_per_frame: larger frames become ``decode:too_large`` error rows.
        max_duration_s: longer videos become ``decode:too_long`` error rows.
        allowed_codecs: FFmpeg codec names accepted (others: ``decode:unsupported_codec``); ``None`` = any.
        timeout_s: decode budget per video (seconds).
    """

    num_frames: int = 16
    frame_size: list[int] | None = None
    image_format: str = "jpeg"
    jpeg_quality: int = 90
    allow_repeats: bool = False
    max_file_bytes: int = 1 << 30
    max_pixels_per_frame: int = 3840 * 2160
    max_duration_s: float = 3600.0
    allowed_codecs: list[str] | None = None
    timeout_s: float = 120.0

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(
            num_frames=self.num_frames,
            resize=(int(self.frame_size[0]), int(self.frame_size[1])) if self.frame_size else None,
            max_file_bytes=self.max_file_bytes,
            max_pixels_per_frame=self.max_pixels_per_frame,
            max_duration_s=self.max_duration_s,
            timeout_s=self.timeout_s,
            allow_repeats=self.allow_repeats,
            allowed_codecs=tuple(self.allowed_codecs) if self.allowed_codecs else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def limit_threads(threads: int) -> None:
    """Cap this process's intra-op threads for the steps below at ``threads`` (0: leave the libraries' defaults):
    torch's (the expert) and OpenCV's (resizing, JPEG, the classical expert's flow), so that one worker per core
    does not start a thread per core in each library."""
    if threads > 0:
        import cv2
        import torch

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


# ---- step 2: decode ------------------------------------------------------------------------------------------


def decode_requests(requests: Sequence[Mapping[str, Any]], sampling: SamplingConfig) -> list[dict[str, Any]]:
    """Validate the records of each request and decode its video (skipped when no record is valid)."""
    cfg = sampling.decode_config()
    out = []
    for req in requests:
        records = json.loads(req[REQ_RECORDS])
        for rec in records:
            check_record(rec)
        new: dict[str, Any] = {REQ_VIDEO: req[REQ_VIDEO], REQ_RECORDS: json.dumps(records),
                               REQ_CLIP_DONE: req.get(REQ_CLIP_DONE)}  # fmt: skip
        if req.get(REQ_CLIP_DONE) is None and any(r["error"] is None for r in records):
            try:
                clip = decode_clip(req[REQ_VIDEO], cfg)
                new.update(clip_fields(clip))
            except VideoDecodeError as exc:
                new[REQ_ERROR] = json.dumps([f"decode:{exc.reason}", str(exc)])
        out.append(new)
    return out


# ---- step 3: expert ------------------------------------------------------------------------------------------


def expert_requests(expert: Expert, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Run ``expert`` on the decoded clips of a batch; a failing batch is retried clip by clip.

    Targets travel as fp16 bytes (shapes: ``schema.tensor_shapes(expert.spec)``); a clip the expert fails on
    gets ``expert:error``.
    """
    out = [dict(r) for r in requests]
    todo = [(r, c) for r in out if r.get(REQ_ERROR) is None and (c := clip_of(r)) is not None]
    if not todo:
        return out
    try:
        results = expert.encode([c for _, c in todo])
        for (req, _), targets in zip(todo, results, strict=True):
            req.update(target_fields(targets))
    except Exception:  # isolate the clip at fault; the rest of the batch still gets targets
        for req, clip in todo:
            try:
                req.update(target_fields(expert.encode([clip])[0]))
            except Exception as exc:
                req[REQ_ERROR] = json.dumps(["expert:error", f"{req[REQ_VIDEO]}: {type(exc).__name__}: {exc}"])
    return out


# ---- step 4: rows --------------------------------------------------------------------------------------------


def _clip_outcome(
    req: Mapping[str, Any], clip_id: str, spec: ExpertSpec, sampling: SamplingConfig
) -> tuple[dict[str, Any] | None, list[str] | None]:
    """The request's clip row (``None``: none to write) and the error its questions inherit (``None``: ok)."""
    done = json.loads(req[REQ_CLIP_DONE]) if req.get(REQ_CLIP_DONE) else None
    if done is not None:  # written by an earlier run: [status, reason, message]
        return None, (None if done[0] == S.STATUS_OK else [done[1], done[2]])
    clip = clip_of(req)
    req_error = json.loads(req[REQ_ERROR]) if req.get(REQ_ERROR) else None
    video = req[REQ_VIDEO]
    if req_error is not None:
        return R.clip_error_row(clip_id, video, spec, req_error[0], req_error[1], clip), req_error
    if clip is None:  # no valid record: nothing was decoded and no clip row is written
        return None, ["decode:skipped", "no clip"]
    try:
        return R.clip_row(clip_id, video, spec, clip, targets_of(req, S.tensor_shapes(spec)),
                          S.tensor_shapes(spec), sampling.image_format, sampling.jpeg_quality), None  # fmt: skip
    except ShardCodecError as exc:
        error = ["encode:error", str(exc)]
        return R.clip_error_row(clip_id, video, spec, error[0], error[1], clip), error


def rows_from_requests(
    requests: Sequence[Mapping[str, Any]], spec: ExpertSpec, sampling: SamplingConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Clip-table rows (one per video not written before) and question-table rows (one per QA record, in the
    clip order), ok or error with reason."""
    sampling_dict = sampling.to_dict()
    clip_rows, question_rows = [], []
    for req in requests:
        clip_id = make_clip_id(req[REQ_VIDEO], sampling_dict)
        row, clip_error = _clip_outcome(req, clip_id, spec, sampling)
        if row is not None:
            clip_rows.append(row)
        for rec in json.loads(req[REQ_RECORDS]):
            if rec["error"] is not None:
                question_rows.append(R.question_row(fallback_source(rec), clip_id, rec["error"]))
            else:
                question_rows.append(R.question_row(record_source(rec), clip_id, clip_error))
    return clip_rows, question_rows


def rows_tables(
    clip_rows: Sequence[Mapping[str, Any]], question_rows: Sequence[Mapping[str, Any]], spec: ExpertSpec
) -> tuple[pa.Table, pa.Table]:
    """The rows as Arrow tables of the clip and question schemas (tensor shapes of ``spec`` in the metadata)."""
    shapes = S.tensor_shapes(spec)
    return (pa.Table.from_pylist(list(clip_rows), schema=S.arrow_schema(S.CLIPS, shapes)),
            pa.Table.from_pylist(list(question_rows), schema=S.arrow_schema(S.QUESTIONS, shapes)))  # fmt: skip
