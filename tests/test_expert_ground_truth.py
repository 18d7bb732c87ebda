"""Oracle and classical experts against the synthetic world's exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from rgpt4d_core.experts.classical import ClassicalExpert, ClassicalParams, homography_residual
from rgpt4d_core.experts.oracle import (
    OracleExpert,
    OracleParams,
    chained_flow,
    geometric_flow,
    resize_depth,
    resize_flow,
    targets_from_ground_truth,
)
from rgpt4d_core.synth.writer import load_ground_truth
from rgpt4d_core.types import Clip
from tests.expert_testkit import decoded_clip, rendering, small_world, write_world


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_world(str(tmp_path_factory.mktemp("world")), small_world(4))


def test_geometric_flow_reproduces_the_renderers_consecutive_flow() -> None:
    r = rendering(1, frames=16)
    for t in (3, 9, 15):
        np.testing.assert_allclose(geometric_flow(r, t, t - 1), r.flow_2d_backward[t], atol=1e-3)


def test_strided_flow_geometry_agrees_with_chaining_consecutive_flows() -> None:
    r = rendering(2, frames=16)
    geo, chained = geometric_flow(r, 12, 8), chained_flow(r.flow_2d_backward, 12, 8)
    assert np.median(np.linalg.norm(geo - chained, axis=-1)) < 1e-2


def test_resizing_keeps_units() -> None:
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0] = 4.0  # 4 px right at 64 px = 2 px at 32 px
    np.testing.assert_allclose(resize_flow(flow, (32, 32))[..., 0], 2.0)
    depth = np.full((64, 64), 5.0, np.float32)
    depth[:, :33] = 0.0  # invalid pixels do not pull the mean towards 0
    out = resize_depth(depth, (32, 32))
    assert out[:, 17:].min() == pytest.approx(5.0) and out[:, :16].max() == 0.0


def test_oracle_matches_ground_truth_of_the_sampled_frames(videos: list[str]) -> None:
    clip = decoded_clip(videos[0])
    gt = load_ground_truth(videos[0])
    size = gt.depth.shape[1:]
    out = OracleExpert(OracleParams(size=size)).encode([clip])[0]  # type: ignore[arg-type]
    assert out.depth is not None and out.dyn_mask is not None and out.flow_2d_backward is not None
    np.testing.assert_allclose(out.depth, gt.depth[clip.frame_indices], rtol=1e-6)
    np.testing.assert_array_equal(out.dyn_mask > 0.5, gt.dyn_mask[clip.frame_indices])
    j = int(np.argmax(np.diff(clip.frame_indices) == 1)) + 1  # a pair of adjacent source frames
    if clip.frame_indices[j] - clip.frame_indices[j - 1] == 1:
        np.testing.assert_allclose(out.flow_2d_backward[j], gt.flow_2d_backward[clip.frame_indices[j]], atol=1e-5)


def test_oracle_flow_spans_the_sampled_gap_not_one_source_frame(videos: list[str]) -> None:
    gt = load_ground_truth(videos[2])
    stride = 3
    idx = np.arange(0, gt.num_frames, stride)
    strided = targets_from_ground_truth(gt, idx, (64, 64), None).flow_2d_backward
    one_step = np.stack([gt.flow_2d_backward[i] for i in idx])
    assert strided is not None
    moving = np.linalg.norm(one_step, axis=-1) > 0.05
    ratio = np.linalg.norm(strided, axis=-1)[moving].mean() / np.linalg.norm(one_step, axis=-1)[moving].mean()
    assert 0.7 * stride < ratio < 1.3 * stride  # `stride` source steps apart: about `stride` times the one-step flow


def test_oracle_without_ground_truth_names_the_video(tmp_path: pytest.TempPathFactory) -> None:
    clip = Clip(np.zeros((16, 8, 8, 3), np.uint8), np.arange(16.0), np.arange(16), 1.0, 16, f"{tmp_path}/videos/x.mp4")
    with pytest.raises(FileNotFoundError, match="x"):
        OracleExpert(OracleParams()).encode([clip])


def test_classical_flow_beats_zero_flow_and_its_mask_finds_moving_objects(videos: list[str]) -> None:
    oracle, classical = OracleExpert(OracleParams()), ClassicalExpert(ClassicalParams())
    epe, zero, p_dyn, p_static = [], [], [], []
    for v in videos:
        clip = decoded_clip(v)
        gt, est = oracle.encode([clip])[0], classical.encode([clip])[0]
        assert gt.flow_2d_backward is not None and est.flow_2d_backward is not None
        assert gt.dyn_mask is not None and est.dyn_mask is not None
        epe.append(np.linalg.norm(est.flow_2d_backward[1:] - gt.flow_2d_backward[1:], axis=-1).mean())
        zero.append(np.linalg.norm(gt.flow_2d_backward[1:], axis=-1).mean())
        moving = gt.dyn_mask[1:] > 0.5
        p_dyn.append(est.dyn_mask[1:][moving].mean() if moving.any() else np.nan)
        p_static.append(est.dyn_mask[1:][~moving].mean())
    assert np.mean(epe) < 0.5 * np.mean(zero)
    assert np.nanmean(p_dyn) > 2.0 * np.mean(p_static)


def test_homography_explains_pure_camera_rotation() -> None:
    h, w = 32, 32
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    flow = np.stack([0.05 * xs + 1.0, -0.03 * ys], -1).astype(np.float32)  # an affine (camera-like) field
    assert homography_residual(flow, 2).max() < 1e-2
