"""The ``oracle`` expert: the synthetic world's exact depth, flow, dynamic mask and camera rays for its videos.

For a clip decoded from ``<root>/videos/<scene_id>.mp4`` the ground truth is read with
``rgpt4d_core.synth.writer.load_ground_truth(uri)`` (``<root>/gt/<scene_id>.npz``, arrays for every source
frame); the clip's ``frame_indices`` pick the sampled frames, and every map is resized to the expert's size:

* ``depth`` (metres): mean of the *valid* (> 0) source depths under each output pixel; 0 where none is valid
  (rays that hit nothing); consumers must mask ``depth <= 0``;
* ``dyn_mask``: fraction of each output pixel covered by moving-object pixels (a probability in [0, 1]);
* ``flow_2d_backward`` — **between the sampled frames** ``t`` and ``t-1`` (what a 16-frame expert sees), not
  between consecutive source frames. When the ground truth carries the scene geometry (``instance`` and the
  object poses, ``boxes``) the flow is computed exactly: every visible point of sampled frame ``t`` is
  lifted with its depth, moved rigidly with its object's pose (static background stays) to the time of
  sampled frame ``t-1`` and projected through that frame's camera. Otherwise the consecutive-frame flows are
  *chained* (``f_{t→s}(x) = f_{t→t-1}(x) + f_{t-1→s}(x + f_{t→t-1}(x))``, bilinear look-ups), which is exact
  for adjacent indices and approximate (interpolation, occlusions) for strided ones. Either way the flow of a
  point that is occluded in frame ``t-1`` is where it *would* project (as in the renderer's own flow).
  Flow vectors are rescaled by the resize factor (pixels at the output resolution);
* ``camray``: Plücker rays (unit direction, moment ``o × d``, metres) of the pixel centres of a
  ``camray_size`` grid, in the coordinate frame of the clip's *first* camera (invariant to the world frame).

No latents, no heads. Clips whose ground truth cannot be found raise ``FileNotFoundError`` naming the uri.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from rgpt4d_core.experts.base import ExpertSpec, ExpertTargets
from rgpt4d_core.experts.classical import resolve_size
from rgpt4d_core.types import Clip

if TYPE_CHECKING:
    from rgpt4d_core.experts.config import ExpertConfig


def _area(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-resize float ``[H, W]`` or ``[H, W, C]`` to ``size = (h, w)``."""
    if img.shape[:2] == size:
        return img.astype(np.float32)
    return cv2.resize(img.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 ``[h, w]`` metres: mean of the valid (> 0) depths under each output pixel, 0 where none."""
    valid = (depth > 0).astype(np.float32)
    num, den = _area(depth * valid, size), _area(valid, size)
    return np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 ``[h, w, 2]``: area-averaged flow, rescaled to pixels of the output resolution."""
    h, w = flow.shape[:2]
    out = _area(flow, size)
    return (out * np.array([size[1] / w, size[0] / h], np.float32)).astype(np.float32)


def _rot_z(p: np.ndarray, yaw: np.ndarray | float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1], p[..., 2]], -1)


def geometric_flow(gt: Any, t: int, s: int, move_objects: bool = True) -> np.ndarray:
    """Exact backward flow float32 ``[H, W, 2]`` from source frame ``t`` to source frame ``s`` (pixels).

    Needs ``depth``, ``intrinsics [3, 3]``, ``cam_to_world``, ``instance`` (``k + 1`` for object ``k``) and the
    object poses on ``gt`` (see :func:`object_poses`). Pixels without depth get zero flow. ``move_objects=False``
    holds every visible point still in the world: the flow the camera's motion alone causes (needs neither
    ``instance`` nor the object poses).
    """
    depth = np.asarray(gt.depth[t], np.float64)
    h, w = depth.shape
    k = np.asarray(gt.intrinsics, np.float64).reshape(-1, 3, 3)[-1]
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1)
    c2w_t, c2w_s = np.asarray(gt.cam_to_world[t], np.float64), np.asarray(gt.cam_to_world[s], np.float64)
    world = c2w_t[:3, 3] + depth[..., None] * (rays @ c2w_t[:3, :3].T)
    if move_objects:
        _move_objects(gt, world, t, s)
    cam = (world - c2w_s[:3, 3]) @ c2w_s[:3, :3]
    z = np.maximum(cam[..., 2], 1e-9)
    proj = np.stack([k[0, 0] * cam[..., 0] / z + k[0, 2], k[1, 1] * cam[..., 1] / z + k[1, 2]], -1)
    flow = proj - np.stack([u, v], -1)
    return np.where((depth > 0)[..., None], flow, 0.0).astype(np.float32)


def _move_objects(gt: Any, world: np.ndarray, t: int, s: int) -> None:
    """Move the world points ``[H, W, 3]`` of frame ``t``'s objects (``gt.instance``) rigidly with their poses to
    the time of frame ``s``, in place; the background stays."""
    inst = np.asarray(gt.instance[t])
    poses = object_poses(gt)
    if poses is None:
        raise ValueError("geometric flow needs the object poses (boxes or box_centers + box_yaws)")
    centers, yaws = poses
    for obj in range(centers.shape[1]):
        sel = inst == obj + 1
        if sel.any():
            local = _rot_z(world[sel] - centers[t, obj], -yaws[t, obj])
            world[sel] = _rot_z(local, yaws[s, obj]) + centers[s, obj]


def _sample(img: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Bilinear look-up of ``img [H, W, C]`` at float pixel ``coords [H, W, 2]`` (x, y), border-clamped."""
    return cv2.remap(img.astype(np.float32), coords[..., 0].astype(np.float32), coords[..., 1].astype(np.float32),
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def chained_flow(flows: np.ndarray, t: int, s: int) -> np.ndarray:
    """Backward flow ``[H, W, 2]`` from frame ``t`` to ``s < t`` by chaining consecutive backward flows."""
    h, w = flows.shape[1:3]
    v, u = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    base = np.stack([u, v], -1)
    total = np.asarray(flows[t], np.float32).copy()
    for step in range(t - 1, s, -1):
        total = total + _sample(np.asarray(flows[step], np.float32), base + total)
    return total


def object_poses(gt: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Object centres float64 ``[F, K, 3]`` (m, world) and yaws ``[F, K]`` (rad) of every source frame, from
    ``boxes [F, K, 7]`` (the dataset's ``GroundTruth``) or ``box_centers`` + ``box_yaws`` (a ``Rendering``)."""
    boxes = getattr(gt, "boxes", None)
    if boxes is not None:
        b = np.asarray(boxes, np.float64)
        return b[..., :3], b[..., 6]
    centers, yaws = getattr(gt, "box_centers", None), getattr(gt, "box_yaws", None)
    if centers is None or yaws is None:
        return None
    return np.asarray(centers, np.float64), np.asarray(yaws, np.float64)


def has_geometry(gt: Any) -> bool:
    return getattr(gt, "instance", None) is not None and object_poses(gt) is not None


def sampled_flow(gt: Any, t: int, s: int) -> np.ndarray:
    """Backward flow between source frames ``t`` and ``s`` (exact geometry if available, else chained)."""
    if t == s:
        return np.zeros((*np.asarray(gt.depth[t]).shape, 2), np.float32)
    if t - s == 1:
        return np.asarray(gt.flow_2d_backward[t], np.float32)
    if has_geometry(gt):
        return geometric_flow(gt, t, s)
    return chained_flow(gt.flow_2d_backward, t, s)


def camray_map(intrinsics: np.ndarray, cam_to_world: np.ndarray, image_hw: tuple[int, int],
               size: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """Plücker rays float32 ``[T, h, w, 6]`` of a ``size`` grid, in the frame of the first camera.

    Args:
        intrinsics: float ``[3, 3]`` pixels of the source image (``image_hw``).
        cam_to_world: float ``[T, 4, 4]`` of the sampled frames.
        image_hw: source image ``(H, W)``.
        size: ray grid ``(h, w)``; ray ``(i, j)`` passes through the centre of that cell of the image.
    """
    k = np.asarray(intrinsics, np.float64).reshape(-1, 3, 3)[-1]
    (big_h, big_w), (h, w) = image_hw, size
    v = (np.arange(h) + 0.5) * big_h / h - 0.5
    u = (np.arange(w) + 0.5) * big_w / w - 0.5
    vv, uu = np.meshgrid(v, u, indexing="ij")
    rays = np.stack([(uu - k[0, 2]) / k[0, 0], (vv - k[1, 2]) / k[1, 1], np.ones_like(uu)], -1)
    ref = np.linalg.inv(np.asarray(cam_to_world[0], np.float64))
    rel = ref[None] @ np.asarray(cam_to_world, np.float64)  # cameras in the first camera's frame
    d = np.einsum("tij,hwj->thwi", rel[:, :3, :3], rays)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(rel[:, None, None, :3, 3], d.shape)
    return np.concatenate([d, np.cross(o, d)], -1).astype(np.float32)


def targets_from_ground_truth(gt: Any, frame_indices: np.ndarray, dense_size: tuple[int, int],
                              camray_size: tuple[int, int] | None, uri: str = "?") -> ExpertTargets:  # fmt: skip
    """Depth / flow / dyn_mask ``[T, h, w(, 2)]`` (and camray) of the sampled frames (see module docstring)."""
    idx = np.asarray(frame_indices, np.int64)
    n_src = int(np.asarray(gt.depth).shape[0])
    if idx.min() < 0 or idx.max() >= n_src:
        raise ValueError(f"clip {uri!r}: frame indices {idx.tolist()} outside the {n_src} ground-truth frames")
    image_hw = tuple(np.asarray(gt.depth).shape[1:3])
    depth = np.stack([resize_depth(np.asarray(gt.depth[i], np.float32), dense_size) for i in idx])
    mask = np.stack([_area(np.asarray(gt.dyn_mask[i], np.float32), dense_size) for i in idx]).clip(0.0, 1.0)
    flow = np.zeros((len(idx), *dense_size, 2), np.float32)
    for j in range(1, len(idx)):
        flow[j] = resize_flow(sampled_flow(gt, int(idx[j]), int(idx[j - 1])), dense_size)
    camray = None
    if camray_size is not None:
        camray = camray_map(gt.intrinsics, np.asarray(gt.cam_to_world)[idx], image_hw, camray_size)  # type: ignore[arg-type]
    return ExpertTargets(depth=depth, flow_2d_backward=flow, dyn_mask=mask.astype(np.float32), camray=camray)


@dataclass(frozen=True)
class OracleParams:
    """Output geometry: ``size`` ``(H, W)`` of depth / flow / mask, ``camray_size`` ``(h, w)`` of the rays."""

    num_frames: int = 16
    size: tuple[int, int] = (64, 64)
    camray_size: tuple[int, int] = (8, 8)


class OracleExpert:
    """The ``oracle`` expert (see module docstring); satisfies ``base.Expert``."""

    def __init__(self, params: OracleParams) -> None:
        self.params = params
        self._spec = ExpertSpec(
            name="oracle",
            revision="synthetic-ground-truth",
            num_frames=params.num_frames,
            input_size=params.size,
            dense_shape=(params.num_frames, *params.size),
            camray_shape=(params.num_frames, *params.camray_size),
            targets=("depth", "flow_2d_backward", "dyn_mask", "camray"),
        )

    @classmethod
    def from_config(cls, cfg: ExpertConfig) -> OracleExpert:
        size = resolve_size(cfg.preset, cfg.input_size, "oracle")
        return cls(OracleParams(size=size, camray_size=(max(1, size[0] // 8), max(1, size[1] // 8))))

    @property
    def spec(self) -> ExpertSpec:
        return self._spec

    @property
    def heads(self) -> None:
        return None

    def encode(self, clips: Sequence[Clip]) -> list[ExpertTargets]:
        from rgpt4d_core.synth.writer import load_ground_truth  # the synthetic world's reader

        out = []
        for clip in clips:
            if len(clip.frame_indices) != self.params.num_frames:
                raise ValueError(f"clip {clip.uri!r}: the expert takes {self.params.num_frames} frames, "
                                 f"got {len(clip.frame_indices)}")  # fmt: skip
            gt = load_ground_truth(clip.uri)
            out.append(targets_from_ground_truth(gt, clip.frame_indices, self.params.size, self.params.camray_size,
                                                 clip.uri))  # fmt: skip
        return out
