"""The frozen 4D expert contract (DESIGN.md §4): what every teacher provides to precompute and to the student.

An expert turns a clip into *targets*: latent token maps at a few hook layers (for L_LD) and dense
predictions (for L_ED): depth, backward optical flow, dynamic-object mask and camera rays. Any target may be
absent (a classical flow expert has no depth and no latents); consumers skip what is missing.

Layouts (unbatched; batched tensors add a leading ``B``):

* ``latents``: float ``[K, T', h', w', C']`` for the ``K = len(spec.hook_layers)`` hooks, token grid
  ``spec.latent_grid = (T', h', w')`` and width ``spec.latent_dim = C'``;
* ``depth``: float ``[T, H, W]``, metres (positive), ``(T, H, W) = spec.dense_shape``;
* ``flow_2d_backward``: float ``[T, H, W, 2]``, pixels ``(dx, dy)`` at the expert's output resolution,
  mapping a pixel of frame ``t`` to its position in frame ``t-1``; frame 0 is zeros (invalid);
* ``dyn_mask``: float ``[T, H, W]``, probability in ``[0, 1]`` that the pixel belongs to an object that
  moves in the world;
* ``camray``: float ``[Tc, hc, wc, 6]`` Plücker rays (direction, moment), ``spec.camray_shape``.

The ``heads`` module runs the expert's frozen dense heads on (student-predicted) latents inside autograd:
``heads(latents[B, K, T', h', w', C']) -> {"depth": [B,T,H,W] (metres), "flow_2d_backward": [B,T,H,W,2],
"dyn_mask": [B,T,H,W] (logits), "camray": [B,Tc,hc,wc,6]}`` (keys for the targets it provides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # annotations only: shard schema readers (Ray Data tasks) import this module without torch
    import torch

from rgpt4d_core.types import Clip

#: every dense target name an expert may provide, in a fixed order
DENSE_TARGETS: tuple[str, ...] = ("depth", "flow_2d_backward", "dyn_mask", "camray")
#: the latent target name
LATENTS = "latents"


@dataclass(frozen=True)
class ExpertSpec:
    """Static description of an expert; stored in shard manifests and checked by the distill job.

    Attributes:
        name: registry name (``"l4p"``, ``"oracle"``, ``"classical"``).
        revision: weights revision (checkpoint hash or ``"untrained"``); part of the cache key.
        num_frames: frames per clip the expert consumes (16 for L4P).
        input_size: ``(H, W)`` the frames are resized to before encoding.
        hook_layers: block indices whose outputs are the latents (L4P: ``(14, 21, 28, 36)``); empty if none.
        latent_grid: ``(T', h', w')`` token grid per hook; ``(0, 0, 0)`` if no latents.
        latent_dim: token width ``C'`` (L4P: 1408); 0 if no latents.
        dense_shape: ``(T, H, W)`` of depth / flow / dyn_mask.
        camray_shape: ``(Tc, hc, wc)`` of the camera-ray map; ``(0, 0, 0)`` if none.
        targets: names provided, a subset of ``DENSE_TARGETS + ("latents",)``.
    """

    name: str
    revision: str
    num_frames: int
    input_size: tuple[int, int]
    hook_layers: tuple[int, ...] = ()
    latent_grid: tuple[int, int, int] = (0, 0, 0)
    latent_dim: int = 0
    dense_shape: tuple[int, int, int] = (0, 0, 0)
    camray_shape: tuple[int, int, int] = (0, 0, 0)
    targets: tuple[str, ...] = field(default_factory=tuple)

    def provides(self, target: str) -> bool:
        return target in self.targets

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "revision": self.revision,
            "num_frames": self.num_frames,
            "input_size": list(self.input_size),
            "hook_layers": list(self.hook_layers),
            "latent_grid": list(self.latent_grid),
            "latent_dim": self.latent_dim,
            "dense_shape": list(self.dense_shape),
            "camray_shape": list(self.camray_shape),
            "targets": list(self.targets),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ExpertSpec:
        return cls(
            name=d["name"],
            revision=d["revision"],
            num_frames=int(d["num_frames"]),
            input_size=tuple(d["input_size"]),  # type: ignore[arg-type]
            hook_layers=tuple(d["hook_layers"]),
            latent_grid=tuple(d["latent_grid"]),  # type: ignore[arg-type]
            latent_dim=int(d["latent_dim"]),
            dense_shape=tuple(d["dense_shape"]),  # type: ignore[arg-type]
            camray_shape=tuple(d["camray_shape"]),  # type: ignore[arg-type]
            targets=tuple(d["targets"]),
        )


@dataclass(frozen=True)
class ExpertTargets:
    """What an expert produced for one clip (layouts in the module docstring). ``None`` = not provided."""

    latents: np.ndarray | None = None
    depth: np.ndarray | None = None
    flow_2d_backward: np.ndarray | None = None
    dyn_mask: np.ndarray | None = None
    camray: np.ndarray | None = None

    def available(self) -> tuple[str, ...]:
        return tuple(n for n in (LATENTS, *DENSE_TARGETS) if getattr(self, n) is not None)


@runtime_checkable
class Expert(Protocol):
    """A frozen 4D perception model. Built by name from config (see ``registry``), weights from a local path."""

    @property
    def spec(self) -> ExpertSpec: ...

    def encode(self, clips: Sequence[Clip]) -> list[ExpertTargets]:
        """Targets for each clip (clips of ``spec.num_frames`` frames at any resolution)."""
        ...

    @property
    def heads(self) -> torch.nn.Module | None:
        """The frozen dense heads (see module docstring), or ``None`` if the expert has no latents."""
        ...
