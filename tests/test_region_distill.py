"""Region-level explicit distillation (``losses.region``): the targets it samples, its loss, and that a training step
with it trains the region tracks' dense head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rgpt4d_core.config import load, to_container
from rgpt4d_core.losses.normalise import ChannelStats, TargetNorm
from rgpt4d_core.model.region_tracks import RegionDense, RegionTrackConfig, sample_windows
from rgpt4d_core.shards.reader import open_shards
from rgpt4d_core.shards.target_stats import target_norm_from_shards
from rgpt4d_core.train.config import DistillJobConfig
from rgpt4d_core.train.distill import build_setup
from rgpt4d_core.train.optim import OptimConfig, build_optimizer, build_scheduler
from rgpt4d_core.train.region_distill import dense_maps, region_dense_loss
from rgpt4d_core.train.step import optimizer_step
from tests.distill_testkit import write_shards

TINY = Path(__file__).resolve().parents[1] / "conf" / "distill" / "tiny.yaml"
CFG = RegionTrackConfig(enabled=True, dense_head=True)


def _targets(frames: int = 3, side: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "depth": 1.0 + torch.rand(2, frames, side, side, generator=g),
        "flow_2d_backward": torch.randn(2, frames, side, side, 2, generator=g),
        "dyn_mask": torch.rand(2, frames, side, side, generator=g),
    }


def test_dense_maps_standardise_log_depth_flow_and_mask_with_the_shard_statistics() -> None:
    targets = _targets()
    norm = TargetNorm({
        "depth": ChannelStats((0.5,), (2.0,)),
        "flow_2d_backward": ChannelStats((1.0, -1.0), (2.0, 4.0)),
        "dyn_mask": ChannelStats((0.25,), (0.5,)),
    })  # fmt: skip
    maps = dense_maps(targets, 1, norm, depth_eps=1e-8)
    assert maps.shape == (3, 4, 8, 8)  # [T, channels, H, W]
    assert torch.allclose(maps[:, 0], (torch.log(targets["depth"][1] + 1e-8) - 0.5) / 2.0)
    assert torch.allclose(maps[:, 2], (targets["flow_2d_backward"][1][..., 1] + 1.0) / 4.0)
    assert torch.allclose(maps[:, 3], (targets["dyn_mask"][1] - 0.25) / 0.5)
    with pytest.raises(ValueError, match="lacks"):
        dense_maps({"depth": targets["depth"]}, 0, None, 1e-8)


def test_region_loss_is_zero_on_the_sampled_targets_and_counts_only_samples_with_regions() -> None:
    targets = _targets()
    boxes = torch.tensor([[0.2, 0.2, 0.4, 0.5], [0.6, 0.1, 0.9, 0.3]])
    exact = sample_windows(dense_maps(targets, 1, None, 1e-8), boxes, CFG)[:, 1:]
    values, present = region_dense_loss([RegionDense(1, boxes, exact)], targets, CFG, 3, None, 1e-8)
    assert present.tolist() == [False, True, False] and float(values.abs().max()) < 1e-10
    off = exact + 0.5
    values, _ = region_dense_loss([RegionDense(1, boxes, off)], targets, CFG, 3, None, 1e-8)
    assert float(values[1]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="frames"):
        region_dense_loss([RegionDense(1, boxes, exact[:, 1:])], targets, CFG, 3, None, 1e-8)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_shards(tmp_path_factory.mktemp("shards"), num_samples=2, files=1))


def _cfg(shards: str, *overrides: str) -> DistillJobConfig:
    return load(DistillJobConfig, [TINY], [f"data.shards={shards}", "run.storage_path=/tmp/unused", *overrides])


def test_region_distillation_trains_the_dense_head_and_its_loss_falls(shards: str) -> None:
    """With ``losses.region=1`` beside SFT-only, every step has a weighted ``region`` term, the dense head gets a
    gradient, and 25 steps on one batch lower the term; unset, the job's YAML does not name it."""
    assert "region" not in to_container(_cfg(shards))["losses"]
    cfg = _cfg(shards, "ablation.variant=sft_only", "losses.region=1", "losses.preset=normalized")
    assert to_container(cfg)["losses"]["region"] == 1.0
    torch.manual_seed(0)
    torch.set_num_threads(1)
    s = open_shards(shards)
    with pytest.raises(ValueError, match="statistics"):
        build_setup(cfg, s.manifest.expert_spec, torch.device("cpu"))
    norm = target_norm_from_shards(s, "train", 1e-8)
    setup = build_setup(cfg, s.manifest.expert_spec, torch.device("cpu"), norm=norm)
    student = setup.student
    assert student.decoder is None and student.region_track_encoder.dense_head is not None
    batch = setup.prepare(next(s.iter_batches(2)), torch.device("cpu"))
    opt = build_optimizer(student, OptimConfig(lr=3e-3, fused=False))
    sched = build_scheduler(opt, cfg.optim, 25)
    first = optimizer_step(student, [batch], setup.loss, opt, sched, 1.0).losses
    assert {"region", "weighted/region"} <= set(first) and first["region"] > 0
    head = student.region_track_encoder.dense_head
    assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0
    for _ in range(24):
        last = optimizer_step(student, [batch], setup.loss, opt, sched, 1.0).losses
    assert last["region"] < 0.8 * first["region"]


def test_region_distillation_needs_region_tracks(shards: str) -> None:
    with pytest.raises(ValueError, match="region tracks"):
        build_setup(
            _cfg(shards, "losses.region=1", "student.preset=nvila_lite_8b"),
            open_shards(shards).manifest.expert_spec,
            torch.device("meta"),
        )
