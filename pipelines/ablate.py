"""The P4D experiment: does perceptual 4D distillation help the student on the synthetic benchmark?

    .venv/bin/python -m pipelines.ablate                                  # conf/ablate/default.yaml
    .venv/bin/python -m pipelines.ablate --config conf/ablate/quick.yaml  # the main comparison in ~20 min
    .venv/bin/python -m pipelines.ablate --config conf/ablate/p4d.yaml    # the experiment world, 3 seeds
    .venv/bin/python -m pipelines.ablate seeds='[0]' deadline_minutes=25  # what fits in a time budget

Trains every recipe of ``variants`` with every seed of ``seeds`` at every training-set size of ``sizes`` on the
SAME shards with the SAME number of steps (``pipelines/_chain.py``: world, expert and shards are shared with
``make demo`` when ``out`` is the demo's directory, so they are reused, not rebuilt), evaluates each on the
``evaluate`` section's held-out split (metrics attached to each training run), and reports, for every
``compare`` pair (treatment, baseline) and size, the per-seed paired difference and its mean with a 95 %
t-interval (``rgpt4d_core/eval/paired.py``) for Avg, Sta, Dyn and each category; the learning curve over the
sizes (table and PNG); mean ± sample std per recipe; the per-run tables and final training losses. A variant with
``teacher: untrained`` distils from the expert's architecture at its initial weights (its own shards).
``select`` names variants among which the report picks the best mean Avg — only on the ``val`` split.

Resumable: a finished training or evaluation is reused (stage stamps), so re-running the same command continues
where it stopped. ``deadline_minutes`` stops starting new trainings once exceeded; the report then says exactly
what ran. The generated part of ``results_md`` (between the ``ablate:begin``/``ablate:end`` markers; text outside
them is kept) is rewritten after every training.

MLflow: one parent run per experiment (``name``; re-opened by a later run of the same experiment) holds the job's
config, the paired differences as metrics and the report, comparison CSV and learning-curve PNG as artifacts;
each training's run is nested under it (``mlflow.parentRunId``), the evaluation's metrics on that child.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

if __package__ in (None, ""):  # `python pipelines/<job>.py`: put this repository first on sys.path
    import _paths  # noqa: F401  (pipelines/_paths.py, found beside the script)

from pipelines import _ablate_report as R
from pipelines._ablate_report import ALL, BEGIN, END, LOSS_KEYS, Outcome  # noqa: F401  (the module's API)
from pipelines._chain import Chain, StageSection, Trained, VariantSection, conf_files, distill_settings
from pipelines._cli import job_from_args, job_parser
from pipelines._console import add_engine_logs_flag, chained_command_output, start_ray
from pipelines._paths import CONF
from pipelines._ray import RayTarget
from rgpt4d_core.config import load
from rgpt4d_core.eval.metrics import AccuracyTable, markdown_table
from rgpt4d_core.eval.tasks import SCORED_COLUMNS, TIME_TASKS
from rgpt4d_core.tracking import NullTracker, Tracker
from rgpt4d_core.train.config import DistillJobConfig

TEACHERS = ("trained", "untrained")


@dataclass
class AblateJob:
    """``conf/ablate/*.yaml``. Stage sections as in ``pipelines/demo.py``; ``variants`` (none by default: a YAML names
    them) x ``seeds`` x ``sizes`` trainings, the ``first`` variants (the main comparison) for all seeds before the others; ``only`` (non-empty)
    restricts the run to those variants (a YAML layered on another one adds to its ``variants``), ``only_sizes``
    (non-empty) to those size points (likewise for ``sizes``);
    ``sizes``: training-set size points, name → distill overrides (e.g. ``[data.max_samples=2000]``; empty = one
    point, ``all``, with no override); ``compare``: ``[treatment, baseline]`` pairs; ``select``: variants to pick
    the best of by mean Avg (needs ``benchmark.split=val``); ``name``: the experiment (its MLflow parent run);
    ``curve_png``: the learning-curve figure (``""`` = ``<results_md dir>/<name>-curve.png``); ``eval_tag``: suffix
    of the evaluation directories (another split than an earlier experiment's on the same trainings);
    ``deadline_minutes`` (0 = none) stops starting new trainings; ``report_only`` rewrites the report from
    finished runs without training; ``column``: the accuracy column of the learning curve, its figure and ``select``
    (``Avg``; ``TB`` for an experiment on the time probe)."""

    name: str = "p4d-ablation"
    out: str = "out/demo"
    num_cpus: int | None = 2
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    synth: StageSection = field(default_factory=lambda: StageSection(["conf/synth/demo.yaml"]))
    expert: StageSection = field(default_factory=lambda: StageSection(["conf/pretrain_expert/tiny.yaml"]))
    precompute: StageSection = field(default_factory=lambda: StageSection(["conf/precompute/demo.yaml"]))
    distill: StageSection = field(default_factory=lambda: StageSection(["conf/distill/tiny.yaml"]))
    variants: dict[str, VariantSection] = field(default_factory=dict)
    sizes: dict[str, list[str]] = field(default_factory=dict)
    evaluate: StageSection = field(default_factory=lambda: StageSection(["conf/eval/synthetic.yaml"]))
    first: list[str] = field(default_factory=list)
    only: list[str] = field(default_factory=list)
    only_sizes: list[str] = field(default_factory=list)
    compare: list[list[str]] = field(default_factory=list)
    select: list[str] = field(default_factory=list)
    results_md: str = "docs/results.md"
    curve_png: str = ""
    column: str = "Avg"
    eval_tag: str = ""
    deadline_minutes: float = 0.0
    report_only: bool = False

    def ray_target(self) -> RayTarget:
        return RayTarget(num_cpus=self.num_cpus)

    def size_names(self) -> list[str]:
        return [s for s in self.sizes if not self.only_sizes or s in self.only_sizes] or [ALL]

    def labels(self) -> dict[str, str]:
        return {k: v.label for k, v in self.variants.items()}

    def png_path(self) -> Path:
        return Path(self.curve_png) if self.curve_png else Path(self.results_md).parent / f"{self.name}-curve.png"


class Cell(NamedTuple):
    """One training of the plan."""

    size: str
    seed: int
    variant: str


def run_name(cell: Cell) -> str:
    """``abl-<variant>[-<size>]-s<seed>`` (no size part for the single default size: earlier runs stay reusable)."""
    return f"abl-{cell.variant}" + ("" if cell.size == ALL else f"-{cell.size}") + f"-s{cell.seed}"


def _cell_text(cell: Cell) -> str:
    return f"{cell.variant}/seed{cell.seed}" if cell.size == ALL else f"{cell.variant}/{cell.size}/seed{cell.seed}"


def _require_known(key: str, named: list[str], known: Mapping[str, object], what: str) -> None:
    """A ``ValueError`` naming the entries of ``named`` (the config key ``key``) that are not keys of ``known``."""
    unknown = sorted(set(named) - set(known))
    if unknown:
        raise ValueError(f"{key}: unknown {what}(s) {unknown}; known: {sorted(known)}")


def check(job: AblateJob) -> None:
    """Config errors before anything runs: unknown variants or teachers, a selection on a test split."""
    _require_known("only", job.only, job.variants, "variant")
    _require_known("only_sizes", job.only_sizes, job.sizes, "size")
    _require_known("compare/select", [v for pair in job.compare for v in pair] + job.select, job.variants, "variant")
    if any(len(pair) != 2 for pair in job.compare):
        raise ValueError(f"compare: each entry is [treatment, baseline], got {job.compare}")
    bad = {k: v.teacher for k, v in job.variants.items() if v.teacher not in TEACHERS}
    if bad:
        raise ValueError(f"variants: teacher must be one of {TEACHERS}, got {bad}")
    if job.column not in SCORED_COLUMNS:
        raise ValueError(f"column must be one of {', '.join(SCORED_COLUMNS)}, got {job.column!r}")
    if job.select and eval_split(job) != "val":
        raise ValueError(f"select picks by validation accuracy: set benchmark.split=val (got {eval_split(job)!r})")


def plan(job: AblateJob) -> list[Cell]:
    """The trainings in run order: the ``first`` variants for every seed (and every size within a seed), then the
    others likewise (so a deadline cuts the secondary comparisons and the last seeds, not a seed's main pair); only
    ``only`` when it is set."""
    check(job)
    chosen = [v for v in job.variants if not job.only or v in job.only]
    first = [v for v in job.first if v in chosen]
    rest = [v for v in chosen if v not in first]
    return [Cell(size, s, v) for group in (first, rest) for s in job.seeds for size in job.size_names() for v in group]


def eval_split(job: AblateJob) -> str:
    from pipelines import evaluate as E

    return load(E.EvaluateJob, conf_files(job.evaluate.config), [*job.evaluate.overrides, "engine.checkpoint=x"]).benchmark.split


def final_losses(chain: Chain, trained: Trained) -> dict[str, float]:
    """The last logged value of each loss term of a training run (MLflow)."""
    if not trained.run_id:
        return {}
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(chain.tracking_uri).get_run(trained.run_id).data.metrics
    return {k: round(float(metrics[k]), 4) for k in LOSS_KEYS if k in metrics}


def _distill_config(job: AblateJob, *overrides: str) -> DistillJobConfig:
    return distill_settings(job.distill, *overrides)


def size_questions(job: AblateJob, chain: Chain, size: str) -> int:
    """Training questions at ``size``: its ``data.max_samples`` capped by the world's training split (0 if unknown)."""
    import json

    stamp = chain.out / "synth" / ".chain_stamp.json"
    per_split = json.loads(stamp.read_text()).get("payload", {}).get("questions_per_split", {}) if stamp.is_file() else {}
    available = int(per_split.get("train", 0))
    cap = _distill_config(job, *job.sizes.get(size, [])).data.max_samples
    return min(cap, available) if cap > 0 and available else (cap or available)


class _Experiment:
    """The chain's shared stages and the MLflow parent run of one ``ablate`` invocation."""

    def __init__(self, job: AblateJob, chain: Chain) -> None:
        from pipelines._tracking import start_job_run

        self.job, self.chain = job, chain
        self.world = chain.synth(job.synth)
        self.expert = chain.expert(job.expert)
        self.shards = chain.precompute(job.precompute, self.world, self.expert)
        self.teachers: dict[str, tuple[Path, Path]] = {"trained": (self.expert, self.shards)}
        mlflow = _distill_config(job).mlflow
        self.parent: Tracker = NullTracker()
        if mlflow.enabled:
            self.parent = start_job_run(job, True, chain.tracking_uri, mlflow.experiment, f"ablate {job.name}",
                                        f"{chain.out}/ablate/{job.name}", {"rgpt4d.kind": "ablate"})  # fmt: skip

    def teacher(self, kind: str) -> tuple[Path, Path]:
        """(expert checkpoint, shards) of the ``trained`` or ``untrained`` teacher (built on first use)."""
        if kind not in self.teachers:
            expert = self.chain.untrained_expert(self.job.expert)
            self.teachers[kind] = (expert, self.chain.precompute(self.job.precompute, self.world, expert, "shards_untrained"))
        return self.teachers[kind]

    def train(self, cell: Cell) -> Outcome:
        from pipelines._tracking import nest_under

        job, chain = self.job, self.chain
        variant = job.variants[cell.variant]
        expert, shards = self.teacher(variant.teacher)
        parent = {"mlflow.parent_run_id": self.parent.run_id} if self.parent.run_id else {}
        trained = chain.distill(run_name(cell), job.distill, variant, shards, expert, seed=cell.seed,
                                extra=tuple(job.sizes.get(cell.size, [])), values=parent)  # fmt: skip
        nest_under(chain.tracking_uri, trained.run_id, self.parent.run_id)
        where = "" if cell.size == ALL else f", size {cell.size}"
        label = f"{variant.label} (seed {cell.seed}{where})"
        table, *rest = chain.evaluate(job.evaluate, self.world, trained, label, job.eval_tag)
        return Outcome(cell.variant, cell.seed, trained, table, final_losses(chain, trained), rest[0] if rest else None,
                       cell.size)  # fmt: skip


def run(job: AblateJob, command: str) -> tuple[list[Outcome], Path]:
    """Train and evaluate every planned cell that fits the deadline; write the report; return the outcomes."""
    from pipelines._tracking import closing_run

    start = time.perf_counter()
    cells = plan(job)
    start_ray(job.ray_target())
    chain = Chain(job.out)
    experiment = _Experiment(job, chain)
    outcomes: list[Outcome] = []
    skipped: list[str] = []
    with closing_run(experiment.parent) as status:
        for cell in cells:
            late = job.deadline_minutes and time.perf_counter() - start > 60 * job.deadline_minutes
            if late or (job.report_only and not chain.finished(run_name(cell))):
                skipped.append(_cell_text(cell))
                continue
            outcomes.append(experiment.train(cell))
            write_report(job, chain, outcomes, skipped, command, time.perf_counter() - start, experiment.parent)
        path = write_report(job, chain, outcomes, skipped, command, time.perf_counter() - start, experiment.parent)
        status.value = "FINISHED"
    return outcomes, path


def summary_tables(job: AblateJob, outcomes: list[Outcome]) -> tuple[list[AccuracyTable], dict[str, dict[str, float]]]:
    """Mean tables (one per variant and size with at least one run) and their per-column std."""
    return R.summary_tables(job.labels(), job.size_names(), outcomes)


def render(job: AblateJob, chain: Chain, outcomes: list[Outcome], skipped: list[str], command: str,
           wall_s: float, png: Path | None = None, questions: dict[str, int] | None = None) -> str:  # fmt: skip
    """The generated report block (between :data:`BEGIN` and :data:`END`); ``questions``: training questions per
    size (:func:`size_questions`, computed when not given)."""
    questions = questions or {size: size_questions(job, chain, size) for size in job.size_names()}
    tables, std = summary_tables(job, outcomes)
    found = R.comparisons(job.compare, job.size_names(), outcomes)
    labels, split = job.labels(), eval_split(job)
    scored = sum(outcomes[0].table.counts.get(c, 0) for c in ("Avg", *TIME_TASKS)) if outcomes else 0
    ran = ", ".join(_cell_text(Cell(o.size, o.seed, o.variant)) for o in outcomes) or "nothing"
    sizes = {s: job.sizes[s] for s in job.size_names() if s in job.sizes}  # the points this run covers
    parts = [BEGIN, f"## P4D experiment `{job.name}` on the synthetic benchmark (generated by `pipelines/ablate.py`)",
             "", f"Command: `{command}`", "", *R.setup_lines(chain, job.distill, job.variants, outcomes),
             f"- sizes: {sizes or 'all training questions'}; evaluation: {split} split ({scored} questions)",
             f"- ran ({len(outcomes)} trainings, {wall_s / 60:.1f} min wall): {ran}",
             f"- not run (deadline or report-only): {', '.join(skipped) if skipped else 'none'}",
             f"- MLflow: `.venv/bin/mlflow ui --backend-store-uri sqlite:///{R.relative(chain.tracking_uri.removeprefix('sqlite:///'))}`"
             f" (parent run `ablate {job.name}`, one child run per training)", ""]  # fmt: skip
    if found:
        parts += [f"### Paired differences (accuracy points, {split} split; 95 % t-interval over seeds)", ""]
        parts += [R.comparison_markdown(c, labels) for c in found]
        curve = R.curve_markdown(found, questions.__getitem__, R.mean_avg(outcomes, job.column), labels, job.column)
        parts += [f"### Learning curve ({job.column})", "", curve]
        if png is not None:
            parts += [f"![learning curve]({os.path.relpath(png, Path(job.results_md).resolve().parent)})", ""]
    for size in job.size_names() if job.select else []:
        best = R.selected(job.select, size, outcomes, job.column)
        if best:
            v = job.variants[best[0]]
            parts += [f"**Selected by {split} {job.column} at size `{size}`: {v.label}** (`{best[0]}`, {best[1]:.1f}): "
                      f"{v.config} + {v.overrides}", ""]  # fmt: skip
    parts += [f"### Mean ± sample std over seeds (accuracy %, {split} split, {scored} questions)", "",
              markdown_table(tables, std) if tables else "(no runs)\n", "### Per run", "",
              markdown_table([o.table for o in outcomes]) if outcomes else "(no runs)\n",
              "### Final training losses (last logged step)", "", R.losses_markdown(outcomes), END]  # fmt: skip
    return "\n".join(parts) + "\n"


def write_report(job: AblateJob, chain: Chain, outcomes: list[Outcome], skipped: list[str], command: str,
                 wall_s: float, parent: Tracker | None = None) -> Path:  # fmt: skip
    """Replace the generated block of ``results_md`` (keeping the rest of the file), draw the learning curve, and
    attach report, comparison CSV, figure and the paired means to the MLflow ``parent`` run; returns the path."""
    from pipelines._ablate_plot import plot_learning_curve

    found = R.comparisons(job.compare, job.size_names(), outcomes)
    questions = {size: size_questions(job, chain, size) for size in job.size_names()}
    png = plot_learning_curve(job.png_path(), found, outcomes, questions.__getitem__, job.labels(), job.column)
    block = render(job, chain, outcomes, skipped, command, wall_s, png, questions)
    path = R.replace_block(Path(job.results_md), block)
    if parent is not None and parent.run_id:
        parent.log_text(block, "report/ablate.md")
        parent.log_text(R.comparison_csv(found), "report/comparison.csv")
        if png is not None:
            parent.log_artifact(png.resolve(), "report")
        metrics = {f"diff/{c.treatment}-{c.baseline}/{c.size}/{col}": s.mean for c in found for col, s in c.columns.items()}
        parent.log_metrics(metrics, step=len(outcomes))
    return path


def main(argv: list[str] | None = None) -> list[Outcome]:
    parser = job_parser(__doc__, "conf/ablate/*.yaml, default conf/ablate/default.yaml", "seeds='[0]' deadline_minutes=20")
    add_engine_logs_flag(parser)
    args = parser.parse_args(argv)
    job = job_from_args(AblateJob, args, default_config=[CONF / "ablate" / "default.yaml"])
    if job is None:
        return []
    command = ".venv/bin/python -m pipelines.ablate " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    with chained_command_output(job.out, args.engine_logs):
        outcomes, path = run(job, command.strip())
    tables, std = summary_tables(job, outcomes)
    print(markdown_table(tables, std), end="")
    print(f"report: {path}")
    return outcomes


if __name__ == "__main__":
    main()
