"""Diagnostic: how much of a motion answer is linearly readable from what the answer position receives?

For each trained student (an exported checkpoint), the region tracks' answer query (``RegionTrackEncoder``: a
projection of the question's named regions' track codes and boxes, added to every answer token; float ``[D]``) is
extracted for training-split questions the 2k students never saw (shard rows after the first ``--skip``), and a
multinomial logistic regression per category (R: rotation, C: how many move, T: direction over the ground) is fitted
on the first clips and scored on the rest (split by clip, so no video is on both sides). It separates the two halves
of the transfer link of issue 16: if the distilled students' queries predict the motion answers better than the
SFT-only student's, the teacher's motion reached the read-out and the language model does not use it; if not, it
did not reach it. T's time window is in the question's text, not in the query, so T is bounded below 100 % here.

    .venv/bin/python scripts/answer_probe.py --shards out/experiment/shards --out out/answer_probe.json --student sft=out/experiment/runs/abl-sft-2k-s0/<checkpoint>/export

(``--student NAME=PATH`` repeated; ``--student NAME=init`` scores the preset's untrained student as a floor.)
Probe only, not part of the product.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rgpt4d_core.config import load  # noqa: E402
from rgpt4d_core.model.checkpoint import load_student  # noqa: E402
from rgpt4d_core.shards.reader import open_shards  # noqa: E402
from rgpt4d_core.train.config import DistillJobConfig  # noqa: E402
from rgpt4d_core.train.distill import build_setup  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "conf" / "distill" / "tiny.yaml"
CATEGORIES = ("R", "C", "T")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True, help="the experiment's shard set (train split)")
    p.add_argument("--student", action="append", required=True, help="NAME=PATH of an exported checkpoint, or NAME=init")
    p.add_argument("--skip", type=int, default=2000, help="rows the students trained on (the first N questions)")
    p.add_argument("--rows", type=int, default=12000, help="rows after --skip to probe")
    p.add_argument("--fit-fraction", type=float, default=0.6, help="share of the probed clips the probe fits on")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out", default="", help="write the results as JSON here")
    return p.parse_args(argv)


def answer_queries(student: Any, setup: Any, shards: str, skip: int, rows: int, batch: int) -> dict[str, list[Any]]:
    """Per probed row of a category in :data:`CATEGORIES`: its answer query float ``[D]``, category, answer and
    clip (row order = shard order)."""
    grabbed: list[torch.Tensor] = []
    hook = student.region_track_encoder.register_forward_hook(lambda _m, _i, out: grabbed.append(out.answer_query))
    keep: dict[str, list[Any]] = defaultdict(list)
    seen = 0
    student.eval()
    with torch.no_grad():
        for tb in open_shards(shards).iter_batches(batch):
            start, seen = seen, seen + len(tb.sample_ids)
            if seen <= skip:
                continue
            if start >= skip + rows:
                break
            batch_in = setup.prepare(tb, torch.device("cpu"))
            grabbed.clear()
            student(input_ids=batch_in.input_ids, labels=batch_in.labels, videos=batch_in.videos,
                    timestamps_s=batch_in.timestamps_s, images=batch_in.images, image_owner=batch_in.image_owner,
                    compute_latents=False, token_boxes=batch_in.token_boxes)  # fmt: skip
            query = grabbed[0]
            for i in range(len(tb.sample_ids)):
                if start + i < skip or tb.tasks[i] not in CATEGORIES:
                    continue
                keep["query"].append(query[i].float())
                keep["task"].append(tb.tasks[i])
                keep["answer"].append(tb.answers[i])
                keep["clip"].append(hashlib.sha1(tb.frames[i].tobytes()).hexdigest())  # same frames = same clip
    hook.remove()
    return keep


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, fit: torch.Tensor, classes: int) -> tuple[float, float]:
    """(held-out accuracy of an L2-regularised multinomial logistic regression on standardised ``x`` ``[N, D]``,
    held-out accuracy of the fitted rows' majority answer)."""
    torch.manual_seed(0)
    mean, std = x[fit].mean(0), x[fit].std(0).clamp(min=1e-6)
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z[fit] @ w + b, y[fit]) + 1e-2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    test = ~fit
    acc = float(((z[test] @ w + b).argmax(1) == y[test]).float().mean())
    majority = int(torch.bincount(y[fit], minlength=classes).argmax())
    return acc, float((y[test] == majority).float().mean())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(2)
    cfg = load(DistillJobConfig, [TINY], [f"data.shards={args.shards}", "run.storage_path=/tmp/unused",
                                          "ablation.variant=sft_only"])  # fmt: skip
    spec = open_shards(args.shards).manifest.expert_spec
    results: dict[str, dict[str, dict[str, float]]] = {}
    for entry in args.student:
        name, path = entry.split("=", 1)
        torch.manual_seed(0)
        setup = build_setup(cfg, spec, torch.device("cpu"))
        student = setup.student if path == "init" else load_student(path)
        rows = answer_queries(student, setup, args.shards, args.skip, args.rows, args.batch)
        clips = list(dict.fromkeys(rows["clip"]))
        fit_clips = set(clips[: int(len(clips) * args.fit_fraction)])
        results[name] = {}
        for task in CATEGORIES:
            idx = [i for i, t in enumerate(rows["task"]) if t == task]
            answers = sorted(set(rows["answer"][i] for i in idx))
            x = torch.stack([rows["query"][i] for i in idx])
            y = torch.tensor([answers.index(rows["answer"][i]) for i in idx])
            fit = torch.tensor([rows["clip"][i] in fit_clips for i in idx])
            acc, majority = probe_accuracy(x, y, fit, len(answers))
            results[name][task] = {"probe": 100 * acc, "majority": 100 * majority, "fit": int(fit.sum()),
                                   "held_out": int((~fit).sum())}  # fmt: skip
            print(f"{name:>12} {task}: probe {100 * acc:5.1f} %  (majority {100 * majority:5.1f} %, "
                  f"{int(fit.sum())} fitted / {int((~fit).sum())} held out)", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
