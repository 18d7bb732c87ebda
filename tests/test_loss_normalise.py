"""Target standardisation (issue 16): statistics by hand, O(1) terms, the loss config, statistics from shards."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rgpt4d_core.config import load
from rgpt4d_core.losses import (
    MomentAccumulator,
    P4DLossConfig,
    TargetNorm,
    dense_task_loss,
    latent_loss,
    p4d_loss,
)
from rgpt4d_core.losses.normalise import ChannelStats, channel_values
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.batch import tensor_stack
from rgpt4d_core.shards.reader import open_parquet, open_shards
from rgpt4d_core.shards.target_stats import target_norm_from_shards
from rgpt4d_core.train.config import DistillJobConfig
from rgpt4d_core.train.step import loss_config

CONF = Path(__file__).resolve().parents[1] / "conf" / "distill"


def test_channel_layouts_and_moments_by_hand() -> None:
    flow = np.zeros((3, 1, 1, 2))
    flow[0] = 100.0  # frame 0 is invalid by contract: left out
    flow[1, 0, 0] = [1.0, 10.0]
    flow[2, 0, 0] = [3.0, 30.0]
    latents = np.arange(2 * 1 * 1 * 2 * 3, dtype=np.float64).reshape(2, 1, 1, 2, 3)  # K=2 hooks, C=3
    acc = MomentAccumulator(depth_eps=0.0)
    acc.add({"flow_2d_backward": flow, "latents": latents, "depth": np.array([[[1.0, math.e**2]]]), "camray": None})
    norm = acc.result()
    assert norm.stats["flow_2d_backward"].mean == (2.0, 20.0) and norm.stats["flow_2d_backward"].std == (1.0, 10.0)
    assert norm.stats["depth"].mean == pytest.approx((1.0,)) and norm.stats["depth"].std == pytest.approx((1.0,))
    # latents: channel (hook k, feature c) over the 2 grid cells; hook 0 feature 0 takes values 0 and 3
    assert channel_values("latents", latents, 0.0).shape == (2, 6)
    assert norm.stats["latents"].mean[:3] == (1.5, 2.5, 3.5) and norm.stats["latents"].mean[3:] == (7.5, 8.5, 9.5)
    assert norm.stats["latents"].std == (1.5,) * 6
    assert "camray" not in norm.stats
    assert TargetNorm.from_json(norm.to_json()) == norm


def _norm_of(latents: torch.Tensor) -> TargetNorm:
    acc = MomentAccumulator(depth_eps=1e-8)
    for sample in latents:
        acc.add({"latents": sample.numpy()})
    return acc.result()


def test_standardised_latent_loss_of_the_mean_predictor_is_one_per_hook() -> None:
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.01, 1.0, 300.0]).view(1, 1, 1, 1, 1, 3)  # three channels of very different units
    teacher = torch.randn(64, 2, 2, 3, 3, 3, generator=g, dtype=torch.float64).float() * scales + 5.0
    norm = _norm_of(teacher)
    mean_predictor = torch.tensor(norm.stats["latents"].mean, dtype=torch.float32).view(1, 2, 1, 1, 1, 3)
    student = mean_predictor.expand_as(teacher)
    raw = latent_loss(student, teacher, "mse", 1.0).mean()
    standardised = latent_loss(student, teacher, "mse", 1.0, norm).mean()
    assert raw > 1e4  # dominated by the 300-unit channel
    assert standardised == pytest.approx(2.0, rel=1e-3)  # Σ over K=2 hooks of a mean of 1 per element
    assert float(latent_loss(teacher, teacher, "mse", 1.0, norm).max()) == 0.0


def test_dense_terms_with_norm_by_hand() -> None:
    cfg = P4DLossConfig(ed_kind="mse")
    norm = TargetNorm({"flow_2d_backward": ChannelStats((1.0, -2.0), (2.0, 4.0)), "dyn_mask": ChannelStats((0.1,), (0.3,))})
    pred = torch.zeros(1, 2, 1, 1, 2)
    target = torch.zeros(1, 2, 1, 1, 2)
    target[0, 1, 0, 0] = torch.tensor([3.0, 2.0])  # standardised errors (3-0)/2 and (2-0)/4
    assert float(dense_task_loss("flow_2d_backward", pred, target, cfg, norm)[0]) == pytest.approx((1.5**2 + 0.5**2) / 2)
    logits, p = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1)
    h = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))
    raw = float(dense_task_loss("dyn_mask", logits, p, cfg)[0])
    assert float(dense_task_loss("dyn_mask", logits, p, cfg, norm)[0]) == pytest.approx(raw / h)
    # a target without statistics is compared as it is
    d = torch.full((1, 1, 2, 2), 2.0)
    assert float(dense_task_loss("depth", d, d * 2, cfg, norm)[0]) == pytest.approx(math.log(2.0) ** 2, rel=1e-5)


def test_p4d_loss_refuses_normalisation_without_statistics() -> None:
    cfg = P4DLossConfig(normalize_targets=True)
    logits, labels = torch.zeros(1, 3, 5), torch.tensor([[0, 1, 2]])
    latents = torch.zeros(1, 2, 1, 1, 1, 3)
    with pytest.raises(ValueError, match="statistics"):
        p4d_loss(cfg, logits, labels, student_latents=latents, targets={"latents": latents})
    norm = _norm_of(torch.randn(4, 2, 1, 1, 1, 3, generator=torch.Generator().manual_seed(1)))
    terms = p4d_loss(cfg, logits, labels, student_latents=latents, targets={"latents": latents + 1.0}, norm=norm)
    assert float(terms.terms["ld"]) > 0


def test_loss_config_presets_grid_and_overrides() -> None:
    def resolved(*overrides: str) -> P4DLossConfig:
        return loss_config(load(DistillJobConfig, [CONF / "tiny.yaml"], ["data.shards=x", "run.storage_path=y", *overrides]))

    assert resolved() == P4DLossConfig()  # released code, raw targets
    paper = load(DistillJobConfig, [CONF / "tiny.yaml", CONF / "losses_paper.yaml"], ["data.shards=x", "run.storage_path=y"])
    assert loss_config(paper).ld_weight == 0.5 and not loss_config(paper).normalize_targets
    normalized = load(DistillJobConfig, [CONF / "tiny.yaml", CONF / "losses_normalized.yaml"],
                      ["data.shards=x", "run.storage_path=y", "losses.ld=0.1", "losses.ed=0.3", "losses.depth=2.0"])  # fmt: skip
    cfg = loss_config(normalized)
    assert cfg.normalize_targets and cfg.ld_weight == 0.1
    assert (cfg.depth_weight, cfg.flow_weight, cfg.dyn_mask_weight, cfg.camray_weight) == (2.0, 0.3, 0.3, 0.0)
    assert resolved("losses.normalize=true").normalize_targets
    ld_only = loss_config(load(DistillJobConfig, [CONF / "tiny.yaml", CONF / "losses_normalized.yaml"],
                               ["data.shards=x", "run.storage_path=y", "ablation.variant=ld_only"]))  # fmt: skip
    assert ld_only.ld_weight == 1.0 and ld_only.depth_weight == 0.0 and ld_only.normalize_targets


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.distill_testkit import write_shards

    return str(write_shards(tmp_path_factory.mktemp("shards"), num_samples=6, files=2))


def test_statistics_from_shards_match_a_direct_computation(shard_root: str) -> None:
    shards = open_shards(shard_root)
    shapes = shards.manifest.shapes()
    every = [open_parquet(u).read() for u in shards.file_uris(S.CLIPS)]

    def direct(tables: list) -> np.ndarray:  # type: ignore[type-arg]
        stacks = [tensor_stack(t.column(S.DEPTH), shapes[S.DEPTH], S.DEPTH) for t in tables]  # type: ignore[arg-type]
        return np.log(np.concatenate(stacks).astype(np.float64) + 1e-8)

    norm = target_norm_from_shards(shards, "train", depth_eps=1e-8)
    assert set(norm.stats) == {n for n in S.TENSOR_COLUMNS if shapes.get(n) is not None}
    assert norm.stats["depth"].mean[0] == pytest.approx(direct(every).mean(), rel=1e-6)
    assert norm.stats["depth"].std[0] == pytest.approx(direct(every).std(), rel=1e-5)
    half = target_norm_from_shards(shards, "train", depth_eps=1e-8, max_clips=3)  # every other file: the first one
    assert half.stats["depth"].mean[0] == pytest.approx(direct(every[:1]).mean(), rel=1e-6)
    assert target_norm_from_shards(shards, "val", depth_eps=1e-8).stats == {}  # no question of that split


def test_the_driver_hands_statistics_to_a_normalised_training_step(shard_root: str) -> None:
    from pipelines.distill import target_norm
    from rgpt4d_core.train.distill import build_setup
    from rgpt4d_core.train.optim import OptimConfig, build_optimizer
    from rgpt4d_core.train.step import optimizer_step

    torch.set_num_threads(1)
    shards = open_shards(shard_root)
    base = [f"data.shards={shard_root}", "run.storage_path=/tmp/unused"]
    assert target_norm(load(DistillJobConfig, [CONF / "tiny.yaml"], base), shards) is None  # raw targets: no pass
    assert target_norm(load(DistillJobConfig, [CONF / "tiny.yaml", CONF / "losses_normalized.yaml"],
                            [*base, "ablation.variant=sft_only"]), shards) is None  # nothing distilled  # fmt: skip
    cfg = load(DistillJobConfig, [CONF / "tiny.yaml", CONF / "losses_normalized.yaml"], base)
    norm = target_norm(cfg, shards)
    assert norm is not None and TargetNorm.from_json(norm.to_json()) == norm  # what the workers receive
    batch_of = next(shards.iter_batches(2))
    with_stats = build_setup(cfg, shards.manifest.expert_spec, torch.device("cpu"), norm)
    optimizer = build_optimizer(with_stats.student, OptimConfig(lr=1e-3, fused=False))
    stats = optimizer_step(with_stats.student, [with_stats.prepare(batch_of, torch.device("cpu"))], with_stats.loss,
                           optimizer, None, 1.0)  # fmt: skip
    # standardised targets: every distillation term is O(1) at initialisation
    assert all(0.05 < stats.losses[k] < 50 for k in ("ld", "ed/depth", "ed/flow_2d_backward", "ed/dyn_mask"))
    without = build_setup(cfg, shards.manifest.expert_spec, torch.device("cpu"))
    with pytest.raises(ValueError, match="statistics"):
        without.loss(without.student, without.prepare(batch_of, torch.device("cpu")))
