"""Training-state checkpoints: model + optimiser + scheduler + data position + RNG, with no pickle anywhere.

Directory layout (one directory per checkpoint; a Ray Train ``Checkpoint`` wraps it as-is)::

    model.safetensors     model state dict (names → tensors)
    state.safetensors     every other tensor (AdamW moments, RNG states), keyed by its path in ``state.json``
    state.json            format tag, data position, scheduler, optimiser/RNG structure with tensor references

Non-tensor structure is JSON; tensors are safetensors; tuples, numpy arrays and dicts with non-string keys
(optimiser ``state`` is keyed by parameter index) are encoded with small ``{"__tuple__": ...}`` /
``{"__ndarray__": key}`` / ``{"__dict__": [[k, v], ...]}`` markers, so a checkpoint from an untrusted location
can be read without executing code.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FORMAT = "rgpt4d.train_state/1"
MODEL_FILE = "model.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_JSON_FILE = "state.json"


class CheckpointError(ValueError):
    """A training checkpoint is missing, incomplete or of an unknown format (message names the file/key)."""


@dataclass(frozen=True)
class DataPosition:
    """Where training stands in the data stream (the same on every rank).

    Attributes:
        epoch: epoch in progress (0-based).
        batches_in_epoch: micro-batches of ``epoch`` already consumed by each worker (skipped on resume).
        optimizer_step: optimiser steps completed since the start of the job.
        samples_seen: global samples consumed since the start of the job (all workers).
    """

    epoch: int = 0
    batches_in_epoch: int = 0
    optimizer_step: int = 0
    samples_seen: int = 0


@dataclass
class TrainingState:
    """Everything needed to continue a run exactly where a checkpoint left it.

    Attributes:
        model: state dict of the (unwrapped) model; tensors on CPU.
        optimizer: ``optimizer.state_dict()`` (tensors on CPU).
        scheduler: ``scheduler.state_dict()`` (plain numbers).
        position: data position at the time of the checkpoint.
        rng: :func:`capture_rng_state` output.
        extra: free JSON-able metadata (resolved config text, world size, ...).
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    position: DataPosition
    rng: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


# -- RNG ---------------------------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if present) CUDA RNG states of this process."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states are restored only when CUDA is present)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


# -- tree <-> (JSON, tensors) ------------------------------------------------------------------------------------


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": path}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        return {"__dict__": [[_encode(k, f"{path}.k{i}", tensors), _encode(v, f"{path}.{k}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at '{path}' in a training checkpoint")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj or "__ndarray__" in obj:
        key = str(obj.get("__tensor__", obj.get("__ndarray__")))
        if key not in tensors:
            raise CheckpointError(f"{STATE_TENSORS_FILE} lacks tensor '{key}'")
        return tensors[key] if "__tensor__" in obj else tensors[key].numpy()
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _unshared(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU contiguous copies safe for safetensors (tied weights share storage, which ``save_file`` rejects)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"model state '{name}' is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[name] = t
    return out


# -- save / load -------------------------------------------------------------------------------------------------


def save_training_state(directory: str | Path, state: TrainingState) -> Path:
    """Write ``state`` into ``directory`` (created if needed); returns the directory.

    ``state.json`` is written last, so a directory without it is an incomplete checkpoint.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file(_unshared(state.model), str(out / MODEL_FILE), metadata={"format": FORMAT})
    tensors: dict[str, torch.Tensor] = {}
    tree = {
        "optimizer": _encode(state.optimizer, "optimizer", tensors),
        "scheduler": _encode(state.scheduler, "scheduler", tensors),
        "rng": _encode(state.rng, "rng", tensors),
    }
    save_file(tensors, str(out / STATE_TENSORS_FILE), metadata={"format": FORMAT})
    doc = {"format": FORMAT, "position": asdict(state.position), "extra": state.extra, **tree}
    tmp = out / (STATE_JSON_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / STATE_JSON_FILE)
    return out


def load_model_state(directory: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a training checkpoint alone (names → CPU tensors), without the optimiser state.

    Raises:
        CheckpointError: if the directory is not a complete checkpoint.
    """
    _check_complete(Path(directory))
    return load_file(str(Path(directory) / MODEL_FILE))


def has_training_state(directory: str | Path) -> bool:
    """True if ``directory`` holds a complete training checkpoint."""
    d = Path(directory)
    return all((d / f).is_file() for f in (STATE_JSON_FILE, MODEL_FILE, STATE_TENSORS_FILE))


def _check_complete(d: Path) -> None:
    for f in (STATE_JSON_FILE, MODEL_FILE, STATE_TENSORS_FILE):
        if not (d / f).is_file():
            raise CheckpointError(f"training checkpoint {d} is incomplete: {f} is missing")


def load_training_state(directory: str | Path) -> TrainingState:
    """Read a checkpoint written by :func:`save_training_state` (tensors on CPU).

    Raises:
        CheckpointError: if a file is missing or the format tag is unknown.
    """
    d = Path(directory)
    _check_complete(d)
    doc = json.loads((d / STATE_JSON_FILE).read_text())
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{d / STATE_JSON_FILE}: unknown format {doc.get('format')!r}, expected {FORMAT!r}")
    tensors = load_file(str(d / STATE_TENSORS_FILE))
    try:
        position = DataPosition(**doc["position"])
    except TypeError as exc:
        raise CheckpointError(f"{d / STATE_JSON_FILE}: bad 'position': {exc}") from exc
    return TrainingState(
        model=load_file(str(d / MODEL_FILE)),
        optimizer=_decode(doc["optimizer"], tensors),
        scheduler=_decode(doc["scheduler"], tensors),
        position=position,
        rng=_decode(doc["rng"], tensors),
        extra=doc.get("extra", {}),
    )


# -- (un)wrapped models: plain, DDP, FSDP2 ----------------------------------------------------------------------


def _state_dict_options(loading: bool = False) -> Any:
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    distributed = dist.is_available() and dist.is_initialized()
    if loading:
        return StateDictOptions(full_state_dict=distributed, strict=True)
    return StateDictOptions(full_state_dict=distributed, cpu_offload=distributed)


def gather_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full, unsharded state dict of a plain, DDP or FSDP2 model, names without wrapper prefixes.

    Under ``torch.distributed`` this is a collective (call it on every rank); tensors end up on rank 0's CPU
    (other ranks get an empty dict).
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_state_dict_options())
    return {k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}


def gather_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Optimiser state keyed by parameter *name* (portable across wrappers and world sizes); collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_state_dict_options())


def restore_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a :func:`gather_model_state` dict into a plain, DDP or FSDP2 model (every rank passes the full dict)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, dict(state), options=_state_dict_options(loading=True))


def restore_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a :func:`gather_optimizer_state` dict (every rank passes the full dict)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_state_dict_options(loading=True))


# -- one call each way for a training process --------------------------------------------------------------------


def capture_training_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    position: DataPosition,
    extra: dict[str, Any] | None = None,
) -> TrainingState:
    """The state to checkpoint at ``position`` of a plain, DDP or FSDP2 ``model`` (a collective under
    ``torch.distributed``: call it on every rank; only rank 0's ``model`` and ``optimizer`` are filled)."""
    return TrainingState(
        model=gather_model_state(model),
        optimizer=gather_optimizer_state(model, optimizer),
        scheduler=scheduler.state_dict(),
        position=position,
        rng=capture_rng_state(),
        extra=dict(extra or {}),
    )


def resume_training_state(
    directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> TrainingState:
    """Load the checkpoint in ``directory`` into the model, optimiser, scheduler and this process's RNGs; returns it
    (its ``position`` is where training continues)."""
    state = load_training_state(directory)
    restore_model_state(model, state.model)
    restore_optimizer_state(model, optimizer, state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    restore_rng_state(state.rng)
    return state
