"""Derived per-object motion questions for the recipe probe (``--derived moves``): "Does ``<obj_k>`` change its
position during the video?" for every marked object of every scene, answered from the scene's ground truth.

The easiest perception question the world can ask of a region: one object, the whole video, two answers. It is the
probe's check of whether the student can learn to read an object's motion from the pixels at all, and the first
stage a curriculum would start from (docs/results.md, eighth round).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from rgpt4d_core.regions import find_object_refs
from rgpt4d_core.synth.dataset import row_to_item
from rgpt4d_core.synth.scenes import Camera, SceneObject
from rgpt4d_core.synth.writer import scene_record_path
from rgpt4d_core.types import VQAItem

MOVES, STAYS = "Yes, it changes its position", "No, it stays where it is"
#: ground displacement (m) over the video from which an object counts as moving; between 0 and this: not asked
MIN_DISPLACEMENT_M = 0.3
T = TypeVar("T")


def _from_record(cls: type[T], raw: dict[str, Any]) -> T:
    """A scene dataclass (:class:`SceneObject`, :class:`Camera`) from its JSON record (lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields})


def _first_rows(root: str, splits: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The first question row of each video of ``splits``, raw: its regions carry the instance ids (which
    ``load_questions`` drops)."""
    firsts: dict[str, dict[str, Any]] = {}
    for split in splits:
        with open(os.path.join(root, "questions", f"{split}.jsonl")) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    firsts.setdefault(row["video"], row)
    return firsts


def _scene_id(video: str) -> str:
    return os.path.splitext(os.path.basename(video))[0]


def motion_questions(root: str, splits: Sequence[str], seed: int, static_camera: bool = False) -> list[VQAItem]:
    """One question per marked object of each scene of ``splits`` (only scenes whose camera stands still when
    ``static_camera``: there an object moves iff its image moves); "moves" and "stays" balanced by dropping
    (seeded) the more frequent answer's surplus; option order shuffled per question (seeded)."""
    rng = np.random.default_rng(seed)
    by_answer: dict[str, list[VQAItem]] = {MOVES: [], STAYS: []}
    for video, row in sorted(_first_rows(root, splits).items()):
        scene_id = _scene_id(video)
        with open(scene_record_path(root, scene_id)) as f:
            scene = json.load(f)
        if static_camera and _from_record(Camera, scene["camera"]).moves:
            continue
        q = row_to_item(row, video)
        for region in row["regions"]:
            obj = _from_record(SceneObject, scene["objects"][region["instance_id"] - 1])  # instance ids count from 1
            centres, _ = obj.pose(np.array([0.0, float(scene["duration_s"])]))
            shift = float(np.linalg.norm(centres[1, :2] - centres[0, :2]))
            if 0.0 < shift < MIN_DISPLACEMENT_M:
                continue
            answer = MOVES if shift > 0.0 else STAYS
            options = (MOVES, STAYS) if rng.random() < 0.5 else (STAYS, MOVES)
            question = f"Does <obj_{region['obj_id']}> change its position during the video?"
            by_answer[answer].append(dataclasses.replace(
                q, id=f"{scene_id}_MV_{region['obj_id']}", question=question, options=options, answer=answer, task="MV"))  # fmt: skip
    keep = min(len(v) for v in by_answer.values())
    out = [v[i] for v in by_answer.values() for i in sorted(rng.permutation(len(v))[:keep])]
    return sorted(out, key=lambda q: q.id)


def image_displacements(root: str, qs: Sequence[VQAItem], size: int = 64) -> dict[tuple[bool, bool], list[float]]:
    """Per (object moves, camera moves): the marked object's image displacement between the first and last frame
    (centroid of its instance mask, pixels at ``size``; NaN when it left the view)."""
    rows = _first_rows(root, ("train", "val", "test"))
    out: dict[tuple[bool, bool], list[float]] = {}
    for q in qs:
        gt = np.load(os.path.join(root, "gt", _scene_id(q.video) + ".npz"))
        instance, cam = gt["instance"], gt["cam_to_world"]
        obj = find_object_refs(q.question)[0]
        iid = next(r["instance_id"] for r in rows[q.video]["regions"] if r["obj_id"] == obj)
        centres = []
        for frame in (0, len(instance) - 1):
            ys, xs = np.nonzero(instance[frame] == iid)
            centres.append(np.array([xs.mean(), ys.mean()]) if len(xs) else None)
        first, last = centres
        shift = np.nan if first is None or last is None else float(np.linalg.norm(last - first)) * size / instance.shape[-1]
        out.setdefault((q.answer == MOVES, not np.allclose(cam[0], cam[-1], atol=1e-4)), []).append(shift)
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="image displacement of the held-out derived questions' objects")
    parser.add_argument("--world", required=True)
    parser.add_argument("--size", type=int, default=64, help="frame side the student sees, pixels")
    cli = parser.parse_args()
    held_out = motion_questions(cli.world, ["val", "test"], 1)
    for (moves, camera), shifts in sorted(image_displacements(cli.world, held_out, cli.size).items()):
        v = np.array(shifts)
        ok = v[np.isfinite(v)]
        print(f"object moves {moves!s:5}  camera moves {camera!s:5}  n {len(v):4d}  left the view {np.isnan(v).mean():.2f}  "
              f"displacement px median {np.median(ok):.1f} (p25 {np.percentile(ok, 25):.1f}, p75 {np.percentile(ok, 75):.1f})")
