"""Pretraining the tiny expert on the synthetic world (in-process, no Ray): examples, losses, and real learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rgpt4d_core.experts.l4p import build_model, get_preset
from rgpt4d_core.experts.l4p_training import (
    build_examples,
    clip_windows,
    evaluate,
    fit_in_process,
    flip_horizontally,
    pretrain_losses,
    to_tensors,
)
from rgpt4d_core.synth.writer import load_ground_truth
from tests.expert_testkit import small_world, write_world

PRESET = get_preset("l4p_tiny")


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict]]:
    videos = write_world(str(tmp_path_factory.mktemp("world")), small_world(5))
    train = [e for v in videos[:4] for e in build_examples(v, PRESET, 2, seed=0)]
    heldout = build_examples(videos[4], PRESET, 2, seed=0)
    return train, heldout


def test_windows_start_with_the_uniform_whole_video_clip() -> None:
    w = clip_windows(40, 16, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(w[0], np.linspace(0, 39, 16).round())
    assert all(len(x) == 16 and (np.diff(x) >= 0).all() and x[0] >= 0 and x[-1] <= 39 for x in w)
    with pytest.raises(ValueError, match="10 frames"):
        clip_windows(10, 16, 1, np.random.default_rng(0))


def test_examples_have_the_heads_layouts_and_the_oracle_targets(examples: tuple[list[dict], list[dict]]) -> None:
    train, _ = examples
    e = train[0]
    t, h, w = PRESET.heads.dense_size
    assert e["frames"].shape == (16, *PRESET.encoder.image_size, 3) and e["frames"].dtype == np.uint8
    assert e["depth"].shape == (t, h, w) and e["flow_2d_backward"].shape == (t, h, w, 2)
    assert e["dyn_mask"].shape == (t, h, w) and e["camray"].shape == (*PRESET.heads.camray_size, 6)
    gt = load_ground_truth(e["video"])
    assert 0.5 * gt.depth[gt.depth > 0].mean() < e["depth"][e["depth"] > 0].mean() < 2.0 * gt.depth[gt.depth > 0].mean()


def test_flip_is_an_involution_and_flips_flow_x() -> None:
    rng = np.random.default_rng(0)
    b = {"frames": rng.integers(0, 255, (1, 16, 8, 8, 3), dtype=np.uint8), "depth": rng.random((1, 16, 4, 4), np.float32),
         "flow_2d_backward": rng.random((1, 16, 4, 4, 2), np.float32), "dyn_mask": rng.random((1, 16, 4, 4), np.float32),
         "camray": rng.random((1, 16, 2, 2, 6), np.float32)}  # fmt: skip
    t = to_tensors(b)
    f = flip_horizontally(t)
    assert torch.equal(f["flow_2d_backward"][0, 3, 1, 0, 0], -t["flow_2d_backward"][0, 3, 1, 3, 0])
    back = flip_horizontally(f)
    for k in t:
        assert torch.equal(back[k], t[k]), k


def test_losses_are_zero_for_perfect_predictions(examples: tuple[list[dict], list[dict]]) -> None:
    b = to_tensors({k: np.stack([examples[0][0][k]]) for k in ("frames", "depth", "flow_2d_backward", "dyn_mask", "camray")})
    perfect = {"depth": b["depth"].clamp_min(1e-3), "flow_2d_backward": b["flow_2d_backward"], "camray": b["camray"],
               "dyn_mask": torch.where(b["dyn_mask"] > 0.5, 30.0, -30.0)}  # fmt: skip
    terms = pretrain_losses(perfect, b, __import__("rgpt4d_core.experts.l4p_training", fromlist=["LossWeights"]).LossWeights())
    assert terms["depth"] < 1e-6 and terms["flow"] < 1e-6 and terms["camray"] < 1e-6
    assert terms["dyn_mask"] < 0.2  # soft (area-coverage) labels at object borders keep BCE above 0


def test_short_pretraining_lowers_heldout_error_well_below_untrained(examples: tuple[list[dict], list[dict]]) -> None:
    torch.set_num_threads(1)
    train, heldout = examples
    model = build_model("l4p_tiny", seed=0)
    before = evaluate(model, heldout)
    losses = fit_in_process(model, train, steps=40, batch_size=2, lr=1e-3, seed=0)
    after = evaluate(model, heldout)
    assert np.mean([x["total"] for x in losses[-5:]]) < 0.5 * np.mean([x["total"] for x in losses[:5]])
    assert after["abs_rel"] < 0.5 * before["abs_rel"]
    assert after["flow_epe"] < 0.85 * before["flow_epe"]
