"""Diagnostic: how much of a paired recipe comparison's spread is the test questions, and how much the training runs?

Given ``K`` paired evaluations (baseline and treatment trained with the same seed, scored on the same ``Q``
questions), the per-question difference ``d[k, q] = correct_treatment − correct_baseline`` (−1, 0 or +1) is modelled
as ``mu + a[q] + e[k, q]``: ``a`` a question effect shared by every pair (the question favours one recipe whatever
the run), ``e`` what a run does to that question (the training path: seed, float rounding). Then, per question,

* ``var_q(d[k, :])`` averaged over pairs estimates ``s + i`` (``s = var(a)``, ``i = var(e)``), and
* ``var_q(mean_k d[:, q])`` estimates ``s + i / K``,

which give ``s`` and ``i``. The Student-t interval over pairs (``rgpt4d_core.eval.paired``) covers the run-to-run
part only: with the questions fixed, ``a`` is the same in every pair and does not average out. Drawing another test
set of ``Q`` questions would add a standard error of ``100 · sqrt(s / Q)`` accuracy points that no number of seeds
removes; ``100 · sqrt(i / Q)`` is the part of one pair's spread that the question count alone sets (it halves in
variance with twice the questions). ``s`` is the difference of two close numbers: with few pairs it is noisy
(clamped at 0; five pairs of the P4D experiment give 0.0055, 0.1–0.25 points of ``question_se`` when the questions
are resampled or a pair is left out; three of them give 0).

    .venv/bin/python scripts/pair_noise.py --pair out/experiment/eval/abl-sft-2k-s0 out/experiment/eval/abl-p4d-2k-s0 --pair out/experiment/eval/abl-sft-2k-s1 out/experiment/eval/abl-p4d-2k-s1 --pair out/experiment/eval/abl-sft-2k-s2 out/experiment/eval/abl-p4d-2k-s2 --pair out/experiment/eval/abl-sft-2k-s3 out/experiment/eval/abl-p4d-2k-s3 --pair out/experiment/eval/abl-sft-2k-s4 out/experiment/eval/abl-p4d-2k-s4

Each ``--pair BASELINE TREATMENT`` names two evaluation directories (``predictions.jsonl`` inside, as
``pipelines/evaluate.py`` and ``pipelines/ablate.py`` write them). Probe only, not part of the product.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rgpt4d_core.eval.paired import t_quantile_975  # noqa: E402
from rgpt4d_core.eval.report import PREDICTIONS_FILE, read_predictions  # noqa: E402


@dataclass(frozen=True)
class PairNoise:
    """The spread of ``K`` paired differences on ``Q`` shared questions (accuracy points unless said).

    Attributes:
        mean: mean over pairs of the treatment − baseline accuracy difference.
        pair_sd: sample standard deviation of the per-pair differences (ddof 1).
        t_half_width: half-width of the 95 % Student-t interval over pairs (0 with one pair).
        discordant: mean share of questions whose correctness differs between the two arms of a pair (0–1).
        shared_var / run_var: ``s`` and ``i`` of the module docstring (per-question variances, unitless).
        question_se: ``100 · sqrt(s / Q)``: the standard error another draw of the questions adds to ``mean``.
        run_question_sd: ``100 · sqrt(i / Q)``: the part of one pair's standard deviation the question count sets.
        combined_half_width: 95 % half-width with both parts, ``sqrt(t_half_width² + (1.96 · question_se)²)``.
    """

    pairs: int
    questions: int
    mean: float
    pair_sd: float
    t_half_width: float
    discordant: float
    shared_var: float
    run_var: float
    question_se: float
    run_question_sd: float
    combined_half_width: float


def pair_noise(diffs: np.ndarray) -> PairNoise:
    """Decompose ``diffs`` (``K × Q``, per-question treatment − baseline correctness in {−1, 0, 1}; K ≥ 2)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 2:
        raise ValueError(f"need at least 2 pairs x 2 questions of differences, got shape {d.shape}")
    k, q = d.shape
    per_pair = 100 * d.mean(axis=1)
    single = float(d.var(axis=1, ddof=1).mean())  # s + i
    of_mean = float(d.mean(axis=0).var(ddof=1))  # s + i / K
    run_var = max((single - of_mean) / (1 - 1 / k), 0.0)
    shared_var = max(single - run_var, 0.0)
    pair_sd = float(per_pair.std(ddof=1))
    t_half = t_quantile_975(k - 1) * pair_sd / math.sqrt(k)
    question_se = 100 * math.sqrt(shared_var / q)
    return PairNoise(
        pairs=k, questions=q, mean=float(per_pair.mean()), pair_sd=pair_sd, t_half_width=t_half,
        discordant=float((d != 0).mean()), shared_var=shared_var, run_var=run_var, question_se=question_se,
        run_question_sd=100 * math.sqrt(run_var / q), combined_half_width=math.hypot(t_half, 1.959964 * question_se),
    )  # fmt: skip


def correctness(directory: Path) -> dict[str, bool]:
    """Item id → answered correctly, from an evaluation directory's ``predictions.jsonl``."""
    return {p.id: p.correct for p in read_predictions(directory / PREDICTIONS_FILE)}


def paired_differences(pairs: list[tuple[Path, Path]]) -> np.ndarray:
    """``K × Q`` treatment − baseline correctness on the questions every evaluation answered (sorted by id)."""
    runs = [(correctness(base), correctness(treat)) for base, treat in pairs]
    shared = set.intersection(*(set(b) & set(t) for b, t in runs))
    if not shared:
        raise ValueError("the evaluations share no question ids")
    ids = sorted(shared)
    return np.array([[int(t[i]) - int(b[i]) for i in ids] for b, t in runs], dtype=np.int8)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", nargs=2, action="append", required=True, metavar=("BASELINE", "TREATMENT"),
                   help="two evaluation directories of one seed (repeat per seed; at least 2)")  # fmt: skip
    args = p.parse_args(argv)
    pairs = [(Path(b), Path(t)) for b, t in args.pair]
    diffs = paired_differences(pairs)
    for (base, treat), row in zip(pairs, diffs, strict=True):
        print(f"{treat.name} - {base.name}: {100 * row.mean():+.2f} points, "
              f"{(row != 0).mean():.1%} of questions discordant")  # fmt: skip
    n = pair_noise(diffs)
    print(f"{n.pairs} pairs x {n.questions} questions: mean {n.mean:+.2f}, pair sd {n.pair_sd:.2f}, "
          f"t-interval [{n.mean - n.t_half_width:+.2f}, {n.mean + n.t_half_width:+.2f}]")  # fmt: skip
    print(f"per question: shared (question) variance {n.shared_var:.4f}, run x question variance {n.run_var:.4f}")
    print(f"the questions' own standard error {n.question_se:.2f}; with it "
          f"[{n.mean - n.combined_half_width:+.2f}, {n.mean + n.combined_half_width:+.2f}]")  # fmt: skip
    print(f"one pair's sd from the question count alone {n.run_question_sd:.2f} (of {n.pair_sd:.2f})")


if __name__ == "__main__":
    main()
