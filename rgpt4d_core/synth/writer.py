"""The synthetic dataset on disk (local path or ``s3://``): one scene at a time, then the split files and card.

Layout under ``<root>``::

    videos/<scene_id>.mp4          H.264 video
    gt/<scene_id>.npz              exact ground truth of every source frame (see :class:`GroundTruth`)
    som/<scene_id>.png             frame 1 with Set-of-Marks of every region of the scene
    scenes/<scene_id>.json         scene description + its questions; written LAST (marks the scene done)
    questions/{train,val,test}.jsonl   R4D-Bench rows (+ extension fields), written by :func:`finalize`
    dataset.json                   card: seed, generator version, counts per task and split, ranges

Same config → byte-identical ``gt``, ``som``, ``scenes`` and ``questions`` files (the npz archive is written
with fixed timestamps). The mp4 is not byte-stable: libx264 occasionally emits a different bitstream for the same
frames (it depends on the process's heap state; see ``tests/test_synth_writer.py``). With the default lossless
encoding (``crf=0``) every such bitstream decodes to the same pixels, so the same seed gives the same decoded
videos; with a lossy ``crf`` only frames equal to within the encoding error.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from rgpt4d_core import storage
from rgpt4d_core.config import to_container
from rgpt4d_core.regions import draw_set_of_marks
from rgpt4d_core.synth.balance import balance_answers
from rgpt4d_core.synth.config import GENERATOR_VERSION, SynthConfig
from rgpt4d_core.synth.dataset import GroundTruth, load_ground_truth, load_questions
from rgpt4d_core.synth.questions import TASKS, Mark, find_marks, make_questions
from rgpt4d_core.synth.render import Rendering, render_scene
from rgpt4d_core.synth.scenes import Scene, duration_steps, make_scene, scene_rng
from rgpt4d_core.types import Region
from rgpt4d_core.video.encode import encode_video

SPLITS: tuple[str, ...] = ("train", "val", "test")
__all__ = ["SPLITS", "GroundTruth", "SceneOutput", "build_scene", "finalize", "load_ground_truth", "load_questions",
           "scene_done", "split_for", "write_scene"]


_SPLIT_SEQUENCES: dict[tuple[float, ...], tuple[list[int], list[int]]] = {}


def split_for(index: int, fractions: tuple[float, float, float]) -> str:
    """Split of scene ``index``: a fixed interleaving that keeps every prefix of scenes close to ``fractions``.

    Depends only on ``index`` and ``fractions`` (not on the number of scenes), so growing a dataset never moves
    a scene between splits.
    """
    key = tuple(float(f) for f in fractions)
    seq, counts = _SPLIT_SEQUENCES.setdefault(key, ([], [0, 0, 0]))
    for i in range(len(seq), index + 1):
        deficits = [(i + 1) * f - c for f, c in zip(key, counts, strict=True)]
        choice = int(np.argmax(deficits))
        counts[choice] += 1
        seq.append(choice)
    return SPLITS[seq[index]]


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed ``.npz`` archive (readable by ``np.load``) with fixed member timestamps: deterministic bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue(), compresslevel=1)
    return buf.getvalue()


def ground_truth_arrays(scene: Scene, r: Rendering, marks: list[Mark], depth_dtype: str) -> dict[str, np.ndarray]:
    """The arrays stored in ``gt/<scene_id>.npz`` (``F`` frames, ``K`` objects, ``R`` regions)."""
    n_f, n_k = r.depth.shape[0], len(scene.objects)
    boxes = np.zeros((n_f, n_k, 7))
    boxes[:, :, :3] = r.box_centers
    boxes[:, :, 3:6] = r.box_sizes[None]
    boxes[:, :, 6] = r.box_yaws
    return {
        "depth": r.depth.astype(depth_dtype),
        "flow_2d_backward": r.flow_2d_backward.astype(depth_dtype),
        "dyn_mask": r.dyn_mask,
        "instance": r.instance,
        "intrinsics": r.intrinsics.astype(np.float32),
        "cam_to_world": r.cam_to_world.astype(np.float32),
        "timestamps_s": r.timestamps_s.astype(np.float64),
        "fps": np.array(scene.fps, dtype=np.float64),
        "boxes": boxes,
        "object_moving": r.obj_moving,
        "object_labels": np.array([o.label for o in scene.objects], dtype="<U32").reshape(n_k),
        "region_instance": np.array([m.index + 1 for m in marks], dtype=np.int16).reshape(len(marks)),
    }


@dataclass(frozen=True)
class SceneOutput:
    """Everything one scene contributes: file bytes by relative path, and its scene record (with questions)."""

    scene_id: str
    split: str
    files: dict[str, bytes]
    record: dict[str, Any]


def asked_tasks(cfg: SynthConfig) -> tuple[str, ...]:
    """The categories a world asks: ``cfg.tasks``, or R4D-Bench's nine when it lists none."""
    return cfg.tasks or TASKS


def _regions(marks: list[Mark], instance0: np.ndarray) -> list[Region]:
    return [Region(m.obj_id, m.box, mask=instance0 == m.index + 1, label=m.label) for m in marks]


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def build_scene(cfg: SynthConfig, index: int) -> SceneOutput:
    """Render scene ``index`` of the dataset ``cfg`` and produce its files and question rows (pure; no I/O)."""
    scene = make_scene(cfg, index)
    r = render_scene(scene)
    marks = find_marks(scene, r, order_rng=scene_rng(cfg.seed, index, 2))
    split = split_for(index, cfg.split_fractions)
    sid = scene.scene_id
    video_rel, som_rel = f"videos/{sid}.mp4", f"som/{sid}.png"
    video = io.BytesIO()
    encode_video(r.rgb, scene.fps, video, crf=cfg.crf)
    som = draw_set_of_marks(r.rgb[0], _regions(marks, r.instance[0]))
    region_rows = [{"obj_id": m.obj_id, "box": list(m.box), "label": m.label, "instance_id": m.index + 1} for m in marks]
    rows = []
    questions = make_questions(scene, r, marks, scene_rng(cfg.seed, index, 1), cfg.questions_per_category,
                               asked_tasks(cfg), tuple(float(d) for d in duration_steps(cfg)))  # fmt: skip
    for n, q in enumerate(questions):
        rows.append({
            "id": f"{sid}_{q['task']}_{n:02d}", "video": video_rel, "som_image": som_rel, "question": q["question"],
            "options": q["options"], "answer": q["answer"], "task": q["task"], "regions": region_rows,
            "duration_s": scene.duration_s, "fps": scene.fps, "num_frames": scene.num_frames, "scene_id": sid,
            "split": split, "meta": q["meta"],
        })
    record = {
        "scene_id": sid, "index": index, "split": split, "fps": scene.fps, "num_frames": scene.num_frames,
        "duration_s": scene.duration_s, "camera": dataclasses.asdict(scene.camera),
        "objects": [dataclasses.asdict(o) for o in scene.objects], "questions": rows,
    }
    files = {
        video_rel: video.getvalue(),
        f"gt/{sid}.npz": npz_bytes(ground_truth_arrays(scene, r, marks, cfg.depth_dtype)),
        som_rel: _png_bytes(som),
    }
    return SceneOutput(sid, split, files, record)


def scene_record_path(root: str, scene_id: str) -> str:
    return storage.join(root, "scenes", f"{scene_id}.json")


def write_scene(root: str, out: SceneOutput) -> None:
    """Write a scene's files, then its ``scenes/<id>.json`` (last: a scene without it is not done)."""
    for rel, data in out.files.items():
        storage.write_bytes(storage.join(root, rel), data)
    storage.write_bytes(scene_record_path(root, out.scene_id), _json_bytes(out.record))


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode()


def scene_done(root: str, scene_id: str) -> bool:
    return storage.exists(scene_record_path(root, scene_id))


def finalize(root: str, cfg: SynthConfig) -> dict[str, Any]:
    """Gather ``scenes/*.json`` of scenes ``0..num_scenes-1`` into ``questions/*.jsonl`` and ``dataset.json``.

    The scene records keep every generated question; the split files keep the answer-balanced subset
    (:func:`~rgpt4d_core.synth.balance.balance_answers`).

    Raises:
        FileNotFoundError: naming the first scene whose record is missing (generation incomplete).
    """
    from rgpt4d_core.synth.scenes import scene_id_for

    rows: list[dict[str, Any]] = []
    split_of: list[str] = []
    fps_seen, dur_seen, frames_seen = [], [], []
    for i in range(cfg.num_scenes):
        uri = scene_record_path(root, scene_id_for(i))
        if not storage.exists(uri):
            raise FileNotFoundError(f"scene {scene_id_for(i)} is not generated yet ({uri} missing)")
        rec = json.loads(storage.read_bytes(uri))
        fps_seen.append(rec["fps"])
        dur_seen.append(rec["duration_s"])
        frames_seen.append(rec["num_frames"])
        rows += rec["questions"]
        split_of += [rec["split"]] * len(rec["questions"])
    kept = balance_answers(rows, split_of, cfg.seed) if cfg.balance_answers else list(range(len(rows)))
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    counts = {s: {t: 0 for t in asked_tasks(cfg)} for s in SPLITS}
    for i in kept:
        by_split[split_of[i]].append(json.dumps(rows[i], ensure_ascii=False))
        counts[split_of[i]][rows[i]["task"]] += 1
    for s in SPLITS:
        text = "".join(line + "\n" for line in by_split[s])
        storage.write_bytes(storage.join(root, "questions", f"{s}.jsonl"), text.encode())
    card = {
        "name": "rgpt4d-synthetic-4d", "generator_version": GENERATOR_VERSION, "seed": cfg.seed,
        "num_scenes": cfg.num_scenes, "resolution": [cfg.height, cfg.width], "config": to_container(cfg),
        "fps_range": [min(fps_seen, default=0), max(fps_seen, default=0)],
        "duration_s_range": [min(dur_seen, default=0), max(dur_seen, default=0)],
        "frames_range": [min(frames_seen, default=0), max(frames_seen, default=0)],
        "scenes_per_split": {s: sum(1 for i in range(cfg.num_scenes) if split_for(i, cfg.split_fractions) == s) for s in SPLITS},
        "questions_per_split": {s: sum(counts[s].values()) for s in SPLITS},
        "questions_per_task": {t: sum(counts[s][t] for s in SPLITS) for t in asked_tasks(cfg)},
        "questions_per_split_and_task": counts,
        "questions_generated": len(rows),
        "answer_balance": (
            "every (split, task, kind) keeps equal counts per answer class (rgpt4d_core.synth.balance)"
            if cfg.balance_answers else "none: answers as generated"
        ),
        "layout": {"videos": "videos/<scene_id>.mp4", "ground_truth": "gt/<scene_id>.npz", "som": "som/<scene_id>.png",
                   "questions": "questions/<split>.jsonl", "scenes": "scenes/<scene_id>.json"},
    }
    storage.write_bytes(storage.join(root, "dataset.json"), _json_bytes(card))
    return card
