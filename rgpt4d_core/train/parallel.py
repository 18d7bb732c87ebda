"""How a training process wraps the student for several workers, framework-free (torch.distributed only): DDP
(CPU/gloo or GPU) or FSDP2, bf16 autocast, and the cross-worker reduction of a step's statistics.

Used by the Ray Train worker of ``pipelines/distill.py``; a process group must exist when ``world > 1``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from rgpt4d_core.model.student import Student
from rgpt4d_core.train.config import ScalingSection
from rgpt4d_core.train.step import StepStats


def wrap_student(student: Student, scaling: ScalingSection, device: torch.device, world: int) -> nn.Module:
    """DDP (CPU/gloo or GPU) or FSDP2 ``fully_shard`` per LLM decoder layer + root, bf16 params when asked; the
    student itself when one worker trains without FSDP."""
    if scaling.activation_checkpointing:
        student.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if scaling.resolved_strategy() == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = None
        if scaling.resolved_precision() == "bf16":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in student.llm.model.layers:
            fully_shard(layer, mp_policy=mp) if mp else fully_shard(layer)
        fully_shard(student, mp_policy=mp) if mp else fully_shard(student)
        return student
    if world == 1:
        return student
    return nn.parallel.DistributedDataParallel(
        student,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=scaling.find_unused_parameters,
    )


def autocast(scaling: ScalingSection, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when the resolved precision is ``bf16``, else a no-op context."""
    if scaling.resolved_precision() == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def all_reduce_stats(stats: StepStats, device: torch.device, world: int) -> dict[str, float]:
    """Loss terms averaged over workers; samples and tokens summed (the same key order on every rank)."""
    keys = sorted(stats.losses)
    values = torch.tensor(
        [stats.losses[k] for k in keys] + [stats.samples, stats.tokens], dtype=torch.float64
    )
    if world > 1:
        values = values.to(device)
        dist.all_reduce(values)
        values = values.cpu()
        values[: len(keys)] /= world
    out = {f"loss/{k}": float(v) for k, v in zip(keys, values[: len(keys)].tolist(), strict=True)}
    out["samples"] = float(values[len(keys)])
    out["tokens"] = float(values[len(keys) + 1])
    return out
