"""Expert registry: build by name, helpful errors, typed config from the shipped YAML files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rgpt4d_core import config
from rgpt4d_core.experts.base import Expert
from rgpt4d_core.experts.registry import ExpertConfig, build_expert, known_experts, register_expert

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class _Job:
    expert: ExpertConfig = field(default_factory=ExpertConfig)


def test_known_experts_are_the_three_of_the_design() -> None:
    assert set(known_experts()) >= {"l4p", "oracle", "classical"}


@pytest.mark.parametrize("name,preset", [("l4p", "l4p_tiny"), ("oracle", "res32"), ("classical", "")])
def test_build_by_name_gives_an_expert_with_that_name(name: str, preset: str) -> None:
    expert = build_expert(ExpertConfig(name=name, preset=preset, device="cpu"))
    assert isinstance(expert, Expert)
    assert expert.spec.name == name


def test_misspelt_name_lists_known_experts_and_suggests_the_closest() -> None:
    with pytest.raises(KeyError) as err:
        build_expert(ExpertConfig(name="l4pp"))
    msg = str(err.value)
    for name in ("l4p", "oracle", "classical"):
        assert name in msg
    assert "Did you mean 'l4p'" in msg


def test_unknown_presets_and_dtypes_are_named() -> None:
    with pytest.raises(KeyError, match="l4p_tiny"):
        build_expert(ExpertConfig(name="l4p", preset="l4p_huge", device="cpu"))
    with pytest.raises(KeyError, match="res64"):
        build_expert(ExpertConfig(name="classical", preset="res7"))
    with pytest.raises(ValueError, match="expert.dtype"):
        ExpertConfig(dtype="float8").torch_dtype()


def test_register_refuses_a_taken_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_expert("l4p", lambda cfg: build_expert(cfg))


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "expert").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_expert_yaml_loads_into_the_typed_config(path: Path) -> None:
    job = config.load(_Job, [path])
    assert job.expert.name in known_experts()
    assert job.expert.torch_dtype() is not None


def test_config_typo_fails_before_anything_is_built() -> None:
    with pytest.raises(config.ConfigError, match="bach_size"):
        config.load(_Job, overrides=["expert.bach_size=3"])


def test_spec_without_weights_is_the_built_experts_spec(tmp_path: Path) -> None:
    from rgpt4d_core.experts.l4p import build_model, save_checkpoint
    from rgpt4d_core.experts.registry import spec_without_weights

    untrained = ExpertConfig(name="l4p", preset="l4p_tiny", device="cpu")
    assert spec_without_weights(untrained) == build_expert(untrained).spec
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(build_model("l4p_tiny", seed=3), path, "l4p_tiny")
    trained = ExpertConfig(name="l4p", preset="l4p_tiny", checkpoint=str(path), device="cpu")
    spec = spec_without_weights(trained)
    assert spec == build_expert(trained).spec and spec is not None and spec.revision not in ("", "untrained")
    # a checkpoint that is not on this machine: the caller has to build the expert where it is
    assert spec_without_weights(ExpertConfig(name="l4p", checkpoint=str(tmp_path / "elsewhere.safetensors"))) is None
    assert spec_without_weights(ExpertConfig(name="classical")) is None  # no reader: build it
    other = tmp_path / "vitg-labelled.safetensors"
    save_checkpoint(build_model("l4p_tiny"), other, "l4p_vitg")
    with pytest.raises(ValueError, match="saved for preset 'l4p_vitg'"):
        spec_without_weights(ExpertConfig(name="l4p", preset="l4p_tiny", checkpoint=str(other)))
