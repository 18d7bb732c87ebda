"""scripts/visual_probe.py: the variants change exactly the pixels and inputs they name."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import recipe_probe  # noqa: E402
import visual_probe  # noqa: E402

from rgpt4d_core.types import Region, VQAItem  # noqa: E402


def _item(answer: str = "b") -> VQAItem:
    return VQAItem(id="q0", video="v.mp4", question="Where does <obj_2> go?", options=("c", "a", "b"),
                   answer=answer, task="T", regions=(Region(1, (0.0, 0.0, 0.25, 0.25)),
                                                     Region(2, (0.5, 0.5, 0.75, 1.0))))  # fmt: skip


def _media(flags: list[str], frames: np.ndarray, answer: str) -> dict:
    v, _ = visual_probe.parse_variant(flags)
    world = recipe_probe.World(frames, np.zeros(frames.shape[:2], np.float32), {"v.mp4": 0})
    return visual_probe.variant_media(v, world, frames.shape[2], [_item(answer)], v.no_video)


def test_the_answer_block_sits_on_the_referenced_object_in_the_answers_colour() -> None:
    flags = ["--block", "4", "--block-at", "object", "--no-marks"]
    assert visual_probe.parse_variant([*flags, "--", "--steps", "3"])[1] == ["--steps", "3"]
    out = _media(flags, np.zeros((1, 2, 32, 32, 3), np.uint8), "b")
    som = ((out["images"][0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    colour = visual_probe.BLOCK_COLOURS[1]  # "b" is second among the sorted options a, b, c
    r, c = visual_probe.block_origin(_item(), 32, 4, "object")
    assert (r, c) == (22, 18)  # centre of <obj_2>'s box (x 0.625, y 0.75) minus half the block
    assert (som[r : r + 4, c : c + 4] == colour).all()
    assert som.sum() == 16 * int(colour.sum())  # nothing else painted, no marks
    assert float(out["videos"].max()) == -1.0  # the video is untouched without --block-on-video


def test_no_video_drops_the_video_and_block_on_video_paints_every_frame() -> None:
    frames = np.zeros((1, 3, 32, 32, 3), np.uint8)
    assert set(_media(["--no-video"], frames, "b")) == {"images"}
    out = _media(["--block", "4", "--block-on-video"], frames, "c")
    painted = (out["videos"][0] > -1).flatten(1).any(1)  # per frame: any pixel changed
    assert painted.all() and len(painted) == 3


def test_region_tokens_add_the_boxed_som_tokens_to_each_obj_token_only() -> None:
    import torch
    from region_tokens import RegionContext, box_weights

    w = box_weights((0.3, 0.5, 0.5, 0.6), size=64, patch=8, merge=3).view(3, 3)
    assert torch.allclose(w[1, :2], torch.tensor([0.375, 0.625])) and float(w.sum()) == 1.0
    ctx = RegionContext({1: 101, 2: 102}, size=64, patch=8, merge=3)
    ctx.regions = [_item().regions]
    ids = torch.tensor([5, 102, 6, 101])
    text = torch.zeros(4, 2)
    som = torch.arange(18, dtype=torch.float32).view(9, 2)  # token (r, c) holds [2(3r+c), 2(3r+c)+1]
    out = ctx.add_region_features([ids], [text], [[som]])[0]
    assert out[[0, 2]].abs().sum() == 0  # plain text untouched
    assert torch.allclose(out[3], som[0])  # <obj_1>: box (0, 0, .25, .25) lies in token (0, 0)
    assert torch.allclose(out[1], (box_weights((0.5, 0.5, 0.75, 1.0), 64, 8, 3)[:, None] * som).sum(0))


def test_a_fading_block_is_shown_in_training_batches_until_its_step_and_never_when_scoring() -> None:
    v, probe_flags = visual_probe.parse_variant(
        ["--block", "4", "--block-at", "object", "--no-marks", "--block-fade-steps", "2", "--", "--world", "unused", "--size", "32"])  # fmt: skip
    args = recipe_probe.parse_args(probe_flags)
    world = recipe_probe.World(np.zeros((1, 2, 32, 32, 3), np.uint8), np.zeros((1, 2), np.float32), {"v.mp4": 0})
    probe = visual_probe.variant_probe(v)(args, world)

    def painted() -> bool:
        return bool((probe.media([_item()])["videos"] > -1).any() or (probe.media([_item()])["images"] > -1).any())

    probe.model.train()
    assert painted()  # step 0: probability 1
    probe.model.eval()
    assert not painted()  # scoring never shows it
    probe.model.train()
    probe.steps_done = 2
    assert not painted()  # faded out
