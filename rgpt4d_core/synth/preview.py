"""A contact sheet of generated scenes for a person to look at: frames, SoM, depth, flow, dynamic and instance masks."""

from __future__ import annotations

import io

import cv2
import numpy as np

from rgpt4d_core import storage
from rgpt4d_core.regions import PALETTE
from rgpt4d_core.synth.dataset import load_ground_truth
from rgpt4d_core.video.decode import DecodeConfig, decode_clip

COLUMNS = ("frame 1", "middle", "last", "SoM", "depth", "flow", "dyn mask", "instances")


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-wheel image uint8 ``[H, W, 3]`` of a flow field float ``[H, W, 2]`` (pixels): hue = direction,
    saturation = magnitude / ``max_magnitude`` (default: the field's 99th percentile, at least 1 px), white = no motion."""
    fx, fy = flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32)
    mag, ang = cv2.cartToPolar(fx, fy)
    scale = max_magnitude if max_magnitude is not None else max(float(np.percentile(mag, 99)), 1.0)
    hsv = np.zeros((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = (ang * 180.0 / np.pi / 2.0).astype(np.uint8)
    hsv[..., 1] = np.clip(mag / scale * 255.0, 0, 255).astype(np.uint8)
    hsv[..., 2] = 255
    rgb: np.ndarray = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return rgb


def colour_wheel(size: int) -> np.ndarray:
    """The legend of :func:`flow_to_rgb`: uint8 ``[size, size, 3]`` (flow pointing from the centre outwards)."""
    c = (size - 1) / 2.0
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    flow = np.stack([u - c, v - c], -1)
    img = flow_to_rgb(flow, max_magnitude=c)
    img[np.hypot(u - c, v - c) > c] = 0
    return img


def depth_to_rgb(depth: np.ndarray, max_depth: float = 15.0) -> np.ndarray:
    """uint8 ``[H, W, 3]`` colour map of metric depth ``[H, W]`` (near = bright/yellow, far = dark/blue)."""
    d = np.clip(1.0 - depth.astype(np.float32) / max_depth, 0.0, 1.0)
    bgr = cv2.applyColorMap((d * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    return np.ascontiguousarray(bgr[..., ::-1])


def instance_to_rgb(instance: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]``: background dark grey, object ``k`` in palette colour ``k``."""
    lut = np.array([(40, 40, 40), *PALETTE * 26], dtype=np.uint8)[:256]
    out: np.ndarray = lut[instance]
    return out


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` with a 16-px white caption strip on top."""
    strip = np.full((16, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, tile], axis=0)


def scene_row(root: str, scene_id: str, tile: int = 160) -> np.ndarray:
    """One contact-sheet row uint8 ``[tile + 16, 8 * tile, 3]`` for ``scene_id``, read back from the written files."""
    video = storage.join(root, "videos", f"{scene_id}.mp4")
    clip = decode_clip(video, DecodeConfig(num_frames=3, backends=("pyav",), decoder_threads=1))
    gt = load_ground_truth(video)
    from PIL import Image

    som = np.asarray(Image.open(io.BytesIO(storage.read_bytes(storage.join(root, "som", f"{scene_id}.png")))).convert("RGB"))
    mid = int(clip.frame_indices[1])
    f_flow = max(mid, 1)
    tiles = [
        *clip.frames, som, depth_to_rgb(gt.depth[mid]), flow_to_rgb(gt.flow_2d_backward[f_flow]),
        np.repeat((gt.dyn_mask[mid] * 255).astype(np.uint8)[..., None], 3, -1), instance_to_rgb(gt.instance[mid]),
    ]
    texts = [f"{scene_id} t=0", f"t={gt.timestamps_s[mid]:.1f}s", f"t={gt.timestamps_s[-1]:.1f}s", "SoM",
             "depth", f"flow {f_flow}->{f_flow - 1}", "dyn mask", "instances"]
    resized = [cv2.resize(np.ascontiguousarray(t), (tile, tile), interpolation=cv2.INTER_NEAREST) for t in tiles]
    return np.concatenate([_label(t, s) for t, s in zip(resized, texts, strict=True)], axis=1)


def contact_sheet(root: str, scene_ids: list[str], tile: int = 160) -> bytes:
    """PNG bytes of a contact sheet: one row per scene (see :data:`COLUMNS`) and a flow colour-wheel legend."""
    from PIL import Image

    rows = [scene_row(root, s, tile) for s in scene_ids]
    legend = np.full((tile + 16, rows[0].shape[1] if rows else 8 * tile, 3), 255, np.uint8)
    legend[:, :tile] = _label(colour_wheel(tile), "flow colours")
    sheet = np.concatenate([*rows, legend], axis=0)
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="PNG")
    return buf.getvalue()
