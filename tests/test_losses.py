"""P4D losses against hand computation on small tensors; masks, frozen-head gradients, presets, absent terms."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from rgpt4d_core.experts.dpt_heads import DenseHeads
from rgpt4d_core.experts.l4p import FrozenHeads, get_preset
from rgpt4d_core.losses import (
    LOSS_PRESETS,
    P4DLossConfig,
    dense_task_loss,
    latent_loss,
    loss_preset,
    p4d_loss,
    sft_loss,
)
from rgpt4d_core.text.prompts import IGNORE_INDEX

B, K, TL, HL, WL, C = 2, 2, 2, 3, 3, 4  # latent layout [B, K, T', h', w', C']


class ToyHeads(nn.Module):
    """Frozen stand-in for an expert's dense heads: per token Linear(C -> 10), outputs on the latent grid."""

    def __init__(
        self, provides: tuple[str, ...] = ("depth", "flow_2d_backward", "dyn_mask", "camray")
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(C, 10)
        self.provides = provides
        self.seen_batch: list[int] = []
        self.requires_grad_(False)

    def forward(self, latents: Tensor) -> dict[str, Tensor]:
        self.seen_batch.append(latents.shape[0])
        x = self.proj(latents.mean(dim=1))  # [B, T', h', w', 10]
        out = {
            "depth": torch.exp(x[..., 0]),
            "flow_2d_backward": x[..., 1:3],
            "dyn_mask": x[..., 3],
            "camray": x[..., 4:10],
        }
        return {k: v for k, v in out.items() if k in self.provides}


def _targets() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "latents": torch.randn(B, K, TL, HL, WL, C, generator=g),
        "depth": torch.rand(B, TL, HL, WL, generator=g) * 5 + 0.5,
        "flow_2d_backward": torch.randn(B, TL, HL, WL, 2, generator=g),
        "dyn_mask": torch.rand(B, TL, HL, WL, generator=g),
        "camray": torch.randn(B, TL, HL, WL, 6, generator=g),
    }


def _lm_batch() -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(B, 5, 7)
    labels = torch.full((B, 5), IGNORE_INDEX)
    labels[0, 3:] = torch.tensor([2, 4])
    labels[1, 4] = 6
    return logits, labels


def test_sft_matches_hand_computation() -> None:
    logits, labels = _lm_batch()
    mean, per_sample, count = sft_loss(logits, labels)

    def ce(row: int, pos: int, tok: int) -> float:  # -log softmax(logits[row, pos])[tok], by hand
        z = logits[row, pos].tolist()
        return -(z[tok] - math.log(sum(math.exp(v) for v in z)))

    s0 = [ce(0, 2, 2), ce(0, 3, 4)]  # labels at 3, 4 are predicted from positions 2, 3
    s1 = [ce(1, 3, 6)]
    assert int(count) == 3
    assert per_sample.tolist() == pytest.approx([sum(s0) / 2, s1[0]], rel=1e-5)
    assert float(mean) == pytest.approx((sum(s0) + sum(s1)) / 3, rel=1e-5)


def test_sft_without_supervised_tokens_is_zero_and_connected() -> None:
    logits = torch.randn(2, 4, 5, requires_grad=True)
    mean, per_sample, count = sft_loss(logits, torch.full((2, 4), IGNORE_INDEX))
    assert float(mean.detach()) == 0.0 and int(count) == 0 and per_sample.tolist() == [0.0, 0.0]
    mean.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


def test_latent_loss_hand_values() -> None:
    teacher = torch.zeros(1, 2, 1, 1, 1, 2)
    student = teacher.clone()
    student[0, 0] += 0.5  # hook 0: |d| = 0.5 everywhere
    student[0, 1] += 2.0  # hook 1: |d| = 2
    # Smooth-L1 beta=1: 0.5*0.25 = 0.125 and 2 - 0.5 = 1.5; summed over hooks
    assert latent_loss(student, teacher, "smooth_l1", 1.0).tolist() == pytest.approx([1.625])
    assert latent_loss(student, teacher, "mse", 1.0).tolist() == pytest.approx([4.25])
    # beta=0.1: 0.5 - 0.05 and 2 - 0.05
    assert latent_loss(student, teacher, "smooth_l1", 0.1).tolist() == pytest.approx([0.45 + 1.95])
    with pytest.raises(ValueError, match="L_LD"):
        latent_loss(student, teacher[:, :1], "mse", 1.0)


def test_dense_task_losses_hand_values() -> None:
    cfg = P4DLossConfig(ed_kind="smooth_l1", smooth_l1_beta=1.0)
    target = torch.full((1, 2, 2, 2), 2.0)
    # depth in log space: pred = e * target -> |log diff| = 1 -> Smooth-L1(beta=1) = 0.5
    assert dense_task_loss("depth", target * math.e, target, cfg).tolist() == pytest.approx([0.5], rel=1e-5)
    # the same absolute error in metres is scale-dependent; in log space it is not
    assert dense_task_loss("depth", target * 10 * math.e, target * 10, cfg).tolist() == pytest.approx(
        [0.5], rel=1e-5
    )
    # flow: frame 0 is skipped (a huge error there changes nothing); frame 1 error 0.5 -> 0.125
    flow_t = torch.zeros(1, 2, 2, 2, 2)
    flow_p = flow_t.clone()
    flow_p[:, 0] = 100.0
    flow_p[:, 1] = 0.5
    assert dense_task_loss("flow_2d_backward", flow_p, flow_t, cfg).tolist() == pytest.approx([0.125])
    # dyn_mask BCE on logits: logit 0 vs any probability -> log 2; logit 0 vs target 1 -> log 2 too
    probs = torch.tensor([[[[0.0, 1.0], [0.3, 0.9]]]])
    assert dense_task_loss("dyn_mask", torch.zeros_like(probs), probs, cfg).tolist() == pytest.approx(
        [math.log(2)]
    )
    # sigmoid regression: sigmoid(0) = 0.5 vs 1.0 -> Smooth-L1 0.125
    reg = P4DLossConfig(dyn_mask_mode="sigmoid_regression")
    assert dense_task_loss(
        "dyn_mask", torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), reg
    ).tolist() == pytest.approx([0.125])
    # camray with MSE: error 1 -> 1
    mse = P4DLossConfig(ed_kind="mse")
    assert dense_task_loss("camray", torch.ones(1, 1, 1, 1, 6), torch.zeros(1, 1, 1, 1, 6), mse).tolist() == [
        1.0
    ]
    with pytest.raises(ValueError, match=r"L_ED\[camray\]"):
        dense_task_loss("camray", torch.ones(1, 1, 1, 1, 6), torch.zeros(1, 1, 1, 1, 3), mse)


def test_total_is_sft_plus_weighted_terms_and_matches_parts() -> None:
    cfg = loss_preset("paper")
    logits, labels = _lm_batch()
    targets = _targets()
    heads = ToyHeads()
    student = torch.randn(B, K, TL, HL, WL, C)
    out = p4d_loss(cfg, logits, labels, student_latents=student, targets=targets, heads=heads)
    assert out.absent == {}
    preds = heads(student)
    expect = {
        "ld": latent_loss(student, targets["latents"], "smooth_l1", 1.0).mean(),
        **{f"ed/{t}": dense_task_loss(t, preds[t], targets[t], cfg).mean() for t in preds},
    }
    for name, value in expect.items():
        assert float(out.terms[name]) == pytest.approx(float(value), rel=1e-5), name
    weights = {
        "ld": 0.5,
        "ed/depth": 0.1,
        "ed/flow_2d_backward": 0.01,
        "ed/dyn_mask": 0.005,
        "ed/camray": 0.005,
    }
    by_hand = float(sft_loss(logits, labels)[0]) + sum(w * float(expect[n]) for n, w in weights.items())
    assert float(out.total) == pytest.approx(by_hand, rel=1e-5)
    logged = out.log_dict()
    assert logged["loss/weighted/ld"] == pytest.approx(0.5 * float(expect["ld"]), rel=1e-5)
    assert set(logged) >= {"loss/total", "loss/sft", "loss/ed/depth", "loss/weighted/ed/camray"}


def test_masks_zero_the_right_samples_and_heads_see_only_participants() -> None:
    cfg = loss_preset("paper")
    logits, labels = _lm_batch()
    targets = _targets()
    heads = ToyHeads()
    student = torch.randn(B, K, TL, HL, WL, C, requires_grad=True)
    # sample 1 is image-only: only L_SFT for it
    out = p4d_loss(
        cfg,
        logits,
        labels,
        student_latents=student,
        targets=targets,
        heads=heads,
        sample_mask=torch.tensor([True, False]),
    )
    assert heads.seen_batch == [1]
    for name in ("ld", "ed/depth", "ed/flow_2d_backward", "ed/dyn_mask", "ed/camray"):
        per_sample = out.per_sample[name].detach()
        assert float(per_sample[1]) == 0.0 and float(per_sample[0]) > 0.0, name
        assert float(out.terms[name].detach()) == pytest.approx(float(per_sample[0])), name
        assert int(out.counts[name]) == 1
    assert float(out.per_sample["sft"][1]) > 0.0  # SFT still applies to the image-only sample
    out.total.backward()
    assert student.grad is not None
    assert float(student.grad[1].abs().sum()) == 0.0 and float(student.grad[0].abs().sum()) > 0.0
    # a per-target mask: sample 0 lacks depth only
    only_depth_missing = p4d_loss(
        cfg,
        logits,
        labels,
        student_latents=student.detach(),
        targets=targets,
        heads=ToyHeads(),
        target_masks={"depth": torch.tensor([False, True])},
    )
    assert float(only_depth_missing.per_sample["ed/depth"][0]) == 0.0
    assert float(only_depth_missing.per_sample["ed/camray"][0]) > 0.0
    assert int(only_depth_missing.counts["ed/depth"]) == 1


def test_no_participating_sample_gives_connected_zero_terms() -> None:
    logits, labels = _lm_batch()
    student = torch.randn(B, K, TL, HL, WL, C, requires_grad=True)
    heads = ToyHeads()
    out = p4d_loss(
        loss_preset("paper"),
        logits,
        labels,
        student_latents=student,
        targets=_targets(),
        heads=heads,
        sample_mask=torch.zeros(B, dtype=torch.bool),
    )
    assert heads.seen_batch == []
    assert all(float(out.terms[n].detach()) == 0.0 for n in out.terms if n != "sft")
    assert float(out.total.detach()) == pytest.approx(float(out.sft.detach()))
    out.total.backward()  # distillation terms stay in the graph (DDP needs every trainable param used)
    assert student.grad is not None and float(student.grad.abs().sum()) == 0.0


def test_gradients_flow_through_frozen_heads_into_student_only() -> None:
    heads = ToyHeads()
    decoder = nn.Linear(C, C)  # stands in for D_4DP producing the student latents
    hidden = torch.randn(B, K, TL, HL, WL, C)
    student = decoder(hidden)
    logits, labels = _lm_batch()
    cfg = P4DLossConfig(
        ld_weight=0.0, depth_weight=1.0, flow_weight=0.0, dyn_mask_weight=0.0, log_zero_weight_terms=False
    )
    out = p4d_loss(cfg, logits, labels, student_latents=student, targets=_targets(), heads=heads)
    assert set(out.weighted) == {"ed/depth"}
    out.total.backward()
    assert decoder.weight.grad is not None and float(decoder.weight.grad.abs().sum()) > 0.0
    assert all(p.grad is None for p in heads.parameters())


def test_presets_have_the_papers_and_codes_weights() -> None:
    paper, code, sft = LOSS_PRESETS["paper"], LOSS_PRESETS["released_code"], LOSS_PRESETS["sft_only"]
    assert (paper.ld_weight, paper.ld_kind, paper.ed_kind) == (0.5, "smooth_l1", "smooth_l1")
    assert [paper.ed_weight(t) for t in ("depth", "flow_2d_backward", "dyn_mask", "camray")] == pytest.approx(
        [0.1, 0.01, 0.005, 0.005]
    )
    assert (code.ld_weight, code.ld_kind) == (0.01, "mse")
    assert [code.ed_weight(t) for t in ("depth", "flow_2d_backward", "dyn_mask", "camray")] == [
        0.1,
        0.001,
        0.01,
        0.0,
    ]
    assert not sft.distills and paper.distills
    assert loss_preset("paper", smooth_l1_beta=0.5).smooth_l1_beta == 0.5
    with pytest.raises(KeyError, match="known"):
        loss_preset("nope")
    tuned = paper.with_weights(ld=0.0, flow_2d_backward=0.2, camray=None)
    assert (tuned.ld_weight, tuned.flow_weight, tuned.camray_weight) == (0.0, 0.2, paper.camray_weight)
    with pytest.raises(KeyError, match="flow"):
        paper.with_weights(flow=1.0)
    with pytest.raises(ValueError, match="ld_kind"):
        P4DLossConfig(ld_kind="l1")
    with pytest.raises(ValueError, match="depth_weight"):
        P4DLossConfig(depth_weight=-1.0)


def test_sft_only_preset_total_is_sft_and_everything_else_absent() -> None:
    logits, labels = _lm_batch()
    heads = ToyHeads()
    out = p4d_loss(
        loss_preset("sft_only"),
        logits,
        labels,
        student_latents=torch.randn(B, K, TL, HL, WL, C),
        targets=_targets(),
        heads=heads,
    )
    assert float(out.total) == float(out.sft)
    assert set(out.absent) == {"ld", "ed/depth", "ed/flow_2d_backward", "ed/dyn_mask", "ed/camray"}
    assert heads.seen_batch == []


def test_missing_targets_and_predictions_are_reported_absent_not_zero() -> None:
    logits, labels = _lm_batch()
    targets = _targets()
    del targets["camray"], targets["latents"]
    cfg = loss_preset("paper")
    student = torch.randn(B, K, TL, HL, WL, C)
    out = p4d_loss(
        cfg,
        logits,
        labels,
        student_latents=student,
        targets=targets,
        heads=ToyHeads(provides=("depth", "dyn_mask")),
    )
    assert out.absent == {
        "ld": "target not provided",
        "ed/camray": "target not provided",
        "ed/flow_2d_backward": "heads do not predict it",
    }
    assert set(out.terms) == {"sft", "ed/depth", "ed/dyn_mask"}
    no_heads = p4d_loss(cfg, logits, labels, student_latents=student, targets=_targets())
    assert no_heads.absent["ed/depth"] == "no heads module" and "ld" in no_heads.terms
    no_student = p4d_loss(cfg, logits, labels, targets=_targets(), heads=ToyHeads())
    assert set(no_student.terms) == {"sft"} and no_student.absent["ld"] == "no student latents"


def test_zero_weight_terms_are_logged_detached() -> None:
    logits, labels = _lm_batch()
    student = torch.randn(B, K, TL, HL, WL, C, requires_grad=True)
    out = p4d_loss(
        loss_preset("released_code"),
        logits,
        labels,
        student_latents=student,
        targets=_targets(),
        heads=ToyHeads(),
    )
    assert "ed/camray" in out.terms and "ed/camray" not in out.weighted  # camray weight 0 in the code preset
    assert not out.terms["ed/camray"].requires_grad
    assert out.terms["ed/depth"].requires_grad


@pytest.fixture
def one_thread() -> Iterator[None]:
    """2 shared cores: thread oversubscription makes the 3-D convolutions of the DPT heads crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_with_the_l4p_tiny_heads_student_equal_to_teacher_gives_zero_ed(one_thread: None) -> None:
    """Boundary check with the expert's real (tiny) DPT heads, frozen, in the contract layout."""
    torch.manual_seed(0)
    heads = FrozenHeads(DenseHeads(get_preset("l4p_tiny").heads))
    teacher_latents = torch.randn(2, 4, 8, 8, 8, 96)
    with torch.no_grad():
        teacher = dict(heads(teacher_latents))
    teacher["dyn_mask"] = torch.sigmoid(teacher["dyn_mask"])  # the expert stores probabilities
    teacher["latents"] = teacher_latents
    cfg = loss_preset("paper", dyn_mask_mode="sigmoid_regression")
    logits, labels = _lm_batch()
    student = teacher_latents.clone().requires_grad_(True)
    same = p4d_loss(cfg, logits, labels, student_latents=student, targets=teacher, heads=heads)
    assert same.absent == {}
    for name in ("ld", "ed/depth", "ed/flow_2d_backward", "ed/dyn_mask", "ed/camray"):
        assert float(same.terms[name].detach()) == pytest.approx(0.0, abs=1e-6), name
    shifted = p4d_loss(
        cfg,
        logits,
        labels,
        student_latents=student + 0.5,
        targets=teacher,
        heads=heads,
        sample_mask=torch.tensor([True, False]),
    )
    assert all(float(shifted.terms[f"ed/{t}"].detach()) > 0 for t in ("depth", "flow_2d_backward", "camray"))
    shifted.total.backward()
    assert student.grad is not None and float(student.grad[0].abs().sum()) > 0
    assert float(student.grad[1].abs().sum()) == 0.0
    assert all(p.grad is None for p in heads.parameters())
