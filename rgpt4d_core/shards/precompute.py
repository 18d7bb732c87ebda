"""The framework-free work of the precompute job: QA manifest -> requests -> decode -> expert -> shard rows.

The Ray Data job (``pipelines/precompute.py``) and the single-process baseline (``bench/precompute.py``) run
the same four steps on batches of *requests* (one request = one video and the QA records about it, so a video
is decoded and encoded by the expert once however many questions it has):

1. :func:`build_requests` (driver): parse R4D-format JSONL / a plain list of videos, drop what is already
   written (resume), group by video;
2. :func:`decode_requests` (CPU): validate every QA record, decode the video's sampled frames;
3. :func:`expert_requests` (GPU/CPU actor): run the frozen expert on the decoded clips of a batch;
4. :func:`rows_from_requests` (CPU): one shard row per QA record via :mod:`rgpt4d_core.shards.codec`.

Between steps a batch is a list of plain dicts with the private ``REQ_*`` keys below (Arrow-friendly values),
so that Ray can move them as Arrow tables. Every failure becomes data: the record's error row carries a reason
(``decode:<VideoDecodeError.reason>``, ``qa:malformed``, ``qa:undefined_region``, ``qa:bad_region``,
``expert:error``, ``encode:error``) and the message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from rgpt4d_core import storage
from rgpt4d_core.experts.base import Expert, ExpertSpec, ExpertTargets
from rgpt4d_core.regions import RegionError, region_from_box, validate_refs
from rgpt4d_core.shards import codec
from rgpt4d_core.shards import schema as S
from rgpt4d_core.types import Clip, VQAItem
from rgpt4d_core.video.decode import DecodeConfig, VideoDecodeError, decode_clip

# ---- private wire format between the steps (not shard columns) ----------------------------------------------
REQ_VIDEO = "_video"
REQ_RECORDS = "_records"
REQ_ERROR = "_error"
REQ_FRAMES = "_frames"
REQ_FRAMES_SHAPE = "_frames_shape"
REQ_TIMESTAMPS = "_timestamps_s"
REQ_INDICES = "_frame_indices"
REQ_FPS = "_fps"
REQ_NUM_SOURCE_FRAMES = "_num_source_frames"
REQ_TARGET_PREFIX = "_target_"

#: the Arrow schema of a request batch after any step (absent values are null)
REQUEST_SCHEMA = pa.schema(
    [
        pa.field(REQ_VIDEO, pa.string()),
        pa.field(REQ_RECORDS, pa.string()),
        pa.field(REQ_ERROR, pa.string()),
        pa.field(REQ_FRAMES, pa.large_binary()),
        pa.field(REQ_FRAMES_SHAPE, pa.list_(pa.int64())),
        pa.field(REQ_TIMESTAMPS, pa.list_(pa.float64())),
        pa.field(REQ_INDICES, pa.list_(pa.int64())),
        pa.field(REQ_FPS, pa.float64()),
        pa.field(REQ_NUM_SOURCE_FRAMES, pa.int64()),
        *[pa.field(REQ_TARGET_PREFIX + name, pa.large_binary()) for name in S.TENSOR_COLUMNS],
    ]
)

# R4D-Bench JSONL field names (the input format, not shard columns)
_QA_REQUIRED = ("id", "video", "question", "options", "answer", "task")


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


# ---- step 1: requests ----------------------------------------------------------------------------------------


@dataclass
class RequestPlan:
    """What the driver will process: requests plus what it skipped.

    Attributes:
        requests: one dict per video (``REQ_VIDEO``, ``REQ_RECORDS``).
        num_records: QA records in ``requests``.
        skipped_written: records already present in the output (resume).
        skipped_duplicate: records whose (video, question id) appeared earlier in the input.
    """

    requests: list[dict[str, Any]] = field(default_factory=list)
    num_records: int = 0
    skipped_written: int = 0
    skipped_duplicate: int = 0


def _resolve_video(video: str, video_root: str | None) -> str:
    if storage.is_s3(video) or video.startswith("/") or not video_root:
        return video
    return storage.join(video_root, video)


def qa_records(jsonl_text: str, split: str, video_root: str | None, source_name: str) -> list[dict[str, Any]]:
    """One record per non-empty JSONL line: the parsed QA dict with the resolved video URI, or a parse error.

    A record is ``{"qa": {...} | None, "split": str, "video": uri, "id": str, "error": [reason, message] | None}``.
    """
    out: list[dict[str, Any]] = []
    for n, line in enumerate(jsonl_text.splitlines(), start=1):
        if not line.strip():
            continue
        fallback_id = f"{source_name}:{n}"
        try:
            qa = json.loads(line)
            if not isinstance(qa, dict):
                raise ValueError("line is not a JSON object")
            missing = [k for k in _QA_REQUIRED if k not in qa]
            if missing:
                raise ValueError(f"missing field(s) {missing}")
        except ValueError as exc:
            msg = f"{source_name} line {n}: {exc}"
            out.append({"qa": None, "split": split, "video": "", "id": fallback_id, "error": ["qa:malformed", msg]})
            continue
        video = _resolve_video(str(qa["video"]), video_root)
        out.append({"qa": qa, "split": split, "video": video, "id": str(qa["id"]), "error": None})
    return out


def video_records(uris: Iterable[str], split: str) -> list[dict[str, Any]]:
    """Records for a plain list of videos (no question: question id ``""``, empty QA fields)."""
    return [{"qa": None, "split": split, "video": u, "id": "", "error": None} for u in uris if u.strip()]


def build_requests(records: Sequence[Mapping[str, Any]], written_keys: set[tuple[str, str]]) -> RequestPlan:
    """Group records by video, dropping those whose ``(video, id)`` is already written or seen before."""
    plan = RequestPlan()
    by_video: dict[str, list[Mapping[str, Any]]] = {}
    seen: set[tuple[str, str]] = set()
    for rec in records:
        key = (rec["video"], rec["id"])
        if key in written_keys:
            plan.skipped_written += 1
            continue
        if key in seen:
            plan.skipped_duplicate += 1
            continue
        seen.add(key)
        by_video.setdefault(rec["video"], []).append(rec)
    for video, recs in by_video.items():
        plan.requests.append({REQ_VIDEO: video, REQ_RECORDS: json.dumps(recs)})
        plan.num_records += len(recs)
    return plan


def to_table(requests: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A request batch as an Arrow table of :data:`REQUEST_SCHEMA` (missing keys are null)."""
    return pa.Table.from_pylist([{f: r.get(f) for f in REQUEST_SCHEMA.names} for r in requests], schema=REQUEST_SCHEMA)


# ---- step 2: decode ------------------------------------------------------------------------------------------


def _source(rec: Mapping[str, Any]) -> codec.SampleSource:
    """The record as a validated ``SampleSource``; raises ``RegionError`` / ``ValueError`` for bad QA."""
    qa = rec["qa"]
    if qa is None:
        item = VQAItem(id=rec["id"], video=rec["video"], question="", options=(), answer="", task="")
        return codec.SampleSource(item=item, split=rec["split"])
    regions = tuple(
        region_from_box(int(r["obj_id"]), r["box"], r.get("label")) for r in (qa.get("regions") or ())
    )
    options = tuple(str(o) for o in qa["options"])
    if str(qa["answer"]) not in options:
        raise ValueError(f"answer {qa['answer']!r} is not one of the options")
    item = VQAItem(
        id=rec["id"],
        video=rec["video"],
        question=str(qa["question"]),
        options=options,
        answer=str(qa["answer"]),
        task=str(qa["task"]),
        som_image=qa.get("som_image"),
        regions=regions,
        duration_s=qa.get("duration_s"),
        fps=qa.get("fps"),
    )
    validate_refs(item.question, item.regions)
    scene = qa.get("scene_id")
    return codec.SampleSource(item=item, split=rec["split"], scene_id=None if scene is None else str(scene))


def _fallback_source(rec: Mapping[str, Any]) -> codec.SampleSource:
    """A source for an error row when the record itself is bad (keeps what text fields there are)."""
    qa = rec["qa"] or {}
    item = VQAItem(
        id=rec["id"], video=rec["video"], question=str(qa.get("question", "")),
        options=tuple(str(o) for o in qa.get("options", ()) or ()), answer=str(qa.get("answer", "")),
        task=str(qa.get("task", "")),
    )  # fmt: skip
    return codec.SampleSource(item=item, split=rec["split"])


def check_record(rec: dict[str, Any]) -> None:
    """Validate one record in place: sets ``rec["error"]`` for undefined ``<obj_k>`` or invalid fields."""
    if rec["error"] is not None:
        return
    try:
        _source(rec)
    except RegionError as exc:
        reason = "qa:undefined_region" if "references" in str(exc) else "qa:bad_region"
        rec["error"] = [reason, f"question {rec['id']!r}: {exc}"]
    except (KeyError, TypeError, ValueError) as exc:
        rec["error"] = ["qa:malformed", f"question {rec['id']!r}: {exc!r}"]


def decode_requests(requests: Sequence[Mapping[str, Any]], sampling: SamplingConfig) -> list[dict[str, Any]]:
    """Validate the records of each request and decode its video (skipped when no record is valid)."""
    cfg = sampling.decode_config()
    out = []
    for req in requests:
        records = json.loads(req[REQ_RECORDS])
        for rec in records:
            check_record(rec)
        new: dict[str, Any] = {REQ_VIDEO: req[REQ_VIDEO], REQ_RECORDS: json.dumps(records)}
        if any(r["error"] is None for r in records):
            try:
                clip = decode_clip(req[REQ_VIDEO], cfg)
                new.update(
                    {
                        REQ_FRAMES: np.ascontiguousarray(clip.frames).tobytes(),
                        REQ_FRAMES_SHAPE: list(clip.frames.shape),
                        REQ_TIMESTAMPS: [float(t) for t in clip.timestamps_s],
                        REQ_INDICES: [int(i) for i in clip.frame_indices],
                        REQ_FPS: float(clip.fps),
                        REQ_NUM_SOURCE_FRAMES: int(clip.num_source_frames),
                    }
                )
            except VideoDecodeError as exc:
                new[REQ_ERROR] = json.dumps([f"decode:{exc.reason}", str(exc)])
        out.append(new)
    return out


def clip_of(req: Mapping[str, Any]) -> Clip | None:
    """The decoded clip carried by a request, or ``None`` (decode failed / skipped)."""
    if req.get(REQ_FRAMES) is None:
        return None
    frames = np.frombuffer(req[REQ_FRAMES], dtype=np.uint8).reshape(req[REQ_FRAMES_SHAPE]).copy()
    return Clip(
        frames=frames,
        timestamps_s=np.asarray(req[REQ_TIMESTAMPS], dtype=np.float64),
        frame_indices=np.asarray(req[REQ_INDICES], dtype=np.int64),
        fps=float(req[REQ_FPS]),
        num_source_frames=int(req[REQ_NUM_SOURCE_FRAMES]),
        uri=req[REQ_VIDEO],
    )


# ---- step 3: expert ------------------------------------------------------------------------------------------


def _targets_to_wire(targets: ExpertTargets, req: dict[str, Any]) -> None:
    for name in S.TENSOR_COLUMNS:
        value = getattr(targets, name)
        req[REQ_TARGET_PREFIX + name] = None if value is None else np.ascontiguousarray(value, "<f2").tobytes()


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
            _targets_to_wire(targets, req)
    except Exception:  # isolate the clip at fault; the rest of the batch still gets targets
        for req, clip in todo:
            try:
                _targets_to_wire(expert.encode([clip])[0], req)
            except Exception as exc:
                req[REQ_ERROR] = json.dumps(["expert:error", f"{req[REQ_VIDEO]}: {type(exc).__name__}: {exc}"])
    return out


# ---- step 4: rows --------------------------------------------------------------------------------------------


def rows_from_requests(
    requests: Sequence[Mapping[str, Any]], spec: ExpertSpec, sampling: SamplingConfig
) -> list[dict[str, Any]]:
    """One shard row per QA record (ok, or error with reason)."""
    shapes = S.tensor_shapes(spec)
    rows = []
    for req in requests:
        records = json.loads(req[REQ_RECORDS])
        clip = clip_of(req)
        req_error = json.loads(req[REQ_ERROR]) if req.get(REQ_ERROR) else None
        targets = None
        if clip is not None and req_error is None:
            tensors = {
                name: np.frombuffer(data, "<f2").reshape(shape)
                for name, shape in shapes.items()
                if shape is not None and (data := req.get(REQ_TARGET_PREFIX + name)) is not None
            }
            targets = ExpertTargets(**tensors)
        for rec in records:
            if rec["error"] is not None:
                rows.append(codec.encode_error(_fallback_source(rec), spec, rec["error"][0], rec["error"][1]))
                continue
            src = _source(rec)
            if req_error is not None or targets is None or clip is None:
                reason, msg = req_error or ["decode:skipped", "no clip"]
                rows.append(codec.encode_error(src, spec, reason, msg, clip))
                continue
            try:
                rows.append(codec.encode_sample(src, spec, clip, targets, shapes, sampling.image_format,
                                                sampling.jpeg_quality))
            except codec.ShardCodecError as exc:
                rows.append(codec.encode_error(src, spec, "encode:error", str(exc), clip))
    return rows


def rows_table(rows: Sequence[Mapping[str, Any]], spec: ExpertSpec) -> pa.Table:
    """Shard rows as an Arrow table of the shard schema (tensor shapes of ``spec`` in the field metadata)."""
    return pa.Table.from_pylist(list(rows), schema=S.arrow_schema(S.tensor_shapes(spec)))
