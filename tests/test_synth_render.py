"""Geometry of the synthetic renderer is checked, not assumed: flow warping, exact depth, dynamic masks, rays."""

from __future__ import annotations

import numpy as np
import pytest

from rgpt4d_core.synth.render import Rendering, plucker_rays, render_scene
from rgpt4d_core.synth.scenes import Camera, Scene, SceneObject


def _camera(width: int = 96, height: int = 80, pitch: float = 0.2, vel: tuple[float, float] = (0.0, 0.0), yaw_rate: float = 0.0) -> Camera:
    return Camera(width=width, height_px=height, fov_deg=60.0, height=1.5, pitch=pitch, vel=vel, yaw_rate=yaw_rate)


def _obj(kind: str, pos: tuple[float, float], size: tuple[float, float, float], **motion: object) -> SceneObject:
    return SceneObject(kind=kind, size=size, colour="red", texture="checker", texture_scale=0.4, pos0=pos, yaw0=0.3, **motion)  # type: ignore[arg-type]


def _scene(camera: Camera, objects: tuple[SceneObject, ...], fps: float = 10.0, frames: int = 6) -> Scene:
    return Scene(scene_id="t", index=0, seed=0, fps=fps, num_frames=frames, camera=camera, objects=objects)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``img [H, W, C]`` at float pixel coordinates (clamped); independent of the renderer's code."""
    h, w = img.shape[:2]
    x0 = np.clip(np.floor(x).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 2)
    ax, ay = (x - x0)[..., None], (y - y0)[..., None]
    f = img.astype(np.float64)
    top = f[y0, x0] * (1 - ax) + f[y0, x0 + 1] * ax
    bot = f[y0 + 1, x0] * (1 - ax) + f[y0 + 1, x0 + 1] * ax
    return top * (1 - ay) + bot * ay


def _warp_errors(r: Rendering, t: int) -> tuple[float, float, int]:
    """Mean |I_t - I_{t-1}(p + flow)| and |I_t - I_{t-1}(p)| on moving pixels visible in both frames, and their count."""
    h, w = r.depth.shape[1:]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    fx, fy = u + r.flow_2d_backward[t, ..., 0], v + r.flow_2d_backward[t, ..., 1]
    inside = (fx >= 0) & (fx <= w - 1) & (fy >= 0) & (fy <= h - 1)
    # not occluded: the instance around the target in t-1 (all four bilinear neighbours) equals the one at p in t
    x0 = np.clip(np.floor(fx).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(fy).astype(int), 0, h - 2)
    prev = r.instance[t - 1]
    same = np.ones_like(inside)
    for dy in (0, 1):
        for dx in (0, 1):
            same &= prev[y0 + dy, x0 + dx] == r.instance[t]
    valid = inside & same & (np.hypot(*np.moveaxis(r.flow_2d_backward[t], -1, 0)) > 0.5)  # pixels that move
    warped = _bilinear(r.rgb[t - 1], fx, fy)
    cur = r.rgb[t].astype(np.float64)
    err = np.abs(warped - cur).mean(-1)[valid].mean()
    base = np.abs(r.rgb[t - 1].astype(np.float64) - cur).mean(-1)[valid].mean()
    return float(err), float(base), int(valid.sum())


def test_backward_flow_warps_previous_frame_onto_current() -> None:
    cam = _camera(vel=(0.35, 0.2), yaw_rate=0.06)
    objs = (
        _obj("box", (-0.8, 4.0), (0.9, 0.7, 1.0), vel=(0.5, 0.1), yaw_rate=0.8),
        _obj("sphere", (1.0, 5.0), (1.0, 1.0, 1.0), yaw_rate=-1.2),
        _obj("cylinder", (0.2, 6.5), (0.8, 0.8, 1.3), vel=(-0.3, -0.2), acc=(-0.3, 0.0)),
    )
    r = render_scene(_scene(cam, objs, fps=5.0))
    assert np.all(r.flow_2d_backward[0] == 0)
    for t in range(1, r.rgb.shape[0]):
        err, base, n = _warp_errors(r, t)
        assert n > 0.5 * r.depth[t].size
        assert err < 2.5, f"frame {t}: warp error {err:.2f}/255"
        assert err < 0.25 * base, f"frame {t}: flow ({err:.2f}) barely beats no flow ({base:.2f})"


def test_depth_at_image_centre_equals_known_distance() -> None:
    # odd-sized image: the centre pixel's ray is the optical axis (horizontal, pitch 0, at height 1.5 m)
    cam = Camera(width=65, height_px=65, fov_deg=60.0, height=1.5, pitch=0.0)
    sphere = SceneObject("sphere", (3.0, 3.0, 3.0), "blue", "plain", 0.5, (0.0, 8.0), 0.0)  # centre (0, 8, 1.5)
    r = render_scene(_scene(cam, (sphere,), frames=1))
    assert r.depth[0, 32, 32] == pytest.approx(8.0 - 1.5, abs=1e-5)
    assert r.instance[0, 32, 32] == 1
    box = SceneObject("box", (1.0, 1.0, 3.0), "blue", "plain", 0.5, (0.0, 6.0), 0.0)  # front face at y = 5.5
    r = render_scene(_scene(cam, (box,), frames=1))
    face = r.instance[0] == 1
    assert face.sum() > 20
    np.testing.assert_allclose(r.depth[0][face], 5.5, atol=1e-5)  # a fronto-parallel face: one depth everywhere


def test_ground_depth_matches_plane_geometry() -> None:
    cam = _camera(pitch=0.25)
    r = render_scene(_scene(cam, (), frames=1))
    k, c2w = r.intrinsics, r.cam_to_world[0]
    v, u = 70, 40  # a pixel below the horizon: ground
    d = c2w[:3, :3] @ np.array([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], 1.0])
    expected = -c2w[2, 3] / d[2]  # ray parameter where z = 0, camera z of that point (d has camera z = 1)
    assert r.depth[0, v, u] == pytest.approx(expected, rel=1e-5)


def test_dynamic_mask_empty_for_static_world_and_set_on_moving_object() -> None:
    still = (_obj("box", (-0.8, 4.0), (0.9, 0.7, 1.0)), _obj("sphere", (1.0, 5.0), (1.0, 1.0, 1.0)))
    r = render_scene(_scene(_camera(), still))
    assert not r.dyn_mask.any()
    assert np.abs(r.flow_2d_backward).max() < 1e-3
    r = render_scene(_scene(_camera(vel=(0.3, 0.0)), still))  # camera moves: flow, but nothing moves in the world
    assert not r.dyn_mask.any() and np.abs(r.flow_2d_backward[1:]).max() > 0.5
    moving = (still[0], _obj("sphere", (1.0, 5.0), (1.0, 1.0, 1.0), vel=(-0.6, 0.0)))
    r = render_scene(_scene(_camera(), moving))
    assert r.dyn_mask.any()
    assert np.array_equal(r.dyn_mask, r.instance == 2)  # exactly the moving sphere's pixels
    late = (_obj("sphere", (1.0, 5.0), (1.0, 1.0, 1.0), vel=(-0.6, 0.0), start_s=0.35),)
    r = render_scene(_scene(_camera(), late))
    assert not r.dyn_mask[:3].any() and r.dyn_mask[3:].any()  # at rest until it starts (frame 3 = 0.3 s + dt)


def test_boxes_follow_motion_and_plucker_rays_are_unit_and_orthogonal() -> None:
    obj = _obj("box", (0.0, 5.0), (1.0, 1.0, 1.0), vel=(0.5, 0.0), acc=(0.2, 0.0), yaw_rate=1.0)
    r = render_scene(_scene(_camera(), (obj,), fps=10.0, frames=11))
    t = r.timestamps_s
    np.testing.assert_allclose(r.box_centers[:, 0, 0], 0.5 * t + 0.1 * t**2, atol=1e-12)
    np.testing.assert_allclose(r.box_yaws[:, 0], 0.3 + t, atol=1e-12)
    rays = plucker_rays(r.intrinsics, r.cam_to_world, *r.depth.shape[1:])
    assert rays.shape == (*r.depth.shape, 6)
    np.testing.assert_allclose(np.linalg.norm(rays[..., :3], axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose((rays[..., :3] * rays[..., 3:]).sum(-1), 0.0, atol=1e-5)
