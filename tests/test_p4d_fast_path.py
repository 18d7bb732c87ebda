"""The fast L_ED / D_4DP paths give the loss and gradients of the straightforward (L4P-order) computation.

Fast paths (issue 15, a P4D step's cost): the frozen DPT heads run in channels-last memory, with their 1×1×1
convolutions as matrix products and each fusion block's ``out_conv`` before (not after) its upsampling; D_4DP
applies each hook's first linear layer before (not after) the token-grid resize. This file keeps the previous
computations as references, written out here, and checks on the tiny student and the ``l4p_tiny`` heads that the
head outputs, their vector-Jacobian products, the P4D loss terms and the gradient of every trainable student
parameter agree. The checks run in float64: there the two orders of operations agree to ~1e-15, so a
tolerance of 1e-9 catches any structural difference (in float32 a ReLU whose input is within rounding of 0 can
flip between the two paths and move a vector-Jacobian product by ~1e-3; that is rounding, not a changed loss).
The loss math itself runs in float32 (``rgpt4d_core/losses/``), hence the looser tolerance on the P4D terms.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.experts.dpt_heads import DenseHeads, DPTHead, FrozenHeads, FusionBlock
from rgpt4d_core.experts.l4p import get_preset, spec_for_preset
from rgpt4d_core.losses import LossTerms, loss_preset, p4d_loss
from rgpt4d_core.model.fusion import IGNORE_INDEX
from rgpt4d_core.model.perception_decoder import (
    DecoderConfig,
    LatentLayout,
    PerceptionDecoder,
    frame_subsample_indices,
)
from rgpt4d_core.model.presets import student_config
from rgpt4d_core.model.student import Student

VID = 4


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the previous computations, kept as references ------------------------------------------------------------


def _ref_fusion(block: FusionBlock, path: Tensor, skip: Tensor | None = None) -> Tensor:
    if skip is not None:
        path = path + block.resConfUnit1(skip)
    path = block.resConfUnit2(path)
    if block.factor != (1, 1, 1):
        path = F.interpolate(path, scale_factor=block.factor, mode="trilinear", align_corners=True)
    return block.out_conv(path)


def _ref_head(head: DPTHead, hooks: list[Tensor]) -> Tensor:
    levels = [rn(post(h)) for post, rn, h in zip(head.act_postprocess, head.scratch.layer_rn, hooks, strict=True)]
    s = head.scratch
    t2, h2, w2 = levels[2].shape[2:]
    path = _ref_fusion(s.refinenet4, levels[3])[:, :, :t2, :h2, :w2]
    path = _ref_fusion(s.refinenet3, path, levels[2])
    path = _ref_fusion(s.refinenet2, path, levels[1])
    path = _ref_fusion(s.refinenet1, path, levels[0])
    out = head.head1(path)
    if not head.head2_at_output_size:  # the light order: head2 at the fusion resolution, then its outputs upsampled
        out = head.head2(out)
    if tuple(out.shape[2:]) != head.output_size:
        out = F.interpolate(out, size=head.output_size, mode="trilinear", align_corners=True)
    return head.head2(out) if head.head2_at_output_size else out


#: channels of the one shared head's output (``DenseHeadsConfig.shared_dense``), written out independently
SHARED_CHANNELS = {"depth": slice(0, 1), "flow_2d_backward": slice(1, 3), "dyn_mask": slice(3, 4)}


class ReferenceHeads(nn.Module):
    """The frozen heads' previous forward (channels-first, PyTorch's convolutions, L4P's order of operations or
    the configured light order, one head per task or one shared head for the dense tasks)."""

    def __init__(self, heads: DenseHeads) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, latents: Tensor) -> dict[str, Tensor]:
        hooks = list(latents.permute(1, 0, 5, 2, 3, 4).unbind(0))
        out: dict[str, Tensor] = {}
        shared = self.heads.cfg.shared_dense
        for task in self.heads.cfg.tasks:
            head = self.heads.task_heads["dense" if shared and task != "camray" else task]
            assert isinstance(head, DPTHead)
            raw = _ref_head(head, hooks)
            if shared and task != "camray":
                raw = raw[:, SHARED_CHANNELS[task]]
            if task == "depth":
                out[task] = torch.exp(raw[:, 0])
            elif task == "dyn_mask":
                out[task] = raw[:, 0]
            else:
                out[task] = raw.permute(0, 2, 3, 4, 1)
        return out


class ReferenceDecoder(PerceptionDecoder):
    """D_4DP's previous forward: sub-sample, resize the grid to ``h'×w'``, then every hook's full projection."""

    def forward(self, frame_tokens: Tensor) -> Tensor:
        b, t, n, c = frame_tokens.shape
        side, lay = math.isqrt(n), self.layout
        keep = frame_subsample_indices(t, lay.frames)
        x = frame_tokens[:, keep].reshape(b * lay.frames, side, side, c).permute(0, 3, 1, 2)
        if (side, side) != (lay.height, lay.width):
            x = F.interpolate(x, size=(lay.height, lay.width), mode="bilinear", align_corners=False)
        grid = x.permute(0, 2, 3, 1).reshape(b, lay.frames, lay.height, lay.width, c)
        return torch.stack([hook(grid) for hook in self.hooks], dim=1)


# ---- checks ---------------------------------------------------------------------------------------------------


def _close(got: Tensor, want: Tensor, what: str, rel: float = 1e-9) -> None:
    """Equal up to ``rel`` of the tensor's scale."""
    scale = max(float(want.detach().abs().max()), 1e-30)
    torch.testing.assert_close(got, want, rtol=rel, atol=rel * scale, msg=lambda m: f"{what}: {m}")


#: the ``l4p_tiny`` heads (one shared dense head, head2 before the last upsampling) and the same scale in L4P's
#: structure (one head per task, head2 at the output size: the real teacher's code path, ``l4p_vitg``)
HEAD_LAYOUTS = {
    "l4p_tiny": get_preset("l4p_tiny").heads,
    "l4p_order": replace(
        get_preset("l4p_tiny").heads,
        shared_dense=False,
        dense=replace(get_preset("l4p_tiny").heads.dense, head2_at_output_size=True),
    ),
}


def _perturbed_heads(layout: str = "l4p_tiny") -> FrozenHeads:
    torch.manual_seed(0)
    heads = FrozenHeads(DenseHeads(HEAD_LAYOUTS[layout]))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # non-zero biases everywhere (the out_conv reordering must carry them exactly)
        for p in heads.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return heads.to(torch.float64)


@pytest.mark.parametrize("layout", sorted(HEAD_LAYOUTS))
def test_heads_match_the_reference_forward_and_vector_jacobian_products(layout: str) -> None:
    heads = _perturbed_heads(layout)
    ref = ReferenceHeads(heads.inner)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, 8, 96, generator=g, dtype=torch.float64).requires_grad_(True)
    got, want = heads(latents), ref(latents)
    assert set(got) == set(want) == {"depth", "flow_2d_backward", "dyn_mask", "camray"}
    for task in want:
        _close(got[task], want[task], task)
        cot = torch.randn(want[task].shape, generator=g, dtype=torch.float64)
        (vjp_got,) = torch.autograd.grad(got[task], latents, cot, retain_graph=True)
        (vjp_want,) = torch.autograd.grad(want[task], latents, cot, retain_graph=True)
        assert float(vjp_want.abs().sum()) > 0
        _close(vjp_got, vjp_want, f"d {task} / d latents")
    assert all(p.grad is None for p in heads.parameters())


@pytest.mark.parametrize("layout", sorted(HEAD_LAYOUTS))
def test_trainable_heads_give_the_reference_weight_gradients(layout: str) -> None:
    """The expert's own pre-training runs the same (unfrozen) heads: parameter gradients agree too."""
    torch.manual_seed(0)
    heads = DenseHeads(HEAD_LAYOUTS[layout]).to(torch.float64)
    latents = torch.randn(1, 4, 8, 8, 8, 96, dtype=torch.float64)
    loss = sum(v.square().mean() for v in heads(latents).values())
    assert isinstance(loss, Tensor)
    got = torch.autograd.grad(loss, list(heads.parameters()))
    ref_loss = sum(v.square().mean() for v in ReferenceHeads(heads)(latents).values())
    assert isinstance(ref_loss, Tensor)
    want = torch.autograd.grad(ref_loss, list(heads.parameters()))
    for (name, _), a, b in zip(heads.named_parameters(), got, want, strict=True):
        _close(a, b, name)


def test_one_shared_dense_head_equals_one_head_per_task_with_the_same_trunk() -> None:
    """``shared_dense`` computes the trunk once: the same as three L4P-style heads that each hold a copy of it and
    keep only their own task's output channels of the last 1×1×1 conv."""
    shared = _perturbed_heads("l4p_tiny").inner
    assert shared.cfg.shared_dense and set(shared.task_heads) == {"dense", "camray"}
    separate = DenseHeads(replace(shared.cfg, shared_dense=False)).to(torch.float64)
    assert set(separate.task_heads) == {"depth", "flow_2d_backward", "dyn_mask", "camray"}
    trunk = shared.task_heads["dense"].state_dict()
    with torch.no_grad():
        for task, head in separate.task_heads.items():
            if task == "camray":
                head.load_state_dict(shared.task_heads["camray"].state_dict())
                continue
            own = dict(trunk)
            for key in ("head2.2.weight", "head2.2.bias"):
                own[key] = trunk[key][SHARED_CHANNELS[task]]
            head.load_state_dict(own)
    latents = torch.randn(2, 4, 8, 8, 8, 96, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got, want = shared(latents), separate(latents)
    assert list(got) == list(want) == list(shared.cfg.tasks)
    for task in want:
        _close(got[task], want[task], task)


@pytest.mark.parametrize("variant", ["mlp", "linear"])
@pytest.mark.parametrize("grid", [(3, 8), (11, 16), (8, 8), (5, 4)])
def test_decoder_matches_the_reference(variant: str, grid: tuple[int, int]) -> None:
    side, target = grid
    layout = LatentLayout(num_hooks=4, frames=8, height=target, width=target, dim=24)
    torch.manual_seed(0)
    dec = PerceptionDecoder(DecoderConfig(variant=variant, mlp_hidden=32), 16, layout).to(torch.float64)
    with torch.no_grad():
        for p in dec.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases
    ref = ReferenceDecoder(dec.cfg, 16, layout).to(torch.float64)
    ref.load_state_dict(dec.state_dict())
    tokens = torch.randn(2, 16, side * side, 16, dtype=torch.float64, requires_grad=True)
    got, want = dec(tokens), ref(tokens)
    _close(got, want, "latents")
    cot = torch.randn_like(want)
    (g_got,) = torch.autograd.grad(got, tokens, cot)
    (g_want,) = torch.autograd.grad(want, tokens, cot)
    _close(g_got, g_want, "d latents / d tokens")


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    ids = [torch.tensor([1, 7, VID, 30, 31, 32, 40, 41]), torch.tensor([1, VID, 33, 34, 42]),
           torch.tensor([1, 35, 36, 43])]  # fmt: skip
    labels = [torch.tensor([IGNORE_INDEX] * 6 + [40, 41]), torch.tensor([IGNORE_INDEX] * 4 + [42]),
              torch.tensor([IGNORE_INDEX] * 3 + [43])]  # fmt: skip
    return {
        "input_ids": ids,
        "labels": labels,
        "videos": (torch.rand(3, 16, 3, 64, 64, generator=g) * 2 - 1).double(),
        "timestamps_s": torch.linspace(0, 3.75, 16, dtype=torch.float64).expand(3, 16).clone(),
        "video_mask": torch.tensor([True, True, False]),
    }


def _step(student: Student, heads: nn.Module, targets: dict[str, Tensor]) -> tuple[LossTerms, dict[str, Tensor]]:
    # every weight 1 and camray trained, so each head's gradient path counts in the total
    cfg = loss_preset("released_code").with_weights(ld=1.0, depth=1.0, flow_2d_backward=1.0, dyn_mask=1.0, camray=1.0)
    out = student(**_batch())
    terms = p4d_loss(cfg, out.logits, out.labels, student_latents=out.latents, targets=targets,
                     sample_mask=out.latent_mask, heads=heads)  # fmt: skip
    student.zero_grad()
    terms.total.backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.requires_grad and p.grad is not None}
    return terms, grads


def test_p4d_loss_and_student_gradients_match_the_reference() -> None:
    heads = _perturbed_heads()
    spec: ExpertSpec = spec_for_preset(get_preset("l4p_tiny"), "test")
    g = torch.Generator().manual_seed(2)
    teacher_latents = torch.randn(3, 4, 8, 8, 8, 96, generator=g, dtype=torch.float64)
    with torch.no_grad():
        targets = dict(heads(teacher_latents))
    targets["dyn_mask"] = targets["dyn_mask"].sigmoid()
    targets["latents"] = teacher_latents

    torch.manual_seed(0)
    fast = Student(student_config("tiny"), spec).double()
    torch.manual_seed(0)
    slow = Student(student_config("tiny"), spec).double()
    assert slow.decoder is not None
    ref_decoder = ReferenceDecoder(slow.decoder.cfg, slow.cfg.llm.hidden_size, slow.decoder.layout).double()
    ref_decoder.load_state_dict(slow.decoder.state_dict())
    slow.decoder = ref_decoder

    got, got_grads = _step(fast, heads, targets)
    want, want_grads = _step(slow, ReferenceHeads(heads.inner), targets)
    assert got.absent == want.absent == {}
    assert set(got.terms) == {"sft", "ld", "ed/depth", "ed/flow_2d_backward", "ed/dyn_mask", "ed/camray"}
    for name, value in want.terms.items():
        assert float(value.detach()) > 0, name
        _close(got.terms[name], value, name, rel=1e-5)  # float32 loss math
        _close(got.per_sample[name], want.per_sample[name], f"{name} per sample", rel=1e-5)
    _close(got.total, want.total, "total", rel=1e-5)
    assert set(got_grads) == set(want_grads) and any(n.startswith("decoder.") for n in want_grads)
    for name, grad in want_grads.items():
        assert float(grad.abs().sum()) > 0 or not name.startswith(("decoder.", "llm.")), name
        _close(got_grads[name], grad, f"grad {name}", rel=1e-5)
