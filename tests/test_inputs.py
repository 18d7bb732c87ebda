"""The input spec (rgpt4d_core/inputs.py): written into an exported checkpoint by the real exporter, read back by
the engine (and so by eval and serve), overridden only by what a job sets; precompute refuses a frame count the
expert does not take before decoding anything."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from rgpt4d_core.config import load
from rgpt4d_core.inputs import (
    INPUT_SPEC_FILE,
    DecodeLimits,
    InputSpec,
    check_expert_frames,
    checkpoint_input_spec,
    read_input_spec,
    write_input_spec,
)
from rgpt4d_core.model.presets import student_config
from rgpt4d_core.model.student import Student
from rgpt4d_core.serve.engine import EngineConfig, VQAEngine, VQARequest, VQAResult, write_random_checkpoint
from rgpt4d_core.text.prompts import DURATION_SENTENCE
from rgpt4d_core.text.tokenizer import TOKENIZERS
from rgpt4d_core.train.config import DistillJobConfig
from rgpt4d_core.train.distill import export_inference_checkpoint, trained_input_spec
from rgpt4d_core.types import Region
from tests.test_serve_engine import OPTIONS, make_mp4

SPEC = InputSpec(num_frames=8, frame_size=64, som_image=True, duration_sentence=False)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    path.write_bytes(make_mp4())
    return path


@pytest.fixture(scope="module")
def old_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint as written before the spec existed (no ``input_spec.json``)."""
    return write_random_checkpoint(tmp_path_factory.mktemp("old") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny student exported by the distillation's exporter with the spec its job trained on."""
    cfg = load(
        DistillJobConfig,
        [],
        [
            "data.shards=unused",
            "run.storage_path=unused",
            "data.duration_prompt=false",
            "data.som_image=true",
        ],
    )
    student_cfg = student_config("tiny")
    spec = trained_input_spec(cfg, 8, student_cfg.vision.image_size)
    torch.manual_seed(0)
    tokenizer = TOKENIZERS[student_cfg.tokenizer]()
    return export_inference_checkpoint(
        Student(student_cfg), tokenizer, tmp_path_factory.mktemp("run") / "export", "t-step1", input_spec=spec
    )


def _request(video: Path) -> VQARequest:
    region = Region(obj_id=1, box=(0.05, 0.3, 0.4, 0.6))
    return VQARequest(
        video=str(video), question="Where does <obj_1> move?", options=OPTIONS, regions=(region,)
    )


def test_spec_round_trips_and_old_files_get_defaults(tmp_path: Path) -> None:
    spec = InputSpec(num_frames=4, frame_size=32, som_image=False, duration_sentence=False,
                     decode=DecodeLimits(max_file_bytes=10, timeout_s=1.5, allow_repeats=False))  # fmt: skip
    assert read_input_spec(tmp_path) is None
    write_input_spec(tmp_path, spec)
    assert read_input_spec(tmp_path) == spec
    data = json.loads((tmp_path / INPUT_SPEC_FILE).read_text())
    assert data["format"] == "rgpt4d.input_spec/1" and data["decode"]["max_file_bytes"] == 10
    # a file missing keys takes the defaults; a key nobody knows is refused
    (tmp_path / INPUT_SPEC_FILE).write_text(json.dumps({"format": data["format"], "num_frames": 12}))
    assert read_input_spec(tmp_path) == InputSpec(num_frames=12)
    (tmp_path / INPUT_SPEC_FILE).write_text(json.dumps({"format": data["format"], "num_frams": 12}))
    with pytest.raises(ValueError, match="num_frams"):
        read_input_spec(tmp_path)


def test_spec_decode_config_carries_the_limits() -> None:
    cfg = InputSpec(
        num_frames=5, decode=DecodeLimits(max_duration_s=9.0, allow_repeats=False)
    ).decode_config()
    assert (cfg.num_frames, cfg.max_duration_s, cfg.allow_repeats, cfg.timeout_s) == (5, 9.0, False, 30.0)
    assert cfg.max_file_bytes == 64 * 1024 * 1024  # the engine's limits of before, now in one place


def test_exporter_writes_the_trained_spec(exported: Path) -> None:
    assert read_input_spec(exported) == SPEC
    assert EngineConfig(checkpoint=str(exported)).input_spec() == SPEC


def test_engine_defaults_to_the_checkpoints_spec(exported: Path, video: Path) -> None:
    torch.set_num_threads(1)
    engine = VQAEngine(EngineConfig(checkpoint=str(exported), max_new_tokens=2, decode_threads=1))
    assert engine.input == SPEC
    prepared = engine.prepare(_request(video))
    assert not isinstance(prepared, Exception) and hasattr(prepared, "inputs")
    assert prepared.inputs.video.shape[0] == 8  # type: ignore[union-attr]
    text = engine.tokenizer.decode(prepared.inputs.input_ids.tolist())  # type: ignore[union-attr]
    assert DURATION_SENTENCE.split("{")[0].strip() not in text


def test_explicit_override_wins_and_is_logged(exported: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = EngineConfig(checkpoint=str(exported), num_frames=4, include_duration=True, max_file_bytes=1000)
    with caplog.at_level(logging.INFO, logger="rgpt4d_core.inputs"):
        spec = cfg.input_spec()
    assert (spec.num_frames, spec.duration_sentence, spec.decode.max_file_bytes) == (4, True, 1000)
    assert (
        spec.som_image and spec.decode.timeout_s == SPEC.decode.timeout_s
    )  # the rest stays the checkpoint's
    logged = caplog.text
    assert "num_frames=4 overrides 8" in logged and "duration_sentence=True overrides False" in logged
    assert INPUT_SPEC_FILE in logged


def test_old_checkpoint_gets_the_former_engine_defaults(old_checkpoint: Path) -> None:
    spec = checkpoint_input_spec(old_checkpoint)
    assert spec == InputSpec()
    assert (spec.num_frames, spec.duration_sentence, spec.som_image) == (16, True, True)
    limits = spec.decode
    assert (limits.max_file_bytes, limits.timeout_s, limits.allow_repeats) == (64 << 20, 30.0, True)


def test_engine_without_the_som_image(old_checkpoint: Path, tmp_path: Path, video: Path) -> None:
    """A student trained without the SoM image is served without it (no image placeholder, no image)."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(old_checkpoint, ckpt)
    write_input_spec(ckpt, InputSpec(num_frames=4, som_image=False, duration_sentence=False))
    torch.set_num_threads(1)
    engine = VQAEngine(EngineConfig(checkpoint=str(ckpt), max_new_tokens=2, decode_threads=1))
    [result] = engine.answer([_request(video)])
    assert isinstance(result, VQAResult) and result.num_frames == 4
    prepared = engine.prepare(_request(video))
    text = engine.tokenizer.decode(prepared.inputs.input_ids.tolist())  # type: ignore[union-attr]
    assert engine.tokenizer.image_token not in text


def test_frame_size_must_match_the_vision_tower(old_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(old_checkpoint, ckpt)
    write_input_spec(ckpt, InputSpec(frame_size=999))
    with pytest.raises(ValueError, match="frame_size=999"):
        VQAEngine(EngineConfig(checkpoint=str(ckpt)))


def test_expert_frame_check() -> None:
    check_expert_frames(16, "l4p", 16)
    with pytest.raises(ValueError, match=r"sampling.num_frames=8 but the expert 'l4p' takes 16"):
        check_expert_frames(8, "l4p", 16)


@pytest.mark.usefixtures("ray_cluster")
def test_precompute_refuses_a_frame_count_the_expert_does_not_take(tmp_path: Path) -> None:
    """The driver fails before it claims the output or decodes a video (the dataset does not even exist)."""
    from pipelines.precompute import PrecomputeJob, run

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "shards"
    job = load(PrecomputeJob, [root / "conf" / "precompute" / "tiny.yaml"],
               [f"input.dataset_root={tmp_path / 'nowhere'}", f"output.uri={out}", "sampling.num_frames=8"])  # fmt: skip
    with pytest.raises(ValueError, match=r"sampling.num_frames=8 but the expert 'l4p\w*' takes 16"):
        run(job)
    assert not out.exists()
