"""Training an L4P-style expert on the synthetic world's ground truth: examples, losses, metrics (no Ray).

Used by ``pipelines/pretrain_expert.py`` (inside Ray Train workers) and usable in a notebook or a test.

* **Examples** (:func:`build_examples`): for one synthetic video, every source frame is decoded once, and each
  16-frame *window* (the first one = uniform over the whole video, exactly what precompute feeds the expert;
  the others = uniform over random sub-spans, for variety of frame gaps) becomes one example: frames resized to
  the expert's input size (uint8 ``[T, H, W, 3]``), and the oracle's targets at the heads' sizes: depth
  ``[T, h, w]`` m, backward flow between the *sampled* frames ``[T, h, w, 2]`` px, dynamic-mask coverage
  ``[T, h, w]``, Plücker rays ``[T, hc, wc, 6]`` (see ``oracle.py``).
* **Losses** (:func:`pretrain_losses`): depth L1 in log space on valid pixels (as L4P/4D-RGPT compare depth),
  flow end-point error on frames 1.. — over all pixels, plus the same error averaged over *moving* pixels only
  (ground-truth motion above ``LossWeights.moving_px``): in this world most pixels are still, so the plain mean
  is minimised by predicting no motion at all — dynamic-mask binary cross-entropy on logits (optionally plus a
  soft Dice term per clip, which scores overlap as the IoU metric does), camera-ray L1; weighted sum.
* **Metrics** (:func:`evaluate`): AbsRel of metric depth (also after per-clip median scaling), flow EPE (px at
  the heads' resolution) over all pixels and over moving pixels, dynamic-mask IoU at 0.5, camera-ray L1; and
  :func:`classical_flow_epe` / :func:`zero_flow_epe` for the ``classical`` expert and for "no motion" on the same
  examples.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from rgpt4d_core.config import OMIT_WHEN_EMPTY
from rgpt4d_core.experts.classical import ClassicalExpert, ClassicalParams
from rgpt4d_core.experts.l4p import IMAGENET_MEAN, IMAGENET_STD, L4PModel, L4PPreset, resize_frames
from rgpt4d_core.experts.oracle import resize_flow, targets_from_ground_truth

#: example keys holding arrays (plus ``video``: str)
ARRAY_KEYS: tuple[str, ...] = ("frames", "depth", "flow_2d_backward", "dyn_mask", "camray")


@dataclass(frozen=True)
class LossWeights:
    """Per-term weights of the pretraining loss (natural scales: log-depth ~0.1-1, EPE ~0.1-2 px).

    ``flow_moving`` weighs the flow error averaged over pixels whose ground-truth motion exceeds ``moving_px``
    pixels (at the heads' resolution); ``0`` = all pixels only. ``flow_error``: ``"epe"`` (end-point error, px) or
    ``"squared"`` (squared EPE, px²). EPE's gradient has unit length whatever the error, so under uncertainty about
    the direction its minimiser is "no motion"; the squared error's minimiser is the conditional mean motion.
    ``dyn_mask_pos_weight`` multiplies the binary cross-entropy of moving pixels (a few percent of all pixels in
    the synthetic world); 1 = plain BCE. ``dyn_mask_dice`` weighs a soft Dice loss on the mask's probabilities,
    one per clip (``1 - 2|P∩G| / (|P| + |G|)`` with sums over ``[T, h, w]``, +1 smoothing, mean over the batch):
    unlike the per-pixel BCE it does not let the ~96 % still pixels dominate; ``0`` = off (the loss as before, bit
    for bit).
    """

    depth: float = 1.0
    flow: float = 1.0
    flow_moving: float = 0.0
    moving_px: float = 0.25
    flow_error: str = "epe"
    dyn_mask: float = 1.0
    dyn_mask_pos_weight: float = 1.0
    # off by default and left out of the job's YAML while off, so the reuse keys of existing teachers stay the same
    dyn_mask_dice: float = field(default=0.0, metadata={OMIT_WHEN_EMPTY: True})
    camray: float = 0.5


def init_output_priors(model: L4PModel, depth_m: float = 5.0, moving_fraction: float = 0.05) -> None:
    """Output priors of a fresh model (the synthetic world's typical values): depth starts at ``depth_m`` metres,
    the mask at ``moving_fraction``, the flow at "no motion" (zero last layer), so the first steps learn
    structure rather than global offsets and scales."""
    priors = {"depth": float(np.log(depth_m)), "dyn_mask": float(np.log(moving_fraction / (1 - moving_fraction))),
              "flow_2d_backward": 0.0}  # fmt: skip
    with torch.no_grad():
        for task, value in priors.items():
            if task not in model.heads.outputs:
                continue
            last, channels = model.heads.output_conv(task)
            assert last.bias is not None
            last.bias[channels] = value
            if task == "flow_2d_backward":
                last.weight[channels] = 0.0


def clip_windows(num_source_frames: int, num_frames: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` sorted index arrays of ``num_frames`` source frames: first uniform over the whole video, the
    rest uniform over random sub-spans of at least ``num_frames`` frames."""
    last = num_source_frames - 1
    if last < num_frames - 1:
        raise ValueError(f"video has {num_source_frames} frames, fewer than the {num_frames} a clip needs")
    windows = [np.linspace(0, last, num_frames).round().astype(np.int64)]
    for _ in range(count - 1):
        span = int(rng.integers(num_frames - 1, last + 1))
        start = int(rng.integers(0, last - span + 1))
        windows.append(np.linspace(start, start + span, num_frames).round().astype(np.int64))
    return windows


def build_examples(video: str, preset: L4PPreset, windows_per_video: int, seed: int) -> list[dict]:
    """Training examples of one synthetic video (see module docstring); arrays are NumPy."""
    from rgpt4d_core.synth.writer import load_ground_truth
    from rgpt4d_core.video.decode import DecodeConfig, decode_clip

    gt = load_ground_truth(video)
    clip = decode_clip(video, DecodeConfig(num_frames=gt.num_frames))
    if clip.frames.shape[0] != gt.num_frames:
        raise ValueError(f"{video}: decoded {clip.frames.shape[0]} frames, ground truth has {gt.num_frames}")
    enc, heads = preset.encoder, preset.heads
    frames = (resize_frames(clip.frames, enc.image_size) * 255.0).round().to(torch.uint8)  # [F, 3, H, W]
    frames_np = frames.permute(0, 2, 3, 1).numpy()
    # seeded by the file name, not the full URI: the same world gives the same windows wherever it is stored
    rng = np.random.default_rng([seed, zlib.crc32(video.rstrip("/").rsplit("/", 1)[-1].encode())])
    out = []
    for idx in clip_windows(gt.num_frames, enc.num_frames, windows_per_video, rng):
        t = targets_from_ground_truth(gt, idx, heads.dense_size[1:], heads.camray_size[1:], video)
        out.append({"video": video, "frames": frames_np[idx], "depth": t.depth, "flow_2d_backward": t.flow_2d_backward,
                    "dyn_mask": t.dyn_mask, "camray": t.camray})  # fmt: skip
    return out


def flip_horizontally(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mirror every map left-right: flow ``dx`` and ray ``(dx, my, mz)`` change sign (``m = o × d``)."""
    out = dict(batch)
    out["frames"] = batch["frames"].flip(-2)  # [B, T, H, W, 3]
    out["depth"], out["dyn_mask"] = batch["depth"].flip(-1), batch["dyn_mask"].flip(-1)
    out["flow_2d_backward"] = batch["flow_2d_backward"].flip(-2) * torch.tensor([-1.0, 1.0])
    out["camray"] = batch["camray"].flip(-2) * torch.tensor([-1.0, 1.0, 1.0, 1.0, -1.0, -1.0])
    return out


def to_tensors(batch: Mapping[str, np.ndarray | torch.Tensor], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Stack a batch of examples' arrays as tensors (frames stay uint8)."""
    out = {}
    for k in ARRAY_KEYS:
        v = batch[k]
        out[k] = (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).to(device)
    return out


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, T, H, W, 3]`` -> float ``[B, 3, T, H, W]`` ImageNet-normalised (as ``l4p.preprocess``)."""
    x = frames.permute(0, 4, 1, 2, 3).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over the batch of ``1 - (2 Σ p·g + smooth) / (Σ p + Σ g + smooth)``, sums over each clip's pixels.

    ``logits`` and ``target`` (coverage in [0, 1]) are ``[B, T, h, w]``; ``p = sigmoid(logits)``. 0 for a perfect
    mask; a clip without moving pixels costs ``Σ p / (Σ p + smooth)``, so it is asked to predict none."""
    p = torch.sigmoid(logits).flatten(1)
    g = target.flatten(1)
    overlap = (p * g).sum(1)
    return (1.0 - (2.0 * overlap + smooth) / (p.sum(1) + g.sum(1) + smooth)).mean()


def pretrain_losses(pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                    weights: LossWeights) -> dict[str, torch.Tensor]:  # fmt: skip
    """Loss terms and their weighted sum ``"total"`` (heads output ``pred`` in the ``base.py`` layout)."""
    valid = target["depth"] > 0
    log_err = (torch.log(pred["depth"].clamp_min(1e-6)) - torch.log(target["depth"].clamp_min(1e-6))).abs()
    flow_gt = target["flow_2d_backward"][:, 1:]
    if weights.flow_error not in ("epe", "squared"):
        raise ValueError(f"loss.flow_error must be 'epe' or 'squared', got {weights.flow_error!r}")
    epe = torch.linalg.vector_norm(pred["flow_2d_backward"][:, 1:] - flow_gt, dim=-1)  # [B, T-1, h, w] px
    flow_err = epe if weights.flow_error == "epe" else epe.square()
    moving = torch.linalg.vector_norm(flow_gt, dim=-1) > weights.moving_px
    # weight 1 takes torch's unweighted formula, bit for bit what the loss was before the weight existed
    pos_weight = None if weights.dyn_mask_pos_weight == 1.0 else torch.tensor(weights.dyn_mask_pos_weight)
    terms = {
        "depth": (log_err * valid).sum() / valid.sum().clamp_min(1),
        "flow": flow_err.mean(),
        "flow_moving": (flow_err * moving).sum() / moving.sum().clamp_min(1),
        "dyn_mask": F.binary_cross_entropy_with_logits(pred["dyn_mask"], target["dyn_mask"], pos_weight=pos_weight),
        "camray": (pred["camray"] - target["camray"]).abs().mean(),
        "dyn_mask_dice": soft_dice_loss(pred["dyn_mask"], target["dyn_mask"]),
    }
    # each term is weighed by the LossWeights field of its name
    terms["total"] = sum((getattr(weights, k) * v for k, v in terms.items()), torch.zeros(()))
    return terms


def batches(examples: Sequence[Mapping], batch_size: int, rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches of in-memory examples (for in-process training)."""
    while True:
        order = rng.permutation(len(examples))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = [examples[i] for i in order[start : start + batch_size]]
            yield {k: np.stack([e[k] for e in chosen]) for k in ARRAY_KEYS}


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Mapping[str, np.ndarray | torch.Tensor],
               weights: LossWeights, flip: bool = False, max_grad_norm: float = 1.0) -> dict[str, float]:  # fmt: skip
    """One optimisation step of ``model`` (an :class:`L4PModel`, possibly DDP-wrapped), gradients clipped to
    ``max_grad_norm`` (``<= 0``: off); returns the loss terms and ``grad_norm``."""
    model.train()
    b = to_tensors(batch)
    if flip:
        b = flip_horizontally(b)
    _, pred = model(normalise(b["frames"]))
    terms = pretrain_losses(pred, b, weights)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else float("inf"))
    optimizer.step()
    return {**{k: float(v.detach()) for k, v in terms.items()}, "grad_norm": float(norm)}


def fit_in_process(model: L4PModel, examples: Sequence[Mapping], steps: int, batch_size: int = 2, lr: float = 1e-3,
                   weights: LossWeights | None = None, seed: int = 0) -> list[dict[str, float]]:  # fmt: skip
    """Train a fresh ``model`` without Ray (tests, notebooks): output priors, AdamW, constant ``lr``, random flips.
    Returns per-step losses."""
    init_output_priors(model)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    it = batches(examples, batch_size, rng)
    return [train_step(model, opt, next(it), weights or LossWeights(), flip=bool(rng.random() < 0.5)) for _ in range(steps)]


@torch.no_grad()
def evaluate(model: L4PModel, examples: Sequence[Mapping], batch_size: int = 4,
             moving_px: float = LossWeights.moving_px) -> dict[str, float]:  # fmt: skip
    """Held-out metrics of ``model`` against the examples' ground truth (see module docstring); ``flow_epe_moving``
    is averaged over pixels whose ground-truth motion exceeds ``moving_px``."""
    model.eval()
    abs_rel, abs_rel_scaled, epe, cam = [], [], [], []
    inter = union = moving_err = moving_count = 0.0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        b = to_tensors({k: np.stack([e[k] for e in chunk]) for k in ARRAY_KEYS})
        _, pred = model(normalise(b["frames"]))
        for i in range(len(chunk)):
            d, g = pred["depth"][i], b["depth"][i]
            valid = g > 0
            abs_rel.append(float(((d - g).abs() / g)[valid].mean()))
            scale = g[valid].median() / d[valid].median()
            abs_rel_scaled.append(float(((d * scale - g).abs() / g)[valid].mean()))
        err = torch.linalg.vector_norm(pred["flow_2d_backward"][:, 1:] - b["flow_2d_backward"][:, 1:], dim=-1)
        epe.append(err.mean(dim=(1, 2, 3)))
        moving = torch.linalg.vector_norm(b["flow_2d_backward"][:, 1:], dim=-1) > moving_px
        moving_err += float(err[moving].sum())
        moving_count += float(moving.sum())
        p, m = torch.sigmoid(pred["dyn_mask"]) > 0.5, b["dyn_mask"] > 0.5
        inter += float((p & m).sum())
        union += float((p | m).sum())
        cam.append((pred["camray"] - b["camray"]).abs().mean(dim=(1, 2, 3, 4)))
    return {
        "abs_rel": float(np.mean(abs_rel)),
        "abs_rel_median_scaled": float(np.mean(abs_rel_scaled)),
        "flow_epe": float(torch.cat(epe).mean()),
        "flow_epe_moving": moving_err / moving_count if moving_count > 0 else float("nan"),
        "dyn_mask_iou": inter / union if union > 0 else float("nan"),
        "camray_l1": float(torch.cat(cam).mean()),
    }


def _epe(estimate: np.ndarray, truth: np.ndarray, moving_px: float | None) -> tuple[float, float]:
    """(sum, count) of end-point errors ``[T-1, h, w]`` over all pixels, or over those whose true motion exceeds
    ``moving_px``."""
    err = np.linalg.norm(estimate - truth, axis=-1)
    if moving_px is None:
        return float(err.sum()), float(err.size)
    moving = np.linalg.norm(truth, axis=-1) > moving_px
    return float(err[moving].sum()), float(moving.sum())


def _pooled(pairs: Sequence[tuple[float, float]]) -> float:
    total, count = map(sum, zip(*pairs, strict=True)) if pairs else (0.0, 0.0)
    return total / count if count > 0 else float("nan")


def zero_flow_epe(examples: Sequence[Mapping], moving_px: float | None = None) -> float:
    """EPE of predicting no motion at all (the mean ground-truth flow magnitude), for scale; over moving pixels
    only when ``moving_px`` is given."""
    return _pooled([_epe(np.zeros_like(e["flow_2d_backward"][1:]), e["flow_2d_backward"][1:], moving_px) for e in examples])


def classical_flow_epe(examples: Sequence[Mapping], moving_px: float | None = None) -> float:
    """EPE of the ``classical`` expert on the same examples: DIS on the examples' frames (the expert's input
    resolution, its best case), flow area-resized to the heads' resolution; over moving pixels only when
    ``moving_px`` is given."""
    if not examples:
        return float("nan")
    frames = examples[0]["frames"]
    expert = ClassicalExpert(ClassicalParams(num_frames=frames.shape[0], size=tuple(frames.shape[1:3])))  # type: ignore[arg-type]
    errs = []
    for e in examples:
        size = tuple(e["flow_2d_backward"].shape[1:3])
        flow = expert.flow(e["frames"])
        est = np.stack([resize_flow(f, size) for f in flow])  # type: ignore[arg-type]
        errs.append(_epe(est[1:], e["flow_2d_backward"][1:], moving_px))
    return _pooled(errs)
