"""Region prompts on frame 1: boxes and masks, Set-of-Marks drawing, and the ``<obj_k>`` token convention.

* A region is a :class:`~rgpt4d_core.types.Region`: a 1-based ``obj_id``, a normalised ``(x0, y0, x1, y1)``
  box in ``[0, 1]`` (x right, y down, ``x1``/``y1`` exclusive edges) and optionally a bool ``[H, W]`` mask.
* Masks travel as COCO-style *uncompressed* RLE: ``{"size": [H, W], "counts": [...]}``, runs over the mask
  in column-major (Fortran) order, the first run counting zeros (possibly 0).
* Question text refers to region ``k`` as ``<obj_k>``; every referenced id must have a region.
* Set-of-Marks (as in R4D-Bench): each region is outlined on frame 1 and tagged with a filled label holding
  its id, in a colour from a high-contrast palette with black or white text, whichever reads better.
* A mask at another resolution is fitted to the frame as displayed (:func:`fit_mask`) before drawing.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

from rgpt4d_core.types import Region

Box = tuple[float, float, float, float]
_OBJ_RE = re.compile(r"<obj_(\d+)>")
# Distinct, saturated RGB colours (Tableau-like), readable on dark and light backgrounds with their tag text.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)


class RegionError(ValueError):
    """An invalid region, mask or ``<obj_k>`` reference; the message names the id or field."""


# ------------------------------------------------------------------------------------------- <obj_k> tokens


def obj_token(k: int) -> str:
    """The text token for region ``k`` (1-based): ``obj_token(2) == "<obj_2>"``."""
    if k < 1:
        raise RegionError(f"region ids are 1-based, got {k}")
    return f"<obj_{k}>"


def find_object_refs(text: str) -> list[int]:
    """Region ids referenced in ``text`` as ``<obj_k>``, unique, in order of first appearance."""
    seen: dict[int, None] = {}
    for m in _OBJ_RE.finditer(text):
        seen.setdefault(int(m.group(1)), None)
    return list(seen)


def validate_refs(text: str, regions: Iterable[Region]) -> None:
    """Raise :class:`RegionError` naming every ``<obj_k>`` in ``text`` that has no region with ``obj_id == k``."""
    have = {r.obj_id for r in regions}
    missing = [k for k in find_object_refs(text) if k not in have]
    if missing:
        names = ", ".join(obj_token(k) if k >= 1 else f"<obj_{k}>" for k in missing)
        raise RegionError(f"question references {names} but no region has that id (regions: {sorted(have)})")


# ------------------------------------------------------------------------------------------- boxes and masks


def validate_box(box: Sequence[float], obj_id: int | None = None) -> Box:
    """Check a normalised box: 4 finite numbers, ``0 <= x0 < x1 <= 1``, ``0 <= y0 < y1 <= 1``."""
    who = f"region {obj_id}" if obj_id is not None else "box"
    if len(box) != 4:
        raise RegionError(f"{who}: box must have 4 numbers (x0, y0, x1, y1), got {len(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise RegionError(f"{who}: box has non-finite values {box}")
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise RegionError(f"{who}: box {box} is not a normalised (x0, y0, x1, y1) with x0<x1, y0<y1 in [0, 1]")
    return (x0, y0, x1, y1)


def box_to_pixels(box: Box, height: int, width: int) -> tuple[int, int, int, int]:
    """Normalised box -> integer pixel ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive, clipped to the image."""
    x0, y0, x1, y1 = box
    px0 = min(max(int(np.floor(x0 * width)), 0), width - 1)
    py0 = min(max(int(np.floor(y0 * height)), 0), height - 1)
    px1 = min(max(int(np.ceil(x1 * width)), px0 + 1), width)
    py1 = min(max(int(np.ceil(y1 * height)), py0 + 1), height)
    return px0, py0, px1, py1


def mask_to_box(mask: np.ndarray) -> Box:
    """Tight normalised box of a bool ``[H, W]`` mask; :class:`RegionError` if the mask is empty."""
    if mask.ndim != 2:
        raise RegionError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise RegionError("mask is empty (no pixel set)")
    h, w = mask.shape
    return (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Bool ``[H, W]`` mask -> COCO uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}``."""
    if mask.ndim != 2:
        raise RegionError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


MAX_MASK_PIXELS = 4096 * 4096
"""Largest mask ``H * W`` that :func:`rle_decode` allocates (16.8 Mpx: a 4K UHD frame is 8.3 Mpx)."""


def rle_decode(rle: dict[str, Any], max_pixels: int = MAX_MASK_PIXELS) -> np.ndarray:
    """COCO uncompressed RLE -> bool ``[H, W]`` mask.

    The declared size is checked against ``max_pixels`` *before* anything is allocated, so a 200-byte request
    declaring a 10^10-pixel mask costs nothing. Callers that know the frame pass its ``H * W`` (or a bound on it).

    Raises:
        RegionError: malformed fields, a size that is not positive or exceeds ``max_pixels``, or counts that are
            negative or do not sum to ``H * W``.
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = [int(c) for c in rle["counts"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise RegionError(f"RLE must be {{'size': [H, W], 'counts': [int, ...]}}: {exc}") from None
    if h <= 0 or w <= 0:
        raise RegionError(f"RLE size must be positive, got {h}x{w}")
    if h * w > max_pixels:
        raise RegionError(f"RLE mask of {h}x{w} = {h * w} pixels exceeds the limit of {max_pixels} pixels")
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise RegionError(f"RLE counts sum to {sum(counts)}, expected H*W = {h * w} (all non-negative)")
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")


def region_from_box(obj_id: int, box: Sequence[float], label: str | None = None) -> Region:
    """A :class:`Region` from a normalised box (validated)."""
    obj_token(obj_id)
    return Region(obj_id=obj_id, box=validate_box(box, obj_id), label=label)


def region_from_mask(obj_id: int, mask: np.ndarray | dict[str, Any], label: str | None = None) -> Region:
    """A :class:`Region` from a bool ``[H, W]`` mask or its RLE; the box is the mask's tight box."""
    obj_token(obj_id)
    arr = rle_decode(mask) if isinstance(mask, dict) else np.asarray(mask).astype(bool)
    try:
        box = mask_to_box(arr)
    except RegionError as exc:
        raise RegionError(f"region {obj_id}: {exc}") from None
    return Region(obj_id=obj_id, box=box, mask=arr, label=label)


# ------------------------------------------------------------------------------------------- Set-of-Marks


def fit_mask(region: Region, height: int, width: int) -> Region:
    """``region`` with its mask (if any) resized to ``[height, width]`` (the frame as displayed) by nearest neighbour.

    A mask at another resolution is accepted when its shape is the frame's, scaled. One whose aspect matches the
    frame turned a quarter (and not the frame itself) was drawn on the stored pixels of a rotated video, not on
    what the user saw: stretching it would mark the wrong place, so it is refused with that explanation.
    """
    if region.mask is None or region.mask.shape == (height, width):
        return region
    mh, mw = region.mask.shape
    log_aspect = math.log(mh / mw)
    off_frame = abs(log_aspect - math.log(height / width))
    off_turned = abs(log_aspect + math.log(height / width))
    if off_turned < off_frame and off_frame > math.log(1.25):
        raise RegionError(
            f"region {region.obj_id}: mask is {mh}x{mw} (H x W) but the video is displayed at {height}x{width}; "
            "masks are drawn on the frame as displayed (a rotated video's display matrix is applied)"
        )
    mask = cv2.resize(region.mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    if not mask.any():
        raise RegionError(f"region {region.obj_id}: mask vanishes when resized to the video's {height}x{width}")
    return dataclasses.replace(region, mask=mask)


def mark_colour(obj_id: int) -> tuple[int, int, int]:
    """RGB colour of region ``obj_id`` (cycles through :data:`PALETTE`)."""
    return PALETTE[(obj_id - 1) % len(PALETTE)]


def _text_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def draw_set_of_marks(frame: np.ndarray, regions: Sequence[Region], show_labels: bool = False) -> np.ndarray:
    """Draw Set-of-Marks onto a copy of frame 1.

    Args:
        frame: uint8 ``[H, W, 3]`` RGB (works from ~64 px up).
        regions: the regions to mark; masks (if any) must be ``[H, W]`` like ``frame``.
        show_labels: write ``"k:label"`` instead of ``"k"`` in the tag when a region has a label.

    Returns:
        uint8 ``[H, W, 3]`` RGB: each region outlined (mask contour, else box) in its palette colour, with a
        filled tag holding its id at the top-left corner of its box (inside the image).
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise RegionError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    out = np.ascontiguousarray(frame.copy())
    h, w = out.shape[:2]
    short = min(h, w)
    thickness = max(1, round(short / 112))
    font_scale = max(0.3, short / 560)
    font_thickness = max(1, round(short / 224))
    pad = max(1, round(short / 160))
    for region in regions:
        colour = mark_colour(region.obj_id)
        x0, y0, x1, y1 = box_to_pixels(validate_box(region.box, region.obj_id), h, w)
        if region.mask is not None:
            if region.mask.shape != (h, w):
                raise RegionError(f"region {region.obj_id}: mask {region.mask.shape} does not match frame {(h, w)}")
            contours, _ = cv2.findContours(region.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, colour, thickness)
        else:
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, thickness)
        text = f"{region.obj_id}:{region.label}" if show_labels and region.label else str(region.obj_id)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness)
        tag_w, tag_h = tw + 2 * pad, th + base + 2 * pad
        tx0 = min(max(x0, 0), max(w - tag_w, 0))
        ty0 = min(max(y0, 0), max(h - tag_h, 0))
        cv2.rectangle(out, (tx0, ty0), (tx0 + tag_w - 1, ty0 + tag_h - 1), colour, cv2.FILLED)
        cv2.putText(
            out,
            text,
            (tx0 + pad, ty0 + pad + th),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            _text_colour(colour),
            font_thickness,
            cv2.LINE_AA,
        )
    return out
