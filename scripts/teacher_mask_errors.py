"""Diagnostic: where does a trained L4P teacher's dynamic mask go wrong on its held-out clips?

For every held-out scene of an expert world (the uniform whole-video clip, as the pretraining job evaluates), at
the heads' resolution:

* the mask IoU (threshold 0.5) of clips whose camera moves and of clips whose camera stands still, with precision,
  recall and the predicted / true moving pixel counts;
* per state of the object under a pixel, the share of its pixels predicted moving: objects that translate, only
  rotate, or both (recall), objects that never move, moving objects *before* their motion starts, and background
  (false positives);
* the IoU at other thresholds of the mask probability;
* on static-camera clips, the IoU of a mask read off the flow (``|flow| > tau`` px), predicted and ground truth:
  how much of the mask a flow cue alone could give;
* on moving-camera clips, the same for the flow's *residual* against the camera-only (rigid) flow computed from the
  ground-truth depth and cameras: what a mask that sees the camera's motion could give with the teacher's flow.

    .venv/bin/python scripts/teacher_mask_errors.py --world out/experiment/expert/world --checkpoint out/experiment/expert/l4p_tiny.safetensors

Probe only, not part of the product.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.pretrain_expert import scene_splits  # noqa: E402
from rgpt4d_core.experts.l4p import build_model, get_preset, load_checkpoint_state  # noqa: E402
from rgpt4d_core.experts.l4p_training import (  # noqa: E402
    ARRAY_KEYS,
    build_examples,
    clip_windows,
    normalise,
    to_tensors,
)
from rgpt4d_core.experts.oracle import geometric_flow, resize_flow  # noqa: E402
from rgpt4d_core.synth.dataset import GroundTruth  # noqa: E402
from rgpt4d_core.synth.writer import load_ground_truth  # noqa: E402

THRESHOLDS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
FLOW_TAUS = (0.1, 0.2, 0.3, 0.5)
STILL_STATES = ("still object", "before its start", "background")


def camera_moves(gt: GroundTruth) -> bool:
    """True when the camera translates or turns between the first and the last frame."""
    first, last = gt.cam_to_world[0], gt.cam_to_world[-1]
    return bool(np.abs(last[:3, 3] - first[:3, 3]).max() > 1e-3 or np.abs(last[:3, :3] - first[:3, :3]).max() > 1e-3)


def object_kind(gt: GroundTruth, k: int) -> str:
    """How object ``k`` moves over the whole video: ``translates`` / ``rotates only`` / ``both`` / ``still object``."""
    translates = np.linalg.norm(np.diff(gt.boxes[:, k, :2], axis=0), axis=1).max() > 1e-6
    rotates = np.abs(np.diff(gt.boxes[:, k, 6])).max() > 1e-6
    if translates and rotates:
        return "both"
    return "translates" if translates else "rotates only" if rotates else "still object"


def nearest(instance: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[T, H, W]`` instance ids -> ``[T, h, w]`` by nearest sampling at the output pixels' centres."""
    h, w = size
    rows = ((np.arange(h) + 0.5) * instance.shape[1] / h).astype(int)
    cols = ((np.arange(w) + 0.5) * instance.shape[2] / w).astype(int)
    return instance[:, rows][:, :, cols]


def camera_flow(gt: GroundTruth, t: int, s: int, size: tuple[int, int]) -> np.ndarray:
    """float32 ``[h, w, 2]`` backward flow (px at ``size``) from source frame ``t`` to ``s`` that the camera's motion
    alone would cause: every visible point held still in the world (ground-truth depth, intrinsics, cameras)."""
    return resize_flow(geometric_flow(gt, t, s, move_objects=False), size)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, required=True, help="the expert's world (dataset.json, scenes/, videos/)")
    p.add_argument("--checkpoint", required=True, help="the teacher's .safetensors")
    p.add_argument("--preset", default="l4p_tiny")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    preset = get_preset(args.preset)
    model = build_model(args.preset)
    model.load_state_dict(load_checkpoint_state(args.checkpoint)[0])
    model.eval()
    by_camera: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(5))  # inter, union, predicted, true, clips
    by_state: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(2))  # predicted moving, pixels
    by_threshold = np.zeros((len(THRESHOLDS), 2))
    flow_cue: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(2))
    for video in scene_splits(str(args.world))["heldout"]:
        ex = build_examples(video, preset, 1, 0)[0]  # the uniform whole-video window
        gt = load_ground_truth(video)
        frames = clip_windows(gt.num_frames, preset.encoder.num_frames, 1, np.random.default_rng(0))[0]
        with torch.no_grad():
            _, out = model(normalise(to_tensors({k: ex[k][None] for k in ARRAY_KEYS})["frames"]))
        prob = torch.sigmoid(out["dyn_mask"][0]).numpy()  # [T, h, w]
        pred, true = prob > 0.5, ex["dyn_mask"] > 0.5
        camera = "moving camera" if camera_moves(gt) else "static camera"
        by_camera[camera] += [(pred & true).sum(), (pred | true).sum(), pred.sum(), true.sum(), 1]
        for i, t in enumerate(THRESHOLDS):
            by_threshold[i] += [((prob > t) & true).sum(), ((prob > t) | true).sum()]
        instance = nearest(gt.instance[frames], pred.shape[1:])
        for k in range(gt.object_moving.shape[1]):
            kind = object_kind(gt, k)
            for t, moving in enumerate(gt.object_moving[frames, k]):
                pixels = instance[t] == k + 1
                state = kind if moving or kind == "still object" else "before its start"
                by_state[(camera, state)] += [pred[t][pixels].sum(), pixels.sum()]
        background = instance == 0
        by_state[(camera, "background")] += [pred[background].sum(), background.sum()]
        # the flow cue: |flow| on static-camera clips, |flow - camera-only flow| on moving-camera ones
        rigid = np.zeros_like(ex["flow_2d_backward"][1:])
        if camera == "moving camera":
            rigid = np.stack([camera_flow(gt, int(frames[j]), int(frames[j - 1]), pred.shape[1:])
                              for j in range(1, len(frames))])  # fmt: skip
        predicted_speed = np.linalg.norm(out["flow_2d_backward"][0].numpy()[1:] - rigid, axis=-1)
        true_speed = np.linalg.norm(ex["flow_2d_backward"][1:] - rigid, axis=-1)
        for tau in FLOW_TAUS:
            for name, speed in (("predicted", predicted_speed), ("ground-truth", true_speed)):
                cue = speed > tau
                flow_cue[f"{camera}, {name} flow, tau {tau} px"] += [(cue & true[1:]).sum(), (cue | true[1:]).sum()]
    total = np.sum(list(by_camera.values()), axis=0)
    print(f"mask IoU {total[0] / total[1]:.3f} over {int(total[4])} held-out clips")
    for camera, (inter, union, predicted, true_px, clips) in sorted(by_camera.items()):
        print(f"  {camera}: {int(clips)} clips, IoU {inter / union:.3f}, precision {inter / predicted:.3f}, "
              f"recall {inter / true_px:.3f}, predicted moving px {int(predicted)}, truly moving px {int(true_px)}")  # fmt: skip
    print("share of each state's pixels predicted moving (recall for moving objects, false positives otherwise):")
    for (camera, state), (moving, pixels) in sorted(by_state.items()):
        kind = "false positive" if state in STILL_STATES else "recall"
        print(f"  {camera:14s} {state:17s} {moving / pixels:.3f} {kind} ({int(pixels)} px, {int(moving)} flagged)")
    print("IoU by threshold: " + ", ".join(f"{t}: {a[0] / a[1]:.3f}" for t, a in zip(THRESHOLDS, by_threshold, strict=True)))
    print("frames 1.., the mask read off the flow (|flow| > tau; moving camera: |flow - camera-only flow| > tau):")
    for key, (inter, union) in sorted(flow_cue.items()):
        print(f"  {key}: IoU {inter / union:.3f}")


if __name__ == "__main__":
    main()
