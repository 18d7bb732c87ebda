"""Vectorised NumPy ray casting of a :class:`~rgpt4d_core.synth.scenes.Scene` with exact per-pixel ground truth.

Every pixel centre ``(u, v)`` (column, row) casts the ray ``d_cam = K^-1 [u, v, 1]`` (camera z-component 1), so the
ray parameter of the nearest hit *is* the metric depth (camera ``z``). Surfaces: the ground plane ``z = 0``, a
backdrop wall ``y = backdrop_y`` and each object (box / sphere / cylinder, intersected analytically in its local
frame). Textures and the (baked) shading are functions of the surface point in the surface's own frame, so a
material point keeps its colour while it moves: brightness constancy holds exactly and the backward flow is the
exact displacement of the material point seen at each pixel, reprojected through the previous camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rgpt4d_core.synth.scenes import COLOURS, Scene, SceneObject

_EPS = 1e-6
_GROUND_RGB = np.array([0.46, 0.43, 0.37])
_BACKDROP_RGB = np.array([0.55, 0.66, 0.82])
_LIGHT_LOCAL = np.array([0.45, -0.55, 0.70]) / np.linalg.norm([0.45, -0.55, 0.70])


@dataclass(frozen=True)
class Rendering:
    """Frames and exact ground truth of one scene (``F`` frames of ``H x W`` pixels, ``K`` objects).

    Attributes:
        rgb: uint8 ``[F, H, W, 3]``.
        depth: float32 ``[F, H, W]`` metres (camera z of the visible surface point).
        flow_2d_backward: float32 ``[F, H, W, 2]`` pixels ``(du, dv)``: the visible point at ``(u, v)`` in frame
            ``t`` was at ``(u + du, v + dv)`` in frame ``t - 1``; frame 0 is zeros.
        dyn_mask: bool ``[F, H, W]``, pixels showing an object that moves in the world around that frame (it is not
            at rest over ``[t - dt, t + dt]``; an object starting at ``start_s`` counts from the frame before).
        instance: uint8 ``[F, H, W]``, ``0`` background, ``k + 1`` for object ``k``.
        intrinsics: float64 ``[3, 3]`` pixels.
        cam_to_world: float64 ``[F, 4, 4]``.
        timestamps_s: float64 ``[F]`` seconds.
        box_centers: float64 ``[F, K, 3]`` metres (world); box_sizes float64 ``[K, 3]`` metres (local x, y, z);
        box_yaws: float64 ``[F, K]`` rad; obj_moving: bool ``[F, K]``.
    """

    rgb: np.ndarray
    depth: np.ndarray
    flow_2d_backward: np.ndarray
    dyn_mask: np.ndarray
    instance: np.ndarray
    intrinsics: np.ndarray
    cam_to_world: np.ndarray
    timestamps_s: np.ndarray
    box_centers: np.ndarray
    box_sizes: np.ndarray
    box_yaws: np.ndarray
    obj_moving: np.ndarray


def pixel_rays(intrinsics: np.ndarray, height: int, width: int) -> np.ndarray:
    """float64 ``[H*W, 3]`` camera-frame rays ``K^-1 [u, v, 1]`` of every pixel centre (row-major)."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    return np.stack([(u.ravel() - cx) / fx, (v.ravel() - cy) / fy, np.ones(height * width)], axis=-1)


def plucker_rays(intrinsics: np.ndarray, cam_to_world: np.ndarray, height: int, width: int) -> np.ndarray:
    """Plücker camera rays: float32 ``[F, H, W, 6]`` = (unit world direction, moment ``origin x direction``)."""
    d = np.einsum("fij,nj->fni", cam_to_world[:, :3, :3], pixel_rays(intrinsics, height, width))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(cam_to_world[:, None, :3, 3], d.shape)
    out = np.concatenate([d, np.cross(o, d)], axis=-1)
    return out.reshape(cam_to_world.shape[0], height, width, 6).astype(np.float32)


def _rot_z(points: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Rotate ``[..., 3]`` points about z by ``yaw`` (broadcast over leading dims, e.g. ``[F, 1]``)."""
    c, s = np.cos(yaw), np.sin(yaw)
    x, y = points[..., 0], points[..., 1]
    return np.stack([c * x - s * y, s * x + c * y, points[..., 2]], axis=-1)


def _hit_box(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> np.ndarray:
    inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
    t1, t2 = (-half - o) * inv, (half - o) * inv
    tnear, tfar = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
    return np.where((tnear <= tfar) & (tnear > _EPS), tnear, np.inf)


def _hit_sphere(o: np.ndarray, d: np.ndarray, r: float) -> np.ndarray:
    a = np.einsum("...i,...i->...", d, d)
    b = np.einsum("...i,...i->...", np.broadcast_to(o, d.shape), d)
    c = np.einsum("...i,...i->...", o, o) - r * r
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _hit_cylinder(o: np.ndarray, d: np.ndarray, r: float, hz: float) -> np.ndarray:
    ox, oy, oz = o[..., 0], o[..., 1], o[..., 2]
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    disc = b * b - a * (ox * ox + oy * oy - r * r)
    ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / np.where(a < 1e-12, 1e-12, a)
    side = (disc >= 0) & (ts > _EPS) & (np.abs(oz + ts * dz) <= hz)
    cap_z = np.where(oz > 0, hz, -hz)
    tc = (cap_z - oz) / np.where(np.abs(dz) < 1e-12, 1e-12, dz)
    cx, cy = ox + tc * dx, oy + tc * dy
    cap = (np.abs(oz) > hz) & (tc > _EPS) & (cx * cx + cy * cy <= r * r)
    return np.minimum(np.where(side, ts, np.inf), np.where(cap, tc, np.inf))


def _local_normal(obj: SceneObject, p: np.ndarray) -> np.ndarray:
    """Outward unit normals ``[M, 3]`` at local surface points ``p [M, 3]``."""
    half = np.asarray(obj.size) / 2.0
    if obj.kind == "box":
        q = np.abs(p) / half
        axis = q.argmax(-1)
        n = np.zeros_like(p)
        n[np.arange(len(p)), axis] = np.sign(p[np.arange(len(p)), axis])
        return n
    if obj.kind == "sphere":
        return p / half[0]
    rho = np.hypot(p[:, 0], p[:, 1])
    cap = np.abs(p[:, 2]) / half[2] > rho / half[0]
    side = np.stack([p[:, 0], p[:, 1], np.zeros(len(p))], -1) / np.maximum(rho, 1e-9)[:, None]
    caps = np.stack([np.zeros(len(p)), np.zeros(len(p)), np.sign(p[:, 2])], -1)
    return np.where(cap[:, None], caps, side)


def _texture(kind: str, p: np.ndarray, scale: float) -> np.ndarray:
    """Smooth pattern in ``[-1, 1]`` of local points ``p [M, 3]`` (metres); period ``scale``."""
    k = 2.0 * np.pi / scale
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    if kind == "stripes":
        return np.sin(k * (x + 0.7 * y + 0.4 * z))
    if kind == "checker":
        sx, sy, sz = np.sin(k * x + 0.3), np.sin(k * y + 0.7), np.sin(k * z + 1.1)
        return np.clip((sx * sy + sy * sz + sz * sx) / 1.5, -1.0, 1.0)
    if kind == "rings":
        return np.sin(k * np.sqrt((x - 0.6 * scale) ** 2 + (y + 0.3 * scale) ** 2 + z * z))
    return np.zeros(len(p))


def _object_colour(obj: SceneObject, p_local: np.ndarray) -> np.ndarray:
    shade = 0.55 + 0.45 * np.clip(_local_normal(obj, p_local) @ _LIGHT_LOCAL, 0.0, 1.0)
    pattern = 0.72 + 0.28 * _texture(obj.texture, p_local, obj.texture_scale)
    return np.asarray(COLOURS[obj.colour])[None, :] * (shade * pattern)[:, None]


def _ground_colour(p: np.ndarray, scale: float) -> np.ndarray:
    k = 2.0 * np.pi / scale
    fade = np.clip((12.0 - p[:, 1]) / 6.0, 0.15, 1.0)  # a function of the world point: constant over time
    pattern = np.sin(k * p[:, 0]) * np.sin(k * p[:, 1]) + 0.4 * np.sin(0.37 * k * (p[:, 0] + 2.0 * p[:, 1]))
    return _GROUND_RGB[None, :] * (0.8 + 0.2 * fade * pattern)[:, None]


def _backdrop_colour(p: np.ndarray) -> np.ndarray:
    pattern = np.sin(2.0 * np.pi * p[:, 0] / 2.5) * np.cos(2.0 * np.pi * p[:, 2] / 1.7)
    return _BACKDROP_RGB[None, :] * (0.85 + 0.15 * pattern)[:, None]


def project(points: np.ndarray, cam_to_world: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pixel coordinates float64 ``[F, M, 2]`` of world points ``[F, M, 3]`` seen by cameras ``[F, 4, 4]``."""
    rel = points - cam_to_world[:, None, :3, 3]
    pc = np.matmul(rel, cam_to_world[:, :3, :3])  # row-vector form of R^T (X - o)
    z = np.where(pc[..., 2] > 1e-9, pc[..., 2], 1e-9)
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    return np.stack([fx * pc[..., 0] / z + cx, fy * pc[..., 1] / z + cy], -1)


def _pixel_window(obj: SceneObject, centres: np.ndarray, c2w: np.ndarray, k_mat: np.ndarray, h: int, w: int) -> np.ndarray | None:
    """Flat pixel indices that can see ``obj`` in any of the frames ``c2w [Fc, 4, 4]`` (object at ``centres [Fc, 3]``).

    The projected corners of a cube around the object's bounding sphere bound its image (all corners in front of
    the camera); ``None`` (= every pixel) when a corner is behind or too close to the camera.
    """
    r = float(np.linalg.norm(obj.size)) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    corners = centres[:, None, :] + r * signs[None]  # [Fc, 8, 3]
    pc = np.matmul(corners - c2w[:, None, :3, 3], c2w[:, :3, :3])
    if np.any(pc[..., 2] < 0.05):
        return None
    u = k_mat[0, 0] * pc[..., 0] / pc[..., 2] + k_mat[0, 2]
    v = k_mat[1, 1] * pc[..., 1] / pc[..., 2] + k_mat[1, 2]
    u0, u1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 1, w - 1)
    v0, v1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 1, h - 1)
    if u0 > u1 or v0 > v1:
        return np.zeros(0, dtype=np.int64)
    rows, cols = np.meshgrid(np.arange(v0, v1 + 1), np.arange(u0, u1 + 1), indexing="ij")
    return (rows * w + cols).ravel()


def _hit_distances(
    scene: Scene,
    poses: list[tuple[np.ndarray, np.ndarray]],
    sl: slice,
    c2w: np.ndarray,
    d: np.ndarray,
    k_mat: np.ndarray,
    h: int,
    w: int,
) -> np.ndarray:
    """Where each pixel ray of the frames ``sl`` meets every surface: float64 ``[S, Fc, N]`` ray parameters ``t``
    (S = ground, backdrop, then each object; ``inf`` where the ray misses it).

    ``d`` float64 [Fc, N, 3] world directions of the rays ``K^-1 [u, v, 1]`` (camera z = 1, so ``t`` is the depth in
    metres); ``c2w`` float64 [Fc, 4, 4] camera-to-world of those frames; ``poses`` each object's (centre [T, 3] in
    metres, yaw [T] in radians) over all frames.
    """
    fc, n_pix = d.shape[0], d.shape[1]
    origin = c2w[:, None, :3, 3]  # [Fc, 1, 3]
    cands = [
        np.where(d[..., 2] < -1e-9, -origin[..., 2] / np.where(d[..., 2] < -1e-9, d[..., 2], -1.0), np.inf),
        np.where(d[..., 1] > 1e-9, (scene.backdrop_y - origin[..., 1]) / np.where(d[..., 1] > 1e-9, d[..., 1], 1.0), np.inf),
    ]
    for obj, (centre, yaw) in zip(scene.objects, poses, strict=True):
        window = _pixel_window(obj, centre[sl], c2w, k_mat, h, w)
        t_obj = np.full((fc, n_pix), np.inf)
        if window is not None and window.size == 0:
            cands.append(t_obj)  # off-screen in every frame of the chunk
            continue
        d_win = d if window is None else d[:, window]
        yaw_c = yaw[sl][:, None]
        o_l = _rot_z(origin - centre[sl][:, None, :], -yaw_c)
        d_l = _rot_z(d_win, -yaw_c)
        half = np.asarray(obj.size) / 2.0
        if obj.kind == "box":
            t_win = _hit_box(o_l, d_l, half)
        elif obj.kind == "sphere":
            t_win = _hit_sphere(o_l, d_l, float(half[0]))
        else:
            t_win = _hit_cylinder(o_l, d_l, float(half[0]), float(half[2]))
        if window is None:
            t_obj = t_win
        else:
            t_obj[:, window] = t_win
        cands.append(t_obj)
    return np.stack(cands)


def render_scene(scene: Scene, frames_per_chunk: int = 8) -> Rendering:
    """Render every frame of ``scene`` with exact depth, backward flow, masks and boxes (see :class:`Rendering`)."""
    cam = scene.camera
    h, w, n_pix = cam.height_px, cam.width, cam.height_px * cam.width
    times = scene.timestamps_s
    dt = 1.0 / scene.fps
    k_mat = cam.intrinsics()
    rays_cam = pixel_rays(k_mat, h, w)
    c2w_all, c2w_prev_all = cam.cam_to_world(times), cam.cam_to_world(times - dt)
    poses = [o.pose(times) for o in scene.objects]
    poses_prev = [o.pose(times - dt) for o in scene.objects]
    moving = np.array([[o.moves and t + dt > o.start_s + 1e-9 for o in scene.objects] for t in times], dtype=bool)
    moving = moving.reshape(len(times), len(scene.objects))
    n_f = len(times)
    rgb = np.zeros((n_f, n_pix, 3), np.float64)
    depth = np.zeros((n_f, n_pix), np.float32)
    flow = np.zeros((n_f, n_pix, 2), np.float32)
    inst = np.zeros((n_f, n_pix), np.uint8)
    u_pix = np.stack([rays_cam[:, 0] * k_mat[0, 0] + k_mat[0, 2], rays_cam[:, 1] * k_mat[1, 1] + k_mat[1, 2]], -1)
    for f0 in range(0, n_f, frames_per_chunk):
        sl = slice(f0, min(n_f, f0 + frames_per_chunk))
        c2w = c2w_all[sl]
        fc = c2w.shape[0]
        origin = c2w[:, None, :3, 3]  # [Fc, 1, 3]
        d = np.matmul(rays_cam[None], c2w[:, :3, :3].transpose(0, 2, 1))  # [Fc, N, 3] world directions
        t_all = _hit_distances(scene, poses, sl, c2w, d, k_mat, h, w)  # [S, Fc, N]
        winner = t_all.argmin(0)
        t_hit = np.take_along_axis(t_all, winner[None], 0)[0]
        t_hit = np.where(np.isfinite(t_hit), t_hit, 0.0)
        hit = origin + t_hit[..., None] * d  # [Fc, N, 3] world
        fidx = np.broadcast_to(np.arange(fc)[:, None], winner.shape)
        col = np.zeros((fc, n_pix, 3))
        prev = hit.copy()  # static background: the material point did not move
        sel = winner == 0
        col[sel] = _ground_colour(hit[sel], scene.ground_texture_scale)
        sel = winner == 1
        col[sel] = _backdrop_colour(hit[sel])
        for k, obj in enumerate(scene.objects):
            sel = winner == k + 2
            if not sel.any():
                continue
            fi = fidx[sel] + f0
            centre, yaw = poses[k]
            p_local = _rot_z(hit[sel] - centre[fi], -yaw[fi])
            col[sel] = _object_colour(obj, p_local)
            cp, yp = poses_prev[k]
            prev[sel] = _rot_z(p_local, yp[fi]) + cp[fi]
        flow[sl] = (project(prev, c2w_prev_all[sl], k_mat) - u_pix[None]).astype(np.float32)
        rgb[sl], depth[sl] = col, t_hit.astype(np.float32)
        inst[sl] = np.where(winner >= 2, winner - 1, 0).astype(np.uint8)
    flow[0] = 0.0
    inst_img = inst.reshape(n_f, h, w)
    dyn = np.zeros_like(inst_img, dtype=bool)
    for k in range(len(scene.objects)):
        dyn |= (inst_img == k + 1) & moving[:, k][:, None, None]
    n_obj = len(scene.objects)
    return Rendering(
        rgb=np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(n_f, h, w, 3),
        depth=depth.reshape(n_f, h, w),
        flow_2d_backward=flow.reshape(n_f, h, w, 2),
        dyn_mask=dyn,
        instance=inst_img,
        intrinsics=k_mat,
        cam_to_world=c2w_all,
        timestamps_s=times,
        box_centers=np.stack([p[0] for p in poses], 1) if n_obj else np.zeros((n_f, 0, 3)),
        box_sizes=np.array([o.size for o in scene.objects], dtype=np.float64).reshape(n_obj, 3),
        box_yaws=np.stack([p[1] for p in poses], 1) if n_obj else np.zeros((n_f, 0)),
        obj_moving=moving,
    )
