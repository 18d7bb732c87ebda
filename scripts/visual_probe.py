"""Where does the video stop reaching the answer? Controlled variants of ``recipe_probe.py``'s inputs.

Each variant changes only what the student sees (the SoM image, the video frames, or whether the video is given);
model, prompt, answer scoring and training are ``scripts/recipe_probe.py``'s, and every flag after the variant
flags goes to it. The answer-block variants paint the answer's class into the pixels, so a student that can *read*
a visual signal of that size and place must reach ~100 % on the class categories (T, R, C, FP)::

    .venv/bin/python scripts/visual_probe.py --block 32 --block-at corner -- --world out/experiment/synth \\
        --train-vision --tasks C,T,R --steps 300 --held-out 300
    .venv/bin/python scripts/visual_probe.py --block 6 --block-at object --no-marks -- --world out/experiment/synth \\
        --train-vision --tasks T,R --steps 1000 --held-out 400 --seed 1
    .venv/bin/python scripts/visual_probe.py --no-video -- --world out/experiment/synth --train-vision --tasks SR

Variants: ``--block S`` paints an ``S x S`` square of the answer's colour (one of five saturated colours, indexed by
the answer's rank among the sorted option texts) on the SoM image, at its top-left corner or at the centre of the
frame-1 box of the question's first ``<obj_k>``; ``--block-on-video`` paints it on every video frame too;
``--no-marks`` gives frame 1 without Set-of-Marks as the SoM image; ``--marks-on-video`` draws the marks on every
frame at their frame-1 boxes; ``--no-video`` drops the video (prompt and tokens), keeping the SoM image.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import recipe_probe  # noqa: E402
from perception_ceiling import in_window, object_crop  # noqa: E402
from region_tokens import RegionContext, install  # noqa: E402

from rgpt4d_core.regions import draw_set_of_marks, find_object_refs  # noqa: E402
from rgpt4d_core.types import VQAItem  # noqa: E402

#: saturated colours for the answer block, indexed by the answer's rank among the sorted options
BLOCK_COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]], np.uint8)


def parse_variant(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split ``argv`` at ``--``: the variant's flags before it, ``recipe_probe.py``'s after it."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--block", type=int, default=0, help="answer-block side in pixels (0 = no block)")
    p.add_argument("--block-at", choices=["corner", "object"], default="corner")
    p.add_argument("--block-on-video", action="store_true")
    p.add_argument("--no-marks", action="store_true")
    p.add_argument("--marks-on-video", action="store_true")
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--object-crop", type=float, default=0.0,
                   help="replace every video frame by a crop of this many times the question's first object's "
                        "frame-1 box (at least a quarter of the frame), resampled to the frame size; 0 = off")
    p.add_argument("--window-only", action="store_true",
                   help="black out the video frames outside the question's 'Between a s and b s' window")
    p.add_argument("--block-fade-steps", type=int, default=0,
                   help="with --block: paint it in a training batch with probability 1 - step / N (0 after N steps) and "
                        "never when scoring; 0 = always (curriculum: learn where to look while the cue is strong)")
    p.add_argument("--no-video-steps", type=int, default=0,
                   help="train the first N steps without the video (SoM image only), then with it (curriculum)")
    p.add_argument(
        "--region-tokens",
        action="store_true",
        help="each <obj_k> token also carries its region's pooled SoM features (scripts/region_tokens.py)",
    )
    p.add_argument(
        "--region-coords",
        action="store_true",
        help="each <obj_k> token also carries a learned projection of its box coordinates",
    )
    return p.parse_args(argv[:cut]), argv[cut + 1 :]


def block_origin(q: VQAItem, side: int, block: int, at: str) -> tuple[int, int]:
    """Top-left pixel ``(row, col)`` of the answer block on a ``side``-pixel frame."""
    if at == "corner":
        return 0, 0
    ref = find_object_refs(q.question)[0]
    x0, y0, x1, y1 = next(r.box for r in q.regions if r.obj_id == ref)
    half = block // 2
    return max(0, int((y0 + y1) / 2 * side) - half), max(0, int((x0 + x1) / 2 * side) - half)


def variant_probe(v: argparse.Namespace) -> type[recipe_probe.Probe]:
    """``recipe_probe.Probe`` with the variant's SoM image, video and prompt."""

    class VariantProbe(recipe_probe.Probe):
        def __init__(self, args: argparse.Namespace, world: recipe_probe.World) -> None:
            super().__init__(args, world)
            self.steps_done = 0
            self.fade_rng = np.random.default_rng(args.seed)  # whether a batch shows the fading answer block
            self.regions: RegionContext | None = None
            if v.region_tokens or v.region_coords:
                obj_ids = {k: self.tok.encode(f"<obj_{k}>")[0] for k in range(1, 11)}
                merge = 3 if "3x3" in args.projector else 2
                coords = None
                if v.region_coords:  # a submodule of the student, so that the optimiser trains it
                    coords = self.model.region_coords = torch.nn.Linear(64, self.model.cfg.llm.hidden_size)
                self.regions = RegionContext(obj_ids, args.size, args.patch, merge, v.region_tokens, coords)
                install(self.regions)

        @property
        def no_video(self) -> bool:
            return v.no_video or self.steps_done < v.no_video_steps

        def loss(self, qs: Sequence[VQAItem]) -> torch.Tensor:
            out = super().loss(qs)
            self.steps_done += 1
            return out

        def user_text(self, q: VQAItem, with_video: bool | None = None) -> str:
            return super().user_text(q, False if self.no_video else with_video)

        def media(self, qs: Sequence[VQAItem]) -> dict[str, torch.Tensor]:
            if self.regions is not None:
                self.regions.regions = [q.regions for q in qs]
            shown = v
            if v.block_fade_steps:
                painted = self.model.training and self.fade_rng.random() < 1 - self.steps_done / v.block_fade_steps
                shown = v if painted else argparse.Namespace(**{**vars(v), "block": 0})
            return variant_media(shown, self.world, self.args.size, qs, self.no_video)

    return VariantProbe


def variant_media(
    v: argparse.Namespace, world: recipe_probe.World, size: int, qs: Sequence[VQAItem], no_video: bool
) -> dict[str, torch.Tensor]:
    """The variant's inputs for ``qs``: ``images`` [B, 3, size, size] and, unless ``--no-video``, ``videos``
    [B, T, 3, size, size] with ``timestamps_s`` [B, T] (seconds) unless ``no_video``; pixels in [-1, 1]."""
    idx = [world.index[q.video] for q in qs]
    frames = world.frames[idx].copy()  # [B, T, S, S, 3] uint8
    if v.marks_on_video:
        marked = [
            np.stack([draw_set_of_marks(f, q.regions) for f in clip])
            for clip, q in zip(frames, qs, strict=True)
        ]
        frames = np.stack(marked)
    if v.object_crop or v.window_only:
        frames = np.stack([routed_frames(v, clip, world.timestamps_s[i], q) for clip, i, q in zip(frames, idx, qs, strict=True)])
    som = frames[:, 0].copy() if v.no_marks or v.marks_on_video else np.stack(
        [draw_set_of_marks(clip[0], q.regions) for clip, q in zip(frames, qs, strict=True)])  # fmt: skip
    if v.block:
        side = frames.shape[2]
        for i, q in enumerate(qs):
            r, c = block_origin(q, side, v.block, v.block_at)
            colour = BLOCK_COLOURS[sorted(q.options).index(q.answer)]
            som[i, r : r + v.block, c : c + v.block] = colour
            if v.block_on_video:
                frames[i, :, r : r + v.block, c : c + v.block] = colour
    return recipe_probe.media_tensors(world, idx, None if no_video else frames, som, size)


def routed_frames(v: argparse.Namespace, clip: np.ndarray, stamps: np.ndarray, q: VQAItem) -> np.ndarray:
    """``clip`` uint8 ``[T, S, S, 3]`` with the routing done for the student: cropped around the question's first
    object (``--object-crop``) and/or blacked out outside the question's time window (``--window-only``)."""
    out = clip
    if v.object_crop:
        ref = find_object_refs(q.question)[0]
        box = next(r.box for r in q.regions if r.obj_id == ref)
        video = torch.from_numpy(clip).permute(0, 3, 1, 2).float()
        out = object_crop(video, box, v.object_crop, clip.shape[1]).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    if v.window_only:
        window = re.search(r"Between ([\d.]+) s and ([\d.]+) s", q.question)
        if window is not None:
            out = out.copy()
            out[~in_window(stamps, float(window.group(1)), float(window.group(2)))] = 0
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    variant, probe_argv = parse_variant(sys.argv[1:] if argv is None else argv)
    return recipe_probe.main(probe_argv, variant_probe(variant))


if __name__ == "__main__":
    main()
