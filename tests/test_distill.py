"""The distillation job on real local Ray: 2 CPU workers over real shard files, MLflow on sqlite, faults, resume.

All runs use ``conf/distill/tiny.yaml`` (tiny student, l4p_tiny heads) made smaller: 8 samples, 2 workers x
micro-batch 1 x 2 accumulation steps = global batch 4 → 2 optimiser steps per epoch, 2 epochs = 4 steps, a
checkpoint after every step; on the session-scoped Ray cluster of ``tests/conftest.py``. A killed two-worker
group's resume is checked bit for bit here; the two-worker group restart after a lost node is in
``tests/test_multinode.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.distill import run, tracking_uri_of, with_absolute_paths
from rgpt4d_core import storage
from rgpt4d_core.config import load
from rgpt4d_core.shards.manifest import ShardManifestError
from rgpt4d_core.train.checkpoint import load_training_state
from rgpt4d_core.train.config import DistillJobConfig
from tests.distill_testkit import distill_result, write_shards

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "conf" / "distill" / "tiny.yaml"
STEPS = 4  # 8 rows / global batch 4 = 2 steps per epoch, 2 epochs
#: fault-tolerance runs: one epoch of 2 steps without the dense heads (L_LD only) and with the tower frozen — they
#: test resume, not losses
RESUME = ("loop.epochs=1", "ablation.variant=ld_only", "student.train_vision=false")
SMALL = ("loop.micro_batch_size=1", "loop.global_batch_size=4", "loop.epochs=2", "loop.checkpoint_every_steps=1")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_shards(tmp_path_factory.mktemp("shards"), num_samples=8))


def _cfg(shards: str, storage: Path, name: str, *overrides: str) -> DistillJobConfig:
    return load(
        DistillJobConfig,
        [TINY],
        [f"data.shards={shards}", f"run.storage_path={storage}", f"run.name={name}", *SMALL, *overrides],
    )


def _mlflow(cfg: DistillJobConfig):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri_of(with_absolute_paths(cfg)))
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    assert experiment is not None
    return client, client.search_runs([experiment.experiment_id])


def _history(client, run_id: str, key: str) -> list[float]:  # type: ignore[no-untyped-def]
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def _steps(client, run_id: str, key: str = "loss/total") -> list[int]:  # type: ignore[no-untyped-def]
    return sorted({m.step for m in client.get_metric_history(run_id, key)})


@pytest.mark.usefixtures("ray_cluster")
def test_two_worker_run_learns_and_tracks_one_mlflow_run(shards: str, tmp_path: Path) -> None:
    cfg = _cfg(shards, tmp_path, "clean")
    result = run(cfg)

    assert result.plan.total_steps == STEPS and result.metrics["step"] == STEPS
    client, runs = _mlflow(cfg)
    assert len(runs) == 1, "exactly one MLflow run per job (driver creates it, rank 0 re-attaches)"
    mlrun = runs[0]
    assert mlrun.info.run_id == result.mlflow_run_id and mlrun.info.status == "FINISHED"
    keys = set(mlrun.data.metrics)
    expected = {"loss/total", "loss/sft", "loss/ld", "lr", "grad_norm", "throughput/samples_per_s", "throughput/tokens_per_s",
                "data/wait_fraction", "data/join_fraction", "data/steady_wait_fraction"}
    assert expected <= keys, expected - keys
    assert any(k.startswith("loss/ed") for k in keys), f"no explicit-distillation terms in {sorted(keys)}"
    assert _steps(client, mlrun.info.run_id) == list(range(1, STEPS + 1))
    for term in ("loss/sft", "loss/ld"):
        curve = _history(client, mlrun.info.run_id, term)
        assert curve[-1] < curve[0], f"{term} did not fall: {curve}"
    lrs = _history(client, mlrun.info.run_id, "lr")
    assert max(lrs) <= 1e-3 + 1e-12 and lrs[-1] < max(lrs)  # cosine decay after warm-up

    tags, params = mlrun.data.tags, mlrun.data.params
    assert len(tags["git_sha"].split("-")[0]) == 40
    assert len(tags["shards.manifest_fingerprint"]) == 64 and tags["expert.revision"] == "untrained"
    assert tags["version.torch"].startswith("2.") and tags["version.ray"] == "2.60.0"
    assert params["optim.lr"] == "0.001" and params["scaling.num_workers"] == "2"
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"config", "model"} <= artifacts
    versions = client.search_model_versions(f"name='{cfg.mlflow.registered_model_name}'")
    assert [v.run_id for v in versions] == [mlrun.info.run_id] and result.model_version == "1"

    from rgpt4d_core.model.checkpoint import checkpoint_model_id, load_student

    export = Path(str(result.export))
    assert (export / "config.json").is_file() and not (export / "perception_decoder").exists()
    student = load_student(export)
    assert student.decoder is None and student.cfg.tpe.placement != "off"
    assert checkpoint_model_id(export) == f"{cfg.run.name}-step{STEPS}"  # the id a server reports for it
    state = load_training_state(Path(str(result.checkpoint)))
    assert state.position.optimizer_step == STEPS and state.position.epoch == 2


@pytest.mark.usefixtures("ray_cluster")
def test_standardised_targets_reach_the_workers_and_the_run_nests_under_its_parent(shards: str, tmp_path: Path) -> None:
    from rgpt4d_core.losses import TargetNorm
    from rgpt4d_core.tracking import PARENT_RUN_TAG, MLflowTracker

    probe = _cfg(shards, tmp_path, "standardised")
    parent = MLflowTracker.start(tracking_uri_of(with_absolute_paths(probe)), probe.mlflow.experiment, "experiment", "exp")
    # the workers' loss raises without the driver's statistics (tests/test_loss_normalise.py), so finishing is the test
    cfg = _cfg(shards, tmp_path, "standardised", *RESUME, "losses.preset=normalized", f"mlflow.parent_run_id={parent.run_id}")
    result = run(cfg)
    client, runs = _mlflow(cfg)
    child = next(r for r in runs if r.info.run_id == result.mlflow_run_id)
    assert child.info.status == "FINISHED" and child.data.tags[PARENT_RUN_TAG] == parent.run_id
    norm_file = Path(client.download_artifacts(child.info.run_id, "losses/target_norm.json", str(tmp_path)))
    assert set(TargetNorm.from_json(norm_file.read_text()).stats) >= {"latents", "depth"}
    assert 0.01 < child.data.metrics["loss/ld"] < 100  # standardised: O(1), like loss/sft


@pytest.mark.usefixtures("ray_cluster")
def test_resubmitted_job_resumes_the_same_run(shards: str, tmp_path: Path) -> None:
    failing = _cfg(shards, tmp_path, "resub", *RESUME, "debug.fail_at_step=2", "run.max_failures=0")
    with pytest.raises(Exception, match="injected failure"):
        run(failing)
    client, runs = _mlflow(failing)
    assert len(runs) == 1 and runs[0].info.status == "FAILED"

    result = run(_cfg(shards, tmp_path, "resub", *RESUME))  # the same name and storage: a re-submission

    assert result.metrics["step"] == 2
    client, runs = _mlflow(failing)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert _history(client, runs[0].info.run_id, "attempt/start_step") == [0.0, 1.0]
    assert _steps(client, runs[0].info.run_id) == [1, 2]


@pytest.mark.usefixtures("ray_cluster")
def test_shards_and_checkpoints_on_s3(shards: str, s3_bucket: str, tmp_path: Path) -> None:
    """`python pipelines/distill.py` attached to the running session cluster (as under `ray job submit`), reading
    shards from and writing checkpoints to a real S3-protocol server (moto on 127.0.0.1). The cluster's workers
    were started without the S3 settings: they reach them only through ``run.forward_env``."""
    import ray

    for f in sorted(Path(shards).rglob("*")):
        if f.is_file():
            storage.write_bytes(f"{s3_bucket}/shards/{f.relative_to(shards).as_posix()}", f.read_bytes())
    forward = "[AWS_ENDPOINT_URL,AWS_ENDPOINT_URL_S3,AWS_DEFAULT_REGION,AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY]"
    args = [f"data.shards={s3_bucket}/shards", f"run.storage_path={s3_bucket}/runs", "run.name=on-s3", *SMALL, *RESUME,
            f"run.forward_env={forward}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    done = subprocess.run([sys.executable, str(ROOT / "pipelines" / "distill.py"), "--config", str(TINY), *args],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    result = distill_result(out)
    assert result is not None, out[-4000:]
    assert result["steps"] == 2
    assert (tmp_path / "logs" / "engine.log").is_file(), "a remote storage path keeps the engine log in ./logs"
    bucket = s3_bucket.removeprefix("s3://")
    assert result["checkpoint"].startswith(f"{bucket}/runs/on-s3/")
    assert storage.exists(f"s3://{result['export']}/config.json")
    cfg = load(DistillJobConfig, [TINY], args)
    client, runs = _mlflow(cfg)
    assert [r.info.run_id for r in runs] == [result["mlflow_run_id"]] and runs[0].info.status == "FINISHED"


@pytest.mark.usefixtures("ray_cluster")
def test_two_worker_runs_repeat_bit_for_bit_across_a_resume_with_distill_only_rows(shards: str, tmp_path: Path) -> None:
    """Two DDP workers over a shuffled stream of 4 labelled questions (global batch 2: 2 steps per epoch, 2 epochs),
    with one distillation-only row per micro-batch drawn from all 8 clips (each step takes 2 of them, so a resume
    that replayed step 1's would change the losses). Trained once cleanly and once killed after step 2 and resumed
    mid-epoch from the step-1 checkpoint: the same losses at every step and the same weights. Against the same run
    without the extra rows, step 1's SFT loss is unchanged and its LD loss is not: the rows reach the distillation,
    not the SFT."""
    from safetensors.torch import load_file

    base = ("data.max_samples=4", "loop.global_batch_size=2", "data.shuffle_buffer=4")
    extra = ("data.distill_only_per_micro_batch=1",)
    runs = {"plain": (*base, "loop.max_steps=1"), "extra": (*base, *extra),
            "killed": (*base, *extra, "debug.fail_at_step=2", "run.max_failures=1")}  # fmt: skip
    curves, results, tags = {}, {}, {}
    for name, overrides in runs.items():
        cfg = _cfg(shards, tmp_path / name, name, *overrides)
        results[name] = run(cfg)
        client, mlruns = _mlflow(cfg)
        run_id = mlruns[0].info.run_id
        curves[name] = {key: {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)}
                        for key in ("loss/total", "loss/sft", "loss/ld")}  # fmt: skip  # the last value logged per step
        tags[name] = mlruns[0].data.tags
    assert _history(client, run_id, "attempt/start_step") == [0.0, 1.0]  # "killed" did resume
    assert sorted(curves["extra"]["loss/total"]) == list(range(1, STEPS + 1))
    assert curves["extra"]["loss/sft"][STEPS] < curves["extra"]["loss/sft"][1]  # it trained
    assert curves["killed"] == curves["extra"]
    extra_w, killed_w = (load_file(str(Path(str(results[n].export)) / "llm" / "model.safetensors")) for n in ("extra", "killed"))
    assert extra_w.keys() == killed_w.keys() and all(torch.equal(extra_w[k], killed_w[k]) for k in extra_w)

    assert tags["extra"]["data.distill_only_clips"] == "8" and "data.distill_only_clips" not in tags["plain"]
    assert curves["extra"]["loss/sft"][1] == pytest.approx(curves["plain"]["loss/sft"][1], rel=1e-5)
    assert curves["extra"]["loss/ld"][1] != pytest.approx(curves["plain"]["loss/ld"][1], rel=1e-3)


@pytest.mark.usefixtures("ray_cluster")
def test_training_order_depends_on_the_shard_sets_content_not_on_its_files(tmp_path: Path) -> None:
    """The same questions grouped into part files differently (as two precompute runs over the same videos do)
    give the job the same stream of rows."""
    from pipelines.distill import _dataset, training_questions, usable_questions
    from rgpt4d_core.shards import schema as S
    from rgpt4d_core.shards.reader import open_shards

    streams, stored = [], []
    for name, reverse in (("a", False), ("b", True)):
        shards = open_shards(str(write_shards(tmp_path / name, num_samples=6, files=3, reverse_clips=reverse)))
        stored.append(shards.read_table(S.QUESTIONS, columns=[S.SAMPLE_ID]).column(S.SAMPLE_ID).to_pylist())
        cfg = _cfg(str(tmp_path / name), tmp_path, "order")
        rows = _dataset(training_questions(cfg, usable_questions(cfg, shards))).take_all()
        streams.append([r[S.SAMPLE_ID] for r in rows])
    assert sorted(stored[0]) == sorted(stored[1]) and stored[0] != stored[1]  # same content, other files and order
    assert streams[0] == streams[1] and len(streams[0]) == 6


def test_mismatching_shards_fail_on_the_driver(shards: str, tmp_path: Path) -> None:
    with pytest.raises(ShardManifestError, match="expert latent_dim|expert hook_layers|expert revision"):
        run(_cfg(shards, tmp_path, "bad", "expert.preset=l4p_vitg"))
    with pytest.raises(ShardManifestError, match="expert name"):
        run(_cfg(shards, tmp_path, "bad", "expert.name=oracle", "ablation.variant=sft_only"))
    with pytest.raises(ShardManifestError, match="no _manifest.json|incomplete"):
        run(_cfg(str(tmp_path / "nothing"), tmp_path, "bad"))
    with pytest.raises(ValueError, match="global_batch_size"):
        run(_cfg(shards, tmp_path, "bad", "loop.global_batch_size=5"))


def test_cli_prints_the_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.distill import main

    assert main(["--config", str(TINY), "--config", str(ROOT / "conf/distill/ablation_sft_only.yaml"),
                 "--print-config", "data.shards=/s", "run.storage_path=/r", "optim.lr=0.5"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "variant: sft_only" in out and "lr: 0.5" in out and "shards: /s" in out


def test_paper_recipe_preset() -> None:
    cfg = load(DistillJobConfig, [ROOT / "conf/distill/nvila_lite_8b_a100.yaml"], [])
    cfg.validate()
    assert (cfg.optim.lr, cfg.optim.warmup_ratio, cfg.loop.global_batch_size, cfg.loop.epochs) == (1e-5, 0.03, 1024, 5)
    assert cfg.scaling.num_workers == 64 and cfg.scaling.resolved_strategy() == "fsdp" and cfg.accumulation_steps() == 4
    assert cfg.student.preset == "nvila_lite_8b" and not cfg.student.train_vision and cfg.student.train_llm
