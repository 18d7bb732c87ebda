"""``vision.conv_stem``: a small convolutional stem in place of the patch embedding, same token grid."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rgpt4d_core.model.presets import tiny
from rgpt4d_core.model.student import Student
from rgpt4d_core.model.vision import ConvStem, VisionTower


@pytest.mark.parametrize(("patch", "size"), [(2, 8), (4, 32), (8, 64), (16, 64)])
def test_the_stem_gives_the_patch_convolutions_grid(patch: int, size: int) -> None:
    stem = ConvStem(6, 32, patch)
    out = stem(torch.rand(3, 6, size, size))
    assert out.shape == (3, 32, size // patch, size // patch)
    assert stem.weight is stem.last.weight


@pytest.mark.parametrize("patch", [1, 6, 14])
def test_the_stem_refuses_patches_that_are_not_powers_of_two(patch: int) -> None:
    with pytest.raises(ValueError, match="power-of-two patch"):
        ConvStem(3, 32, patch)


def test_a_stem_tower_is_trainable_end_to_end_and_keeps_its_tokens() -> None:
    """The stem replaces SigLIP's patch embedding (its parameters train, none is left unused by DDP's rule) and
    the student still has 9 tokens per 64-px frame."""
    torch.manual_seed(0)
    cfg = tiny()
    vision = dataclasses.replace(cfg.vision, conv_stem=True, frozen=False)
    tower = VisionTower(vision)
    assert isinstance(tower.model.get_input_embeddings(), ConvStem)
    names = {n for n, p in tower.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("embeddings.patch_embedding.body") for n in names)
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    tower(pixels).sum().backward()
    stem_grads = [p.grad for n, p in tower.model.named_parameters() if "patch_embedding" in n]
    assert stem_grads and all(g is not None and bool(g.abs().sum() > 0) for g in stem_grads)
    student = Student(dataclasses.replace(cfg, vision=vision))
    assert student.tokens_per_frame == 9
