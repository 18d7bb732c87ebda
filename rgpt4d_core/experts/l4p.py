"""The ``l4p`` expert: L4P's VideoMAE ViT encoder + DPT dense heads (paper-spec §3), frozen.

Presets (:data:`PRESETS`):

* ``l4p_vitg`` — the real teacher: ViT-g (width 1408, 40 blocks, 16 heads, MLP 6144), 16 frames at 224²,
  tubelet 2, patch 14 → 2,048 tokens × 1408 per hook, hooks (14, 21, 28, 36); DPT heads at 16×224×224 and the
  camera-ray head at 16×16×16. 1,337.3 M parameters (encoder 1,011.6 M + four heads 325.7 M). Builds on
  ``meta``; a checkpoint is needed for real use (see *Checkpoints*).
* ``l4p_tiny`` — the embedded default, trains on CPU in minutes (``pipelines/pretrain_expert.py``): 16 frames at
  64², patch 8 → 8×8×8 tokens × 96, 5 blocks, hooks (2, 3, 4, 5); DPT heads of width 16: ONE head for depth, flow
  and dynamic mask (``shared_dense``) that decodes at 8×16×16 and upsamples its 4 output channels to 16×32×32
  (``head2_at_output_size=False``), and the ray head at 16×8×8 (0.6 M encoder + 0.38 M head parameters). Lighter
  than L4P's structure (one full-resolution head per task) because L_ED runs the heads forward and backward in
  every P4D step (``docs/results.md``, "P4D step cost").

Preprocessing (:func:`preprocess`): frames are resized to the input size (bilinear, antialiased, aspect not
kept — as 4D-RGPT feeds L4P), scaled to [0, 1] and ImageNet-normalised.

Checkpoints: one ``.safetensors`` file with this module's parameter names (``encoder.*``,
``heads.task_heads.<task>.*``) and metadata ``{"format": "rgpt4d.l4p/1", "preset": ...}``; the expert's
``revision`` is the first 16 hex digits of the file's SHA-256. Mapping from the released L4P checkpoint
(Lightning ``state_dict`` of ``l4p_depth_flow_2d3dtrack_camray_dynseg_v1.ckpt``), done by
:func:`from_l4p_layout` (the loader applies it automatically):

=====================================================  =============================================
L4P key                                                here
=====================================================  =============================================
``l4p_model.video_encoder.<rest>``                     ``encoder.<rest>`` (same names: ``patch_embed.proj``,
                                                       ``blocks.{i}.{norm1,attn.qkv,attn.q_bias,attn.v_bias,
                                                       attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``)
``l4p_model.task_heads.<task>.task_head.dpt.<rest>``   ``heads.task_heads.<task>.<rest>`` for ``depth``,
                                                       ``flow_2d_backward``, ``dyn_mask``, ``camray``
``...dpt.scratch.layer{k}_rn.weight``                  dropped (alias of ``scratch.layer_rn.{k-1}``)
``...dpt.scratch.refinenet4.resConfUnit1.*``           dropped (never used by L4P's forward)
``l4p_model.task_heads.track_2d.*``                    dropped (sparse tracking head, unused by 4D-RGPT)
=====================================================  =============================================

The released file is a pickled Lightning checkpoint; convert it once (trusted file, ``weights_only=False``)::

    sd = torch.load("l4p_….ckpt", map_location="cpu", weights_only=False)["state_dict"]
    save_file(from_l4p_layout(sd), "l4p_vitg.safetensors", metadata={"format": "rgpt4d.l4p/1", "preset": "l4p_vitg"})
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from rgpt4d_core.experts.base import DENSE_TARGETS, LATENTS, ExpertSpec, ExpertTargets
from rgpt4d_core.experts.dpt_heads import (
    CAMRAY_FUSION,
    CAMRAY_RESAMPLE,
    DenseHeads,
    DenseHeadsConfig,
    DPTHeadConfig,
    FrozenHeads,
)
from rgpt4d_core.experts.l4p_encoder import VideoViT, VideoViTConfig, tokens_to_grid
from rgpt4d_core.types import Clip

if TYPE_CHECKING:
    from rgpt4d_core.experts.config import ExpertConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "rgpt4d.l4p/1"
UNTRAINED = "untrained"


@dataclass(frozen=True)
class L4PPreset:
    """Architecture of one L4P-style expert: encoder, heads and the hook layers the heads (and L_LD) read."""

    encoder: VideoViTConfig
    heads: DenseHeadsConfig
    hook_layers: tuple[int, int, int, int]


def _tiny_head(resample: tuple, fusion: tuple, head2_at_output_size: bool = True) -> DPTHeadConfig:
    return DPTHeadConfig(
        token_dim=96, feature_dim=16, layer_dims=(16, 24, 32, 32), last_dim=16,
        resample_exponents=resample, fusion_factors=fusion, head2_at_output_size=head2_at_output_size,
    )  # fmt: skip


PRESETS: dict[str, L4PPreset] = {
    "l4p_vitg": L4PPreset(encoder=VideoViTConfig(), heads=DenseHeadsConfig(), hook_layers=(14, 21, 28, 36)),
    # CPU budget (L_ED runs these heads forward and backward in every P4D step; docs/results.md "P4D step cost"):
    # one shared head for depth / flow / dyn_mask, width 16; its fusion path ends at 8x16x16 (T' = 8, twice the
    # token grid) and head2 runs there, only its 4 output channels are upsampled to 16x32x32
    "l4p_tiny": L4PPreset(
        encoder=VideoViTConfig(image_size=(64, 64), patch_size=8, width=96, depth=5, num_heads=4, mlp_ratio=4.0),
        heads=DenseHeadsConfig(
            dense=_tiny_head(((0, 1, 1), (0, 0, 0), (0, 0, 0), (-1, -1, -1)), ((1, 1, 1), (1, 2, 2), (1, 1, 1), (2, 2, 2)),
                             head2_at_output_size=False),
            camray=_tiny_head(CAMRAY_RESAMPLE, CAMRAY_FUSION),
            dense_size=(16, 32, 32),
            camray_size=(16, 8, 8),
            shared_dense=True,
        ),
        hook_layers=(2, 3, 4, 5),
    ),
}


def get_preset(name: str) -> L4PPreset:
    if name not in PRESETS:
        raise KeyError(f"unknown l4p preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


class L4PModel(nn.Module):
    """Encoder + heads. ``forward(video)`` -> ``(latents [B, 4, T', h', w', C'], heads output dict)``."""

    def __init__(self, preset: L4PPreset) -> None:
        super().__init__()
        if max(preset.hook_layers) > preset.encoder.depth:
            raise ValueError(f"hook layers {preset.hook_layers} exceed encoder depth {preset.encoder.depth}")
        for head in (preset.heads.dense, preset.heads.camray):
            if head.token_dim != preset.encoder.width:
                raise ValueError(f"head token_dim {head.token_dim} != encoder width {preset.encoder.width}")
        self.preset = preset
        self.encoder = VideoViT(preset.encoder)
        self.heads = DenseHeads(preset.heads)

    def encode_latents(self, video: torch.Tensor) -> torch.Tensor:
        """``video`` ``[B, 3, T, H, W]`` (normalised) -> hook latents float ``[B, 4, T', h', w', C']``."""
        features = self.encoder(video, up_to=max(self.preset.hook_layers))
        grid = self.preset.encoder.grid
        return torch.stack([tokens_to_grid(features[h], grid) for h in self.preset.hook_layers], dim=1)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        latents = self.encode_latents(video)
        return latents, self.heads(latents)


def spec_for_preset(p: L4PPreset, revision: str) -> ExpertSpec:
    """The :class:`ExpertSpec` of an L4P preset with weights ``revision`` (no weights are built)."""
    return ExpertSpec(
        name="l4p",
        revision=revision,
        num_frames=p.encoder.num_frames,
        input_size=p.encoder.image_size,
        hook_layers=p.hook_layers,
        latent_grid=p.encoder.grid,
        latent_dim=p.encoder.width,
        dense_shape=p.heads.dense_size,
        camray_shape=p.heads.camray_size if "camray" in p.heads.tasks else (0, 0, 0),
        targets=(LATENTS, *[t for t in DENSE_TARGETS if t in p.heads.tasks]),
    )


def build_model(preset: str, device: str | torch.device = "cpu", seed: int = 0) -> L4PModel:
    """An ``L4PModel`` with deterministic initial weights (``seed``); ``device="meta"`` allocates nothing."""
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        return L4PModel(get_preset(preset))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, h, w]`` in [0, 1], resized (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return x


def preprocess(clips: Sequence[Clip], num_frames: int, input_size: tuple[int, int]) -> torch.Tensor:
    """Clips -> float32 ``[B, 3, T, H, W]``: resized (bilinear, antialiased), [0, 1], ImageNet-normalised.

    Raises:
        ValueError: a clip has the wrong frame count or is not uint8 ``[T, H, W, 3]`` (names the clip's uri).
    """
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for clip in clips:
        f = clip.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise ValueError(f"clip {clip.uri!r}: frames must be uint8 [T, H, W, 3], got {f.dtype} {list(f.shape)}")
        if f.shape[0] != num_frames:
            raise ValueError(f"clip {clip.uri!r}: the expert takes {num_frames} frames, got {f.shape[0]}")
        out.append(((resize_frames(f, input_size) - mean) / std).permute(1, 0, 2, 3))
    return torch.stack(out)


_ALIAS_RN = re.compile(r"\.scratch\.layer\d_rn\.")


def _l4p_names(keys: Iterable[str]) -> dict[str, str]:
    """``{our name: released-L4P name}`` for the released keys we load (table in the module docstring)."""
    out: dict[str, str] = {}
    for key in keys:
        k = key.removeprefix("l4p_model.")
        if _ALIAS_RN.search(k) or ".refinenet4.resConfUnit1." in k or k.startswith("task_heads.track_2d."):
            continue
        if k.startswith("video_encoder."):
            k = "encoder." + k.removeprefix("video_encoder.")
        elif k.startswith("task_heads."):
            task, _, rest = k.removeprefix("task_heads.").partition(".")
            k = f"heads.task_heads.{task}.{rest.removeprefix('task_head.dpt.')}"
        if k == "encoder.pos_embed" or k.startswith("encoder.head."):
            continue
        out[k] = key
    return out


def from_l4p_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a released-L4P state dict to this module's names (table in the module docstring)."""
    return {new: state[old].contiguous() for new, old in _l4p_names(state).items()}


def file_revision(path: str | Path) -> str:
    """First 16 hex digits of a SHA-256 identifying a checkpoint's content.

    For a safetensors file: over its header as canonical JSON (keys sorted) and its tensor bytes, so the same
    weights and metadata give the same revision however the header was serialised (safetensors' writer keeps the
    metadata in a hash map whose order changes from process to process: two bit-identical experts were written as
    different bytes, hence different revisions, clip rows and shard sets). Any other file: over its bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        header = _safetensors_header(f)
        if header is not None:
            h.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
        else:
            f.seek(0)
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _safetensors_header(f: BinaryIO) -> dict | None:
    """The parsed JSON header of an open safetensors file, leaving ``f`` at its first tensor byte; ``None`` (position
    undefined) when the file is not safetensors."""
    prefix = f.read(8)
    if len(prefix) < 8:
        return None
    size = int.from_bytes(prefix, "little")
    if not 2 <= size <= 100 << 20:
        return None
    try:
        header = json.loads(f.read(size))
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def save_checkpoint(model: L4PModel, path: str | Path, preset: str) -> str:
    """Write the model's weights as safetensors; returns the file's revision."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": CHECKPOINT_FORMAT, "preset": preset})
    return file_revision(path)


def load_checkpoint_state(path: str | Path, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (renamed from the L4P layout if needed) whose new name starts with ``prefix``, and the metadata.

    Only the selected tensors are read from disk (the heads alone of the 5 GB ViT-g file are 1.3 GB).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expert checkpoint not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        keys = list(f.keys())
        if meta.get("format") == CHECKPOINT_FORMAT:
            names = {k: k for k in keys}
        else:  # released-L4P names: map them first (renaming is cheap, reading is not)
            names = {old: new for new, old in _l4p_names(keys).items()}
        state = {new: f.get_tensor(old) for old, new in names.items() if new.startswith(prefix)}
    return state, meta


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, assign: bool = False) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False, assign=assign)
    if missing or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not match the preset: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def check_preset(meta: Mapping[str, str], preset: str, path: str | Path) -> None:
    """Raise ``ValueError`` when a checkpoint's safetensors metadata names another preset than ``preset``."""
    if meta.get("preset") not in (None, preset):
        raise ValueError(f"{path}: checkpoint was saved for preset {meta['preset']!r}, config asks for {preset!r}")


def build_frozen_heads(cfg: ExpertConfig) -> FrozenHeads:
    """Only the frozen heads (what distillation needs; latents come from shards), from ``cfg.checkpoint``."""
    preset = cfg.preset or "l4p_tiny"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        heads = DenseHeads(get_preset(preset).heads)
    if cfg.checkpoint:
        state, meta = load_checkpoint_state(cfg.checkpoint, prefix="heads.")
        check_preset(meta, preset, cfg.checkpoint)
        _load_into(heads, {k.removeprefix("heads."): v for k, v in state.items()}, cfg.checkpoint)
    return FrozenHeads(heads.to(cfg.torch_device(), cfg.torch_dtype()))


class L4PExpert:
    """The ``l4p`` expert (see module docstring); satisfies ``base.Expert``."""

    def __init__(self, model: L4PModel, preset: str, revision: str, device: torch.device, dtype: torch.dtype,
                 batch_size: int = 2) -> None:  # fmt: skip
        self.model = model.to(device=device, dtype=dtype).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self._heads = FrozenHeads(self.model.heads)
        self.device, self.dtype, self.batch_size = device, dtype, max(1, batch_size)
        self._spec = spec_for_preset(model.preset, revision)

    @classmethod
    def from_config(cls, cfg: ExpertConfig) -> L4PExpert:
        """Untrained (seeded) weights without ``cfg.checkpoint``; else weights loaded straight from the file
        into a ``meta``-built model (no second copy in memory, no random init of 1.3 B parameters)."""
        preset = cfg.preset or "l4p_tiny"
        get_preset(preset)
        if not cfg.checkpoint:
            return cls(build_model(preset), preset, UNTRAINED, cfg.torch_device(), cfg.torch_dtype(), cfg.batch_size)
        state, meta = load_checkpoint_state(cfg.checkpoint)
        check_preset(meta, preset, cfg.checkpoint)
        model = build_model(preset, device="meta")
        _load_into(model, state, cfg.checkpoint, assign=True)
        model.encoder.reset_buffers()
        return cls(model, preset, file_revision(cfg.checkpoint), cfg.torch_device(), cfg.torch_dtype(), cfg.batch_size)

    @property
    def spec(self) -> ExpertSpec:
        return self._spec

    @property
    def heads(self) -> FrozenHeads:
        return self._heads

    def encode(self, clips: Sequence[Clip]) -> list[ExpertTargets]:
        """Latents and dense targets per clip, float32 NumPy in the layouts of ``base.py``."""
        s = self._spec
        results: list[ExpertTargets] = []
        for start in range(0, len(clips), self.batch_size):
            video = preprocess(clips[start : start + self.batch_size], s.num_frames, s.input_size)
            with torch.inference_mode():
                latents, dense = self.model(video.to(self.device, self.dtype))
            arrays = {k: v.float().cpu().numpy() for k, v in dense.items()}
            lat = latents.float().cpu().numpy()
            for i in range(video.shape[0]):
                flow = arrays["flow_2d_backward"][i].copy() if "flow_2d_backward" in arrays else None
                if flow is not None:
                    flow[0] = 0.0  # backward flow of the first frame is undefined
                mask = arrays.get("dyn_mask")
                results.append(
                    ExpertTargets(
                        latents=lat[i],
                        depth=arrays["depth"][i] if "depth" in arrays else None,
                        flow_2d_backward=flow,
                        dyn_mask=(1.0 / (1.0 + np.exp(-mask[i]))).astype(np.float32) if mask is not None else None,
                        camray=arrays["camray"][i] if "camray" in arrays else None,
                    )
                )
        return results
