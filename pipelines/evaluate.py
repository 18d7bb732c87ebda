"""Evaluate a student checkpoint on a benchmark in R4D-Bench's format with Ray Data batch inference.

    python -m pipelines.evaluate --config conf/eval/synthetic.yaml engine.checkpoint=<ckpt> benchmark.path=<dir>
    python -m pipelines.evaluate --config conf/eval/r4d_bench.yaml engine.checkpoint=<ckpt> benchmark.path=<R4D-Bench>
    ray job submit --working-dir . -- python pipelines/evaluate.py --config conf/eval/r4d_bench.yaml ...

Stages: the benchmark is read on the driver (``rgpt4d_core.eval.benchmark``: a downloaded R4D-Bench directory as
is, or the synthetic world's ``questions/test.jsonl``) -> rows -> ``map_batches`` with a callable class holding one
``VQAEngine`` per actor (pool size, batch size, CPUs/GPUs from config; frames, SoM image and duration sentence from
the checkpoint's input spec, ``engine.num_frames`` / ``engine.include_duration`` override it) -> the shared answer
extractor -> per-item predictions -> the 12-column table (+ the random-guess row from the options) -> report files
(predictions JSONL, Markdown/JSON tables, per-category bar chart PNG) -> MLflow: a new run in ``mlflow.experiment``,
or, with ``mlflow.run_id``, metrics and artifacts attached to an existing (training) run.

Items that cannot be answered (a video that fails to decode, an unreadable SoM image) are predictions with an
``error_code``: counted as wrong, listed per code in the report, never dropped from a denominator.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python pipelines/<job>.py`: put this repository first on sys.path
    import _paths  # noqa: F401  (pipelines/_paths.py, found beside the script)

import pyarrow as pa
from omegaconf import MISSING

from pipelines._cli import job_from_args, job_parser
from pipelines._console import progress_wanted
from pipelines._paths import absolute
from pipelines._progress import bar
from pipelines._ray import RayTarget
from pipelines._tracking import closing_run, start_job_run
from rgpt4d_core.eval.benchmark import REGIONS_FROM, Benchmark, item_from_row, item_to_row, load_benchmark
from rgpt4d_core.eval.blind import blind_table
from rgpt4d_core.eval.metrics import AccuracyTable, accuracy_table, markdown_table, random_guess_table
from rgpt4d_core.eval.predict import PREDICTION_SCHEMA, Prediction, error_prediction
from rgpt4d_core.eval.report import ReportFiles, error_note, summary_of, write_report
from rgpt4d_core.model.checkpoint import checkpoint_model_id
from rgpt4d_core.serve.engine import EngineConfig
from rgpt4d_core.tracking import MLflowTracker, NullTracker, Tracker, default_tracking_uri
from rgpt4d_core.train.job_sections import MLflowSection


@dataclass
class BenchmarkSection:
    """Attributes:
    path: benchmark directory or question file (local or ``s3://``), see ``rgpt4d_core.eval.benchmark``.
    split: split of a synthetic world (``questions/<split>.jsonl``); preferred file name part for R4D-Bench.
    video_root: base of relative media paths (``None``: the benchmark directory).
    limit: evaluate only the first N items (0 = all).
    regions_from: ``"auto"`` (draw the ``regions`` field when present, else the SoM image file) or ``"som_image"``.
    blind_from: split of the same benchmark whose answers fit the blind baseline row (``rgpt4d_core.eval.blind``:
        answer priors per question template, no video); ``None`` (``benchmark.blind_from=null``) = no blind row
        (R4D-Bench has no training split).
    """

    path: str = MISSING
    split: str = "test"
    video_root: str | None = None
    limit: int = 0
    regions_from: str = "auto"
    blind_from: str | None = None


@dataclass
class ComputeSection:
    """Ray Data resources. Attributes: ``num_actors`` (engine actor pool size), ``batch_size`` (items per
    batched generation), ``num_cpus_per_actor`` / ``num_gpus_per_actor`` (videos of a batch are decoded on
    ``engine.decode_threads`` threads inside each actor)."""

    num_actors: int = 1
    batch_size: int = 8
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0


@dataclass
class OutputSection:
    """Attributes: ``dir`` (report directory), ``name`` (the model row's name; ``""`` = the checkpoint's folder)."""

    dir: str = "out/eval"
    name: str = ""


@dataclass
class EvalMLflowSection(MLflowSection):
    """:class:`~rgpt4d_core.train.job_sections.MLflowSection` (``tracking_uri`` ``""`` = ``sqlite:///<parent of
    output.dir>/mlflow.db``; with ``run_id``, the training run's URI) and:
    run_id: attach metrics and artifacts to this existing run (e.g. the distillation run) instead of a new run.
    metric_prefix: metric names are ``<prefix>/<column>`` (``eval/Avg``, ``eval/random/Avg``, ``eval/errors``).
    """

    experiment: str = "rgpt4d-eval"
    run_id: str = ""
    metric_prefix: str = "eval"


@dataclass
class EvaluateJob:
    """The evaluation job. ``engine.checkpoint`` is the student checkpoint (NVILA layout) to evaluate."""

    benchmark: BenchmarkSection = field(default_factory=BenchmarkSection)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(torch_threads=1))
    compute: ComputeSection = field(default_factory=ComputeSection)
    output: OutputSection = field(default_factory=OutputSection)
    mlflow: EvalMLflowSection = field(default_factory=EvalMLflowSection)
    random_row: bool = True
    ray_address: str | None = None
    num_cpus: int | None = None

    def ray_target(self) -> RayTarget:
        return RayTarget(self.ray_address, self.num_cpus)

    def validate(self) -> None:
        if not self.engine.checkpoint:
            raise ValueError("engine.checkpoint: the checkpoint to evaluate is required")
        if self.benchmark.regions_from not in REGIONS_FROM:
            raise ValueError(f"benchmark.regions_from must be one of {REGIONS_FROM}")
        if self.compute.num_actors < 1 or self.compute.batch_size < 1:
            raise ValueError("compute.num_actors and compute.batch_size must be >= 1")


@dataclass(frozen=True)
class EvalResult:
    """What an evaluation produced: the model and random tables, per-item predictions, files and the MLflow run."""

    table: AccuracyTable
    random: AccuracyTable | None
    predictions: list[Prediction]
    files: ReportFiles
    mlflow_run_id: str | None
    wall_s: float
    blind: AccuracyTable | None = None

    @property
    def tables(self) -> list[AccuracyTable]:
        return [self.table] + [t for t in (self.random, self.blind) if t is not None]


class EngineActor:
    """Ray Data callable class: one loaded ``VQAEngine`` answering batches of benchmark rows."""

    def __init__(self, engine: EngineConfig, regions_from: str, decode_threads: int) -> None:
        from rgpt4d_core.eval.predict import BenchmarkPredictor
        from rgpt4d_core.serve.engine import VQAEngine

        self.predictor = BenchmarkPredictor(VQAEngine(engine), regions_from, decode_threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = [item_from_row(r) for r in batch.to_pylist()]
        rows = [p.to_row() for p in self.predictor.predict(items)]
        return pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)


def with_absolute_paths(job: EvaluateJob) -> EvaluateJob:
    """Local relative paths pinned to the driver's working directory (actors may run elsewhere)."""
    bench = dataclasses.replace(job.benchmark, path=absolute(job.benchmark.path),
                                video_root=absolute(job.benchmark.video_root) or None)
    engine = dataclasses.replace(job.engine, checkpoint=absolute(job.engine.checkpoint))
    output = dataclasses.replace(job.output, dir=absolute(job.output.dir))
    return dataclasses.replace(job, benchmark=bench, engine=engine, output=output)


def predict_all(job: EvaluateJob, bench: Benchmark) -> list[Prediction]:
    """Run the engine actor pool over every item; one prediction per item, in benchmark order."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    c = job.compute
    rows = [item_to_row(i) for i in bench.items]
    ds: Any = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), -(-len(rows) // c.batch_size))))
    ds = ds.map_batches(
        EngineActor,
        fn_constructor_kwargs={"engine": job.engine, "regions_from": job.benchmark.regions_from,
                               "decode_threads": job.engine.decode_threads},  # fmt: skip
        batch_size=c.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=c.num_actors),
        num_cpus=c.num_cpus_per_actor,
        num_gpus=c.num_gpus_per_actor,
    )
    by_id: dict[str, Prediction] = {}
    with bar(len(bench.items), f"evaluate {model_name(job)}", "question", enabled=progress_wanted()) as answered:
        for row in ds.iter_rows():
            by_id[row["id"]] = Prediction.from_row(row)
            answered.update(1)
    return [by_id.get(i.id) or error_prediction(i, "missing_output", "no prediction came back for this item")
            for i in bench.items]  # fmt: skip


def model_name(job: EvaluateJob) -> str:
    """The model's row name: ``output.name``, else the checkpoint's own id (see ``checkpoint_model_id``)."""
    return job.output.name or checkpoint_model_id(job.engine.checkpoint)


def artifact_dir(job: EvaluateJob) -> str:
    """MLflow artifact folder of this evaluation: ``<metric_prefix>/<model name, filesystem-safe>``."""
    return f"{job.mlflow.metric_prefix}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', model_name(job)).strip('_') or 'model'}"


def tracking_uri_of(job: EvaluateJob) -> str:
    """``mlflow.tracking_uri``, or a sqlite file beside the report directory (shared by sibling reports)."""
    return job.mlflow.tracking_uri or default_tracking_uri(Path(job.output.dir).parent)


def _tracker(job: EvaluateJob, bench: Benchmark) -> Tracker:
    m = job.mlflow
    if not m.enabled:
        return NullTracker()
    if m.run_id:
        return MLflowTracker.attach(tracking_uri_of(job), m.run_id)
    tags = {"benchmark.name": bench.name, "benchmark.layout": bench.layout, "checkpoint": job.engine.checkpoint}
    return start_job_run(job, True, tracking_uri_of(job), m.experiment, f"eval-{model_name(job)}",
                         f"eval:{job.output.dir}", tags, config_artifact="config/eval.yaml")  # fmt: skip


def _log(tracker: Tracker, job: EvaluateJob, model: AccuracyTable, baselines: dict[str, AccuracyTable],
         summary: dict[str, Any], files: ReportFiles) -> None:  # fmt: skip
    """Metrics ``<prefix>/<column>`` for the model and ``<prefix>/<baseline>/<column>`` (``random``, ``blind``)."""
    prefix = job.mlflow.metric_prefix
    metrics: dict[str, float] = {}
    for sub, t in [(prefix, model), *((f"{prefix}/{key}", t) for key, t in baselines.items())]:
        metrics.update({f"{sub}/{c}": v for c, v in t.accuracy.items() if v is not None})
    metrics[f"{prefix}/items"] = summary["items"]
    metrics[f"{prefix}/errors"] = summary["errors"]
    tracker.log_metrics(metrics, step=0)
    tracker.set_tags({f"{prefix}.benchmark": job.benchmark.path, f"{prefix}.checkpoint": job.engine.checkpoint})
    for path in (files.table_md, files.table_json, files.predictions, files.chart_png):
        tracker.log_artifact(path, artifact_path=artifact_dir(job))


def run(job: EvaluateJob) -> EvalResult:
    """Evaluate ``job.engine.checkpoint`` on ``job.benchmark`` (starts or attaches to Ray as configured)."""
    job = with_absolute_paths(job)
    job.validate()
    start = time.perf_counter()
    bench = load_benchmark(job.benchmark.path, job.benchmark.split, job.benchmark.video_root, job.benchmark.limit)
    if not bench.items:
        raise ValueError(f"benchmark {job.benchmark.path} has no items")
    job.ray_target().init()
    tracker = _tracker(job, bench)
    # an attached run belongs to its job: leave its status alone
    with closing_run(tracker, close=not job.mlflow.run_id) as status:
        predictions = predict_all(job, bench)
        name = model_name(job)
        table = accuracy_table((p.scored() for p in predictions), name)
        rnd = random_guess_table(p.scored() for p in predictions) if job.random_row else None
        blind = None
        if job.benchmark.blind_from:
            train = load_benchmark(job.benchmark.path, split=job.benchmark.blind_from, video_root=job.benchmark.video_root)
            blind = blind_table(train.items, bench.items)
        baselines = {key: t for key, t in (("random", rnd), ("blind", blind)) if t is not None}
        tables = [table, *baselines.values()]
        summary = summary_of(predictions)
        spec = job.engine.input_spec()  # what the engines ran with: the checkpoint's spec, overrides applied
        extra = {"benchmark": {"path": job.benchmark.path, "name": bench.name, "layout": bench.layout,
                               "split": job.benchmark.split, "files": list(bench.files)},
                 "checkpoint": job.engine.checkpoint, "num_frames": spec.num_frames,
                 "include_duration": spec.duration_sentence, "input_spec": spec.to_dict(),
                 "mlflow_run_id": tracker.run_id}  # fmt: skip
        files = write_report(Path(job.output.dir), predictions, tables, title=f"{name} on {bench.name}", extra=extra)
        _log(tracker, job, table, baselines, summary, files)
        status.value = "FINISHED"
    return EvalResult(table, rnd, predictions, files, tracker.run_id, time.perf_counter() - start, blind=blind)


def main(argv: list[str] | None = None) -> EvalResult | None:
    job = job_from_args(EvaluateJob, job_parser(__doc__, "conf/eval/*.yaml", "engine.checkpoint=out/ckpt").parse_args(argv))
    if job is None:
        return None
    result = run(job)
    summary = summary_of(result.predictions)
    print(markdown_table(result.tables), end="")
    print(error_note(summary))
    print(f"report: {result.files.directory}  (table.md, table.json, predictions.jsonl, {result.files.chart_png.name})")
    print("EVAL_RESULT " + json.dumps({"report": str(result.files.directory), "mlflow_run_id": result.mlflow_run_id,
                                      "accuracy": result.table.accuracy, "summary": summary,
                                      "wall_s": round(result.wall_s, 2)}, sort_keys=True))  # fmt: skip
    return result


if __name__ == "__main__":
    main()
