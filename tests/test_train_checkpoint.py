"""Training-state checkpoints: exact round trip of model/optimiser/scheduler/position/RNG, no pickle."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rgpt4d_core.train.checkpoint import (
    CheckpointError,
    DataPosition,
    TrainingState,
    capture_rng_state,
    capture_training_state,
    has_training_state,
    load_model_state,
    load_training_state,
    restore_rng_state,
    resume_training_state,
    save_training_state,
)
from rgpt4d_core.train.optim import OptimConfig, build_optimizer, build_scheduler


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Embedding(10, 6), nn.Linear(6, 10))
    m[1].weight = m[0].weight  # tied weights share storage (safetensors rejects shared tensors)
    return m


def _train(model: nn.Module, steps: int, opt, sched) -> None:
    for _ in range(steps):
        x = torch.randint(0, 10, (4,))
        loss = nn.functional.cross_entropy(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_round_trip_resumes_bit_exactly(tmp_path: Path) -> None:
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)  # all three generators the state captures start from a seed (the model's init too)
    cfg = OptimConfig(lr=1e-2, warmup_ratio=0.2, weight_decay=0.01)
    model = _model()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=20)
    _train(model, 5, opt, sched)
    state = TrainingState(
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        position=DataPosition(epoch=1, batches_in_epoch=3, optimizer_step=5, samples_seen=40),
        rng=capture_rng_state(),
        extra={"world_size": 2, "config_yaml": "a: 1\n"},
    )
    save_training_state(tmp_path / "ck", state)
    assert has_training_state(tmp_path / "ck")
    assert not list((tmp_path / "ck").glob("*.pt")) and not list((tmp_path / "ck").glob("*.pkl"))
    json.loads((tmp_path / "ck" / "state.json").read_text())  # plain JSON

    # continue the original for 5 more steps (RNG drawn from the restored state in both cases)
    expected_rng = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state.rng)
    _train(model, 5, opt, sched)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    loaded = load_training_state(tmp_path / "ck")
    assert loaded.position == state.position and loaded.extra["world_size"] == 2
    model2 = _model()
    model2.load_state_dict(loaded.model)
    opt2 = build_optimizer(model2, cfg)
    opt2.load_state_dict(loaded.optimizer)
    sched2 = build_scheduler(opt2, cfg, total_steps=20)
    sched2.load_state_dict(loaded.scheduler)
    restore_rng_state(loaded.rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected_rng
    restore_rng_state(loaded.rng)
    _train(model2, 5, opt2, sched2)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_incomplete_or_foreign_checkpoint_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="state.json is missing"):
        load_training_state(tmp_path)
    state = TrainingState(model={"w": torch.ones(2)}, optimizer={}, scheduler={}, position=DataPosition(), rng={})
    save_training_state(tmp_path, state)
    doc = json.loads((tmp_path / "state.json").read_text())
    doc["format"] = "something/9"
    (tmp_path / "state.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="unknown format"):
        load_training_state(tmp_path)
    with pytest.raises(TypeError, match="'optimizer.x'"):
        save_training_state(tmp_path / "b", TrainingState({}, {"x": object()}, {}, DataPosition(), {}))


def test_capture_and_resume_continue_a_run_bit_exactly(tmp_path: Path) -> None:
    """The one-call pair both training jobs use: capture (model, optimiser by parameter name, schedule, position,
    RNG) → save → resume into freshly built objects → the same next steps; ``load_model_state`` gives the weights."""
    torch.manual_seed(5)
    cfg = OptimConfig(lr=1e-2, warmup_ratio=0.2, weight_decay=0.01)
    model = _model()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=20)
    _train(model, 4, opt, sched)
    position = DataPosition(epoch=0, batches_in_epoch=8, optimizer_step=4, samples_seen=16)
    save_training_state(tmp_path / "ck", capture_training_state(model, opt, sched, position, {"preset": "x"}))
    _train(model, 3, opt, sched)  # the original goes on (its RNG draws continue from the capture)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    model2 = _model()
    opt2 = build_optimizer(model2, cfg)
    sched2 = build_scheduler(opt2, cfg, total_steps=20)
    resumed = resume_training_state(tmp_path / "ck", model2, opt2, sched2)
    assert resumed.position == position and resumed.extra == {"preset": "x"}
    assert load_model_state(tmp_path / "ck").keys() == resumed.model.keys()
    _train(model2, 3, opt2, sched2)
    assert all(torch.equal(v, expected[k]) for k, v in model2.state_dict().items())
    (tmp_path / "ck" / "state.safetensors").unlink()
    with pytest.raises(CheckpointError, match="state.safetensors is missing"):
        load_model_state(tmp_path / "ck")
