"""Training with ``supervised_logits_only``: the LM head runs only where the next token is supervised, and the
SFT loss, its per-sample values and every parameter gradient are those of the full-sequence computation."""

from __future__ import annotations

import pytest
import torch

from rgpt4d_core.losses import sft_loss
from rgpt4d_core.model.fusion import IGNORE_INDEX, compact_supervised
from rgpt4d_core.model.presets import tiny
from rgpt4d_core.model.student import Student


def test_compact_keeps_each_supervised_state_with_its_target_in_order() -> None:
    hidden = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6, 1)
    labels = torch.tensor([[-100, -100, 7, 8, -100, 9], [-100, -100, -100, -100, -100, -100]])
    compact, compact_labels = compact_supervised(hidden, labels)
    assert compact.shape == (2, 4, 1) and compact_labels.shape == (2, 4)
    # sample 0: positions 1, 2, 4 predict 7, 8, 9
    assert compact[0, :3, 0].tolist() == [1.0, 2.0, 4.0] and compact_labels[0].tolist() == [
        IGNORE_INDEX,
        7,
        8,
        9,
    ]
    assert compact_labels[1].eq(IGNORE_INDEX).all() and compact[1].eq(0).all()


def test_loss_and_gradients_equal_the_full_sequence() -> None:
    torch.manual_seed(0)
    student = Student(tiny())
    g = torch.Generator().manual_seed(1)
    ids = [torch.randint(40, 1000, (n,), generator=g) for n in (30, 22, 41)]
    ids = [torch.cat((torch.tensor([4]), x)) for x in ids]  # one <video> placeholder each
    labels = []
    for x, answer in zip(ids, (5, 0, 9), strict=True):
        lab = torch.full_like(x, IGNORE_INDEX)
        if answer:
            lab[-answer:] = x[-answer:]
        labels.append(lab)
    videos = torch.rand(3, 2, 3, 64, 64, generator=g) * 2 - 1
    ts = torch.tensor([[0.0, 0.5]] * 3)

    def run(compact: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        student.zero_grad(set_to_none=True)
        out = student(ids, labels, videos, ts, compute_latents=False, supervised_logits_only=compact)
        mean, per_sample, count = sft_loss(out.logits, out.labels)
        mean.backward()
        assert int(count) == 14
        grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
        return mean.detach(), per_sample.detach(), grads

    full_mean, full_per, full_grads = run(False)
    mean, per, grads = run(True)
    assert float(mean) == pytest.approx(float(full_mean), rel=1e-5)
    torch.testing.assert_close(per, full_per, rtol=1e-5, atol=1e-6)
    assert grads.keys() == full_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_right_padded_teacher_forcing_needs_no_mask() -> None:
    """Student.forward runs the right-padded batch with the causal kernel alone (no [B, 1, L, L] mask): the hidden
    state of every real token equals the explicitly masked computation's."""
    torch.manual_seed(0)
    student = Student(tiny()).eval()
    g = torch.Generator().manual_seed(2)
    ids = [torch.cat((torch.tensor([4]), torch.randint(40, 1000, (n,), generator=g))) for n in (12, 40, 25)]
    videos = torch.rand(3, 2, 3, 64, 64, generator=g) * 2 - 1
    ts = torch.tensor([[0.0, 0.5]] * 3)
    fused, _, _ = student._fuse(ids, None, videos, ts, None, None, None, "right")
    assert not bool(fused.attention_mask.all())  # the batch is padded
    assert student._teacher_forced_mask(fused) == (None, None)
    with torch.no_grad():
        masked = student.llm(
            inputs_embeds=fused.inputs_embeds,
            attention_mask=fused.attention_mask,
            position_ids=fused.position_ids,
            use_cache=False,
        ).logits
        unmasked = student(ids, None, videos, ts, compute_latents=False).logits
    real = fused.attention_mask.bool()
    torch.testing.assert_close(unmasked[real], masked[real], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unmasked[~real], masked[~real])  # padding rows differ, and nobody reads them
