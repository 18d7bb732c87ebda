"""``vision.kind="conv3d"``: the small video-CNN tower keeps the per-frame token contract, sees time within a clip and
never across clips, and a frozen one gets no gradient."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rgpt4d_core.model.conv_video_tower import ConvVideoTower
from rgpt4d_core.model.presets import tiny
from rgpt4d_core.model.student import Student
from rgpt4d_core.model.vision import VisionConfig, build_vision_tower

CFG = VisionConfig(image_size=32, patch_size=8, hidden_size=16, num_layers=2, frozen=False, kind="conv3d")


def _clips(n: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n * frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_tokens_per_frame_on_the_patch_grid() -> None:
    tower = build_vision_tower(CFG)
    assert isinstance(tower, ConvVideoTower) and tower.grid == 4
    assert tower(_clips(2, 5), frames_per_clip=5).shape == (10, 16, 16)


def test_a_frame_sees_its_neighbours_in_time_and_no_other_clip() -> None:
    torch.manual_seed(0)
    tower = ConvVideoTower(CFG).eval()
    pixels = _clips(2, 12)
    changed = pixels.clone()
    changed[8] = -changed[8]  # frame 8 of clip 0
    with torch.no_grad():
        a, b = tower(pixels, 12), tower(changed, 12)
    moved = (a - b).abs().amax(dim=(1, 2))
    assert moved[12:].max() == 0, "a frame of one clip changed the features of another clip"
    # 4 convolutions of 3 frames (3 stages + 1) reach frames 4..11; GroupNorm's statistics span the whole clip, so
    # the frames beyond move too, but less
    assert moved[4:12].min() > 0 and moved[:4].max() < moved[4:12].min()


def test_frozen_tower_has_no_trainable_parameters_and_stays_in_eval() -> None:
    tower = ConvVideoTower(dataclasses.replace(CFG, frozen=True)).train()
    assert not tower.training and not any(p.requires_grad for p in tower.parameters())


def test_bad_clip_grouping_and_patch_are_refused() -> None:
    with pytest.raises(ValueError, match="do not split into clips of 4"):
        ConvVideoTower(CFG)(_clips(1, 5), frames_per_clip=4)
    with pytest.raises(ValueError, match="power-of-two patch_size"):
        ConvVideoTower(dataclasses.replace(CFG, patch_size=6, image_size=36))


def test_student_with_a_video_tower_trains_end_to_end() -> None:
    torch.manual_seed(0)
    base = tiny()
    cfg = dataclasses.replace(base, vision=dataclasses.replace(base.vision, kind="conv3d", hidden_size=16, frozen=False))
    student = Student(cfg)
    ids = [torch.tensor([5, 4, 6, 7]), torch.tensor([5, 4, 8])]
    labels = [torch.tensor([-100, -100, 6, 7]), torch.tensor([-100, -100, 8])]
    videos = torch.rand(2, 4, 3, 64, 64) * 2 - 1
    out = student(ids, labels, videos=videos, timestamps_s=torch.arange(4.0).repeat(2, 1))
    out.logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in student.vision.parameters())
