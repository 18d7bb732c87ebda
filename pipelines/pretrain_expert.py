"""Pretrain the ``l4p_tiny`` expert on the synthetic world's ground truth with Ray Train V2.

    python pipelines/pretrain_expert.py --config conf/pretrain_expert/tiny.yaml [key=value ...]
    ray job submit --working-dir . -- python pipelines/pretrain_expert.py --config ... run.storage_path=s3://...

Driver (this process):

1. makes sure the training world exists (``data.root``; generated with ``pipelines/make_synthetic.py``'s
   Ray Data job when its ``dataset.json`` is missing), and splits its scenes: ``train`` scenes train, ``val`` +
   ``test`` scenes are held out;
2. builds the examples with Ray Data (one task per video: decode, ground truth via the oracle, several 16-frame
   windows per training video, the uniform whole-video clip for held-out videos);
3. opens the job's single MLflow run, then ``TorchTrainer.fit()`` runs :func:`train_worker` on
   ``scaling.num_workers`` workers (DDP/gloo; ``{"CPU": 0.5}`` each on a 2-core machine), checkpointing every
   ``loop.checkpoint_every_steps`` (resume: same ``run.name`` + ``run.storage_path``);
4. evaluates the final weights on the held-out clips (AbsRel, flow EPE, mask IoU, ray L1) beside an untrained
   model of the same preset and the ``classical`` expert's flow EPE on the same clips, logs them to MLflow,
   and writes the checkpoint the frozen expert loads (``output``, safetensors) plus ``<output>.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python pipelines/<job>.py`: put this repository first on sys.path
    import _paths  # noqa: F401  (pipelines/_paths.py, found beside the script)

from pipelines._cli import job_from_args, job_parser
from pipelines._console import TRAINING_JOB_LOG, add_engine_logs_flag, training_job_output
from rgpt4d_core import storage
from rgpt4d_core.config import to_yaml
from rgpt4d_core.experts.pretrain_config import PretrainExpertJob

# ---------------------------------------------------------------------------------------------------- data


def scene_splits(root: str) -> dict[str, list[str]]:
    """``{"train": [...], "heldout": [...]}`` video URIs of the world at ``root`` by their scenes' split (``val``
    and ``test`` scenes are held out), in scene-file order."""
    splits: dict[str, list[str]] = {"train": [], "heldout": []}
    for uri in sorted(storage.listdir(storage.join(root, "scenes"))):
        if uri.endswith(".json"):
            rec = json.loads(storage.read_bytes(uri))
            video = storage.join(root, "videos", f"{rec['scene_id']}.mp4")
            splits["train" if rec["split"] == "train" else "heldout"].append(video)
    return splits


def ensure_world(cfg: PretrainExpertJob) -> dict[str, list[str]]:
    """Generate the world if needed; ``{"train": [...], "heldout": [...]}`` video URIs by the scenes' split."""
    root = cfg.data.root
    if not storage.exists(storage.join(root, "dataset.json")):
        if not cfg.data.generate:
            raise FileNotFoundError(f"data.root={root!r} has no dataset.json and data.generate is false")
        from pipelines.make_synthetic import MakeSyntheticJob, generate

        print(f"generating the expert's training world ({cfg.data.synth.num_scenes} scenes) under {root}", flush=True)
        summary = generate(MakeSyntheticJob(synth=cfg.data.synth, out=root, workers=cfg.data.workers), progress=False)
        if summary["card"] is None:
            raise RuntimeError(f"generating the expert's world failed for {summary['failed']} scene(s) under {root}")
    splits = scene_splits(root)
    if cfg.data.max_videos > 0:
        splits["train"] = splits["train"][: cfg.data.max_videos]
    if not splits["train"] or not splits["heldout"]:
        raise ValueError(f"{root}: need train and held-out scenes, found {[(k, len(v)) for k, v in splits.items()]}")
    return splits


def _examples_fn(preset: str, windows: int, seed: int) -> Any:
    def fn(row: dict[str, Any]) -> list[dict[str, Any]]:
        from rgpt4d_core.experts.l4p import get_preset
        from rgpt4d_core.experts.l4p_training import build_examples

        return build_examples(row["video"], get_preset(preset), windows, seed)

    return fn


def examples_dataset(videos: list[str], cfg: PretrainExpertJob, windows: int) -> Any:
    """Ray Dataset of examples (one Ray task per video), materialised in the videos' order: Ray Data would keep the
    blocks in the order its tasks finished, which made two runs of the job train on differently ordered examples."""
    import ray.data

    from pipelines._train_ingest import ordered_datasets

    with ordered_datasets():
        items = ray.data.from_items([{"video": v} for v in videos], override_num_blocks=max(1, len(videos)))
        ds = items.flat_map(_examples_fn(cfg.preset, windows, cfg.loop.seed), num_cpus=0.5,
                            compute=ray.data.TaskPoolStrategy(size=max(1, cfg.data.workers)))  # fmt: skip
        return ds.materialize()


# ---------------------------------------------------------------------------------------------------- driver


def run(cfg: PretrainExpertJob) -> dict[str, Any]:
    """Run (or resume) the job; returns the summary printed by :func:`main`."""
    from pipelines._console import progress_wanted, start_ray
    from pipelines._paths import absolute
    from pipelines._pretrain_expert_worker import train_worker
    from pipelines._progress import mlflow_step_reader, polled
    from pipelines._ray import RayTarget
    from pipelines._tracking import closing_run, start_job_run
    from pipelines._train_ingest import ordered_ingest
    from rgpt4d_core.experts.l4p import build_model, save_checkpoint
    from rgpt4d_core.experts.l4p_training import classical_flow_epe, evaluate, zero_flow_epe
    from rgpt4d_core.tracking import default_tracking_uri
    from rgpt4d_core.train.checkpoint import load_model_state

    started = time.perf_counter()
    target = RayTarget.of_run(cfg.run)
    start_ray(target, runtime_env=target.runtime_env())
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    splits = ensure_world(cfg)
    train_ds = examples_dataset(splits["train"], cfg, cfg.data.windows_per_video)
    heldout = examples_dataset(splits["heldout"], cfg, 1).take_all()
    storage_path = absolute(cfg.run.storage_path)
    run_dir = storage.join(storage_path, cfg.run.name)
    tracking_uri = cfg.mlflow.tracking_uri or default_tracking_uri(run_dir)
    tracker = start_job_run(cfg, cfg.mlflow.enabled, tracking_uri, cfg.mlflow.experiment, cfg.run.name, run_dir,
                            {"expert.preset": cfg.preset, "data.root": cfg.data.root})  # fmt: skip
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config_yaml": to_yaml(cfg), "tracking_uri": tracking_uri, "run_id": tracker.run_id or ""},
        scaling_config=ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=False,
                                     resources_per_worker=dict(cfg.scaling.resources_per_worker),
                                     placement_strategy=cfg.scaling.placement_strategy),  # fmt: skip
        torch_config=TorchConfig(backend="gloo"),
        datasets={"train": train_ds},
        dataset_config=ordered_ingest(),  # every worker reads it all and keeps its rows: runs repeat
        run_config=RunConfig(name=cfg.run.name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=cfg.run.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),  # fmt: skip
    )
    with closing_run(tracker) as status:
        with polled(cfg.loop.steps, f"pretrain {cfg.run.name}", "step", enabled=progress_wanted() and bool(tracker.run_id),
                    poll=mlflow_step_reader(tracking_uri, str(tracker.run_id), "train/lr")):  # fmt: skip
            result = trainer.fit()
        if result.error is not None:
            raise result.error
        assert result.checkpoint is not None, "training reported no checkpoint"
        output = absolute(cfg.output)
        trained = build_model(cfg.preset)
        with result.checkpoint.as_directory() as d:
            trained.load_state_dict(load_model_state(d))
        save_checkpoint(trained, output, cfg.preset)  # the file the frozen expert loads
        moving_px = cfg.loss.moving_px
        metrics: dict[str, float] = {f"heldout/{k}": v for k, v in evaluate(trained, heldout, moving_px=moving_px).items()}
        untrained = build_model(cfg.preset, seed=cfg.loop.seed)
        metrics |= {f"untrained/{k}": v for k, v in evaluate(untrained, heldout, moving_px=moving_px).items()}
        metrics |= {"classical/flow_epe": classical_flow_epe(heldout), "zero_motion/flow_epe": zero_flow_epe(heldout),
                    "classical/flow_epe_moving": classical_flow_epe(heldout, moving_px),
                    "zero_motion/flow_epe_moving": zero_flow_epe(heldout, moving_px)}  # fmt: skip
        from rgpt4d_core.experts.l4p import file_revision

        summary = {"output": output, "revision": file_revision(output), "steps": cfg.loop.steps,
                   "train_examples": train_ds.count(), "heldout_clips": len(heldout), "mlflow_run_id": tracker.run_id,
                   "wall_s": round(time.perf_counter() - started, 1), "metrics": metrics}  # fmt: skip
        Path(output + ".json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        tracker.log_metrics(metrics, step=cfg.loop.steps)
        tracker.log_artifact(output, "expert")
        tracker.log_artifact(output + ".json", "expert")
        status.value = "FINISHED"
        return summary


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__, "conf/pretrain_expert/*.yaml", "loop.steps=50")
    add_engine_logs_flag(parser, TRAINING_JOB_LOG)
    args = parser.parse_args(argv)
    cfg = job_from_args(PretrainExpertJob, args)
    if cfg is None:
        return 0
    with training_job_output(cfg.run.storage_path, args.engine_logs):
        summary = run(cfg)
    print("PRETRAIN_RESULT " + json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
