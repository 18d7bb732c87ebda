"""The ablation driver's plan and report (no training here: the chain itself runs in test_demo_smoke)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import ablate
from pipelines._chain import Chain, Trained
from rgpt4d_core.config import load
from rgpt4d_core.eval.metrics import AccuracyTable
from rgpt4d_core.eval.tasks import TABLE_COLUMNS

CONFIG = Path(__file__).resolve().parents[1] / "conf" / "ablate" / "default.yaml"


def test_plan_runs_the_main_comparison_for_every_seed_first() -> None:
    job = load(ablate.AblateJob, [CONFIG], ["seeds=[0,1]"])
    assert ablate.plan(job) == [
        (0, "sft"), (0, "p4d_tpe"), (1, "sft"), (1, "p4d_tpe"),
        (0, "p4d_no_tpe"), (0, "sft_no_tpe"), (1, "p4d_no_tpe"), (1, "sft_no_tpe"),
    ]  # fmt: skip


def _table(name: str, avg: float) -> AccuracyTable:
    return AccuracyTable(name, dict.fromkeys(TABLE_COLUMNS, avg), dict.fromkeys(TABLE_COLUMNS, 10))


def test_layered_longer_config_runs_only_its_own_variants() -> None:
    conf = Path(ablate.__file__).resolve().parents[1] / "conf" / "ablate"
    job = load(ablate.AblateJob, [conf / "default.yaml", conf / "longer.yaml"], [])
    assert {"sft", "p4d_tpe", "sft_long", "p4d_long"} <= set(job.variants)  # YAML layers merge the variants ...
    assert ablate.plan(job) == [(0, "sft_long"), (0, "p4d_long")]  # ... and `only` keeps this file's own
    with pytest.raises(ValueError, match="unknown variant.*sft_lng"):
        ablate.plan(load(ablate.AblateJob, [conf / "default.yaml"], ["only=[sft_lng]"]))


def test_report_block_is_replaced_and_the_rest_of_the_file_kept(tmp_path: Path) -> None:
    md = tmp_path / "results.md"
    md.write_text(f"# Results\n\nhand-written intro\n\n{ablate.BEGIN}\nold\n{ablate.END}\n\nhand-written analysis\n")
    job = load(ablate.AblateJob, [CONFIG], [f"results_md={md}", f"out={tmp_path / 'o'}"])
    chain = Chain(tmp_path / "o")
    outcomes = [
        ablate.Outcome(v, s, Trained(f"abl-{v}-s{s}", "x", None, 12), _table(v, avg), {"loss/sft": 0.5})
        for v, s, avg in [("sft", 0, 40.0), ("sft", 1, 50.0), ("p4d_tpe", 0, 46.0)]
    ]
    ablate.write_report(job, chain, outcomes, ["p4d_tpe/seed1"], "python -m pipelines.ablate seeds='[0,1]'", 60.0)
    text = md.read_text()
    assert text.startswith("# Results\n\nhand-written intro") and text.rstrip().endswith("hand-written analysis")
    assert "old" not in text and text.count(ablate.BEGIN) == 1
    assert "| SFT-only (n=2) | 45.0 ± 7.1 |" in text  # mean ± sample std of 40 and 50
    assert "| P4D (LD+ED) + TPE (n=1) | 46.0 ± 0.0 |" in text
    assert "not run (deadline or report-only): p4d_tpe/seed1" in text and "seeds='[0,1]'" in text
