"""``make demo``: the whole product on the embedded default, in one command, on a 2-core CPU machine.

    .venv/bin/python -m pipelines.demo                 # conf/demo/default.yaml, outputs under out/demo
    .venv/bin/python -m pipelines.demo --smoke         # conf/demo/smoke.yaml: a very small run (tests, CI)
    .venv/bin/python -m pipelines.demo --engine-logs   # Ray's and the libraries' output here, not <out>/logs/engine.log
    .venv/bin/python -m pipelines.demo --serve         # then keep serving the P4D student and its web page (Ctrl-C)
    .venv/bin/python -m pipelines.demo --config conf/demo/default.yaml distill.overrides='[loop.epochs=3]'

One local Ray, then the real jobs one after another:

1. generate the synthetic 4D world (``pipelines/make_synthetic.py``, Ray Data);
2. pretrain the tiny L4P expert on its own synthetic world (``pipelines/pretrain_expert.py``, Ray Train);
3. precompute the expert's targets for the training split into Parquet shards (``pipelines/precompute.py``);
4. distill the student twice with the same data, steps and seed: P4D (L_SFT + L_LD + L_ED) and the SFT-only
   baseline (``pipelines/distill.py``, Ray Train), each one MLflow run with its exported checkpoint;
5. evaluate both on the world's test split (``pipelines/evaluate.py``, Ray Data), metrics and reports attached to
   each training run;
6. start Ray Serve on the P4D checkpoint and answer one region-level question over HTTP (``pipelines/serve.py``);
7. print the comparison table, where the MLflow runs, reports and PNGs are, and the ``mlflow ui`` command;
8. with ``--serve`` (``make demo ARGS=--serve``): serve the P4D student on ``server.port`` of the serve config
   (8000) until Ctrl-C, with the web page at ``http://127.0.0.1:8000/ui/`` and the world's test questions as
   one-click examples.

A re-run reuses every finished stage whose configuration and inputs are unchanged (``pipelines/_chain.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python pipelines/<job>.py`: put this repository first on sys.path
    import _paths  # noqa: F401  (pipelines/_paths.py, found beside the script)

from pipelines._chain import Chain, StageSection, Trained, VariantSection
from pipelines._cli import job_from_args, job_parser
from pipelines._console import add_engine_logs_flag, chained_command_output, ray_logs_dir, start_ray
from pipelines._paths import CONF
from pipelines._ray import RayTarget
from rgpt4d_core.eval.metrics import AccuracyTable, markdown_table
from rgpt4d_core.eval.report import CHART_PNG, TABLE_MD, bar_chart

DEFAULT_CONFIG = CONF / "demo" / "default.yaml"
SMOKE_CONFIG = CONF / "demo" / "smoke.yaml"


def _variants() -> dict[str, VariantSection]:
    return {
        "sft_only": VariantSection("SFT-only", ["conf/distill/ablation_sft_only.yaml"]),
        "p4d": VariantSection("P4D (LD+ED)", ["conf/distill/ablation_ld_ed.yaml"]),
    }


@dataclass
class DemoJob:
    """The demo's config (``conf/demo/*.yaml``): one section per stage, each naming that job's own YAML files.

    Attributes:
        out: output root (everything, including ``mlflow.db``, goes below it).
        num_cpus: logical CPUs of the local Ray.
        seed: training seed shared by the compared recipes.
        variants: the recipes trained and compared (same data, steps and seed); ``serve_variant`` is served.
        serve_question: start Serve and answer one question over HTTP (the last stage).
    """

    out: str = "out/demo"
    num_cpus: int | None = 2
    seed: int = 0
    synth: StageSection = field(default_factory=lambda: StageSection(["conf/synth/demo.yaml"]))
    expert: StageSection = field(default_factory=lambda: StageSection(["conf/pretrain_expert/tiny.yaml"]))
    precompute: StageSection = field(default_factory=lambda: StageSection(["conf/precompute/demo.yaml"]))
    distill: StageSection = field(default_factory=lambda: StageSection(["conf/distill/tiny.yaml"]))
    variants: dict[str, VariantSection] = field(default_factory=_variants)
    evaluate: StageSection = field(default_factory=lambda: StageSection(["conf/eval/synthetic.yaml"]))
    serve: StageSection = field(default_factory=lambda: StageSection(["conf/serve/tiny.yaml"]))
    serve_variant: str = "p4d"
    serve_question: bool = True

    def ray_target(self) -> RayTarget:
        return RayTarget(num_cpus=self.num_cpus)


@dataclass
class DemoResult:
    """What the demo produced (for tests and the printed summary)."""

    out: Path
    tables: list[AccuracyTable]
    trained: dict[str, Trained]
    served: dict[str, Any]
    chain: Chain
    wall_s: float
    files: dict[str, Path] = field(default_factory=dict)
    world: Path | None = None


def run(job: DemoJob, log: Any = print) -> DemoResult:
    """Run the whole chain (see the module docstring); Ray is started here unless already running."""
    start = time.perf_counter()
    start_ray(job.ray_target())
    chain = Chain(job.out, log=log)
    world = chain.synth(job.synth)
    expert = chain.expert(job.expert)
    shards = chain.precompute(job.precompute, world, expert)
    trained = {name: chain.distill(f"demo-{name}", job.distill, v, shards, expert, seed=job.seed)
               for name, v in job.variants.items()}  # fmt: skip
    tables: list[AccuracyTable] = []
    baselines: list[AccuracyTable] = []  # random and blind rows: the same for every variant (same questions)
    files: dict[str, Path] = {}
    for name, v in job.variants.items():
        model, *rest = chain.evaluate(job.evaluate, world, trained[name], v.label)
        tables.append(model)
        baselines = baselines or rest
        files[f"report {v.label}"] = chain.out / "eval" / trained[name].name / TABLE_MD
        files[f"chart {v.label}"] = chain.out / "eval" / trained[name].name / CHART_PNG
    tables.extend(baselines)
    comparison = bar_chart(tables, chain.out / "comparison.png", title="synthetic test split: " +
                           " vs ".join(v.label for v in job.variants.values()))  # fmt: skip
    (chain.out / "comparison.md").write_text(markdown_table(tables))
    files["comparison chart"] = comparison
    files["comparison table"] = chain.out / "comparison.md"
    served = chain.serve_one_question(job.serve, world, trained[job.serve_variant]) if job.serve_question else {}
    return DemoResult(chain.out, tables, trained, served, chain, time.perf_counter() - start, files, world)


def keep_serving(job: DemoJob, result: DemoResult) -> None:
    """Serve the ``serve_variant`` student and its web page until Ctrl-C / SIGTERM, then stop Serve."""
    from ray import serve

    from pipelines import serve as S
    from pipelines._ray import install_stop_signals, wait_for

    assert result.world is not None
    trained = result.trained[job.serve_variant]
    url, _ = S.start(result.chain.serve_job(job.serve, result.world, trained))
    stopping = install_stop_signals()
    print(f"\nServing {trained.export}\n  page: {url}/ui/\n  API:  POST {url}/v1/vqa   (Ctrl-C stops)", flush=True)
    try:
        wait_for(stopping)
        print("shutting down", flush=True)
    finally:
        serve.shutdown()


def print_summary(job: DemoJob, result: DemoResult, log_file: Path | None = None) -> None:
    chain, served = result.chain, result.served
    n = result.tables[0].counts.get("Avg", 0) if result.tables else 0
    labels = [v.label for v in job.variants.values()]
    steps = {t.steps for t in result.trained.values()}
    print(f"\n=== rgpt4d demo: {' vs '.join(labels)} on the synthetic test split ({n} questions, "
          f"same data, {'/'.join(map(str, sorted(steps)))} steps, seed {job.seed}) ===")  # fmt: skip
    print(markdown_table(result.tables), end="")
    by_name = {t.name: t for t in result.tables}
    if {"SFT-only", "P4D (LD+ED)"} <= by_name.keys():
        delta = {c: (by_name["P4D (LD+ED)"].accuracy[c] or 0) - (by_name["SFT-only"].accuracy[c] or 0)
                 for c in ("Avg", "Sta", "Dyn")}  # fmt: skip
        print("P4D - SFT-only: " + ", ".join(f"{c} {v:+.1f}" for c, v in delta.items()))
    if served:
        item, answer = served["item"], served["answer"]
        print(f"\nServe: POST {served['url']} ({served['latency_ms']:.0f} ms)")
        print(f"  question: {item.question}")
        print(f"  options:  {list(item.options)}  (correct: {item.answer!r})")
        print(f"  answer:   {answer.get('answer')!r} (letter {answer.get('answer_letter')}, extractor "
              f"{answer.get('method')}, raw {answer.get('raw_output')!r})")  # fmt: skip
    print("\nMLflow runs (sqlite store " + chain.tracking_uri + "):")
    for stage, run_id in chain.runs.items():
        print(f"  {stage:<24} {run_id}")
    print("Reports and charts:")
    for what, path in result.files.items():
        print(f"  {what:<24} {path}")
    print(f"Browse the runs: .venv/bin/mlflow ui --backend-store-uri {chain.tracking_uri}")
    if log_file is not None:
        print(f"Engine output: {log_file}; Ray's worker logs: {ray_logs_dir()}")
    times = ", ".join(f"{k} {v:.0f}s" + ("*" if chain.reused.get(k) else "") for k, v in chain.timings.items())
    print(f"Stage times: {times}  (* reused from an earlier run)")
    print(f"demo done in {result.wall_s:.1f} s")


def main(argv: list[str] | None = None) -> DemoResult | None:
    parser = job_parser(__doc__, "conf/demo/*.yaml, default conf/demo/default.yaml", "seed=1",
                        out_help="output root (overrides 'out')")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="a very small run (conf/demo/smoke.yaml, out/demo_smoke)")
    add_engine_logs_flag(parser)
    parser.add_argument("--serve", action="store_true",
                        help="after the chain, keep serving the student and its web page (/ui/) until Ctrl-C")
    args = parser.parse_args(argv)
    job = job_from_args(DemoJob, args, default_config=[SMOKE_CONFIG if args.smoke else DEFAULT_CONFIG])
    if job is None:
        return None
    with chained_command_output(job.out, args.engine_logs) as log_file:
        result = run(job)
        print_summary(job, result, log_file)
        if args.serve:
            keep_serving(job, result)
    return result


if __name__ == "__main__":
    main()
