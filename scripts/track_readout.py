"""Experiment: is "does ``<obj_k>`` change its position" decidable from the region-track code alone (no LM)?

Trains the tiny student's vision tower and region-track encoder (``rgpt4d_core/model/region_tracks.py``) with a
linear 2-way head on the code of the question's region, on the derived motion questions of
``scripts/motion_questions.py``, and prints held-out accuracy every 100 steps. It separates the read-out (does the
code carry the answer, how many samples does it take) from the language model's part. Probe only.

    .venv/bin/python scripts/track_readout.py --world out/experiment/synth --batch 32 --steps 600
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from motion_questions import motion_questions  # noqa: E402
from recipe_probe import Probe, decode_world, parse_args  # noqa: E402

from rgpt4d_core.regions import find_object_refs  # noqa: E402
from rgpt4d_core.types import VQAItem  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--held-out", type=int, default=400)
    p.add_argument("--all-scenes", action="store_true", help="also scenes whose camera moves")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    static = not args.all_scenes
    train = motion_questions(args.world, ["train"], 0, static)
    held = motion_questions(args.world, ["val", "test"], 1, static)[: args.held_out]
    world = decode_world(args.world, sorted({q.video for q in train + held}), 64, 16)
    probe_args = ["--world", args.world, "--answer-style", "option", "--train-vision", "--region-tracks"]
    probe = Probe(parse_args(probe_args), world)
    tower, encoder = probe.model.vision, probe.model.region_track_encoder
    assert encoder is not None
    head = torch.nn.Linear(probe.model.llm.config.hidden_size, 2)
    params = [p for m in (tower, encoder, head) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)

    def codes(qs: list[VQAItem]) -> torch.Tensor:
        """``[B, D]``: the track code of each question's region."""
        videos = probe.media(qs)["videos"]
        feats = tower(videos.flatten(0, 1)).unflatten(0, videos.shape[:2])
        out = []
        for f, q in zip(feats, qs, strict=True):
            obj_id = find_object_refs(q.question)[0]
            box = next(r.box for r in q.regions if r.obj_id == obj_id)
            out.append(encoder.track_codes(f, torch.tensor([box], dtype=torch.float32))[0])
        return torch.stack(out)

    def moves(qs: list[VQAItem]) -> torch.Tensor:
        return torch.tensor([int(q.answer.startswith("Yes")) for q in qs])

    rng, start = np.random.default_rng(args.seed), time.perf_counter()
    for step in range(args.steps):
        qs = [train[i] for i in rng.integers(0, len(train), args.batch)]
        loss = F.cross_entropy(head(codes(qs)), moves(qs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            with torch.no_grad():
                right = sum(int((head(codes(held[i : i + 50])).argmax(1) == moves(held[i : i + 50])).sum())
                            for i in range(0, len(held), 50))  # fmt: skip
            print(f"step {step + 1}  loss {loss.item():.3f}  held-out {100 * right / len(held):.1f} % of "
                  f"{len(held)}  ({time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
