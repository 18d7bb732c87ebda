"""Perception ceiling: can a plain supervised video CNN read a category's answer from the pixels the student sees?

No language model, no option text: each question becomes a crop of the frames around its object's frame-1 box
(every sampled frame, the same crop window, plus the whole frame downsampled for the camera's motion), a channel that
marks the frames inside the question's time window, and the answer's class (T: direction of motion, R: rotation).
A small 3-D CNN is trained on the training questions and scored on the held-out ones. If it generalises, the signal
is in the pixels at the student's resolution and data size, and the student's failure is in getting it to the answer
(routing through the LM); if it does not, the resolution or the data is the limit. ``--model student-tower`` puts the
student's own vision tower and projector under the same kind of small head instead (no LM), to tell the tower from
the LM. Examples (docs/results.md, "Sixth round")::

    .venv/bin/python scripts/perception_ceiling.py --world out/experiment/synth --task T --epochs 30
    .venv/bin/python scripts/perception_ceiling.py --world out/experiment/synth --task T --epochs 20 --model student-tower
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from motion_questions import MOVES, motion_questions  # noqa: E402
from probe_world import decode_world  # noqa: E402

from rgpt4d_core.regions import find_object_refs  # noqa: E402
from rgpt4d_core.synth.dataset import load_questions  # noqa: E402

#: answer key (question meta) → class index, per category
CLASSES = {
    "T": ("left", "right", "away", "towards", "none"),
    "R": ("cw", "ccw", "none"),
    "MV": ("moves", "stays"),  # derived per-object questions (scripts/motion_questions.py)
}
CROP = 32  # crop side, pixels


def read_rows(root: str, split: str, task: str) -> list[dict[str, Any]]:
    if task == "MV":  # the recipe probe's --derived moves questions, as rows
        return [{"video": q.video, "question": q.question, "meta": {"answer_key": "moves" if q.answer == MOVES else "stays"},
                 "regions": [{"obj_id": r.obj_id, "box": list(r.box)} for r in q.regions]}
                for q in motion_questions(root, [split], 0 if split == "train" else 1)]  # fmt: skip
    rows = [json.loads(x) for x in Path(root, "questions", f"{split}.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in rows if r["task"] == task and r["meta"].get("answer_key") in CLASSES[task]]


def crop_boxes(box: Sequence[float], scale: float) -> tuple[float, float, float, float]:
    """A square window ``scale`` × the box's larger side (at least 0.25 of the frame), centred on it; normalised."""
    x0, y0, x1, y1 = box
    side = max(scale * max(x1 - x0, y1 - y0), 0.25)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def object_crop(video: torch.Tensor, box: Sequence[float], scale: float, side: int) -> torch.Tensor:
    """Every frame of ``video`` float ``[T, 3, S, S]`` cropped to :func:`crop_boxes` of ``box`` (normalised
    ``x0, y0, x1, y1``), resampled to ``[T, 3, side, side]`` (bilinear; zeros outside the frame)."""
    x0, y0, x1, y1 = crop_boxes(box, scale)
    ys = torch.linspace(y0, y1, side) * 2 - 1
    xs = torch.linspace(x0, x1, side) * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1)  # [side, side, 2] as (x, y)
    return F.grid_sample(video, grid[None].expand(len(video), -1, -1, -1), align_corners=True)


def in_window(stamps: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """bool ``[T]``: the sampled frames whose timestamps (s) lie in ``[t0, t1]``."""
    return (stamps >= t0 - 1e-6) & (stamps <= t1 + 1e-6)


def inputs(frames: np.ndarray, stamps: np.ndarray, row: dict[str, Any], scale: float) -> torch.Tensor:
    """``[7, T, CROP, CROP]``: the object's crop (3), the whole frame (3), the in-window mark (1); pixels in [-1, 1]."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # [T, 3, S, S]
    region = next(r for r in row["regions"] if r["obj_id"] == prompt_obj(row))
    crop = object_crop(video, region["box"], scale, CROP)
    whole = F.interpolate(video, size=(CROP, CROP), mode="area")
    t0, t1 = row["meta"].get("t0", 0.0), row["meta"].get("t1", float(stamps[-1]) + 1)
    inside = torch.from_numpy(in_window(stamps, t0, t1).astype(np.float32))
    mark = inside[:, None, None, None].expand(-1, 1, CROP, CROP)
    return torch.cat([crop, whole, mark], 1).permute(1, 0, 2, 3)


def prompt_obj(row: dict[str, Any]) -> int:
    """The ``<obj_k>`` id the question names (the first reference in its text)."""
    return find_object_refs(row["question"])[0]


class VideoCNN(nn.Module):
    """``[B, 7, T, 32, 32]`` → class logits ``[B, K]``."""

    def __init__(self, classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv3d(7, w, 3, padding=1), nn.BatchNorm3d(w), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(w, 2 * w, 3, padding=1), nn.BatchNorm3d(2 * w), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm3d(2 * w), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
            nn.Flatten(), nn.Linear(2 * w, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def windowed_crop(x: torch.Tensor, side: int = 64) -> torch.Tensor:
    """The crop channels of :func:`inputs` ``[B, 7, T, CROP, CROP]`` as a video ``[B, T, 3, side, side]`` (bilinear)
    whose frames outside the question's window are black (-1): what the student's towers are given here."""
    b, _, t = x.shape[:3]
    crop, inside = x[:, :3].transpose(1, 2), x[:, 6, :, 0, 0] > 0.5  # [B, T, 3, CROP, CROP], [B, T]
    crop = torch.where(inside[:, :, None, None, None], crop, torch.full_like(crop, -1.0))
    return F.interpolate(crop.flatten(0, 1), size=(side, side), mode="bilinear", align_corners=False).unflatten(0, (b, t))


class TowerClassifier(nn.Module):
    """The student's own vision tower and projector (``tiny`` preset, trainable) under a small temporal head instead
    of the LM: ``[B, 7, T, 32, 32]`` (only the crop's 3 channels are
    used, resampled to the tower's 64 px, frames outside the window blacked out) → logits ``[B, K]``."""

    def __init__(self, classes: int, pool_positions: bool = False) -> None:
        super().__init__()
        import dataclasses

        from rgpt4d_core.model.presets import tiny
        from rgpt4d_core.model.projector import build_projector
        from rgpt4d_core.model.vision import VisionTower

        cfg = tiny()
        vision = dataclasses.replace(cfg.vision, frozen=False)
        self.tower = VisionTower(vision)
        self.projector = build_projector(cfg.projector, vision.hidden_size, cfg.llm.hidden_size)
        self.pool_positions = pool_positions  # average the tokens of a frame (a head shared across positions)
        width = cfg.llm.hidden_size * (1 if pool_positions else self.projector.output_grid(self.tower.grid) ** 2)
        self.temporal = nn.Sequential(nn.Conv1d(width, 64, 3, padding=1), nn.ReLU())
        self.out = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        video = windowed_crop(x)
        b, t = video.shape[:2]
        tokens = self.projector(self.tower(video.flatten(0, 1)))  # [B*T, n, D]
        tokens = tokens.mean(1, keepdim=True) if self.pool_positions else tokens
        feats = tokens.flatten(1).unflatten(0, (b, t)).transpose(1, 2)  # [B, n*D, T] (n = 1 when pooled)
        return self.out(self.temporal(feats).mean(2))


class FrameCNNClassifier(nn.Module):
    """A per-frame 2-D CNN (3 conv + batch-norm + max-pool stages) emitting a 3x3 grid of 64-wide tokens per frame —
    the shape of a per-frame E_V — under the head of :class:`TowerClassifier`: is a *convolutional* per-frame tower
    enough, with the temporal comparison left to the head (as it is left to the LM in the student)?"""

    def __init__(self, classes: int, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in ((3, 32), (32, width), (width, width)):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]
        self.frames = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(3))
        self.temporal = nn.Sequential(nn.Conv1d(9 * width, 64, 3, padding=1), nn.ReLU())
        self.out = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        video = windowed_crop(x, side=x.shape[-1])  # the crop's own 32 px (the CNN of ``VideoCNN`` sees the same)
        b, t = video.shape[:2]
        tokens = self.frames(video.flatten(0, 1))  # [B*T, C, 3, 3]
        feats = tokens.flatten(1).unflatten(0, (b, t)).transpose(1, 2)  # [B, 9*C, T]
        return self.out(self.temporal(feats).mean(2))


class VideoViTClassifier(nn.Module):
    """L4P's video ViT (``rgpt4d_core.experts.l4p_encoder``: 2-frame tubelets, 8-px patches) at a tiny size, under the
    same head as :class:`TowerClassifier`, on the same inputs: does a tower that sees frame pairs read motion?"""

    def __init__(self, classes: int, pool_positions: bool = False, width: int = 64, depth: int = 2) -> None:
        super().__init__()
        from rgpt4d_core.experts.l4p_encoder import VideoViT, VideoViTConfig

        self.cfg = VideoViTConfig(num_frames=16, image_size=(64, 64), patch_size=8, tubelet_size=2, width=width,
                                  depth=depth, num_heads=2, mlp_ratio=2.0)  # fmt: skip
        self.encoder = VideoViT(self.cfg)
        self.pool_positions = pool_positions
        tokens_per_step = 1 if pool_positions else (64 // 8) ** 2
        self.temporal = nn.Sequential(nn.Conv1d(width * tokens_per_step, 64, 3, padding=1), nn.ReLU())
        self.out = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        video = windowed_crop(x)
        b, t = video.shape[:2]
        tokens = self.encoder(video.transpose(1, 2))[-1]  # [B, T/2 * 64, C]
        steps = tokens.unflatten(1, (t // 2, -1))  # [B, T/2, 64, C]
        steps = steps.mean(2, keepdim=True) if self.pool_positions else steps
        feats = steps.flatten(2).transpose(1, 2)  # [B, 64*C (C when pooled), T/2]
        return self.out(self.temporal(feats).mean(2))


def crop_only(x: torch.Tensor, keep_whole_frame: bool = False) -> torch.Tensor:
    """``[B, 7, T, CROP, CROP]`` with only what the towers are given (:func:`windowed_crop`): the crop, black outside
    the window; the window mark and (unless ``keep_whole_frame``) the whole-frame channels (the camera's motion) are
    zeroed."""
    out = torch.zeros_like(x)
    out[:, :3] = windowed_crop(x, side=x.shape[-1]).transpose(1, 2)
    if keep_whole_frame:
        out[:, 3:6] = x[:, 3:6]
    return out


def tensors(rows: list[dict[str, Any]], world: Any, task: str, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for row in rows:
        i = world.index[row["video"]]
        xs.append(inputs(world.frames[i], world.timestamps_s[i], row, scale))
        ys.append(CLASSES[task].index(row["meta"]["answer_key"]))
    return torch.stack(xs), torch.tensor(ys)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True)
    p.add_argument("--task", choices=sorted(CLASSES), default="T")
    p.add_argument("--size", type=int, default=64, help="frame side the student sees, pixels")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--scale", type=float, default=3.0, help="crop side / the object's box side")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", choices=["cnn", "student-tower", "video-vit", "frame-cnn"], default="cnn",
                   help="cnn: a 3-D CNN; student-tower: the student's tower + projector under a small temporal head; "
                        "video-vit: L4P's tubelet ViT at a tiny size under that head; frame-cnn: a per-frame 2-D CNN "
                        "under that head")
    p.add_argument("--pool-positions", action="store_true",
                   help="student-tower / video-vit: average each frame's (tubelet's) tokens before the temporal head")
    p.add_argument("--crop-only", action="store_true",
                   help="cnn: give it only what the towers see (the windowed crop; no whole frame, no window mark)")
    p.add_argument("--keep-whole-frame", action="store_true", help="with --crop-only: keep the whole-frame channels")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    train_rows = read_rows(args.world, "train", args.task)
    held_rows = read_rows(args.world, "val", args.task) + read_rows(args.world, "test", args.task)
    # every question's video, as recipe_probe.py lists them: the frame cache it writes serves both scripts
    videos = sorted({q.video for split in ("train", "val", "test") for q in load_questions(args.world, split)})
    world = decode_world(args.world, videos, args.size, args.frames)
    xtr, ytr = tensors(train_rows, world, args.task, args.scale)
    xte, yte = tensors(held_rows, world, args.task, args.scale)
    if args.crop_only:
        xtr, xte = crop_only(xtr, args.keep_whole_frame), crop_only(xte, args.keep_whole_frame)
    print(f"{args.task}: {len(ytr)} training / {len(yte)} held-out questions; inputs {tuple(xtr.shape[1:])}", flush=True)
    classes = len(CLASSES[args.task])
    models = {"cnn": lambda: VideoCNN(classes), "student-tower": lambda: TowerClassifier(classes, args.pool_positions),
              "video-vit": lambda: VideoViTClassifier(classes, args.pool_positions),
              "frame-cnn": lambda: FrameCNNClassifier(classes)}  # fmt: skip
    model = models[args.model]()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(args.seed)
    curve = []
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(ytr), generator=gen).split(32):
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc_te = float((model(xte).argmax(1) == yte).float().mean()) * 100
            acc_tr = float((torch.cat([model(x) for x in xtr.split(256)]).argmax(1) == ytr).float().mean()) * 100
        curve.append((epoch + 1, round(acc_tr, 1), round(acc_te, 1)))
        print(f"  epoch {epoch + 1}: train {acc_tr:.1f}  held-out {acc_te:.1f}  load {os.getloadavg()[0]:.1f}", flush=True)
    chance = 100 * float(np.max(np.bincount(yte.numpy())) / len(yte))
    result = {"args": vars(args), "n_train": len(ytr), "n_held_out": len(yte), "majority_class": round(chance, 1),
              "final_held_out": curve[-1][2], "best_held_out": max(c[2] for c in curve), "curve": curve}  # fmt: skip
    print(json.dumps(result), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
