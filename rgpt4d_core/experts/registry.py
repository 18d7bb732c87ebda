"""Build a frozen 4D expert by name from config (DESIGN.md §4): a plain dict registry.

>>> expert = build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", checkpoint="runs/expert/l4p_tiny.safetensors"))
>>> expert.spec.latent_dim
96

Known experts: ``l4p`` (VideoMAE ViT + DPT heads; presets ``l4p_tiny``, ``l4p_vitg``), ``oracle`` (the synthetic
world's exact depth / flow / dynamic mask), ``classical`` (OpenCV DIS flow + flow-derived motion mask).
Weights come only from a local or mounted path, never from a hub.

:class:`ExpertConfig` lives in ``experts/config.py`` (re-exported here) so that the expert modules can take it
without importing this registry, which imports them (lazily) in turn.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

from rgpt4d_core.experts.base import Expert, ExpertSpec
from rgpt4d_core.experts.config import ExpertConfig

__all__ = ["EXPERTS", "SPEC_READERS", "Builder", "ExpertConfig", "build_expert", "known_experts",
           "register_expert", "spec_without_weights"]  # fmt: skip


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


def _spec_l4p(cfg: ExpertConfig) -> ExpertSpec | None:
    """The preset's shapes and the checkpoint's revision (SHA-256 of its bytes; its preset checked from the
    safetensors header); ``None`` when the checkpoint is not a file on this machine."""
    from safetensors import safe_open

    from rgpt4d_core.experts.l4p import UNTRAINED, check_preset, file_revision, get_preset, spec_for_preset

    preset = cfg.preset or "l4p_tiny"
    if not cfg.checkpoint:
        return spec_for_preset(get_preset(preset), UNTRAINED)
    if not Path(cfg.checkpoint).is_file():
        return None
    with safe_open(cfg.checkpoint, framework="pt") as f:
        check_preset(dict(f.metadata() or {}), preset, cfg.checkpoint)
    return spec_for_preset(get_preset(preset), file_revision(cfg.checkpoint))


#: name -> the spec read from the config (and the weights' file) without building the model, where that is cheap
SPEC_READERS: dict[str, Callable[[ExpertConfig], ExpertSpec | None]] = {"l4p": _spec_l4p}

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
        raise KeyError(
            f"unknown expert.name={cfg.name!r}; known experts: {', '.join(known_experts())}.{hint}"
        )
    return EXPERTS[cfg.name](cfg)


def spec_without_weights(cfg: ExpertConfig) -> ExpertSpec | None:
    """``build_expert(cfg).spec`` without building the model or loading its weights, or ``None`` where the expert
    cannot tell it that way (no reader in ``SPEC_READERS``, or its checkpoint is not on this machine).

    Raises:
        KeyError: unknown preset; ``ValueError``: a checkpoint saved for another preset (as ``build_expert``).
    """
    reader = SPEC_READERS.get(cfg.name)
    return reader(cfg) if reader is not None else None
