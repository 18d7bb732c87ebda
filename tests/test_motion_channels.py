"""``vision.motion_channels``: the tower reads each video frame's difference from the previous sampled frame."""

from __future__ import annotations

import dataclasses

import torch

from rgpt4d_core.model.presets import tiny
from rgpt4d_core.model.student import Student
from rgpt4d_core.model.vision import VisionConfig, VisionTower, frame_differences


def _student(motion: bool) -> Student:
    torch.manual_seed(0)
    cfg = tiny()
    return Student(dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, motion_channels=motion)))


def test_frame_differences_are_zero_for_the_first_frame_and_exact_after() -> None:
    videos = torch.randn(2, 4, 3, 8, 8)
    diff = frame_differences(videos)
    assert diff.shape == videos.shape
    assert torch.equal(diff[:, 0], torch.zeros_like(diff[:, 0]))
    assert torch.equal(diff[:, 1:], videos[:, 1:] - videos[:, :-1])


def test_the_patch_embedding_gets_six_channels_and_round_trips_through_the_hf_config() -> None:
    cfg = dataclasses.replace(tiny().vision, motion_channels=True)
    hf = cfg.to_hf()
    assert hf.num_channels == 6 and cfg.in_channels == 6
    assert VisionConfig.from_hf(hf, select_layer=cfg.select_layer, frozen=cfg.frozen) == cfg
    assert VisionConfig.from_hf(tiny().vision.to_hf()).motion_channels is False
    tower = VisionTower(cfg)
    convs = [m for m in tower.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs] == [6]


def test_a_frame_token_depends_on_the_previous_frame_only_with_motion_channels() -> None:
    """Two videos with the same last frame and different earlier frames: the last frame's tokens differ with
    motion channels (the difference is read) and are identical without (frames are encoded independently)."""
    torch.manual_seed(1)
    a = torch.rand(1, 3, 3, 64, 64) * 2 - 1
    b = a.clone()
    b[:, 1] = torch.rand(3, 64, 64) * 2 - 1
    stamps = torch.tensor([0.0, 0.5, 1.0])
    for motion in (False, True):
        student = _student(motion).eval()
        with torch.no_grad():
            tok_a = student.encode_frames(a[0], stamps, frame_differences(a)[0] if motion else None)
            tok_b = student.encode_frames(b[0], stamps, frame_differences(b)[0] if motion else None)
        same_last = torch.equal(tok_a[2], tok_b[2])
        assert same_last is (not motion)
        assert torch.equal(tok_a[0], tok_b[0])  # frame 0: same pixels, zero difference in both


def test_images_read_zero_motion() -> None:
    student = _student(True).eval()
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        implicit = student.encode_frames(image, None)
        explicit = student.encode_frames(image, None, torch.zeros_like(image))
    assert torch.equal(implicit, explicit)


def test_the_student_forward_feeds_the_differences_of_its_videos() -> None:
    """``Student.forward`` computes the differences itself: with the same weights, a forward whose config does not
    ask for them (the tower then reads zeros) gives other logits, and a video of one repeated frame gives the
    same logits either way (its differences are zero)."""
    student = _student(True).eval()
    videos = torch.rand(1, 3, 3, 64, 64) * 2 - 1
    still = videos[:, :1].expand(-1, 3, -1, -1, -1).contiguous()
    stamps = torch.tensor([[0.0, 0.5, 1.0]])
    ids = [torch.tensor([5, student.cfg.tokens.video_token_id, 6])]

    def logits(clip: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return student(ids, videos=clip, timestamps_s=stamps, compute_latents=False).logits

    with_motion = logits(videos), logits(still)
    student.cfg = dataclasses.replace(student.cfg, vision=dataclasses.replace(student.cfg.vision, motion_channels=False))
    without = logits(videos), logits(still)
    assert not torch.allclose(with_motion[0], without[0])
    assert torch.equal(with_motion[1], without[1])
