"""The ``expert:`` section of precompute / distill / pretrain jobs: which frozen 4D expert to build and how.

It is its own module so that the experts (``l4p``, ``oracle``, ``classical``) and the registry that builds them
both depend on it, and not on each other (``registry`` imports the expert modules; they never import ``registry``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
