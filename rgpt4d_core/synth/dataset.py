"""Reading the synthetic dataset back: exact ground truth per video and the R4D-Bench question files."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from rgpt4d_core import storage
from rgpt4d_core.synth.render import plucker_rays
from rgpt4d_core.types import Region, VQAItem

_PER_FRAME = ("depth", "flow_2d_backward", "dyn_mask", "instance", "cam_to_world", "timestamps_s", "boxes", "object_moving")


@dataclass(frozen=True)
class GroundTruth:
    """Exact ground truth of one synthetic video (``F`` source frames of ``H x W``, ``K`` objects, ``R`` regions).

    Attributes:
        scene_id: e.g. ``s000123``.
        depth: float32/16 ``[F, H, W]`` metres (camera z).
        flow_2d_backward: float32/16 ``[F, H, W, 2]`` pixels ``(du, dv)`` from frame ``t`` to ``t - 1``; frame 0 zeros.
        dyn_mask: bool ``[F, H, W]`` pixels of objects moving in the world.
        instance: uint8 ``[F, H, W]``; ``0`` background, ``k + 1`` object ``k``.
        intrinsics: float32 ``[3, 3]`` pixels.
        cam_to_world: float32 ``[F, 4, 4]`` (camera: x right, y down, z forward; world: x right, y forward, z up).
        timestamps_s: float64 ``[F]`` seconds.
        fps: frames per second.
        boxes: float64 ``[F, K, 7]`` per object per frame: centre xyz (m, world), size xyz (m, local), yaw (rad).
        object_moving: bool ``[F, K]``.
        object_labels: str ``[K]`` (``"red box"``).
        region_instance: int16 ``[R]``: instance id of region ``<obj_{r+1}>``.
    """

    scene_id: str
    depth: np.ndarray
    flow_2d_backward: np.ndarray
    dyn_mask: np.ndarray
    instance: np.ndarray
    intrinsics: np.ndarray
    cam_to_world: np.ndarray
    timestamps_s: np.ndarray
    fps: float
    boxes: np.ndarray
    object_moving: np.ndarray
    object_labels: np.ndarray
    region_instance: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])

    def take(self, frame_indices: np.ndarray) -> GroundTruth:
        """The same ground truth restricted to ``frame_indices`` (e.g. ``Clip.frame_indices``); flow stays t→t−1
        of the *source* video (it is not re-chained across skipped frames)."""
        idx = np.asarray(frame_indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_frames):
            raise IndexError(f"{self.scene_id}: frame indices {idx.min()}..{idx.max()} outside 0..{self.num_frames - 1}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: values[k][idx] for k in _PER_FRAME})
        return GroundTruth(**values)

    def plucker(self) -> np.ndarray:
        """Plücker camera rays float32 ``[F, H, W, 6]`` (unit world direction, moment)."""
        h, w = self.depth.shape[1:]
        return plucker_rays(self.intrinsics.astype(np.float64), self.cam_to_world.astype(np.float64), h, w)


def ground_truth_uri(video_uri_or_scene_path: str) -> str:
    """``<root>/videos/<id>.mp4`` (or ``<root>/gt/<id>.npz`` itself) -> ``<root>/gt/<id>.npz``."""
    uri = video_uri_or_scene_path
    if uri.endswith(".npz"):
        return uri
    head, sep, name = uri.rpartition("/videos/")
    if not sep or not name.endswith(".mp4"):
        raise ValueError(f"not a synthetic video path (expected <root>/videos/<scene_id>.mp4): {uri!r}")
    return f"{head}/gt/{name[: -len('.mp4')]}.npz"


def load_ground_truth(video_uri_or_scene_path: str) -> GroundTruth:
    """Load the ground truth of a synthetic video from ``gt/<scene_id>.npz`` next to its ``videos/`` folder.

    Raises:
        FileNotFoundError: no ground truth for that video (message names the expected path).
        ValueError: the path is not a synthetic dataset video, or a key is missing from the archive.
    """
    uri = ground_truth_uri(video_uri_or_scene_path)
    if not storage.exists(uri):
        raise FileNotFoundError(f"no ground truth for {video_uri_or_scene_path!r}: {uri} does not exist")
    with np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False) as z:
        names = [f.name for f in fields(GroundTruth) if f.name != "scene_id"]
        missing = [n for n in names if n not in z.files]
        if missing:
            raise ValueError(f"{uri}: missing arrays {missing}")
        arrays: dict[str, Any] = {n: z[n] for n in names}
    arrays["fps"] = float(arrays["fps"])
    return GroundTruth(scene_id=uri.rsplit("/", 1)[-1][: -len(".npz")], **arrays)


def row_to_item(row: dict[str, Any], where: str = "") -> VQAItem:
    """One question row (dict) -> :class:`VQAItem`; ``KeyError``/``ValueError`` name the row and field."""
    try:
        regions = tuple(Region(int(r["obj_id"]), tuple(float(v) for v in r["box"]), label=r.get("label")) for r in row.get("regions", []))  # type: ignore[arg-type]
        item = VQAItem(
            id=str(row["id"]), video=str(row["video"]), question=str(row["question"]), options=tuple(row["options"]),
            answer=str(row["answer"]), task=str(row["task"]), som_image=row.get("som_image"), regions=regions,
            duration_s=row.get("duration_s"), fps=row.get("fps"),
        )
    except KeyError as exc:
        raise KeyError(f"{where}: question row {row.get('id', '?')} lacks field {exc}") from None
    if item.answer not in item.options:
        raise ValueError(f"{where}: question {item.id}: answer {item.answer!r} is not one of its options")
    return item


def load_questions(root: str, split: str) -> list[VQAItem]:
    """All questions of ``split`` (``train``/``val``/``test``) of the dataset at ``root`` (paths stay relative)."""
    uri = storage.join(root, "questions", f"{split}.jsonl")
    items = []
    for n, line in enumerate(storage.read_bytes(uri).decode().splitlines()):
        if line.strip():
            items.append(row_to_item(json.loads(line), f"{uri}:{n + 1}"))
    return items
