"""scripts/pair_noise.py: the question / run decomposition recovers known variances, and the differences are read
from real prediction files, question by question."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import pair_noise as probe  # noqa: E402

from rgpt4d_core.eval.predict import Prediction  # noqa: E402
from rgpt4d_core.eval.report import PREDICTIONS_FILE, write_predictions  # noqa: E402


def test_decomposition_recovers_the_shared_and_the_run_variance() -> None:
    rng = np.random.default_rng(7)
    k, q, shared, run = 10, 20_000, 0.02, 0.12
    diffs = 0.01 + rng.normal(0, shared**0.5, q)[None, :] + rng.normal(0, run**0.5, (k, q))
    n = probe.pair_noise(diffs)
    assert (n.pairs, n.questions) == (k, q)
    assert n.shared_var == pytest.approx(shared, rel=0.25)
    assert n.run_var == pytest.approx(run, rel=0.05)
    assert n.question_se == pytest.approx(100 * (shared / q) ** 0.5, rel=0.15)
    per_pair = 100 * diffs.mean(axis=1)
    assert n.mean == pytest.approx(per_pair.mean())
    assert n.pair_sd == pytest.approx(per_pair.std(ddof=1))
    assert n.t_half_width == pytest.approx(2.262 * per_pair.std(ddof=1) / k**0.5)  # t_{0.975, 9}
    assert n.combined_half_width > n.t_half_width


def test_identical_pairs_have_no_run_variance_and_only_the_question_term() -> None:
    rng = np.random.default_rng(3)
    row = rng.choice([-1, 0, 0, 0, 1], size=500)
    n = probe.pair_noise(np.stack([row, row, row]))
    assert n.run_var == pytest.approx(0.0, abs=1e-12)
    assert n.pair_sd == pytest.approx(0.0, abs=1e-12)
    assert n.shared_var == pytest.approx(row.var(ddof=1))
    assert n.discordant == pytest.approx((row != 0).mean())


def test_one_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 pairs"):
        probe.pair_noise(np.zeros((1, 10)))


def _write(directory: Path, answers: dict[str, int]) -> Path:
    """An evaluation directory whose items have correct option 0 and the given chosen options."""
    rows = [Prediction(id=i, task="VG", num_options=5, answer_index=0, pred_index=p, method="letter", raw_output="")
            for i, p in answers.items()]  # fmt: skip
    write_predictions(directory / PREDICTIONS_FILE, rows)
    return directory


def test_differences_are_read_question_by_question_on_the_shared_ids(tmp_path: Path) -> None:
    base0 = _write(tmp_path / "b0", {"q1": 0, "q2": 1, "q3": 0, "only-here": 0})
    treat0 = _write(tmp_path / "t0", {"q3": 1, "q2": 0, "q1": 0})
    base1 = _write(tmp_path / "b1", {"q1": 1, "q2": 1, "q3": 1})
    treat1 = _write(tmp_path / "t1", {"q1": 0, "q2": 1, "q3": 1})
    diffs = probe.paired_differences([(base0, treat0), (base1, treat1)])
    np.testing.assert_array_equal(diffs, [[0, 1, -1], [1, 0, 0]])  # ids q1, q2, q3; 'only-here' dropped
    with pytest.raises(ValueError, match="share no question"):
        probe.paired_differences([(base0, _write(tmp_path / "other", {"x": 0}))])


def test_main_prints_the_pairs_and_the_decomposition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = [_write(tmp_path / name, answers) for name, answers in [
        ("b0", {"q1": 0, "q2": 1, "q3": 0}), ("t0", {"q1": 0, "q2": 0, "q3": 0}),
        ("b1", {"q1": 1, "q2": 1, "q3": 0}), ("t1", {"q1": 0, "q2": 1, "q3": 0})]]  # fmt: skip
    probe.main(["--pair", str(dirs[0]), str(dirs[1]), "--pair", str(dirs[2]), str(dirs[3])])
    out = capsys.readouterr().out
    assert "t0 - b0: +33.33 points, 33.3% of questions discordant" in out
    assert "2 pairs x 3 questions: mean +33.33" in out
