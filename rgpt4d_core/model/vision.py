"""Vision encoder E_V: a SigLIP vision transformer from transformers, features of a chosen layer.

Built from :class:`VisionConfig` sizes (random init, or on the ``meta`` device) or loaded from a local
directory written by ``save_pretrained`` (NVILA's ``vision_tower/``). Never downloads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel


@dataclass(frozen=True)
class VisionConfig:
    """Attributes:
    image_size: input side in pixels (square frames).
    patch_size: ViT patch side in pixels; ``image_size // patch_size`` tokens per side.
    hidden_size: token width ``C_vision``.
    intermediate_size: MLP width.
    num_layers: transformer blocks.
    num_heads: attention heads.
    select_layer: index into the ``num_layers + 1`` hidden states (0 = patch embeddings); NVILA uses -2.
    use_head: build SigLIP's attention-pooling head (unused for features; PaliGemma's SigLIP has none).
    frozen: no gradients to the encoder (paper: E_V frozen); it then runs under ``no_grad``.
    """

    image_size: int = 448
    patch_size: int = 14
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_layers: int = 27
    num_heads: int = 16
    select_layer: int = -2
    use_head: bool = False
    frozen: bool = True

    @property
    def grid(self) -> int:
        """Tokens per side of the patch grid."""
        return self.image_size // self.patch_size

    def to_hf(self) -> SiglipVisionConfig:
        return SiglipVisionConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            vision_use_head=self.use_head,
        )

    @classmethod
    def from_hf(cls, hf: SiglipVisionConfig, select_layer: int = -2, frozen: bool = True) -> VisionConfig:
        image_size = hf.image_size if isinstance(hf.image_size, int) else int(hf.image_size[0])
        patch_size = hf.patch_size if isinstance(hf.patch_size, int) else int(hf.patch_size[0])
        return cls(
            image_size=image_size,
            patch_size=patch_size,
            hidden_size=hf.hidden_size,
            intermediate_size=hf.intermediate_size,
            num_layers=hf.num_hidden_layers,
            num_heads=hf.num_attention_heads,
            select_layer=select_layer,
            use_head=bool(getattr(hf, "vision_use_head", True)),
            frozen=frozen,
        )


class VisionTower(nn.Module):
    """SigLIP patch features of one layer: pixels ``[F, 3, S, S]`` in ``[-1, 1]`` → ``[F, g*g, C_vision]``."""

    def __init__(self, cfg: VisionConfig, model: SiglipVisionModel | None = None) -> None:
        super().__init__()
        if not -(cfg.num_layers + 1) <= cfg.select_layer <= cfg.num_layers:
            raise ValueError(
                f"vision.select_layer {cfg.select_layer} out of range for {cfg.num_layers} layers"
            )
        self.cfg = cfg
        self.model = model if model is not None else SiglipVisionModel(cfg.to_hf())
        self.requires_grad_(not cfg.frozen)

    def requires_grad_(self, requires_grad: bool = True) -> VisionTower:
        """Switch training of the tower on or off; "on" never enables the parameters that cannot reach the selected
        layer (:meth:`unused_parameter_names`): DDP refuses parameters that get no gradient."""
        unused = self.unused_parameter_names()
        for name, param in self.model.named_parameters():
            param.requires_grad_(requires_grad and name not in unused)
        return self

    def unused_parameter_names(self) -> set[str]:
        """Parameters of ``self.model`` that cannot affect the selected hidden state: the encoder layers after it,
        the post-layernorm and the pooling head (NVILA takes layer −2, so its last layer and head are unused)."""
        n = self.cfg.num_layers
        used_layers = self.cfg.select_layer % (n + 1)  # hidden state k is the output of layers 0..k-1
        unused = set()
        for name, _ in self.model.named_parameters():
            parts = name.split(".")
            after_selected = "layers" in parts and int(parts[parts.index("layers") + 1]) >= used_layers
            if after_selected or "post_layernorm" in parts or "head" in parts:
                unused.add(name)
        return unused

    @property
    def grid(self) -> int:
        return self.cfg.grid

    def train(self, mode: bool = True) -> VisionTower:
        """A frozen tower stays in eval mode."""
        super().train(mode and not self.cfg.frozen)
        return self

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: float ``[F, 3, S, S]`` SigLIP-normalised → float ``[F, g*g, C_vision]``."""
        size = self.cfg.image_size
        if pixels.dim() != 4 or pixels.shape[1:] != (3, size, size):
            raise ValueError(f"vision tower expects pixels [F, 3, {size}, {size}], got {tuple(pixels.shape)}")
        pixels = pixels.to(self.model.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.frozen):
            out = self.model(pixel_values=pixels, output_hidden_states=True)
        hidden = out.hidden_states[self.cfg.select_layer]
        if math.isqrt(hidden.shape[1]) ** 2 != hidden.shape[1]:
            raise ValueError(f"vision tokens {hidden.shape[1]} do not form a square grid")
        return hidden


def load_vision_tower(path: str | Path, select_layer: int = -2, frozen: bool = True) -> VisionTower:
    """Load a SigLIP vision model saved with ``save_pretrained`` (config.json + safetensors) from ``path``."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no vision tower config.json in {path}")
    model = SiglipVisionModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    cfg = VisionConfig.from_hf(model.config, select_layer=select_layer, frozen=frozen)
    return VisionTower(cfg, model)
