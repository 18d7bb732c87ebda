"""Does the student's answer depend on its input while it trains? A diagnostic of the recipe probe's collapse.

Trains the recipe probe's student on the derived "does ``<obj_k>`` change its position" questions of static-camera
scenes (``scripts/motion_questions.py``: two answers, balanced) and every ``--every`` steps measures, on held-out
questions, the *margin* of the answer's deciding token (logit of "Yes" minus logit of "No" at the position that
starts the answer):

* its spread across questions (0 = the answer is the same whatever the question and video),
* how much it changes when each question gets another question's video,
* its mean for the questions whose object moves vs stays (equal = nothing learned),

and, at the end, the attention of that position in every LM block (entropy against the uniform one's).

    .venv/bin/python scripts/answer_influence.py --world out/experiment/synth --steps 600 -- --llm-init-std 0.09

Arguments after ``--`` go to ``scripts/recipe_probe.py`` (its ``--world`` and ``--derived`` are set here).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_probe  # noqa: E402
from motion_questions import MOVES, motion_questions  # noqa: E402

from rgpt4d_core.types import VQAItem  # noqa: E402


def answer_inputs(probe: recipe_probe.Probe, qs: Sequence[VQAItem], swap_videos: bool = False) -> dict:
    """The student's forward arguments for the prompts of ``qs`` (videos rolled by one when ``swap_videos``)."""
    media = probe.media(qs)
    if swap_videos:
        media["videos"], media["timestamps_s"] = media["videos"].roll(1, 0), media["timestamps_s"].roll(1, 0)
    prompts = [torch.tensor(probe.prompt(q)) for q in qs]
    boxes = probe.token_boxes([p.tolist() for p in prompts], qs)
    return {"input_ids": prompts, **media, "image_owner": torch.arange(len(qs)), "token_boxes": boxes}


@torch.no_grad()
def margins(probe: recipe_probe.Probe, inputs: dict) -> np.ndarray:
    """float ``[B]``: logit("Yes") − logit("No") where each answer of :func:`answer_inputs` starts."""
    yes, no = probe.tok.encode("Yes")[0], probe.tok.encode("No")[0]
    probe.model.eval()
    out = probe.model(**inputs, compute_latents=False)
    probe.model.train()
    last = out.attention_mask.sum(1) - 1
    logits = out.logits[torch.arange(len(last)), last]
    return (logits[:, yes] - logits[:, no]).numpy()


@torch.no_grad()
def attention_at_answer(probe: recipe_probe.Probe, qs: Sequence[VQAItem]) -> list[tuple[float, float, float]]:
    """Per LM block: mean entropy (nats) of the answer position's attention, the uniform entropy, its mean largest
    weight (eager attention, switched on for this call only)."""
    cfg, grabbed = probe.model.llm.config, []
    backend, cfg._attn_implementation = cfg._attn_implementation, "eager"
    hooks = [layer.self_attn.register_forward_hook(lambda _m, _i, out: grabbed.append(out[1]))
             for layer in probe.model.llm.model.layers]  # fmt: skip
    probe.model.eval()
    try:
        out = probe.model(**answer_inputs(probe, qs), compute_latents=False)
    finally:
        for hook in hooks:
            hook.remove()
        cfg._attn_implementation = backend
        probe.model.train()
    last = out.attention_mask.sum(1) - 1
    report = []
    for weights in grabbed:  # [B, H, L, L]
        rows = weights[torch.arange(len(qs)), :, last]  # [B, H, L]
        entropy = float(-(rows.clamp_min(1e-12).log() * rows).sum(-1).mean())
        report.append((entropy, float(np.log(int(last.float().mean()) + 1)), float(rows.max(-1).values.mean())))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=300)
    p.add_argument("--questions", type=int, default=64, help="held-out questions measured")
    own = p.parse_args(argv[:cut])
    args = recipe_probe.parse_args(["--world", own.world, "--derived", "moves-static-camera", "--answer-style",
                                    "option", "--train-vision", "--seed", "1", *argv[cut + 1 :]])  # fmt: skip
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = motion_questions(args.world, ["train"], 0, static_camera=True)
    held = motion_questions(args.world, ["val", "test"], 1, static_camera=True)[: own.questions]
    world = recipe_probe.decode_world(args.world, sorted({q.video for q in train + held}), args.size, args.frames)
    probe = recipe_probe.Probe(args, world)
    params = [q for q in probe.model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, args.beta2), weight_decay=0.01)
    moves = np.array([q.answer == MOVES for q in held])
    rng = np.random.default_rng(args.seed)
    inputs, swapped_inputs = answer_inputs(probe, held), answer_inputs(probe, held, swap_videos=True)  # fixed
    for step in range(own.steps + 1):
        if step % own.every == 0:
            m, swapped = margins(probe, inputs), margins(probe, swapped_inputs)
            print(f"step {step}: margin {m.mean():+.3f}, spread across questions {m.std():.4f}, change with "
                  f"another video {np.abs(m - swapped).mean():.4f}; moves {m[moves].mean():+.4f} vs stays "
                  f"{m[~moves].mean():+.4f}", flush=True)  # fmt: skip
        if step == own.steps:
            break
        loss = probe.loss([train[i] for i in rng.integers(0, len(train), args.batch)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    for block, (entropy, uniform, top) in enumerate(attention_at_answer(probe, held[:16])):
        print(f"LM block {block}: attention entropy at the answer {entropy:.2f} nats (uniform {uniform:.2f}), "
              f"largest weight {top:.3f}")


if __name__ == "__main__":
    main()
