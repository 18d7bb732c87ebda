"""AdamW param groups, the cosine-with-warm-up schedule and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rgpt4d_core.train.optim import (
    OptimConfig,
    build_optimizer,
    build_scheduler,
    clip_gradients,
    cosine_with_warmup_factor,
    param_groups,
)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.norm(self.proj(x))) * (1 + self.gate)


def test_param_groups_skip_frozen_and_exclude_norms_biases_from_decay() -> None:
    model = _Tiny()
    groups = {g["name"]: g for g in param_groups(model, weight_decay=0.1)}
    ids = {n: {id(p) for p in g["params"]} for n, g in groups.items()}
    assert ids["decay"] == {id(model.proj.weight)}
    assert ids["no_decay"] == {id(model.proj.bias), id(model.norm.weight), id(model.norm.bias), id(model.gate)}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    frozen = {id(p) for p in model.frozen.parameters()}
    assert not frozen & (ids["decay"] | ids["no_decay"])
    with pytest.raises(ValueError, match="no trainable"):
        param_groups(nn.Linear(2, 2).requires_grad_(False), 0.0)


def test_schedule_warms_up_then_follows_cosine_to_min() -> None:
    model = _Tiny()
    cfg = OptimConfig(lr=1e-3, warmup_ratio=0.1, min_lr_ratio=0.1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=100)
    assert sched.warmup == 10
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    mid = 10 + 45
    assert lrs[mid] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert cosine_with_warmup_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    # state survives a round trip through JSON-able numbers (no lambdas)
    state = sched.state_dict()
    assert "lr_lambdas" not in state
    sched2 = build_scheduler(build_optimizer(_Tiny(), cfg), cfg, total_steps=100)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == sched.last_epoch == 100


def test_paper_recipe_defaults() -> None:
    cfg = OptimConfig()
    assert cfg.lr == 1e-5 and cfg.warmup_ratio == 0.03
    with pytest.raises(ValueError, match="warmup_ratio"):
        OptimConfig(warmup_ratio=1.5)


def test_clip_gradients_bounds_global_norm_and_reports_pre_clip_norm() -> None:
    model = _Tiny()
    model(torch.randn(3, 4) * 100).pow(2).sum().backward()
    params = [p for p in model.parameters() if p.requires_grad]
    before = torch.cat([p.grad.flatten() for p in params]).norm().item()
    reported = clip_gradients(params, max_norm=0.5)
    after = torch.cat([p.grad.flatten() for p in params]).norm().item()
    assert reported == pytest.approx(before, rel=1e-5)
    assert after == pytest.approx(0.5, rel=1e-4)
    assert clip_gradients(params, max_norm=0.0) == pytest.approx(after, rel=1e-5)  # disabled: norm only
