"""Pretraining the tiny expert on the synthetic world (in-process, no Ray): examples, losses, and real learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rgpt4d_core.config import load, to_yaml
from rgpt4d_core.experts.l4p import build_model, get_preset
from rgpt4d_core.experts.l4p_training import (
    LossWeights,
    build_examples,
    clip_windows,
    evaluate,
    fit_in_process,
    flip_horizontally,
    init_output_priors,
    pretrain_losses,
    soft_dice_loss,
    to_tensors,
    zero_flow_epe,
)
from rgpt4d_core.experts.pretrain_config import PretrainExpertJob
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
    terms = pretrain_losses(perfect, b, LossWeights())
    assert terms["depth"] < 1e-6 and terms["flow"] < 1e-6 and terms["camray"] < 1e-6
    # soft (area-coverage) labels at object borders keep BCE above 0: logits of +-30 cost 30 * min(y, 1 - y) a pixel
    soft = b["dyn_mask"].double()
    assert float(terms["dyn_mask"]) == pytest.approx(float((30.0 * torch.minimum(soft, 1 - soft)).mean()), rel=1e-3, abs=1e-6)


def test_flow_terms_over_all_and_over_moving_pixels() -> None:
    """Two moving pixels (3-4-5 px and 0-1-1 px) among 4x4x2 static ones, prediction = no motion."""
    flow = torch.zeros(1, 3, 4, 4, 2)  # [B, T, h, w, 2]; frame 0 has no backward flow and is ignored
    flow[0, 1, 0, 0] = torch.tensor([3.0, 4.0])
    flow[0, 2, 1, 1] = torch.tensor([0.0, 1.0])
    flow[0, 0, 2, 2] = torch.tensor([9.0, 9.0])  # frame 0: ignored
    target = {"depth": torch.ones(1, 3, 4, 4), "flow_2d_backward": flow, "dyn_mask": torch.zeros(1, 3, 4, 4),
              "camray": torch.zeros(1, 3, 2, 2, 6)}  # fmt: skip
    pred = {"depth": torch.ones(1, 3, 4, 4), "flow_2d_backward": torch.zeros_like(flow),
            "dyn_mask": torch.full((1, 3, 4, 4), -30.0), "camray": torch.zeros(1, 3, 2, 2, 6)}  # fmt: skip
    epe = pretrain_losses(pred, target, LossWeights(flow=1.0, flow_moving=2.0, moving_px=0.5, camray=0.0))
    assert epe["flow"] == pytest.approx(6.0 / 32) and epe["flow_moving"] == pytest.approx(3.0)
    assert epe["total"] == pytest.approx(6.0 / 32 + 2 * 3.0 + float(epe["dyn_mask"]))
    sq = pretrain_losses(pred, target, LossWeights(flow_moving=1.0, moving_px=0.5, flow_error="squared"))
    assert sq["flow"] == pytest.approx(26.0 / 32) and sq["flow_moving"] == pytest.approx(13.0)
    assert pretrain_losses(pred, target, LossWeights(moving_px=5.0))["flow_moving"] == 0.0  # no moving pixel
    with pytest.raises(ValueError, match="flow_error"):
        pretrain_losses(pred, target, LossWeights(flow_error="l1"))


def test_dyn_mask_pos_weight_multiplies_the_moving_pixels_cross_entropy() -> None:
    """One moving pixel of 8, predicted at probability 0.5 everywhere: each pixel costs ln 2, a moving one ``w`` times."""
    mask = torch.zeros(1, 2, 2, 2)
    mask[0, 1, 0, 0] = 1.0
    target = {"depth": torch.ones(1, 2, 2, 2), "flow_2d_backward": torch.zeros(1, 2, 2, 2, 2), "dyn_mask": mask,
              "camray": torch.zeros(1, 2, 1, 1, 6)}  # fmt: skip
    pred = {**target, "dyn_mask": torch.zeros(1, 2, 2, 2)}
    for w in (1.0, 5.0):
        term = pretrain_losses(pred, target, LossWeights(dyn_mask_pos_weight=w))["dyn_mask"]
        assert float(term) == pytest.approx((7 + w) * np.log(2) / 8)


def test_dyn_mask_dice_scores_overlap_per_clip_and_is_off_by_default() -> None:
    """Clip 0: one moving pixel of 8 at probability 0.5 everywhere: 1 - (2 * 0.5 + 1) / (4 + 1 + 1) = 2/3.
    Clip 1: the mask predicted exactly (logits +-30): 0. The term joins the total only with its weight."""
    mask = torch.zeros(2, 2, 2, 2)
    mask[:, 1, 0, 0] = 1.0
    logits = torch.zeros(2, 2, 2, 2)
    logits[1] = mask[1] * 60.0 - 30.0
    assert float(soft_dice_loss(logits[:1], mask[:1])) == pytest.approx(2.0 / 3.0)
    assert float(soft_dice_loss(logits[1:], mask[1:])) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_dice_loss(logits, mask)) == pytest.approx(1.0 / 3.0)
    target = {"depth": torch.ones(2, 2, 2, 2), "flow_2d_backward": torch.zeros(2, 2, 2, 2, 2), "dyn_mask": mask,
              "camray": torch.zeros(2, 2, 1, 1, 6)}  # fmt: skip
    pred = {**target, "dyn_mask": logits}
    off = pretrain_losses(pred, target, LossWeights())
    on = pretrain_losses(pred, target, LossWeights(dyn_mask_dice=3.0))
    assert float(off["dyn_mask_dice"]) == pytest.approx(1.0 / 3.0)
    assert float(off["total"]) == float(off["dyn_mask"])  # depth, flow, rays exact: only the BCE is left
    assert float(on["total"]) == pytest.approx(float(off["total"]) + 3.0 / 3.0)


def test_dyn_mask_dice_is_left_out_of_the_job_yaml_while_off() -> None:
    """Off, the term leaves the job's YAML (and so every existing teacher's reuse key) as it was before it existed."""
    off = to_yaml(PretrainExpertJob())
    assert "dyn_mask_dice" not in off and "dyn_mask_pos_weight" in off
    on = to_yaml(load(PretrainExpertJob, [], ["loss.dyn_mask_dice=2"]))
    assert "dyn_mask_dice: 2.0" in on


def test_moving_pixel_epe_of_a_no_motion_model_equals_the_zero_motion_baseline(
    examples: tuple[list[dict], list[dict]],
) -> None:
    _, heldout = examples
    model = build_model("l4p_tiny", seed=0)
    init_output_priors(model)  # flow head outputs exactly zero
    metrics = evaluate(model, heldout, moving_px=0.25)
    assert metrics["flow_epe"] == pytest.approx(zero_flow_epe(heldout), rel=1e-5)
    assert metrics["flow_epe_moving"] == pytest.approx(zero_flow_epe(heldout, moving_px=0.25), rel=1e-5)
    assert metrics["flow_epe_moving"] > metrics["flow_epe"]  # most pixels are still


#: optimiser steps of the short run. 60 since the light l4p_tiny heads (one shared dense head of width 16, head2 before
#: the last upsampling; 3.5x cheaper per step than the previous three width-24 full-resolution heads, which took 40):
#: after 40 steps they start lower (loss 0.99 vs 1.21: smoother initial outputs) and end at 0.53 of it (0.52 vs 0.48),
#: held-out depth and rays already better than the previous heads'; after 60 the loss is at 0.44 of its start.
SHORT_STEPS = 60


@pytest.fixture(scope="module")
def short_run(examples: tuple[list[dict], list[dict]]) -> dict[str, dict[str, float]]:
    """Held-out metrics of l4p_tiny untrained, with its output priors only, and after ``SHORT_STEPS`` steps (seeded)."""
    torch.set_num_threads(1)
    train, heldout = examples
    model = build_model("l4p_tiny", seed=0)
    untrained = evaluate(model, heldout)
    init_output_priors(model)  # what fit_in_process starts from: the bar is the priors, not a random head
    prior = evaluate(model, heldout)
    losses = fit_in_process(model, train, steps=SHORT_STEPS, batch_size=2, lr=1e-3, seed=0)
    after = evaluate(model, heldout)
    return {"untrained": untrained, "prior": prior, "after": after,
            "loss": {"first": float(np.mean([x["total"] for x in losses[:5]])),
                     "last": float(np.mean([x["total"] for x in losses[-5:]]))}}  # fmt: skip


def test_short_pretraining_beats_the_output_priors_on_depth_and_camera_rays(short_run: dict) -> None:
    r = short_run
    assert r["loss"]["last"] < 0.5 * r["loss"]["first"]
    assert r["after"]["abs_rel"] < 0.5 * r["prior"]["abs_rel"]  # measured: 0.585 -> 0.144
    assert r["after"]["camray_l1"] < 0.6 * r["prior"]["camray_l1"]  # measured: 0.343 -> 0.103
    # flow never gets worse than the "no motion" prior it starts from
    assert r["after"]["flow_epe"] <= 1.01 * r["prior"]["flow_epe"]


@pytest.mark.xfail(strict=True, reason="known (issue 'Does P4D help?'): the tiny expert's flow head stays at the "
                   "zero-motion prior (held-out moving-pixel EPE 0.510 after vs 0.508 before 60 steps)")
def test_short_pretraining_learns_flow_beyond_the_zero_motion_prior(short_run: dict) -> None:
    # The earlier form of this check compared against the model *before* init_output_priors, which the prior alone
    # passes (0.513 -> 0.384). Strict: when flow starts to learn this test fails and the marker must go.
    assert short_run["after"]["flow_epe_moving"] < 0.85 * short_run["prior"]["flow_epe_moving"]
