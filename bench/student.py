"""Benchmark: the tiny student's training and inference speed, measured side by side in one run.

    .venv/bin/python bench/student.py [--batch 4] [--frames 16] [--rounds 15] [--threads 1] [--recipe]

Training (forward + backward + optimiser step, samples/s):
  * ``sft``  — the student without D_4DP, loss = L_SFT;
  * ``ld``   — the same student with D_4DP, loss = L_SFT + L_LD only (no heads in the graph);
  * ``p4d``  — the same student with D_4DP, loss = L_SFT + L_LD + L_ED through the frozen ``l4p_tiny`` heads
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipe", action="store_true", help="the tiny recipe: trained tower, R4D prompt, SoM image")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", device="cpu")).spec
    heads = build_frozen_heads(ExpertConfig(name="l4p", preset="l4p_tiny", device="cpu"))
    data = make_batch(args.batch, args.frames, args.recipe)
    b = args.batch
    k, (t, h, w), c = len(spec.hook_layers), spec.latent_grid, spec.latent_dim
    with torch.no_grad():
        teacher_latents = torch.randn(b, k, t, h, w, c)
        targets = {name: v.detach() for name, v in heads(teacher_latents).items()}
    targets["dyn_mask"] = targets["dyn_mask"].sigmoid()
    targets["latents"] = teacher_latents
    cfg = loss_preset("released_code")

    student_cfg = student_config("tiny")
    if args.recipe:
        student_cfg = replace(student_cfg, vision=replace(student_cfg.vision, frozen=False), answer_style="option")
    torch.manual_seed(0)
    sft_model = Student(student_cfg)
    torch.manual_seed(0)
    p4d_model = Student(student_cfg, spec)
    opt_sft = torch.optim.AdamW([p for p in sft_model.parameters() if p.requires_grad], lr=1e-4)
    opt_p4d = torch.optim.AdamW([p for p in p4d_model.parameters() if p.requires_grad], lr=1e-4)
    media_keys = ("videos", "timestamps_s", "images", "image_owner") if args.recipe else ("videos", "timestamps_s")
    # as the product's training step (train/step.py): the LM head only where the next token is supervised
    fwd_args = {key: data[key] for key in ("input_ids", "labels", *media_keys)} | {"supervised_logits_only": True}

    def step_sft() -> None:
        out = sft_model(**fwd_args)
        loss = p4d_loss(cfg, out.logits, out.labels).total
        opt_sft.zero_grad()
        loss.backward()
        opt_sft.step()

    def step_p4d(loss_cfg: P4DLossConfig, loss_targets: dict[str, torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            out = p4d_model(**fwd_args)
            loss = p4d_loss(loss_cfg, out.logits, out.labels, student_latents=out.latents, targets=loss_targets,
                            sample_mask=out.latent_mask, heads=heads).total  # fmt: skip
            opt_p4d.zero_grad()
            loss.backward()
            opt_p4d.step()

        return step

    t_sft, t_p4d = alternate(step_sft, step_p4d(cfg, targets), args.rounds)
    ld_only = replace(cfg, log_zero_weight_terms=False)
    t_sft2, t_ld = alternate(step_sft, step_p4d(ld_only, {"latents": teacher_latents}), args.rounds)

    # inference: base (never had a decoder) vs trained-with-D_4DP, saved and loaded stripped; same weights
    with tempfile.TemporaryDirectory() as tmp:
        save_student(p4d_model, tmp)
        stripped = load_student(tmp).eval()
        base = Student(stripped.cfg).eval()
        base.load_state_dict(stripped.state_dict())
    gen_args = {"input_ids": data["prompt_ids"], **{key: data[key] for key in media_keys}}
    inf_args = {key: data[key] for key in ("input_ids", *media_keys)}

    def fwd(model: Student) -> Callable[[], object]:
        return lambda: model(**inf_args)

    def gen(model: Student) -> Callable[[], object]:
        return lambda: model.generate(**gen_args, max_new_tokens=4)

    with torch.no_grad():
        t_fb, t_fs = alternate(fwd(base), fwd(stripped), args.rounds)
        t_gb, t_gs = alternate(gen(base), gen(stripped), args.rounds)
        same = torch.equal(base(**inf_args).logits, stripped(**inf_args).logits)
    n_base = sum(p.numel() for p in base.parameters())
    n_dec = sum(p.numel() for p in p4d_model.decoder.parameters()) if p4d_model.decoder is not None else 0

    what = "tiny recipe (trained tower, R4D prompt + SoM image)" if args.recipe else "tiny preset (frozen tower)"
    print(f"{what}: batch {b} × {args.frames} frames 64×64, {sft_model.tokens_per_frame} tokens/frame, "
          f"{n_base / 1e6:.2f} M params (+{n_dec / 1e6:.2f} M D_4DP), expert layout {k}×{t}×{h}×{w}×{c}, "
          f"threads {args.threads}, {args.rounds} rounds (medians)")  # fmt: skip
    print(f"{'measure':<38}{'A':>12}{'B':>12}{'B/A':>8}")
    rows = [
        ("train samples/s  A=sft  B=sft+LD", b / t_sft2, b / t_ld),
        ("train samples/s  A=sft  B=sft+LD+ED", b / t_sft, b / t_p4d),
        ("forward samples/s  A=base B=stripped", b / t_fb, b / t_fs),
        ("generate samples/s A=base B=stripped", b / t_gb, b / t_gs),
    ]
    for name, x, y in rows:
        print(f"{name:<38}{x:>12.1f}{y:>12.1f}{y / x:>8.2f}")
    print(f"stripped and base logits identical: {same}")


if __name__ == "__main__":
    main()
