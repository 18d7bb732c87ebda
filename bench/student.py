"""Benchmark: the tiny student's training and inference speed, measured side by side in one run.

    .venv/bin/python bench/student.py [--batch 4] [--frames 16] [--rounds 15] [--threads 1] [--recipe]

Training (forward + backward + optimiser step, samples/s):
  * ``sft``  — the student without D_4DP, loss = L_SFT;
  * ``ld``   — the same student with D_4DP, loss = L_SFT + L_LD only (no heads in the graph);
  * ``p4d``  — the same student with D_4DP, loss = L_SFT + L_LD + L_ED through the frozen ``l4p_tiny`` heads (``--expert-preset``)
    (``losses.p4d_loss``, released-code weights), teacher targets pre-computed (as from shards).
Inference (no grad, samples/s), same weights:
  * ``base``     — a student built without a decoder;
  * ``stripped`` — a student trained with D_4DP, saved, and loaded for inference (decoder stripped).
  Both a teacher-forced forward and ``generate(max_new_tokens=4)`` are timed. The paper claims no inference
  cost from P4D: stripped/base should be 1.00 within noise.

By default the student is the bare ``tiny`` preset (frozen tower) on a one-line question. ``--recipe`` measures
what the tiny recipe of ``conf/distill/tiny.yaml`` trains: a trained vision tower, an R4D-style prompt with a
Set-of-Marks image and five options, and the option's text as the answer (``answer_style: option``); L_ED costs the
same per sample in both, the SFT step is larger.

Rounds alternate A/B so both see the same CPU contention; medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.experts.l4p import build_frozen_heads
from rgpt4d_core.experts.registry import ExpertConfig, build_expert
from rgpt4d_core.losses import P4DLossConfig, loss_preset, p4d_loss
from rgpt4d_core.model.checkpoint import load_student, save_student
from rgpt4d_core.model.presets import student_config
from rgpt4d_core.model.student import Student
from rgpt4d_core.text.prompts import (
    build_inference_ids,
    build_training_example,
    mcq_target,
    media_placeholders,
    r4d_user_text,
)
from rgpt4d_core.text.tokenizer import tiny_tokenizer

#: a representative synthetic-benchmark question for ``--recipe`` (T category, five options)
RECIPE_QUESTION = ("Between 0.5 s and 2.5 s, in which direction does <obj_1> move over the ground, relative to the "
                   "camera's initial viewpoint?")  # fmt: skip
RECIPE_OPTIONS = ("To the left", "Away from the camera", "Towards the camera", "To the right",
                  "It does not change its position")  # fmt: skip


def make_batch(batch: int, frames: int, recipe: bool = False) -> dict:
    tok = tiny_tokenizer()
    if recipe:
        user = r4d_user_text(tok, RECIPE_QUESTION, RECIPE_OPTIONS, 3.0, answer_style="option")
        ex = build_training_example(tok, user, mcq_target(RECIPE_OPTIONS, "To the right", "option"))
    else:
        user = media_placeholders(tok, has_video=True) + "How many objects are moving in the video?"
        ex = build_training_example(tok, user, "B")
    g = torch.Generator().manual_seed(0)
    extra = {"images": torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1, "image_owner": torch.arange(batch)}
    return {**(extra if recipe else {}),
        "input_ids": [torch.tensor(ex.input_ids)] * batch,
        "labels": [torch.tensor(ex.labels)] * batch,
        "prompt_ids": [torch.tensor(build_inference_ids(tok, user))] * batch,
        "videos": torch.rand(batch, frames, 3, 64, 64, generator=g) * 2 - 1,
        "timestamps_s": torch.arange(frames, dtype=torch.float32).expand(batch, frames) / 8,
    }


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(a: Callable[[], object], b: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b`` over ``rounds`` alternating calls (after one warm-up each)."""
    a(), b()
    ta, tb = [], []
    for i in range(rounds):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        t1, t2 = timed(first), timed(second)
        ta.append(t1 if first is a else t2)
        tb.append(t2 if first is a else t1)
    return statistics.median(ta), statistics.median(tb)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipe", action="store_true", help="the tiny recipe: trained tower, R4D prompt, SoM image")
    parser.add_argument("--expert-preset", default="l4p_tiny",
                        help="the l4p preset whose frozen heads L_ED runs through")
    return parser.parse_args()


def teacher_targets(spec: ExpertSpec, heads: nn.Module, batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Random teacher latents ``[B, K, T', h', w', C']`` and the frozen heads' dense targets on them (as from
    shards); the targets dict also holds the latents under ``"latents"``."""
    k, (t, h, w), c = len(spec.hook_layers), spec.latent_grid, spec.latent_dim
    with torch.no_grad():
        teacher_latents = torch.randn(batch, k, t, h, w, c)
        targets = {name: v.detach() for name, v in heads(teacher_latents).items()}
    targets["dyn_mask"] = targets["dyn_mask"].sigmoid()
    targets["latents"] = teacher_latents
    return teacher_latents, targets


def media_keys(recipe: bool) -> tuple[str, ...]:
    return ("videos", "timestamps_s", "images", "image_owner") if recipe else ("videos", "timestamps_s")


def adamw(model: Student) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def train_step(
    model: Student, opt: torch.optim.Optimizer, fwd_args: dict, loss_cfg: P4DLossConfig,
    heads: nn.Module | None = None, targets: dict[str, torch.Tensor] | None = None,
) -> Callable[[], None]:  # fmt: skip
    """One optimiser step of ``model`` with ``opt``: L_SFT, plus the P4D terms of ``loss_cfg`` on ``targets``."""

    def step() -> None:
        out = model(**fwd_args)
        if targets is None:
            loss = p4d_loss(loss_cfg, out.logits, out.labels).total
        else:
            loss = p4d_loss(loss_cfg, out.logits, out.labels, student_latents=out.latents, targets=targets,
                            sample_mask=out.latent_mask, heads=heads).total  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def inference_times(trained: Student, data: dict, keys: tuple[str, ...], rounds: int) -> dict[str, float]:
    """Forward and generate medians (s) of a base student (never had a decoder) vs ``trained`` saved and loaded
    stripped, same weights; whether their logits are identical; the base's parameter count."""
    with tempfile.TemporaryDirectory() as tmp:
        save_student(trained, tmp)
        stripped = load_student(tmp).eval()
        base = Student(stripped.cfg).eval()
        base.load_state_dict(stripped.state_dict())
    gen_args = {"input_ids": data["prompt_ids"], **{key: data[key] for key in keys}}
    inf_args = {key: data[key] for key in ("input_ids", *keys)}

    def fwd(model: Student) -> Callable[[], object]:
        return lambda: model(**inf_args)

    def gen(model: Student) -> Callable[[], object]:
        return lambda: model.generate(**gen_args, max_new_tokens=4)

    with torch.no_grad():
        t_fb, t_fs = alternate(fwd(base), fwd(stripped), rounds)
        t_gb, t_gs = alternate(gen(base), gen(stripped), rounds)
        same = torch.equal(base(**inf_args).logits, stripped(**inf_args).logits)
    n_base = float(sum(p.numel() for p in base.parameters()))
    return {"fb": t_fb, "fs": t_fs, "gb": t_gb, "gs": t_gs, "same": float(same), "n_base": n_base}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    expert = ExpertConfig(name="l4p", preset=args.expert_preset, device="cpu")
    spec = build_expert(expert).spec
    heads = build_frozen_heads(expert)
    data = make_batch(args.batch, args.frames, args.recipe)
    b = args.batch
    teacher_latents, targets = teacher_targets(spec, heads, b)
    cfg = loss_preset("released_code")

    student_cfg = student_config("tiny")
    if args.recipe:
        student_cfg = replace(student_cfg, vision=replace(student_cfg.vision, frozen=False), answer_style="option")
    torch.manual_seed(0)
    sft_model = Student(student_cfg)
    torch.manual_seed(0)
    p4d_model = Student(student_cfg, spec)
    keys = media_keys(args.recipe)
    # as the product's training step (train/step.py): the LM head only where the next token is supervised
    fwd_args = {key: data[key] for key in ("input_ids", "labels", *keys)} | {"supervised_logits_only": True}
    opt_sft, opt_p4d = adamw(sft_model), adamw(p4d_model)
    step_sft = train_step(sft_model, opt_sft, fwd_args, cfg)
    t_sft, t_p4d = alternate(step_sft, train_step(p4d_model, opt_p4d, fwd_args, cfg, heads, targets), args.rounds)
    ld_only = replace(cfg, log_zero_weight_terms=False)
    ld_step = train_step(p4d_model, opt_p4d, fwd_args, ld_only, heads, {"latents": teacher_latents})
    t_sft2, t_ld = alternate(step_sft, ld_step, args.rounds)
    inf = inference_times(p4d_model, data, keys, args.rounds)

    n_base = inf["n_base"]
    n_dec = sum(p.numel() for p in p4d_model.decoder.parameters()) if p4d_model.decoder is not None else 0
    k, (t, h, w), c = len(spec.hook_layers), spec.latent_grid, spec.latent_dim
    what = "tiny recipe (trained tower, R4D prompt + SoM image)" if args.recipe else "tiny preset (frozen tower)"
    print(f"{what}: batch {b} × {args.frames} frames 64×64, {sft_model.tokens_per_frame} tokens/frame, "
          f"{n_base / 1e6:.2f} M params (+{n_dec / 1e6:.2f} M D_4DP), expert layout {k}×{t}×{h}×{w}×{c}, "
          f"threads {args.threads}, {args.rounds} rounds (medians)")  # fmt: skip
    print(f"{'measure':<38}{'A':>12}{'B':>12}{'B/A':>8}")
    rows = [
        ("train samples/s  A=sft  B=sft+LD", b / t_sft2, b / t_ld),
        ("train samples/s  A=sft  B=sft+LD+ED", b / t_sft, b / t_p4d),
        ("forward samples/s  A=base B=stripped", b / inf["fb"], b / inf["fs"]),
        ("generate samples/s A=base B=stripped", b / inf["gb"], b / inf["gs"]),
    ]
    for name, x, y in rows:
        print(f"{name:<38}{x:>12.1f}{y:>12.1f}{y / x:>8.2f}")
    print(f"stripped and base logits identical: {bool(inf['same'])}")


if __name__ == "__main__":
    main()
