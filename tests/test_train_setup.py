"""The framework-free training setup: ablation variants, TPE switch, frozen parts, online targets, collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rgpt4d_core.shards.reader import open_shards
from rgpt4d_core.train.config import DistillJobConfig
from rgpt4d_core.train.distill import build_setup, online_targets
from rgpt4d_core.train.optim import OptimConfig, build_optimizer, build_scheduler
from rgpt4d_core.train.plan import plan_steps
from rgpt4d_core.train.step import optimizer_step
from tests.distill_testkit import tiny_job as _cfg
from tests.distill_testkit import write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_shards(tmp_path_factory.mktemp("shards"), num_samples=2, files=1))


def _one_step(cfg: DistillJobConfig, shards: str) -> tuple[dict[str, float], object]:
    torch.set_num_threads(1)
    s = open_shards(shards)
    setup = build_setup(cfg, s.manifest.expert_spec, torch.device("cpu"))
    batch = setup.prepare(next(s.iter_batches(1)), torch.device("cpu"))
    opt = build_optimizer(setup.student, OptimConfig(lr=1e-3, fused=False))
    stats = optimizer_step(setup.student, [batch], setup.loss, opt, build_scheduler(opt, cfg.optim, 4), 1.0)
    return stats.losses, setup


@pytest.mark.parametrize(
    ("variant", "trained", "absent"),
    [
        ("sft_only", set(), {"ld", "ed/depth"}),
        ("ld_only", {"ld"}, {"ed/depth"}),
        ("ed_only", {"ed/depth", "ed/flow_2d_backward", "ed/dyn_mask"}, set()),
        ("ld_ed", {"ld", "ed/depth", "ed/flow_2d_backward", "ed/dyn_mask"}, set()),
    ],
)
def test_ablation_variants_select_the_loss_terms(shards: str, variant: str, trained: set[str], absent: set[str]) -> None:
    losses, setup = _one_step(_cfg(shards, f"ablation.variant={variant}"), shards)
    weighted = {k.removeprefix("weighted/") for k in losses if k.startswith("weighted/")}
    assert weighted == trained
    assert not absent & set(losses)
    assert (setup.student.decoder is None) == (variant == "sft_only")  # type: ignore[attr-defined]
    assert (setup.heads is None) == (variant in ("sft_only", "ld_only"))  # type: ignore[attr-defined]
    if variant == "ed_only":
        assert "ld" in losses  # weight 0: logged, not trained


def test_frozen_parts_and_tpe_switch(shards: str) -> None:
    _, setup = _one_step(_cfg(shards, "ablation.tpe=false", "student.train_vision=false"), shards)
    student = setup.student  # type: ignore[attr-defined]
    assert student.cfg.tpe.placement == "off"
    assert not any(p.requires_grad for p in student.vision.parameters())
    assert all(p.requires_grad for p in student.projector.parameters())
    assert all(p.requires_grad for p in student.llm.parameters())
    assert all(p.requires_grad for p in student.decoder.parameters())
    assert not any(p.requires_grad for p in setup.heads.parameters())  # type: ignore[attr-defined]
    assert all(p.grad is None for p in student.vision.parameters())
    _, with_tpe = _one_step(_cfg(shards), shards)
    assert with_tpe.student.cfg.tpe.placement == "pre_projector"  # type: ignore[attr-defined]


def test_online_targets_match_the_precomputed_ones(shards: str) -> None:
    cfg = _cfg(shards, "data.targets=online")
    s = open_shards(shards)
    setup = build_setup(cfg, s.manifest.expert_spec, torch.device("cpu"))
    assert setup.online_expert is not None
    batch = next(s.iter_batches(2))
    fresh = online_targets(setup.online_expert, batch)
    for name, stored in batch.targets.items():
        assert stored is not None and fresh.targets[name] is not None
        np.testing.assert_allclose(fresh.targets[name].astype(np.float32), stored.astype(np.float32), rtol=1e-2, atol=1e-2)


def test_collate_builds_supervised_answer_and_media(shards: str) -> None:
    s = open_shards(shards)
    setup = build_setup(_cfg(shards, "student.answer_style=letter"), s.manifest.expert_spec, torch.device("cpu"))
    raw = next(s.iter_batches(2))
    batch = setup.collate(raw)
    tok = setup.tokenizer
    for ids, labels, answer in zip(batch.input_ids, batch.labels, raw.answers, strict=True):
        supervised = [int(t) for t, lab in zip(ids, labels, strict=True) if lab != -100]
        letter = "ABCD"[["left", "right", "up", "down"].index(answer)]
        assert tok.decode(supervised).startswith(letter)
        assert int((ids == tok.video_id).sum()) == 1
        assert int((ids == tok.image_id).sum()) == 1
    assert batch.videos.shape == (2, 16, 3, 64, 64) and batch.images is not None and batch.images.shape == (2, 3, 64, 64)
    assert batch.targets["latents"].shape == (2, 4, 8, 8, 8, 96) and batch.targets["latents"].dtype == torch.float32


def test_step_plan_and_accumulation_errors(shards: str) -> None:
    cfg = _cfg(shards, "loop.global_batch_size=8", "loop.micro_batch_size=2", "scaling.num_workers=2")
    plan = plan_steps(cfg, 20)
    assert (plan.accumulation, plan.rows_per_worker, plan.steps_per_epoch, plan.total_steps) == (2, 10, 2, 4)
    with pytest.raises(ValueError, match="cannot fill one optimiser step"):
        plan_steps(cfg, 7)
    with pytest.raises(ValueError, match="not a multiple"):
        _cfg(shards, "loop.global_batch_size=6").validate()
    with pytest.raises(ValueError, match="fsdp needs"):
        _cfg(shards, "scaling.strategy=fsdp").validate()


def test_option_answer_style_supervises_the_option_text(shards: str) -> None:
    s = open_shards(shards)
    setup = build_setup(_cfg(shards), s.manifest.expert_spec, torch.device("cpu"))  # the tiny recipe's style
    assert setup.student.cfg.answer_style == "option"
    raw = next(s.iter_batches(2))
    batch = setup.collate(raw)
    tok = setup.tokenizer
    for ids, labels, answer in zip(batch.input_ids, batch.labels, raw.answers, strict=True):
        supervised = [int(t) for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert supervised[-1] == tok.im_end_id
        assert tok.decode(supervised[:-1]) == answer
        assert tok.decode([int(t) for t in ids]).count("Answer with the text of the correct option.") == 1



def _decoder_input_and_embeddings(cfg: DistillJobConfig, shards: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward of a freshly built student: (D_4DP's input ``[B, T, n, C]``, the LLM's input embeddings
    ``[B, L, C]``)."""
    s = open_shards(shards)
    setup = build_setup(cfg, s.manifest.expert_spec, torch.device("cpu"))
    batch = setup.prepare(next(s.iter_batches(1)), torch.device("cpu"))
    student = setup.student
    seen: dict[str, torch.Tensor] = {}

    def keep_embeddings(_m: object, _a: object, kwargs: dict[str, torch.Tensor]) -> None:
        seen["embeds"] = kwargs["inputs_embeds"]

    def keep_decoder_input(_m: object, args: tuple[torch.Tensor, ...]) -> None:
        seen["read"] = args[0]

    hooks = [
        student.llm.model.register_forward_pre_hook(keep_embeddings, with_kwargs=True),
        student.decoder.register_forward_pre_hook(keep_decoder_input),  # type: ignore[union-attr]
    ]
    with torch.no_grad():
        setup.loss(student, batch)
    for h in hooks:
        h.remove()
    return seen["read"], seen["embeds"]


def test_decoder_layer_reads_the_chosen_hidden_state_and_stays_out_of_the_yaml_by_default(shards: str) -> None:
    """``student.decoder_layer=0`` distils into the projected visual tokens (the LLM's input embeddings); unset,
    D_4DP reads the last layer and the job's YAML (so every reuse key) is unchanged."""
    from rgpt4d_core.config import to_yaml

    assert "decoder_layer" not in to_yaml(_cfg(shards))
    cfg = _cfg(shards, "student.decoder_layer=0")
    assert "decoder_layer: 0" in to_yaml(cfg)
    losses, setup = _one_step(cfg, shards)
    assert setup.student.cfg.decoder.hidden_layer == 0  # type: ignore[attr-defined]
    assert np.isfinite(losses["ld"]) and losses["ld"] > 0
    for layer_args, reads_embeddings in (((), False), (("student.decoder_layer=0",), True)):
        read, embeds = _decoder_input_and_embeddings(_cfg(shards, *layer_args), shards)
        b, t, n, c = read.shape
        # every token D_4DP reads is (or is not) one of the LLM's input embedding rows of its own sample
        nearest = torch.cdist(read.reshape(b, t * n, c), embeds, compute_mode="donot_use_mm_for_euclid_dist").min(dim=-1).values
        assert bool((nearest < 1e-6).all()) == reads_embeddings


def test_decoder_layer_out_of_range_is_refused(shards: str) -> None:
    with pytest.raises(ValueError, match="student.decoder_layer=5"):
        _one_step(_cfg(shards, "student.decoder_layer=5"), shards)
