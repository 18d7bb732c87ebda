"""Typed config loading: defaults < YAML files (in order) < key=value overrides; errors name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rgpt4d_core.config import ConfigError, from_yaml, load, to_flat_dict, to_yaml
from rgpt4d_core.video.decode import DecodeConfig


@dataclass
class OptimSection:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 10


@dataclass
class Job:
    name: str = "default"
    seed: int = 0
    use_fp16: bool = False
    optim: OptimSection = field(default_factory=OptimSection)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    output: str | None = None


def _yaml(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_a_real_dataclass_instance() -> None:
    job = load(Job)
    assert isinstance(job, Job) and isinstance(job.optim, OptimSection) and isinstance(job.decode, DecodeConfig)
    assert job == Job()


def test_precedence_defaults_then_yaml_in_order_then_overrides(tmp_path: Path) -> None:
    base = _yaml(tmp_path, "base.yaml", "name: base\nseed: 1\noptim:\n  lr: 0.1\n  warmup_steps: 5\n")
    delta = _yaml(tmp_path, "delta.yaml", "seed: 2\noptim:\n  lr: 0.2\ndecode:\n  num_frames: 8\n")
    job = load(Job, [base, delta], ["optim.lr=0.3", "decode.resize=[112,112]", "output=runs/x"])
    assert job.name == "base"  # only in base.yaml
    assert job.seed == 2  # delta.yaml beats base.yaml
    assert job.optim.lr == 0.3  # command line beats both files
    assert job.optim.warmup_steps == 5 and job.optim.betas == [0.9, 0.95]  # untouched nested default kept
    assert job.decode.num_frames == 8 and tuple(job.decode.resize or ()) == (112, 112)
    assert job.output == "runs/x"
    swapped = load(Job, [delta, base])
    assert swapped.seed == 1 and swapped.optim.lr == 0.1


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("optim:\n  lrr: 0.1\n", "optim.lrr"),
        ("nmae: x\n", "nmae"),
        ("decode:\n  num_frames: sixteen\n", "decode.num_frames"),
        ("optim:\n  warmup_steps: 2.5\n", "optim.warmup_steps"),
        ("use_fp16: maybe\n", "use_fp16"),
    ],
)
def test_unknown_keys_and_wrong_types_in_yaml_name_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    path = _yaml(tmp_path, "bad.yaml", yaml_text)
    with pytest.raises(ConfigError) as info:
        load(Job, [path])
    assert key in str(info.value) and "bad.yaml" in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [("optim.nope=1", "optim.nope"), ("seed=abc", "seed"), ("decode.timeout_s=soon", "decode.timeout_s")],
)
def test_bad_overrides_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match="command line") as info:
        load(Job, overrides=[override])
    assert key in str(info.value)


def test_malformed_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found.*missing.yaml"):
        load(Job, [tmp_path / "missing.yaml"])
    with pytest.raises(ConfigError, match="key=value"):
        load(Job, overrides=["seed"])
    with pytest.raises(ConfigError, match="mapping"):
        load(Job, [_yaml(tmp_path, "list.yaml", "- 1\n- 2\n")])
    with pytest.raises(ConfigError, match="parse"):
        load(Job, [_yaml(tmp_path, "broken.yaml", "a: [1, 2\n")])


def test_to_yaml_from_yaml_round_trip(tmp_path: Path) -> None:
    job = load(Job, overrides=["name=rt", "optim.lr=0.25", "decode.resize=[64,96]", "decode.backends=[pyav]"])
    text = to_yaml(job)
    assert "lr: 0.25" in text
    back = from_yaml(Job, text)
    assert back == job
    dumped = _yaml(tmp_path, "dumped.yaml", text)
    assert load(Job, [dumped]) == job
    flat = to_flat_dict(job)
    assert flat["optim.lr"] == 0.25 and flat["decode.num_frames"] == 16 and flat["name"] == "rt"


def test_typed_values_come_last_and_are_never_parsed_as_override_text(tmp_path: Path) -> None:
    odd = tmp_path / "a dir=with,commas[1]" / "out"  # would split or fail as `output=<path>` override text
    job = load(Job, [], ["seed=3", "output=runs/x"], {"output": odd, "optim.betas": [0.8, 0.9], "decode.num_frames": 4})
    assert job.output == str(odd) and job.seed == 3  # a program's value beats the command line; the rest stays
    assert job.optim.betas == [0.8, 0.9] and job.decode.num_frames == 4 and job.optim.lr == 1e-3
    with pytest.raises(ConfigError, match="optim.nope"):
        load(Job, values={"optim.nope": 1})
    with pytest.raises(ConfigError, match="seed"):
        load(Job, values={"seed": "three"})
