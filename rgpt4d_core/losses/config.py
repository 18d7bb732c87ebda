"""Loss kinds and weights of the P4D objective: :class:`P4DLossConfig` and the named presets (paper-spec §2.5)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rgpt4d_core.experts.base import DENSE_TARGETS

LOSS_KINDS = ("smooth_l1", "mse")
DYN_MASK_MODES = ("bce", "sigmoid_regression")


@dataclass(frozen=True)
class P4DLossConfig:
    """Loss kinds and weights. Defaults = the released code's "paper run" (:data:`LOSS_PRESETS`).

    Attributes:
        ld_weight: α, weight of L_LD.
        ld_kind: Δ_LD, ``"smooth_l1"`` or ``"mse"``.
        ed_kind: Δ_m for every dense task, ``"smooth_l1"`` or ``"mse"``.
        smooth_l1_beta: the Smooth-L1 transition point β (> 0), in the unit of the compared quantity.
        depth_weight: effective weight of L_ED,depth (log-depth).
        flow_weight: effective weight of L_ED,flow_2d_backward (pixels).
        dyn_mask_weight: effective weight of L_ED,dyn_mask.
        camray_weight: effective weight of L_ED,camray.
        dyn_mask_mode: ``"bce"`` or ``"sigmoid_regression"`` (module docstring).
        depth_eps: ε of log(depth + ε), metres.
        log_zero_weight_terms: compute weight-0 terms (detached) so they can be logged.
        normalize_targets: compare standardised targets and predictions (``rgpt4d_core/losses/normalise.py``):
            each term is then O(1) like L_SFT; :func:`~rgpt4d_core.losses.p4d_loss` needs the statistics.
    """

    ld_weight: float = 0.01
    ld_kind: str = "mse"
    ed_kind: str = "smooth_l1"
    smooth_l1_beta: float = 1.0
    depth_weight: float = 0.1
    flow_weight: float = 0.001
    dyn_mask_weight: float = 0.01
    camray_weight: float = 0.0
    dyn_mask_mode: str = "bce"
    depth_eps: float = 1e-8
    log_zero_weight_terms: bool = True
    normalize_targets: bool = False

    def __post_init__(self) -> None:
        for name in ("ld_kind", "ed_kind"):
            if getattr(self, name) not in LOSS_KINDS:
                raise ValueError(
                    f"P4DLossConfig.{name} must be one of {LOSS_KINDS}, got {getattr(self, name)!r}"
                )
        if self.dyn_mask_mode not in DYN_MASK_MODES:
            raise ValueError(
                f"P4DLossConfig.dyn_mask_mode must be one of {DYN_MASK_MODES}, got {self.dyn_mask_mode!r}"
            )
        if self.smooth_l1_beta <= 0:
            raise ValueError(f"P4DLossConfig.smooth_l1_beta must be > 0, got {self.smooth_l1_beta}")
        for name in ("ld_weight", "depth_weight", "flow_weight", "dyn_mask_weight", "camray_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"P4DLossConfig.{name} must be >= 0, got {getattr(self, name)}")

    def ed_weight(self, task: str) -> float:
        """Weight of dense task ``task`` (one of ``DENSE_TARGETS``)."""
        return {
            "depth": self.depth_weight,
            "flow_2d_backward": self.flow_weight,
            "dyn_mask": self.dyn_mask_weight,
            "camray": self.camray_weight,
        }[task]

    def with_weights(self, **weights: float | None) -> P4DLossConfig:
        """A copy with some weights replaced, keyed by term name: ``ld`` and the ``DENSE_TARGETS`` names
        (``depth``, ``flow_2d_backward``, ``dyn_mask``, ``camray``); ``None`` values are ignored."""
        fields = {"ld": "ld_weight", "depth": "depth_weight", "flow_2d_backward": "flow_weight"}
        fields |= {"dyn_mask": "dyn_mask_weight", "camray": "camray_weight"}
        unknown = set(weights) - set(fields)
        if unknown:
            raise KeyError(f"unknown loss weight(s) {sorted(unknown)}; known: {sorted(fields)}")
        changes: dict[str, Any] = {fields[k]: float(v) for k, v in weights.items() if v is not None}
        return replace(self, **changes)

    @property
    def distills(self) -> bool:
        """True if any distillation term has a positive weight."""
        return self.ld_weight > 0 or any(self.ed_weight(t) > 0 for t in DENSE_TARGETS)


_PAPER_BETA = 0.1  # the paper's β multiplying every λ_m (paper-spec §2.4-2.5)
#: named presets (paper-spec §2.5): effective weights, i.e. β·λ_m already multiplied out for the paper
LOSS_PRESETS: dict[str, P4DLossConfig] = {
    "paper": P4DLossConfig(
        ld_weight=0.5,
        ld_kind="smooth_l1",
        ed_kind="smooth_l1",
        depth_weight=_PAPER_BETA * 1.0,
        flow_weight=_PAPER_BETA * 0.1,
        dyn_mask_weight=_PAPER_BETA * 0.05,
        camray_weight=_PAPER_BETA * 0.05,
    ),
    "released_code": P4DLossConfig(),
    # issue 16: every term on standardised targets, each weighted like L_SFT (a grid scales them: conf/ablate/)
    "normalized": P4DLossConfig(
        ld_weight=1.0,
        ld_kind="mse",
        ed_kind="smooth_l1",
        depth_weight=1.0,
        flow_weight=1.0,
        dyn_mask_weight=1.0,
        camray_weight=0.0,
        normalize_targets=True,
    ),
    "sft_only": P4DLossConfig(
        ld_weight=0.0,
        depth_weight=0.0,
        flow_weight=0.0,
        dyn_mask_weight=0.0,
        camray_weight=0.0,
        log_zero_weight_terms=False,
    ),
}


def loss_preset(name: str, **overrides: object) -> P4DLossConfig:
    """The preset ``name`` (``paper``, ``released_code``, ``normalized``, ``sft_only``) with optional field
    overrides."""
    if name not in LOSS_PRESETS:
        raise KeyError(f"unknown loss preset {name!r}; known: {sorted(LOSS_PRESETS)}")
    return replace(LOSS_PRESETS[name], **overrides)  # type: ignore[arg-type]
