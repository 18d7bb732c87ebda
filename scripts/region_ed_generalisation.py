"""Diagnostic: does a region-ED student's copy of the teacher's maps hold on clips it did not train on?

For a student trained with ``losses.region`` (its region tracks' dense head predicts the teacher's standardised
log-depth, flow and mask probability at the tracks' window points), the same region-ED loss the training minimised
(``rgpt4d_core/train/region_distill.py``; 1.0 = predicting each channel's mean) is measured on the questions it
trained on (the first ``--trained`` shard rows) and on the following ``--rows`` rows, whose clips it never saw.
A large gap says the distilled perception was memorised on the training clips, not learned.

    .venv/bin/python scripts/region_ed_generalisation.py --shards out/experiment/shards --student $(ls -d out/experiment/runs/abl-red_only-2k-s0/checkpoint*/export)

Probe only, not part of the product.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rgpt4d_core.config import load  # noqa: E402
from rgpt4d_core.losses import loss_preset  # noqa: E402
from rgpt4d_core.model.checkpoint import load_student  # noqa: E402
from rgpt4d_core.shards.reader import open_shards  # noqa: E402
from rgpt4d_core.shards.target_stats import target_norm_from_shards  # noqa: E402
from rgpt4d_core.train.config import DistillJobConfig  # noqa: E402
from rgpt4d_core.train.distill import build_setup  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "conf" / "distill" / "tiny.yaml"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True, help="the experiment's shard set (train split)")
    p.add_argument("--student", action="append", required=True, help="an exported region-ED checkpoint (repeatable)")
    p.add_argument("--trained", type=int, default=2000, help="the first N shard rows the students trained on")
    p.add_argument("--rows", type=int, default=8000, help="unseen rows to measure after them")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    cfg = load(DistillJobConfig, [TINY], [f"data.shards={args.shards}", "run.storage_path=/tmp/unused",
                                          "ablation.variant=sft_only", "losses.preset=normalized",
                                          "losses.region=1"])  # fmt: skip
    shards = open_shards(args.shards)
    norm = target_norm_from_shards(shards, "train", loss_preset("normalized").depth_eps)
    for path in args.student:
        setup = build_setup(cfg, shards.manifest.expert_spec, torch.device("cpu"), norm=norm)
        student = load_student(path)
        student.eval()
        sums, counts, seen = [0.0, 0.0], [0, 0], 0
        with torch.no_grad():
            for tb in shards.iter_batches(args.batch):
                start, seen = seen, seen + len(tb.sample_ids)
                if start >= args.trained + args.rows:
                    break
                side = 0 if seen <= args.trained else 1  # a batch straddling the boundary counts as unseen
                term = setup.loss(student, setup.prepare(tb, torch.device("cpu"))).terms.get("region")
                if term is not None:
                    sums[side] += float(term) * len(tb.sample_ids)
                    counts[side] += len(tb.sample_ids)
        trained, unseen = sums[0] / max(counts[0], 1), sums[1] / max(counts[1], 1)
        print(f"{path}: region-ED loss on its training questions {trained:.3f} ({counts[0]} rows), "
              f"on unseen clips {unseen:.3f} ({counts[1]} rows)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
