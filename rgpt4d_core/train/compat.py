"""Does a shard set fit the distillation job? Checked on the driver before any Ray worker starts.

The shards' manifest records the expert that wrote them (:class:`~rgpt4d_core.experts.base.ExpertSpec`). The job
expects the expert named in its config: the same name, the same weights revision (the student's L_ED runs the
*same* frozen heads that produced the targets), the same latent/dense shapes, and every target the chosen P4D
variant needs.
"""

from __future__ import annotations

from pathlib import Path

from rgpt4d_core.experts.base import LATENTS, ExpertSpec
from rgpt4d_core.shards.manifest import Manifest, ShardManifestError
from rgpt4d_core.train.config import DistillJobConfig

#: fields of ExpertSpec that must agree between the manifest and the job's expected spec
_COMPARED = ("name", "revision", "num_frames", "hook_layers", "latent_grid", "latent_dim", "dense_shape", "camray_shape")


def expected_expert_spec(cfg: DistillJobConfig) -> ExpertSpec | None:
    """The spec the job's frozen heads imply, built without loading the expert's encoder.

    Returns ``None`` for experts without heads/latents (``oracle``, ``classical``): only their name and targets
    are checked.
    """
    if cfg.expert.name != "l4p":
        return None
    from rgpt4d_core.experts.l4p import UNTRAINED, file_revision, get_preset, spec_for_preset

    checkpoint = cfg.expert.checkpoint
    revision = file_revision(checkpoint) if checkpoint and Path(checkpoint).is_file() else UNTRAINED
    return spec_for_preset(get_preset(cfg.expert.preset or "l4p_tiny"), revision)


def _norm(value: object) -> object:
    return tuple(value) if isinstance(value, list | tuple) else value


def check_manifest(manifest: Manifest, expected: ExpertSpec | None, cfg: DistillJobConfig) -> None:
    """Raise :class:`ShardManifestError` listing every mismatch between the shards and what the job needs."""
    got = manifest.expert_spec
    problems: list[str] = []
    if got.name != cfg.expert.name:
        problems.append(f"expert name: shards {got.name!r}, config expert.name={cfg.expert.name!r}")
    if expected is not None:
        for f in _COMPARED[1:]:  # the name was checked above
            a, b = _norm(getattr(got, f)), _norm(getattr(expected, f))
            if a != b:
                problems.append(f"expert {f}: shards {a!r}, expected {b!r}")
    variant = cfg.ablation
    if variant.latent_distillation and not got.provides(LATENTS):
        problems.append(f"ablation.variant={variant.variant!r} needs latents, the shards' expert {got.name!r} has none")
    if variant.explicit_distillation and expected is None:
        problems.append(
            f"ablation.variant={variant.variant!r} needs the expert's frozen heads; expert {cfg.expert.name!r} has none"
        )
    if manifest.counts.ok == 0:
        problems.append("the shard set has no ok rows")
    if problems:
        raise ShardManifestError("shards do not fit the job:\n  - " + "\n  - ".join(problems))
