"""Step 1 of precompute (driver) and the QA record checks of step 2: R4D-format JSONL lines or a plain list of
videos become *records* (``{"qa", "split", "video", "id", "error"}``), grouped into one request per video; a record
is validated into a :class:`~rgpt4d_core.shards.R.SampleSource`, and a bad one keeps its reason
(``qa:malformed``, ``qa:undefined_region``, ``qa:bad_region``) as data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rgpt4d_core import storage
from rgpt4d_core.regions import RegionError, region_from_box, validate_refs
from rgpt4d_core.shards import rows as R
from rgpt4d_core.shards.requests import REQ_CLIP_DONE, REQ_RECORDS, REQ_VIDEO
from rgpt4d_core.types import VQAItem

# R4D-Bench JSONL field names (the input format, not shard columns)
_QA_REQUIRED = ("id", "video", "question", "options", "answer", "task")


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


def resolve_video(video: str, video_root: str | None) -> str:
    """``video`` joined to ``video_root`` when it is a relative path (``s3://`` and absolute paths stay as they are)."""
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
            out.append(
                {"qa": None, "split": split, "video": "", "id": fallback_id, "error": ["qa:malformed", msg]}
            )
            continue
        video = resolve_video(str(qa["video"]), video_root)
        out.append({"qa": qa, "split": split, "video": video, "id": str(qa["id"]), "error": None})
    return out


def video_records(uris: Iterable[str], split: str) -> list[dict[str, Any]]:
    """Records for a plain list of videos (no question: question id ``""``, empty QA fields)."""
    return [{"qa": None, "split": split, "video": u, "id": "", "error": None} for u in uris if u.strip()]


def build_requests(
    records: Sequence[Mapping[str, Any]],
    written_keys: set[tuple[str, str]],
    written_clips: Mapping[str, Sequence[str | None]] | None = None,
) -> RequestPlan:
    """Group records by video, dropping those whose ``(video, id)`` is already written or seen before.

    Args:
        records: the input records, in input order.
        written_keys: ``(video, question id)`` of the question rows already written (resume).
        written_clips: video URI -> ``[status, reason, message]`` of the clip rows already written (resume); a
            request for such a video carries it as ``REQ_CLIP_DONE`` and is not decoded again.
    """
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
    done = written_clips or {}
    for video, recs in by_video.items():
        clip = done.get(video)
        plan.requests.append({REQ_VIDEO: video, REQ_RECORDS: json.dumps(recs),
                              REQ_CLIP_DONE: None if clip is None else json.dumps(list(clip))})  # fmt: skip
        plan.num_records += len(recs)
    return plan


def record_source(rec: Mapping[str, Any]) -> R.SampleSource:
    """The record as a validated ``SampleSource``; raises ``RegionError`` / ``ValueError`` for bad QA."""
    qa = rec["qa"]
    if qa is None:
        item = VQAItem(id=rec["id"], video=rec["video"], question="", options=(), answer="", task="")
        return R.SampleSource(item=item, split=rec["split"])
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
    return R.SampleSource(item=item, split=rec["split"], scene_id=None if scene is None else str(scene))


def fallback_source(rec: Mapping[str, Any]) -> R.SampleSource:
    """A source for an error row when the record itself is bad (keeps what text fields there are)."""
    qa = rec["qa"] or {}
    item = VQAItem(
        id=rec["id"], video=rec["video"], question=str(qa.get("question", "")),
        options=tuple(str(o) for o in qa.get("options", ()) or ()), answer=str(qa.get("answer", "")),
        task=str(qa.get("task", "")),
    )  # fmt: skip
    return R.SampleSource(item=item, split=rec["split"])


def check_record(rec: dict[str, Any]) -> None:
    """Validate one record in place: sets ``rec["error"]`` for undefined ``<obj_k>`` or invalid fields."""
    if rec["error"] is not None:
        return
    try:
        record_source(rec)
    except RegionError as exc:
        reason = "qa:undefined_region" if "references" in str(exc) else "qa:bad_region"
        rec["error"] = [reason, f"question {rec['id']!r}: {exc}"]
    except (KeyError, TypeError, ValueError) as exc:
        rec["error"] = ["qa:malformed", f"question {rec['id']!r}: {exc!r}"]
