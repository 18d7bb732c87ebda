"""Build a frozen 4D expert by name from config (DESIGN.md §4): a plain dict registry.

>>> expert = build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", checkpoint="runs/expert/l4p_tiny.safetensors"))
>>> expert.spec.latent_dim
96

Known experts: ``l4p`` (VideoMAE ViT + DPT heads; presets ``l4p_tiny``, ``l4p_vitg``), ``oracle`` (the synthetic
world's exact depth / flow / dynamic mask), ``classical`` (OpenCV DIS flow + flow-derived motion mask).
Weights come only from a local or mounted path, never from a hub.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rgpt4d_core.experts.base import Expert


@dataclass(frozen=True)
class ExpertConfig:
    """Which expert to build and how to run it (the ``expert:`` section of precompute / distill / pretrain jobs).

    Attributes:
        name: registry name: ``"l4p"``, ``"oracle"`` or ``"classical"``.
        preset: expert-specific preset (``l4p``: ``"l4p_tiny"`` / ``"l4p_vitg"``; ``oracle`` / ``classical``:
            ``"default"``, or a resolution preset such as ``"res64"``); empty = the expert's default.
        checkpoint: local path of the weights (``.safetensors``); ``None`` = deterministic untrained weights
            (revision ``"untrained"``). Ignored by experts without weights.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``… or ``"auto"`` (CUDA when available).
        dtype: compute dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; outputs are always float32.
        batch_size: clips per forward pass inside ``encode``.
        input_size: optional ``[H, W]`` override of the preset's frame size (``oracle`` / ``classical`` only:
            the resolution of their dense targets).
    """

    name: str = "l4p"
    preset: str = ""
    checkpoint: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 2
    input_size: list[int] | None = None

    def torch_device(self) -> torch.device:
        """The resolved device (``"auto"`` -> ``cuda`` if available else ``cpu``)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        """The compute dtype; raises ``ValueError`` naming ``expert.dtype`` for an unknown one."""
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if self.dtype not in dtypes:
            raise ValueError(f"expert.dtype={self.dtype!r} unknown; choose one of {sorted(dtypes)}")
        return dtypes[self.dtype]


Builder = Callable[[ExpertConfig], Expert]


def _build_l4p(cfg: ExpertConfig) -> Expert:
    from rgpt4d_core.experts.l4p import L4PExpert

    return L4PExpert.from_config(cfg)


def _build_oracle(cfg: ExpertConfig) -> Expert:
    from rgpt4d_core.experts.oracle import OracleExpert

    return OracleExpert.from_config(cfg)


def _build_classical(cfg: ExpertConfig) -> Expert:
    from rgpt4d_core.experts.classical import ClassicalExpert

    return ClassicalExpert.from_config(cfg)


#: name -> builder; extend with :func:`register_expert`
EXPERTS: dict[str, Builder] = {"l4p": _build_l4p, "oracle": _build_oracle, "classical": _build_classical}


def register_expert(name: str, builder: Builder) -> None:
    """Add an expert under ``name`` (raises ``ValueError`` if the name is taken)."""
    if name in EXPERTS:
        raise ValueError(f"expert {name!r} is already registered")
    EXPERTS[name] = builder


def known_experts() -> tuple[str, ...]:
    return tuple(sorted(EXPERTS))


def build_expert(cfg: ExpertConfig) -> Expert:
    """The expert named ``cfg.name``, with its weights loaded and frozen.

    Raises:
        KeyError: unknown name; the message lists the known experts and the closest match.
    """
    if cfg.name not in EXPERTS:
        close = difflib.get_close_matches(cfg.name, EXPERTS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown expert.name={cfg.name!r}; known experts: {', '.join(known_experts())}.{hint}")
    return EXPERTS[cfg.name](cfg)
