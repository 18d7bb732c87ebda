"""optimizer_step: accumulation equals one big batch, clipping, schedule advance, loud non-finite losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rgpt4d_core.train.optim import OptimConfig, build_optimizer, build_scheduler
from rgpt4d_core.train.step import LossOutput, gradient_sync, optimizer_step


def _mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> LossOutput:
    x, y = batch
    loss = nn.functional.mse_loss(model(x), y)
    return LossOutput(total=loss, terms={"mse": loss.detach()}, num_samples=len(x), num_tokens=x.numel())


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    cfg = OptimConfig(lr=0.1, warmup_ratio=0.0, max_grad_norm=0.0, fused=False)
    opt = build_optimizer(model, cfg)
    return model, opt, build_scheduler(opt, cfg, total_steps=10)


def test_accumulated_micro_batches_match_one_batch() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    m1, o1, s1 = _setup()
    m2, o2, s2 = _setup()
    st1 = optimizer_step(m1, [(x[:2], y[:2]), (x[2:], y[2:])], _mse, o1, s1, max_grad_norm=0.0)
    st2 = optimizer_step(m2, [(x, y)], _mse, o2, s2, max_grad_norm=0.0)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert st1.losses["total"] == pytest.approx(st2.losses["total"], rel=1e-5)
    assert st1.samples == 4 and st1.tokens == 12 and st1.lr == pytest.approx(0.1)
    assert st1.grad_norm == pytest.approx(st2.grad_norm, rel=1e-5) and st1.grad_norm > 0
    assert s1.last_epoch == 1  # the schedule advanced once per optimiser step, not per micro-batch


def test_losses_fall_and_clipping_bounds_the_update() -> None:
    model, opt, sched = _setup()
    torch.manual_seed(2)
    x = torch.randn(8, 3)
    y = x @ torch.tensor([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]])
    first = optimizer_step(model, [(x, y)], _mse, opt, sched, 0.0).losses["mse"]
    for _ in range(8):
        last = optimizer_step(model, [(x, y)], _mse, opt, sched, 0.0).losses["mse"]
    assert last < first

    model, opt, sched = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    stats = optimizer_step(model, [(x * 100, y * 100)], _mse, opt, sched, max_grad_norm=1e-3)
    assert stats.grad_norm > 1.0
    # AdamW's first update is lr * sign-like regardless of scale; clipping must leave the grads at the bound
    assert torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item() == pytest.approx(1e-3, rel=1e-3)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_non_finite_loss_is_reported_with_its_micro_batch() -> None:
    model, opt, sched = _setup()
    bad = (torch.full((2, 3), float("nan")), torch.zeros(2, 2))
    good = (torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="micro-batch 1"):
        optimizer_step(model, [good, bad], _mse, opt, sched, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        optimizer_step(model, [], _mse, opt, sched, 1.0)


def test_gradient_sync_toggles_fsdp2_style_models() -> None:
    class _Sharded(nn.Linear):
        def __init__(self) -> None:
            super().__init__(1, 1)
            self.calls: list[bool] = []

        def set_requires_gradient_sync(self, flag: bool) -> None:
            self.calls.append(flag)

    m = _Sharded()
    with gradient_sync(m, enabled=False):
        pass
    with gradient_sync(m, enabled=True):
        pass
    assert m.calls == [False, True]
