"""Region tracks (``StudentConfig.region_tracks``): where the windows sample, what a region's code responds to, where
the student adds it, and that a checkpoint keeps the trained region modules."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from rgpt4d_core.model.checkpoint import load_student, save_student
from rgpt4d_core.model.option_scoring import option_log_likelihoods
from rgpt4d_core.model.presets import tiny
from rgpt4d_core.model.region_tracks import (
    DENSE_CHANNELS,
    RegionTrackConfig,
    RegionTrackEncoder,
    sample_windows,
    window_grid,
)
from rgpt4d_core.model.student import Student, answer_positions
from rgpt4d_core.text.prompts import build_inference_ids, build_training_example, r4d_user_text
from rgpt4d_core.text.region_refs import token_region_boxes
from rgpt4d_core.text.tokenizer import tiny_tokenizer
from rgpt4d_core.types import Region

REGIONS = (Region(2, (0.125, 0.125, 0.25, 0.25)), Region(5, (0.5, 0.5, 0.875, 0.75)))


def _tracked() -> Student:
    return Student(dataclasses.replace(tiny(), region_tracks=RegionTrackConfig(enabled=True)))


def test_window_grid_centres_a_square_window_on_the_box_and_keeps_a_minimum_side() -> None:
    boxes = torch.tensor([[0.4, 0.4, 0.6, 0.5], [0.5, 0.5, 0.52, 0.52]])
    grid = window_grid(boxes, samples=2, scale=2.0, min_side=0.25)  # [N, k, k, (x, y)] in [-1, 1]
    assert grid.shape == (2, 2, 2, 2)
    xy = (grid + 1) / 2  # back to [0, 1]
    # box 0: centre (0.5, 0.45), longer side 0.2 -> window side 0.4: cell centres at +-0.1 from the centre
    assert torch.allclose(xy[0, 0, 0], torch.tensor([0.4, 0.35]))
    assert torch.allclose(xy[0, 1, 1], torch.tensor([0.6, 0.55]))
    assert torch.allclose(xy[0, 0, 1], torch.tensor([0.6, 0.35]))  # row-major: x varies along the last axis
    # box 1: 0.02 * 2 < 0.25 -> the minimum side, cell centres at +-0.0625 from (0.51, 0.51)
    assert torch.allclose(xy[1, 0, 0], torch.tensor([0.4475, 0.4475]))


def test_sample_windows_reads_each_map_at_the_window_points_and_over_the_whole_frame() -> None:
    """On maps whose channels are the pixel centres' x and y (a linear ramp, which bilinear sampling reproduces
    exactly inside the frame) the samples are the window points themselves, for every frame."""
    side, frames = 16, 3
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    ramp = torch.stack(torch.broadcast_tensors(centres[None, :], centres[:, None]))  # [2, H, W]: x, y
    maps = ramp.expand(frames, 2, side, side)
    cfg = RegionTrackConfig(enabled=True, samples=2, window_scale=2.0, min_window=0.25)
    boxes = torch.tensor([[0.4, 0.4, 0.6, 0.5]])
    out = sample_windows(maps, boxes, cfg)
    assert out.shape == (1, frames, 2, 2, 2, 2)  # [N, T, window, k, k, C]
    local = (window_grid(boxes, 2, 2.0, 0.25) + 1) / 2  # [N, k, k, (x, y)]
    whole = (window_grid(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), 2, 1.0, 0.0) + 1) / 2
    assert torch.allclose(out[0, 2, 0], local[0], atol=1e-6)
    assert torch.allclose(out[0, 0, 1], whole[0], atol=1e-6)


def test_the_dense_head_predicts_each_frame_pair_at_the_window_points_only_when_built() -> None:
    torch.manual_seed(0)
    features = [torch.randn(5, 64, 8)]
    text = [torch.zeros(4, 16)]
    boxes = [torch.tensor([[0.1, 0.1, 0.3, 0.3], [float("nan")] * 4, [0.5, 0.5, 0.7, 0.8], [0.1, 0.1, 0.3, 0.3]])]
    with_head = RegionTrackEncoder(RegionTrackConfig(enabled=True, dense_head=True), vision_width=8, hidden=16)
    dense = with_head(text, boxes, features, [3]).dense
    assert len(dense) == 1 and dense[0].sample == 0
    assert dense[0].boxes.shape == (2, 4)  # the two distinct regions
    assert dense[0].pred.shape == (2, 4, 2, 4, 4, DENSE_CHANNELS)  # [U, T-1, window, k, k, channels]
    without = RegionTrackEncoder(RegionTrackConfig(enabled=True), vision_width=8, hidden=16)
    assert without(text, boxes, features, [3]).dense == [] and without.dense_head is None


def test_a_region_code_responds_to_change_inside_its_window() -> None:
    torch.manual_seed(0)
    enc = RegionTrackEncoder(RegionTrackConfig(enabled=True), vision_width=3, hidden=16)
    still = torch.rand(1, 16 * 16, 3).expand(8, -1, -1)  # a static 16 x 16 feature map, 8 frames
    moving = still.clone().unflatten(1, (16, 16))
    for t in range(8):  # a blob that walks right through region 0's window
        moving[t, 2:4, 1 + t : 3 + t] = 3.0
    moving = moving.flatten(1, 2)
    boxes = torch.tensor([[0.0625, 0.125, 0.1875, 0.25], [0.625, 0.625, 0.875, 0.875]])
    a, b = enc.track_codes(still, boxes), enc.track_codes(moving, boxes)
    assert a.shape == (2, 16)
    assert not torch.allclose(a[0], b[0], atol=1e-4)
    # region 1's window is far from the blob; only its whole-frame samples see it, so its code moves less
    assert (a[1] - b[1]).norm() < (a[0] - b[0]).norm()
    assert torch.isfinite(enc.track_codes(still[:1], boxes)).all()  # fewer frames than segments: still defined


@pytest.mark.parametrize("pairs", [False, True])
def test_motion_pairs_tell_which_way_the_content_moved(pairs: bool) -> None:
    """Two frames, a blob one cell to the right in the second (rightwards) or in the first (leftwards): with one
    segment the mean code and the mean absolute change are blind to the order; the pair codes are not."""
    torch.manual_seed(0)
    cfg = RegionTrackConfig(enabled=True, segments=1, motion_pairs=pairs)
    enc = RegionTrackEncoder(cfg, vision_width=3, hidden=16)
    frames = torch.rand(1, 16, 16, 3).expand(2, -1, -1, -1).clone()
    frames[0, 6:8, 6:8], frames[1, 6:8, 7:9] = 3.0, 3.0  # a blob that steps right
    rightwards, leftwards = frames.flatten(1, 2), frames.flip(0).flatten(1, 2)
    box = torch.tensor([[0.375, 0.375, 0.5625, 0.5625]])
    right, left = enc.track_codes(rightwards, box), enc.track_codes(leftwards, box)
    if pairs:
        assert (right - left).abs().max() > 1e-3
        assert torch.isfinite(enc.track_codes(rightwards[:1], box)).all()  # one frame: no pair, still defined
    else:
        torch.testing.assert_close(right, left)


def test_answer_positions_point_at_the_token_that_predicts_the_first_answer_token() -> None:
    tok = tiny_tokenizer()
    example = build_training_example(tok, "Does <obj_2> move?", "Yes")
    ids, labels = torch.tensor(example.input_ids), torch.tensor(example.labels)
    (position,) = answer_positions([ids], [labels])
    assert labels[position] == -100 and labels[position + 1] != -100
    prompt = torch.tensor(build_inference_ids(tok, "Does <obj_2> move?"))
    assert answer_positions([prompt], None) == [len(prompt) - 1]


def _prompt(tok):
    text = r4d_user_text(tok, "Does <obj_2> move relative to <obj_5>?", ["Yes", "No"], 2.0, with_som_image=False,
                         with_video=True)  # fmt: skip
    ids = build_inference_ids(tok, text)
    return torch.tensor(ids), token_region_boxes(tok, ids, REGIONS)


def test_student_adds_the_tracks_at_region_tokens_and_the_answer_query_and_trains_them() -> None:
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = _tracked()
    ids, boxes = _prompt(tok)
    video = torch.zeros(1, 8, 3, 64, 64)
    other = video.clone()
    other[0, 4:, :, 8:16, 8:16] = 1.0  # something appears in region 2's window halfway through
    ts = torch.arange(8, dtype=torch.float32)[None] * 0.25
    with torch.no_grad():
        a = model([ids], videos=video, timestamps_s=ts, token_boxes=[boxes], compute_latents=False).logits
    out = model([ids], videos=other, timestamps_s=ts, token_boxes=[boxes], compute_latents=False)
    assert not torch.allclose(a[0, -1], out.logits[0, -1])
    out.logits[0, -1].logsumexp(-1).backward()
    enc = model.region_track_encoder
    assert enc is not None and enc.query is not None
    for param in (enc.frame_code[1].weight, enc.out.weight, enc.query.weight):
        assert param.grad is not None and float(param.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="region_boxes"):
        dataclasses.replace(tiny(), region_boxes=False, region_tracks=RegionTrackConfig(enabled=True))


def test_a_checkpoint_keeps_the_trained_region_modules(tmp_path) -> None:
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = _tracked().eval()
    assert model.region_box_embedding is not None and model.region_track_encoder is not None
    with torch.no_grad():  # stand-ins for training: weights a fresh build would not have
        model.region_box_embedding.proj.weight.mul_(3.0)
        model.region_track_encoder.out.weight.mul_(3.0)
    save_student(model, tmp_path / "ckpt", tokenizer=tok)
    loaded = load_student(tmp_path / "ckpt").eval()
    ids, boxes = _prompt(tok)
    video = torch.rand(1, 8, 3, 64, 64) * 2 - 1
    ts = torch.arange(8, dtype=torch.float32)[None] * 0.25
    with torch.no_grad():
        a = model([ids], videos=video, timestamps_s=ts, token_boxes=[boxes], compute_latents=False).logits
        b = loaded([ids], videos=video, timestamps_s=ts, token_boxes=[boxes], compute_latents=False).logits
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("span", ["first", "answer"])
def test_scoring_and_generation_see_the_answer_query_as_training_does(span: str) -> None:
    """With ``query_span="answer"`` every answer token gets the query; option scoring and greedy generation
    (which continue from a KV cache) must give the answer the log-probability teacher forcing gives it, also for
    an option that names a region (its reference stays a plain token in both)."""
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = RegionTrackConfig(enabled=True, query_span=span)
    model = Student(dataclasses.replace(tiny(), region_tracks=cfg)).eval()
    ids, boxes = _prompt(tok)
    video = torch.rand(1, 8, 3, 64, 64) * 2 - 1
    ts = torch.arange(8, dtype=torch.float32)[None] * 0.25
    answers = ["It rotates clockwise", "It does not rotate", "to the left of <obj_5> and closer to the camera"]
    conts = [torch.tensor(tok.encode(a) + [tok.im_end_id]) for a in answers]
    (scores,) = option_log_likelihoods(model, [ids], [conts], video, ts, token_boxes=[boxes])
    for k, cont in enumerate(conts):
        full = torch.cat((ids, cont))
        labels = torch.cat((torch.full_like(ids, -100), cont))
        full_boxes = token_region_boxes(tok, full.tolist(), REGIONS)  # as training builds them: the answer's too
        with torch.no_grad():
            out = model([full], [labels], video, ts, token_boxes=[full_boxes], compute_latents=False)
        lp = torch.log_softmax(out.logits[0, :-1].double(), -1)
        target = out.labels[0, 1:]
        forced = float(lp[target != -100].gather(-1, target[target != -100, None]).sum())
        assert float(scores[k]) == pytest.approx(forced, abs=2e-4)
    generated = model.generate([ids], video, ts, token_boxes=[boxes], max_new_tokens=6).sequences[0]
    full = torch.cat((ids, generated))
    labels = torch.cat((torch.full_like(ids, -100), generated))
    full_boxes = torch.cat((boxes, torch.full((len(generated), 4), float("nan"))))
    with torch.no_grad():
        out = model([full], [labels], video, ts, token_boxes=[full_boxes], compute_latents=False)
    target = out.labels[0, 1:]
    assert torch.equal(out.logits[0, :-1][target != -100].argmax(-1), generated)
    # where the query goes: the answer position only, or it and every later position
    enc = model.region_track_encoder
    assert enc is not None
    text = [torch.zeros(len(full), int(model.llm.config.hidden_size))]
    tracked = enc(text, [full_boxes], [model.vision(video[0])], answer_positions([full], [labels]))
    touched = (tracked.text[0] != 0).any(dim=1)
    position = answer_positions([full], [labels])[0]
    named = torch.isfinite(full_boxes).all(dim=1)
    assert touched[named].all() and touched[position]
    assert bool(touched[position + 1 :].all()) == (span == "answer")
    assert bool(touched[position + 1 :].any()) == (span == "answer")
    assert (tracked.answer_query is not None) == (span == "answer")
    with pytest.raises(ValueError, match="query_span"):
        RegionTrackConfig(enabled=True, query_span="all")


def test_a_checkpoint_saved_before_the_query_span_existed_keeps_its_first_token_query(tmp_path) -> None:
    model = _tracked()
    save_student(model, tmp_path / "ckpt", tokenizer=tiny_tokenizer())
    config = tmp_path / "ckpt" / "config.json"
    top = json.loads(config.read_text())
    assert top["rgpt4d"]["region_tracks"]["query_span"] == "answer"
    del top["rgpt4d"]["region_tracks"]["query_span"]
    config.write_text(json.dumps(top))
    assert load_student(tmp_path / "ckpt").cfg.region_tracks.query_span == "first"
