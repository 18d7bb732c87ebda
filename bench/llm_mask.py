"""Benchmark: a teacher-forced training step with an explicit ``[B, 1, L, L]`` attention mask vs the causal kernel
alone (``Student._teacher_forced_mask``), side by side in one run.

    .venv/bin/python bench/llm_mask.py [--batch 8] [--rounds 9] [--threads 2]

The batch is right-padded as in training: ``--batch - 1`` short multiple-choice prompts and one long one (the
synthetic benchmark's VG questions, five JSON boxes, are ~490 text tokens against ~130-180 for the others), each with
a 16-frame video and a Set-of-Marks image, the tiny recipe's student (trained tower, option answers). Both paths give
the same real-token outputs (``tests/test_supervised_logits.py``); B/A is the speed-up. Rounds alternate A/B so both
see the same CPU contention; medians are reported.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.student import alternate  # noqa: E402
from rgpt4d_core.losses import sft_loss  # noqa: E402
from rgpt4d_core.model.fusion import FusedBatch  # noqa: E402
from rgpt4d_core.model.presets import student_config  # noqa: E402
from rgpt4d_core.model.student import Student  # noqa: E402
from rgpt4d_core.text.prompts import build_training_example, mcq_target, r4d_user_text  # noqa: E402
from rgpt4d_core.text.tokenizer import tiny_tokenizer  # noqa: E402

SHORT = ("Does <obj_1> rotate during the video, and if so in which direction?",
         ("It rotates clockwise (seen from above)", "It does not rotate", "It tumbles about a horizontal axis",
          "It rotates counter-clockwise (seen from above)"))  # fmt: skip
LONG_BOX = '{{"center": [-1.67, {y:.2f}, 0.18], "size": [0.58, 0.73, 0.37], "yaw_deg": -31}}'
LONG = ("At 0.5 s, which is the 3D bounding box of <obj_1> in the ground frame of the first camera (x right, "
        "y forward, z up, metres)? (yaw in degrees about z)",
        tuple(LONG_BOX.format(y=1.13 + 1.2 * i) for i in range(5)))  # fmt: skip


def batch(size: int, frames: int) -> dict:
    """Forward arguments of a right-padded training batch: ``size - 1`` short prompts, one long."""
    tok = tiny_tokenizer()
    ids, labels = [], []
    for question, options in [SHORT] * (size - 1) + [LONG]:
        user = r4d_user_text(tok, question, options, 3.0, answer_style="option")
        ex = build_training_example(tok, user, mcq_target(options, options[0], "option"))
        ids.append(torch.tensor(ex.input_ids))
        labels.append(torch.tensor(ex.labels))
    g = torch.Generator().manual_seed(0)
    return {
        "input_ids": ids,
        "labels": labels,
        "videos": torch.rand(size, frames, 3, 64, 64, generator=g) * 2 - 1,
        "timestamps_s": torch.arange(frames, dtype=torch.float32).expand(size, frames) / 8,
        "images": torch.rand(size, 3, 64, 64, generator=g) * 2 - 1,
        "image_owner": torch.arange(size),
        "supervised_logits_only": True,
        "compute_latents": False,
    }


def explicit_mask(_self: Student, fused: FusedBatch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The path before the change: the padding mask and positions handed to the LLM."""
    return fused.attention_mask, fused.position_ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = student_config("tiny")
    cfg = replace(cfg, vision=replace(cfg.vision, frozen=False), answer_style="option")
    torch.manual_seed(0)
    model = Student(cfg)
    data = batch(args.batch, args.frames)
    causal = Student._teacher_forced_mask

    def step(mask_fn: object) -> None:
        Student._teacher_forced_mask = mask_fn  # type: ignore[method-assign, assignment]
        try:
            out = model(**data)
            model.zero_grad(set_to_none=True)
            sft_loss(out.logits, out.labels)[0].backward()
        finally:
            Student._teacher_forced_mask = causal  # type: ignore[method-assign]

    t_mask, t_causal = alternate(lambda: step(explicit_mask), lambda: step(causal), args.rounds)
    lengths = [len(x) for x in data["input_ids"]]
    print(f"tiny recipe, batch {args.batch} x {args.frames} frames, text tokens {min(lengths)}-{max(lengths)}, "
          f"threads {args.threads}, {args.rounds} rounds (medians), load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'measure':<46}{'A':>10}{'B':>10}{'B/A':>8}")
    a, b = args.batch / t_mask, args.batch / t_causal
    print(f"{'train samples/s  A=explicit mask  B=causal only':<46}{a:>10.1f}{b:>10.1f}{b / a:>8.2f}")


if __name__ == "__main__":
    main()
