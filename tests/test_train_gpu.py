"""GPU paths of the distillation job: FSDP2 ``fully_shard`` + bf16 mixed precision + activation checkpointing + NCCL.

Marked ``gpu``: skipped on machines without CUDA (``tests/conftest.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipelines.distill import run
from rgpt4d_core.config import load
from rgpt4d_core.model.checkpoint import load_student
from rgpt4d_core.train.checkpoint import load_training_state
from rgpt4d_core.train.config import DistillJobConfig
from tests.distill_testkit import write_shards

TINY = Path(__file__).resolve().parents[1] / "conf" / "distill" / "tiny.yaml"


@pytest.mark.gpu
@pytest.mark.usefixtures("ray_cluster")
def test_fsdp2_bf16_activation_checkpointing_job(tmp_path: Path) -> None:
    import torch

    shards = write_shards(tmp_path / "shards", num_samples=4)
    workers = min(2, torch.cuda.device_count())
    cfg = load(
        DistillJobConfig,
        [TINY],
        [
            f"data.shards={shards}",
            f"run.storage_path={tmp_path / 'runs'}",
            "run.name=fsdp",
            "scaling.use_gpu=true",
            f"scaling.num_workers={workers}",
            "scaling.resources_per_worker={CPU: 0.5, GPU: 1}",
            "scaling.strategy=fsdp",
            "scaling.precision=bf16",
            "scaling.activation_checkpointing=true",
            "expert.device=cuda",
            "loop.micro_batch_size=1",
            f"loop.global_batch_size={2 * workers}",
            "loop.epochs=1",
        ],
    )
    result = run(cfg)
    assert result.metrics["step"] == result.plan.total_steps >= 1
    assert math.isfinite(result.metrics["loss/total"])  # neither NaN nor +-inf
    state = load_training_state(Path(str(result.checkpoint)))
    assert state.position.optimizer_step == result.plan.total_steps
    assert any(k.startswith("llm.") for k in state.model) and not any("_fsdp" in k for k in state.model)
    student = load_student(Path(str(result.export)))
    assert student.decoder is None
