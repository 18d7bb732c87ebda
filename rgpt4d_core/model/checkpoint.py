"""Student checkpoints in NVILA's directory layout (safetensors only; never unpickles).

::

    <root>/config.json            top config: llm_cfg / vision_tower_cfg / mm_projector_cfg (as NVILA writes them),
                                  mm_vision_select_layer, mm_hidden_size, hidden_size, and "rgpt4d": the full
                                  StudentConfig (absent in NVILA-Lite-8B checkpoints → defaults, TPE off unless
                                  ``use_time_pe`` is set), and "rgpt4d_model_id": the name servers report
    <root>/llm/                   Qwen2 config.json + model*.safetensors (+ tokenizer files when given)
    <root>/vision_tower/          SigLIP config.json + model.safetensors
    <root>/mm_projector/          config.json (mm_projector_type) + model.safetensors (keys layers.N.*)
    <root>/region_encoder/        the tiny recipe's region modules, when configured: model.safetensors (keys ``box.*``
                                  region-box embedding, ``track.*`` region-track encoder)
    <root>/perception_decoder/    training only: config.json (decoder config, expert spec) + model.safetensors

Inference loads never touch ``perception_decoder/`` (``with_decoder=False``), and ``save_student(...,
include_decoder=False)`` writes a stripped checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from rgpt4d_core.config import from_yaml
from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.model.llm import LLMConfig, load_llm
from rgpt4d_core.model.perception_decoder import PerceptionDecoder
from rgpt4d_core.model.presets import nvila_lite_8b
from rgpt4d_core.model.projector import ProjectorConfig, build_projector
from rgpt4d_core.model.student import Student, StudentConfig
from rgpt4d_core.model.tpe import TPEConfig
from rgpt4d_core.model.vision import VisionConfig, load_vision_tower

LLM_DIR, VISION_DIR, PROJECTOR_DIR, DECODER_DIR = "llm", "vision_tower", "mm_projector", "perception_decoder"
REGION_DIR = "region_encoder"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


def _config_dict(cfg: StudentConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file missing: {path}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards listed in ``model.safetensors.index.json``."""
    single = directory / WEIGHTS
    if single.is_file():
        return load_file(str(single))
    index = directory / WEIGHTS_INDEX
    if not index.is_file():
        raise FileNotFoundError(f"no {WEIGHTS} or {WEIGHTS_INDEX} in {directory}")
    shards = sorted(set(_read_json(index)["weight_map"].values()))
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(load_file(str(directory / shard)))
    return tensors


def _load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    try:
        result = module.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{where}: weights do not match the module: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{where}: weights do not match the module: missing {sorted(result.missing_keys)}, "
            f"unexpected {sorted(result.unexpected_keys)}"
        )


MODEL_ID_KEY = "rgpt4d_model_id"
GENERIC_DIR_NAMES = frozenset({"export", "final", "model", "checkpoint"})


def save_student(
    student: Student,
    path: str | Path,
    *,
    tokenizer: Any | None = None,
    include_decoder: bool = True,
    model_id: str = "",
) -> Path:
    """Write ``student`` in the NVILA layout under ``path`` (created).

    Args:
        tokenizer: anything with ``save(directory)`` (``rgpt4d_core.text.tokenizer.TextTokenizer``), written
            into ``llm/``.
        include_decoder: also write ``perception_decoder/`` (training checkpoints; inference exports leave it out).
        model_id: the name servers and reports give this model (``config.json`` key ``rgpt4d_model_id``);
            ``""`` records none and :func:`checkpoint_model_id` falls back to the directory's name.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    student.llm.save_pretrained(str(root / LLM_DIR), safe_serialization=True)
    student.vision.model.save_pretrained(str(root / VISION_DIR), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save(root / LLM_DIR)
    proj_dir = root / PROJECTOR_DIR
    proj_dir.mkdir(exist_ok=True)
    proj_cfg = {
        "architectures": ["MultimodalProjector"],
        "model_type": "v2l_projector",
        "mm_projector_type": student.projector.kind,
    }
    _write_json(proj_dir / "config.json", proj_cfg)
    state = {k: v.detach().contiguous() for k, v in student.projector.state_dict().items()}
    save_file(state, str(proj_dir / WEIGHTS), metadata={"format": "pt"})
    cfg = student.cfg
    top = {
        "architectures": ["LlavaLlamaModel"],
        "model_type": "llava_llama",
        "llm_cfg": student.llm.config.to_dict(),
        "vision_tower_cfg": student.vision.model.config.to_dict(),
        "mm_projector_cfg": proj_cfg,
        "mm_vision_select_layer": cfg.vision.select_layer,
        "mm_vision_select_feature": "cls_patch",
        "mm_hidden_size": cfg.vision.hidden_size,
        "hidden_size": int(student.llm.config.hidden_size),
        "use_time_pe": cfg.tpe.placement != "off",
        "rgpt4d": _config_dict(cfg),
    }
    if model_id:
        top[MODEL_ID_KEY] = model_id
    _write_json(root / "config.json", top)
    region = _region_modules(student)
    if region:
        (root / REGION_DIR).mkdir(exist_ok=True)
        region_state = {
            f"{prefix}.{k}": v.detach().contiguous()
            for prefix, module in region.items()
            for k, v in module.state_dict().items()
        }
        save_file(region_state, str(root / REGION_DIR / WEIGHTS), metadata={"format": "pt"})
    if include_decoder and student.decoder is not None:
        dec_dir = root / DECODER_DIR
        dec_dir.mkdir(exist_ok=True)
        spec = student.expert_spec
        assert spec is not None
        _write_json(
            dec_dir / "config.json",
            {"expert_spec": spec.to_dict(), "llm_hidden": int(student.llm.config.hidden_size)},
        )
        dec_state = {k: v.detach().contiguous() for k, v in student.decoder.state_dict().items()}
        save_file(dec_state, str(dec_dir / WEIGHTS), metadata={"format": "pt"})
    return root


def _region_modules(student: Student) -> dict[str, torch.nn.Module]:
    """The student's region modules by checkpoint key prefix (none in the paper preset)."""
    modules: dict[str, torch.nn.Module | None] = {
        "box": student.region_box_embedding,
        "track": student.region_track_encoder,
    }
    return {prefix: m for prefix, m in modules.items() if m is not None}


def _load_region_modules(student: Student, directory: Path) -> None:
    region = _region_modules(student)
    if not region:
        return
    tensors = read_weights(directory)
    dtype = next(student.llm.parameters()).dtype
    for prefix, module in region.items():
        part = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        _load_state(module, part, directory)
        module.to(dtype)


def checkpoint_model_id(path: str | Path) -> str:
    """The name a checkpoint goes by: the ``rgpt4d_model_id`` it was saved with, else its directory's name.

    A generic directory name (``export``, ``final``, ``model``, ``checkpoint``) is replaced by its parent's, so
    ``runs/p4d-tiny/final/export`` without a recorded id is ``p4d-tiny``.
    """
    root = Path(path).resolve()
    config = root / "config.json"
    if config.is_file():
        recorded = _read_json(config).get(MODEL_ID_KEY)
        if isinstance(recorded, str) and recorded:
            return recorded
    while root.name in GENERIC_DIR_NAMES and root.parent != root:
        root = root.parent
    return root.name


def _student_config(
    top: dict[str, Any], vision: VisionConfig, llm: LLMConfig, projector_kind: str
) -> StudentConfig:
    if "rgpt4d" in top:
        saved = top["rgpt4d"]
        tracks = saved.get("region_tracks")
        if isinstance(tracks, dict) and "query_span" not in tracks:  # saved before the span existed: first only
            saved = {**saved, "region_tracks": {**tracks, "query_span": "first"}}
        base = from_yaml(StudentConfig, json.dumps(saved))
    else:  # a checkpoint written by NVILA / 4D-RGPT: real-preset defaults, TPE only if the flag says so
        base = nvila_lite_8b()
        placement = "pre_projector" if top.get("use_time_pe", False) else "off"
        base = dataclasses.replace(base, tpe=TPEConfig(placement=placement))
    return dataclasses.replace(base, vision=vision, llm=llm, projector=ProjectorConfig(projector_kind))


def load_student(
    path: str | Path,
    *,
    with_decoder: bool = False,
    dtype: torch.dtype | None = None,
    attn_implementation: str = "sdpa",
) -> Student:
    """Load a student saved by :func:`save_student` or an NVILA-Lite / 4D-RGPT checkpoint directory.

    Args:
        path: checkpoint root (``config.json``, ``llm/``, ``vision_tower/``, ``mm_projector/``).
        with_decoder: also load ``perception_decoder/`` (resuming training); inference leaves it out.
        dtype: cast all parameters to this dtype (default: as stored).
        attn_implementation: transformers attention backend for the LLM.

    Raises:
        FileNotFoundError: a part of the layout is missing (the message names the path).
        ValueError: weights do not match the configured shapes.
    """
    root = Path(path)
    top = _read_json(root / "config.json")
    saved = top.get("rgpt4d", {})
    vis_saved = saved.get("vision", {})
    select = int(top.get("mm_vision_select_layer", vis_saved.get("select_layer", -2)))
    vision = load_vision_tower(
        root / VISION_DIR, select_layer=select, frozen=bool(vis_saved.get("frozen", True))
    )
    llm = load_llm(root / LLM_DIR, attn_implementation=attn_implementation)
    proj_cfg = _read_json(root / PROJECTOR_DIR / "config.json")
    kind = str(
        proj_cfg.get("mm_projector_type", top.get("mm_projector_cfg", {}).get("mm_projector_type", ""))
    )
    projector = build_projector(ProjectorConfig(kind), vision.cfg.hidden_size, int(llm.config.hidden_size))
    _load_state(projector, read_weights(root / PROJECTOR_DIR), root / PROJECTOR_DIR)
    cfg = _student_config(top, vision.cfg, LLMConfig.from_hf(llm.config, attn_implementation), kind)
    spec = None
    dec_tensors: dict[str, torch.Tensor] = {}
    if with_decoder:
        dec_dir = root / DECODER_DIR
        spec = ExpertSpec.from_dict(_read_json(dec_dir / "config.json")["expert_spec"])
        dec_tensors = read_weights(dec_dir)
    student = Student(cfg, spec, vision=vision, projector=projector.to(llm.dtype), llm=llm)
    _load_region_modules(student, root / REGION_DIR)
    if with_decoder:
        if not isinstance(student.decoder, PerceptionDecoder):
            raise ValueError(
                f"{root}: decoder.enabled is false in the saved config; cannot load {DECODER_DIR}/"
            )
        _load_state(student.decoder, dec_tensors, root / DECODER_DIR)
    if dtype is not None:
        student = student.to(dtype)
    return student
