"""scripts/teacher_mask_errors.py: the camera-only flow it subtracts is the exact flow of every still point, and
not that of moving objects; the camera and object classifications read the ground truth right."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import teacher_mask_errors as probe  # noqa: E402

from rgpt4d_core.experts.oracle import geometric_flow, resize_flow  # noqa: E402
from tests.expert_testkit import rendering  # noqa: E402


def test_camera_only_flow_is_the_flow_of_still_points_and_not_of_moving_ones() -> None:
    r = rendering(2)  # a scene whose camera translates and turns
    assert probe.camera_moves(r)  # type: ignore[arg-type]
    t, s = 12, 8
    size = r.depth.shape[1:]
    camera = probe.camera_flow(r, t, s, size)  # type: ignore[arg-type]
    exact = geometric_flow(r, t, s)
    still, moving = ~r.dyn_mask[t] & (r.depth[t] > 0), r.dyn_mask[t]
    assert float(np.abs(exact[still]).max()) > 0.5  # the camera's motion moves the still points
    np.testing.assert_allclose(camera[still], exact[still], atol=1e-3)
    assert moving.sum() > 0
    assert float(np.median(np.linalg.norm(camera[moving] - exact[moving], axis=-1))) > 0.1
    half = probe.camera_flow(r, t, s, (size[0] // 2, size[1] // 2))  # type: ignore[arg-type]
    np.testing.assert_allclose(half, resize_flow(camera, (size[0] // 2, size[1] // 2)), atol=1e-5)


def test_static_camera_and_object_kinds_come_from_the_ground_truth() -> None:
    r = rendering(0)
    assert not probe.camera_moves(r)  # type: ignore[arg-type]
    boxes = np.zeros((4, 3, 7))
    boxes[:, 1, 0] = np.arange(4) * 0.1  # object 1 translates along x
    boxes[:, 2, 6] = np.arange(4) * 0.2  # object 2 only turns
    gt = type("GT", (), {"boxes": boxes})()
    assert [probe.object_kind(gt, k) for k in range(3)] == ["still object", "translates", "rotates only"]  # type: ignore[arg-type]
    instance = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    np.testing.assert_array_equal(probe.nearest(instance, (2, 2)), [[[5, 7], [13, 15]]])
