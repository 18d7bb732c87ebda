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

(``--student NAME=PATH`` repeated; ``--student NAME=init`` scores the preset's untrained student as a floor;
``--student NAME=teacher`` probes, instead of a student's query, what the teacher's own outputs say about the named
regions: :func:`teacher_features`, an upper bound for what distilling them could give these categories;
``--student NAME=PATH:dense`` the same summaries of a region-ED student's dense head, its own copy of those maps.)
Probe only, not part of the product.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rgpt4d_core.config import load  # noqa: E402
from rgpt4d_core.model.checkpoint import load_student  # noqa: E402
from rgpt4d_core.model.region_tracks import RegionTrackConfig, sample_windows  # noqa: E402
from rgpt4d_core.regions import find_object_refs  # noqa: E402
from rgpt4d_core.shards.reader import open_shards  # noqa: E402
from rgpt4d_core.train.config import DistillJobConfig  # noqa: E402
from rgpt4d_core.train.distill import build_setup  # noqa: E402
from rgpt4d_core.train.region_distill import dense_maps  # noqa: E402

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


def probed_rows(shards: str, skip: int, rows: int, batch: int) -> Iterator[tuple[Any, list[int]]]:
    """Shard batches overlapping rows ``skip .. skip + rows`` (shard order), each with the indices of its rows in
    that range whose category is in :data:`CATEGORIES`."""
    seen = 0
    for tb in open_shards(shards).iter_batches(batch):
        start, seen = seen, seen + len(tb.sample_ids)
        if seen <= skip:
            continue
        if start >= skip + rows:
            return
        keep = [i for i in range(len(tb.sample_ids)) if start + i >= skip and tb.tasks[i] in CATEGORIES]
        yield tb, keep


def record(rows: dict[str, list[Any]], tb: Any, i: int, features: torch.Tensor) -> None:
    """Append row ``i`` of ``tb``: its features, category, answer and clip (same frames = same clip)."""
    rows["query"].append(features)
    rows["task"].append(tb.tasks[i])
    rows["answer"].append(tb.answers[i])
    rows["clip"].append(hashlib.sha1(tb.frames[i].tobytes()).hexdigest())


def answer_queries(student: Any, setup: Any, shards: str, skip: int, rows: int, batch: int,
                   dense_head: bool = False) -> dict[str, list[Any]]:  # fmt: skip
    """Per probed row (:func:`probed_rows`): its answer query float ``[D]`` (with ``dense_head``:
    :func:`dense_head_features` instead), category, answer and clip."""
    grabbed: list[Any] = []
    hook = student.region_track_encoder.register_forward_hook(lambda _m, _i, out: grabbed.append(out))
    keep: dict[str, list[Any]] = defaultdict(list)
    student.eval()
    with torch.no_grad():
        for tb, probed in probed_rows(shards, skip, rows, batch):
            batch_in = setup.prepare(tb, torch.device("cpu"))
            grabbed.clear()
            student(input_ids=batch_in.input_ids, labels=batch_in.labels, videos=batch_in.videos,
                    timestamps_s=batch_in.timestamps_s, images=batch_in.images, image_owner=batch_in.image_owner,
                    compute_latents=False, token_boxes=batch_in.token_boxes)  # fmt: skip
            query = grabbed[0].answer_query
            by_sample = {d.sample: d for d in grabbed[0].dense}
            for i in probed:
                record(keep, tb, i, dense_head_features(tb, i, by_sample.get(i)) if dense_head else query[i].float())
    hook.remove()
    return keep


def window_features(windows: torch.Tensor) -> torch.Tensor:
    """Summaries of dense maps sampled at regions' windows: ``windows`` float ``[N, T-1, 2, k, k, 4]`` (log-depth,
    flow x, flow y, mask; window 0 local, 1 the whole frame) → float ``[N, 4, 8]``: per 4 time segments the mean
    flow (x, y) in the window and over the whole frame (the camera's part), the flow's curl and divergence over the
    window's k x k points (rotation; towards / away), the window's mean mask probability and log-depth."""
    local, whole = windows[:, :, 0], windows[:, :, 1]
    fx, fy = local[..., 1], local[..., 2]  # [N, T-1, k, k]; x along the last axis, y along the one before
    curl = (fy[..., :, 1:] - fy[..., :, :-1]).mean((-1, -2)) - (fx[..., 1:, :] - fx[..., :-1, :]).mean((-1, -2))
    div = (fx[..., :, 1:] - fx[..., :, :-1]).mean((-1, -2)) + (fy[..., 1:, :] - fy[..., :-1, :]).mean((-1, -2))
    per_frame = torch.stack([fx.mean((-1, -2)), fy.mean((-1, -2)), whole[..., 1].mean((-1, -2)),
                             whole[..., 2].mean((-1, -2)), curl, div, local[..., 3].mean((-1, -2)),
                             local[..., 0].mean((-1, -2))], dim=-1)  # [N, T-1, 8]  # fmt: skip
    return F.adaptive_avg_pool1d(per_frame.transpose(1, 2), 4).transpose(1, 2)


def named_boxes(tb: Any, i: int) -> list[tuple[float, float, float, float]]:
    """The frame-1 boxes of the regions sample ``i``'s question names (up to 4, in order of mention)."""
    boxes = {r.obj_id: r.box for r in tb.regions[i]}
    return [boxes[k] for k in find_object_refs(tb.questions[i]) if k in boxes][:4]


def teacher_features(tb: Any, i: int, cfg: RegionTrackConfig) -> torch.Tensor:
    """What the teacher's maps say about sample ``i``'s named regions: :func:`window_features` of each (zeros for
    absent ones), float ``[4 * 4 * 8]``."""
    targets = {k: torch.from_numpy(v[i : i + 1].astype("float32")) for k, v in tb.targets.items() if v is not None}
    maps = dense_maps(targets, 0, None, 1e-8)  # [T, 4, H, W]: log-depth, flow x, flow y, mask
    named = named_boxes(tb, i)
    out = torch.zeros(4, 4, 8)
    if named:
        out[: len(named)] = window_features(sample_windows(maps, torch.tensor(named), cfg)[:, 1:])
    return out.flatten()


def dense_head_features(tb: Any, i: int, dense: Any) -> torch.Tensor:
    """As :func:`teacher_features`, from a student's region dense head (its prediction of the teacher's standardised
    maps at the same points; ``dense``: the sample's ``RegionDense`` or ``None``)."""
    out = torch.zeros(4, 4, 8)
    if dense is not None:
        for j, box in enumerate(named_boxes(tb, i)):
            match = (dense.boxes - torch.tensor(box, dtype=dense.boxes.dtype)).abs().sum(1).argmin()
            out[j] = window_features(dense.pred[match : match + 1].float())[0]
    return out.flatten()


def teacher_rows(shards: str, skip: int, rows: int, batch: int, cfg: RegionTrackConfig) -> dict[str, list[Any]]:
    """As :func:`answer_queries`, with :func:`teacher_features` in place of a student's query."""
    keep: dict[str, list[Any]] = defaultdict(list)
    for tb, probed in probed_rows(shards, skip, rows, batch):
        for i in probed:
            record(keep, tb, i, teacher_features(tb, i, cfg))
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
        if path == "teacher":
            rows = teacher_rows(args.shards, args.skip, args.rows, args.batch, setup.student.cfg.region_tracks)
        else:
            path, dense_head = path.removesuffix(":dense"), path.endswith(":dense")
            student = setup.student if path == "init" else load_student(path)
            rows = answer_queries(student, setup, args.shards, args.skip, args.rows, args.batch, dense_head)
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
