"""The P4D experiment: does perceptual 4D distillation help the student on the synthetic benchmark?

    .venv/bin/python -m pipelines.ablate                                  # conf/ablate/default.yaml
    .venv/bin/python -m pipelines.ablate seeds='[0]' deadline_minutes=25  # what fits in a time budget

Trains every recipe of ``variants`` with every seed of ``seeds`` on the SAME shards with the SAME number of steps
(``pipelines/_chain.py``: world, expert and shards are shared with ``make demo`` when ``out`` is the demo's
directory, so they are reused, not rebuilt), evaluates each on the world's test split (metrics attached to each
training run), and reports mean ± sample std over seeds per column (``mean_std_tables``). The generated part of
``results_md`` (between the ``ablate:begin``/``ablate:end`` markers; text outside them is kept) holds the exact
command, the setup, what was run, the mean ± std table, the per-seed tables and the final training losses.

``deadline_minutes`` stops starting new trainings once exceeded; the report then says exactly what ran.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python pipelines/<job>.py`: put this repository first on sys.path
    import _paths  # noqa: F401  (pipelines/_paths.py, found beside the script)

from pipelines._chain import Chain, StageSection, Trained, VariantSection
from pipelines._cli import job_from_args, job_parser
from pipelines._paths import CONF
from pipelines._ray import RayTarget
from rgpt4d_core.config import load
from rgpt4d_core.eval.metrics import AccuracyTable, markdown_table, mean_std_tables

BEGIN, END = "<!-- ablate:begin -->", "<!-- ablate:end -->"
LOSS_KEYS = ("loss/sft", "loss/ld", "loss/ed/depth", "loss/ed/flow_2d_backward", "loss/ed/dyn_mask", "loss/total")


def _variants() -> dict[str, VariantSection]:
    sft, p4d, no_tpe = "conf/distill/ablation_sft_only.yaml", "conf/distill/ablation_ld_ed.yaml", "conf/distill/ablation_no_tpe.yaml"
    return {
        "sft": VariantSection("SFT-only", [sft]),
        "p4d_tpe": VariantSection("P4D (LD+ED) + TPE", [p4d]),
        "p4d_no_tpe": VariantSection("P4D (LD+ED) without TPE", [p4d, no_tpe]),
        "sft_no_tpe": VariantSection("SFT-only without TPE", [sft, no_tpe]),
    }


@dataclass
class AblateJob:
    """``conf/ablate/*.yaml``. Stage sections as in ``pipelines/demo.py``; ``variants`` x ``seeds`` trainings, the
    ``first`` variants (the main comparison) for all seeds before the others; ``only`` (non-empty) restricts the
    run to those variants (a YAML layered on another one adds to its ``variants``); ``deadline_minutes`` (0 = none)
    stops starting new trainings; ``report_only`` rewrites the report from finished runs without training."""

    out: str = "out/demo"
    num_cpus: int | None = 2
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    synth: StageSection = field(default_factory=lambda: StageSection(["conf/synth/demo.yaml"]))
    expert: StageSection = field(default_factory=lambda: StageSection(["conf/pretrain_expert/tiny.yaml"]))
    precompute: StageSection = field(default_factory=lambda: StageSection(["conf/precompute/demo.yaml"]))
    distill: StageSection = field(default_factory=lambda: StageSection(["conf/distill/tiny.yaml"]))
    variants: dict[str, VariantSection] = field(default_factory=_variants)
    evaluate: StageSection = field(default_factory=lambda: StageSection(["conf/eval/synthetic.yaml"]))
    first: list[str] = field(default_factory=lambda: ["sft", "p4d_tpe"])
    only: list[str] = field(default_factory=list)
    results_md: str = "docs/results.md"
    deadline_minutes: float = 0.0
    report_only: bool = False

    def ray_target(self) -> RayTarget:
        return RayTarget(num_cpus=self.num_cpus)


@dataclass
class Outcome:
    variant: str
    seed: int
    trained: Trained
    table: AccuracyTable
    losses: dict[str, float]
    random: AccuracyTable | None = None


def final_losses(chain: Chain, trained: Trained) -> dict[str, float]:
    """The last logged value of each loss term of a training run (MLflow)."""
    if not trained.run_id:
        return {}
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(chain.tracking_uri).get_run(trained.run_id).data.metrics
    return {k: round(float(metrics[k]), 4) for k in LOSS_KEYS if k in metrics}


def plan(job: AblateJob) -> list[tuple[int, str]]:
    """``(seed, variant)`` in run order: the ``first`` variants for every seed, then the others for every seed (so a
    deadline cuts the secondary comparisons, not the seeds of the main one); only ``only`` when it is set."""
    unknown = sorted(set(job.only) - set(job.variants))
    if unknown:
        raise ValueError(f"only: unknown variant(s) {unknown}; known: {sorted(job.variants)}")
    chosen = [v for v in job.variants if not job.only or v in job.only]
    first = [v for v in job.first if v in chosen]
    rest = [v for v in chosen if v not in first]
    return [(s, v) for group in (first, rest) for s in job.seeds for v in group]


def run(job: AblateJob, command: str) -> tuple[list[Outcome], Path]:
    """Train and evaluate every (seed, variant) that fits the deadline; write the report; return the outcomes."""
    start = time.perf_counter()
    job.ray_target().init()
    chain = Chain(job.out)
    world = chain.synth(job.synth)
    expert = chain.expert(job.expert)
    shards = chain.precompute(job.precompute, world, expert)
    outcomes: list[Outcome] = []
    skipped: list[str] = []
    for seed, key in plan(job):
        variant, name = job.variants[key], f"abl-{key}-s{seed}"
        late = job.deadline_minutes and time.perf_counter() - start > 60 * job.deadline_minutes
        if late or (job.report_only and not chain.finished(name)):
            skipped.append(f"{key}/seed{seed}")
            continue
        trained = chain.distill(name, job.distill, variant, shards, expert, seed=seed)
        table, *rest = chain.evaluate(job.evaluate, world, trained, f"{variant.label} (seed {seed})")
        outcomes.append(Outcome(key, seed, trained, table, final_losses(chain, trained), rest[0] if rest else None))
        write_report(job, chain, outcomes, skipped, command, time.perf_counter() - start)
    path = write_report(job, chain, outcomes, skipped, command, time.perf_counter() - start)
    return outcomes, path


def summary_tables(job: AblateJob, outcomes: list[Outcome]) -> tuple[list[AccuracyTable], dict[str, dict[str, float]]]:
    """Mean tables (one per variant with at least one run) and their per-column std."""
    tables, std = [], {}
    for key, variant in job.variants.items():
        runs = [o.table for o in outcomes if o.variant == key]
        if runs:
            name = f"{variant.label} (n={len(runs)})"
            mean, s = mean_std_tables(runs, name)
            tables.append(mean)
            std[name] = s
    randoms = [o.random for o in outcomes if o.random is not None]
    if randoms:
        tables.append(randoms[0])
    return tables, std


def _relative(path: Path | str) -> str:
    """``path`` relative to the current directory when it lies below it (the report is committed: no machine paths)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _setup_lines(job: AblateJob, chain: Chain, outcomes: list[Outcome]) -> list[str]:
    import json

    lines = []
    stamp = chain.out / "synth" / ".chain_stamp.json"
    if stamp.is_file():
        lines.append(f"- data: synthetic world `{_relative(chain.out / 'synth')}`, questions per split "
                     f"{json.loads(stamp.read_text()).get('payload', {}).get('questions_per_split')}")  # fmt: skip
    expert = chain.out / "expert" / ".chain_stamp.json"
    if expert.is_file():
        m = json.loads(expert.read_text()).get("payload", {}).get("metrics", {})
        keys = ("heldout/abs_rel", "untrained/abs_rel", "heldout/flow_epe", "untrained/flow_epe",
                "zero_motion/flow_epe", "classical/flow_epe", "heldout/flow_epe_moving", "zero_motion/flow_epe_moving",
                "classical/flow_epe_moving", "heldout/dyn_mask_iou", "untrained/dyn_mask_iou")  # fmt: skip
        lines.append("- frozen expert (l4p_tiny, held-out clips): " + ", ".join(f"{k} {m[k]:.3f}" for k in keys if k in m))
    steps = sorted({o.trained.steps for o in outcomes})
    lines.append(f"- training: {steps} optimiser steps per run, same shards and step count for every recipe; "
                 f"distill config {job.distill.config} + {job.distill.overrides}")  # fmt: skip
    ran = {o.variant for o in outcomes}
    lines += [f"- {job.variants[k].label}: {job.variants[k].config} + {job.variants[k].overrides}"
              for k in job.variants if k in ran]  # fmt: skip
    return lines


def _eval_split(job: AblateJob) -> str:
    from pipelines import evaluate as E
    from pipelines._chain import conf_files

    return load(E.EvaluateJob, conf_files(job.evaluate.config), [*job.evaluate.overrides, "engine.checkpoint=x"]).benchmark.split


def _questions(outcomes: list[Outcome]) -> int:
    return outcomes[0].table.counts.get("Avg", 0) if outcomes else 0


def render(job: AblateJob, chain: Chain, outcomes: list[Outcome], skipped: list[str], command: str,
           wall_s: float) -> str:  # fmt: skip
    tables, std = summary_tables(job, outcomes)
    ran = ", ".join(f"{o.variant}/seed{o.seed}" for o in outcomes) or "nothing"
    parts = [
        BEGIN,
        "## P4D ablation on the synthetic benchmark (generated by `pipelines/ablate.py`)",
        "",
        f"Command: `{command}`",
        "",
        *_setup_lines(job, chain, outcomes),
        f"- ran ({len(outcomes)} trainings, {wall_s / 60:.1f} min wall): {ran}",
        f"- not run (deadline or report-only): {', '.join(skipped) if skipped else 'none'}",
        f"- MLflow: `.venv/bin/mlflow ui --backend-store-uri sqlite:///{_relative(chain.tracking_uri.removeprefix('sqlite:///'))}`",
        "",
        f"### Mean ± sample std over seeds (accuracy %, {_eval_split(job)} split(s), {_questions(outcomes)} questions)",
        "",
        markdown_table(tables, std) if tables else "(no runs)\n",
        "### Per run",
        "",
        markdown_table([o.table for o in outcomes]) if outcomes else "(no runs)\n",
        "### Final training losses (last logged step)",
        "",
        "| run | " + " | ".join(LOSS_KEYS) + " |",
        "|---|" + "---|" * len(LOSS_KEYS),
        *[f"| {o.variant}/seed{o.seed} | " + " | ".join(str(o.losses.get(k, "-")) for k in LOSS_KEYS) + " |"
          for o in outcomes],  # fmt: skip
        END,
    ]
    return "\n".join(parts) + "\n"


def write_report(job: AblateJob, chain: Chain, outcomes: list[Outcome], skipped: list[str], command: str,
                 wall_s: float) -> Path:  # fmt: skip
    """Replace the generated block of ``results_md`` (keeping the rest of the file); returns its path."""
    path = Path(job.results_md)
    block = render(job, chain, outcomes, skipped, command, wall_s)
    text = path.read_text() if path.is_file() else "# Results\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> list[Outcome]:
    parser = job_parser(__doc__, "conf/ablate/*.yaml, default conf/ablate/default.yaml", "seeds='[0]' deadline_minutes=20")
    job = job_from_args(AblateJob, parser.parse_args(argv), default_config=[CONF / "ablate" / "default.yaml"])
    if job is None:
        return []
    command = ".venv/bin/python -m pipelines.ablate " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    outcomes, path = run(job, command.strip())
    tables, std = summary_tables(job, outcomes)
    print(markdown_table(tables, std), end="")
    print(f"report: {path}")
    return outcomes


if __name__ == "__main__":
    main()
