"""The ablation driver's plan and report (no training here: the chain itself runs in test_demo_smoke)."""

from __future__ import annotations

import dataclasses
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
    assert [(c.seed, c.variant) for c in ablate.plan(job)] == [
        (0, "sft"), (0, "p4d_tpe"), (1, "sft"), (1, "p4d_tpe"),
        (0, "p4d_no_tpe"), (0, "sft_no_tpe"), (1, "p4d_no_tpe"), (1, "sft_no_tpe"),
    ]  # fmt: skip
    assert {c.size for c in ablate.plan(job)} == {"all"} and ablate.run_name(ablate.plan(job)[0]) == "abl-sft-s0"


def _table(name: str, avg: float) -> AccuracyTable:
    return AccuracyTable(name, dict.fromkeys(TABLE_COLUMNS, avg), dict.fromkeys(TABLE_COLUMNS, 10))


def test_layered_longer_config_runs_only_its_own_variants() -> None:
    conf = Path(ablate.__file__).resolve().parents[1] / "conf" / "ablate"
    job = load(ablate.AblateJob, [conf / "default.yaml", conf / "longer.yaml"], [])
    assert {"sft", "p4d_tpe", "sft_long", "p4d_long"} <= set(job.variants)  # YAML layers merge the variants ...
    assert ablate.plan(job) == [ablate.Cell("all", 0, "sft_long"), ablate.Cell("all", 0, "p4d_long")]  # ... and `only`
    with pytest.raises(ValueError, match="unknown variant.*sft_lng"):
        ablate.plan(load(ablate.AblateJob, [conf / "default.yaml"], ["only=[sft_lng]"]))
    with pytest.raises(ValueError, match=r"compare/select: unknown variant\(s\) \['p4d_lng'\]; known: \["):
        ablate.plan(load(ablate.AblateJob, [conf / "default.yaml"], ["compare=[[p4d_lng,sft]]"]))


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


def test_the_experiment_configs_plan_what_their_comments_say() -> None:
    conf = Path(ablate.__file__).resolve().parents[1] / "conf" / "ablate"
    main = load(ablate.AblateJob, [conf / "p4d.yaml"], [])
    assert [(c.size, c.seed, c.variant) for c in ablate.plan(main)] == [
        ("2k", s, v) for s in (0, 1, 2) for v in ("sft", "p4d")
    ]
    assert ablate.run_name(ablate.plan(main)[1]) == "abl-p4d-2k-s0"
    curve = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_curve.yaml"], [])
    assert list(curve.sizes) == ["2k", "0.5k", "8k", "full"] and len(ablate.plan(curve)) == 24  # 2k reused from p4d.yaml
    chosen = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_chosen.yaml"], [])
    assert ablate.eval_split(chosen) == "test" and [c.variant for c in ablate.plan(chosen)][:2] == ["sft", "w_code"]
    assert ablate.run_name(ablate.plan(chosen)[1]) == "abl-w_code-2k-s0"  # p4d_weights.yaml's training, reused
    mask = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_mask.yaml"], [])
    assert mask.out == "out/experiment_mask" and mask.expert.config[-1].endswith("motion_mask.yaml")
    assert len(ablate.plan(mask)) == 6
    layer = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_layer.yaml"], [])
    assert [c.variant for c in ablate.plan(layer)] == ["sft", "p4d"] * 5 + ["p4d_l0"] * 5  # sft, p4d reused
    assert layer.variants["p4d_l0"].overrides == ["student.decoder_layer=0"]
    region = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_region.yaml"], [])
    assert [c.variant for c in ablate.plan(region)][10:12] == ["p4d_red", "red_only"] and len(ablate.plan(region)) == 20
    unlabelled = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_unlabelled.yaml"], [])
    assert [c.variant for c in ablate.plan(unlabelled)] == ["sft", "p4d"] * 5 + ["p4d_u", "p4d_u_untrained"] * 5
    assert unlabelled.variants["p4d_u"].overrides == ["data.distill_only_per_micro_batch=4"]  # sft, p4d reused
    assert unlabelled.variants["p4d_u_untrained"].teacher == "untrained"
    controls = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_controls.yaml"], [])
    assert controls.variants["p4d_untrained"].teacher == "untrained"
    assert [c.variant for c in ablate.plan(controls)][:2] == ["sft", "p4d"] and len(ablate.plan(controls)) == 15
    weights = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_weights.yaml"], [])
    assert ablate.eval_split(weights) == "val" and len(ablate.plan(weights)) == 7
    with pytest.raises(ValueError, match="validation"):  # choosing on the test split is refused
        ablate.plan(load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_weights.yaml"], ["evaluate.overrides=[benchmark.split=test]"]))
    steps = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_steps.yaml"], [])
    assert {c.size for c in ablate.plan(steps)} == {"2k-long"} and steps.size_names() == ["2k-long"]  # not p4d's 2k
    assert [c.variant for c in ablate.plan(steps)] == ["sft", "p4d"] * 3 + ["p4d_untrained"] * 3
    assert ablate.run_name(ablate.plan(steps)[0]) == "abl-sft-2k-long-s0"
    with pytest.raises(ValueError, match="unknown size.*2k-lng"):
        ablate.plan(load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_steps.yaml"], ["only_sizes=[2k-lng]"]))
    alltest = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_alltest.yaml"], [])  # p4d.yaml's 5 seeds, rescored
    assert [ablate.run_name(c) for c in ablate.plan(alltest)] == [f"abl-{v}-2k-s{s}" for s in range(5) for v in ("sft", "p4d")]
    assert ablate.eval_split(alltest) == "test" and alltest.eval_tag == "-alltest"
    assert "benchmark.limit=0" in alltest.evaluate.overrides  # every test question
    quick = load(ablate.AblateJob, [conf / "quick.yaml"], [])
    assert len(ablate.plan(quick)) == 6 and quick.compare == [["p4d", "sft"]]
    with pytest.raises(ValueError, match="teacher"):
        ablate.plan(load(ablate.AblateJob, [conf / "quick.yaml"], ["variants.p4d.teacher=random"]))


def test_report_pairs_seeds_with_an_interval_and_a_learning_curve(tmp_path: Path) -> None:
    conf = Path(ablate.__file__).resolve().parents[1] / "conf" / "ablate"
    md = tmp_path / "results.md"
    job = load(ablate.AblateJob, [conf / "p4d.yaml", conf / "p4d_curve.yaml"],
               [f"results_md={md}", f"out={tmp_path / 'o'}", f"curve_png={tmp_path / 'p4d-curve-full.png'}"])
    chain = Chain(tmp_path / "o")
    (chain.out / "synth").mkdir()
    (chain.out / "synth" / ".chain_stamp.json").write_text('{"payload": {"questions_per_split": {"train": 5000}}}')
    avgs = {("sft", "2k"): [40.0, 50.0, 45.0], ("p4d", "2k"): [43.0, 52.0, 50.0], ("sft", "8k"): [50.0], ("p4d", "8k"): [51.0],
            ("sft", "0.5k"): [30.0], ("p4d", "0.5k"): [29.0]}
    outcomes = [ablate.Outcome(v, s, Trained(f"abl-{v}-{size}-s{s}", "x", None, 1000), _table(v, a), {}, size=size)
                for (v, size), values in avgs.items() for s, a in enumerate(values)]  # fmt: skip
    ablate.write_report(job, chain, outcomes, [], "python -m pipelines.ablate --config conf/ablate/p4d.yaml", 60.0)
    text = md.read_text()
    # diffs 3, 2, 5: mean 10/3, sd sqrt(7/3), t_{0.975,2} = 4.303 -> 10/3 ± 3.7949 = [-0.462, +7.128]
    assert "| seed 0 | +3.0 | +3.0 |" in text and "| seed 2 | +5.0 |" in text
    assert "| **mean [95 % CI]** | +3.3 [-0.5, +7.1] |" in text
    assert "| P4D (LD+ED) − SFT-only | 2k | 2000 | 45.0 | 48.3 | +3.3 [-0.5, +7.1] | 3 |" in text
    assert "| P4D (LD+ED) − SFT-only | 8k | 5000 | 50.0 | 51.0 | +1.0 (n=1) | 1 |" in text  # capped by the world
    # the curve's rows by training questions, though the config lists 0.5k after 2k
    assert text.index("| P4D (LD+ED) − SFT-only | 0.5k | 500 |") < text.index("| P4D (LD+ED) − SFT-only | 2k | 2000 |")
    assert "| SFT-only, size 2k (n=3) | 45.0 ± 5.0 |" in text
    png = tmp_path / "p4d-curve-full.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![learning curve](p4d-curve-full.png)" in text
    csv_rows = ablate.R.comparison_csv(ablate.R.comparisons(job.compare, job.size_names(), outcomes)).splitlines()
    assert "p4d,sft,2k,Avg,3,3.333,1.528,-0.462,7.128,+3.00 +2.00 +5.00" in csv_rows
    assert "- sizes: {'2k': ['data.max_samples=2000', 'loop.epochs=4'], '0.5k'" in text
    one_point = dataclasses.replace(job, only_sizes=["8k"])  # the setup line names only the points the run covers
    ablate.write_report(one_point, chain, [o for o in outcomes if o.size == "8k"], [], "python -m pipelines.ablate", 60.0)
    assert "- sizes: {'8k': ['data.max_samples=8000', 'loop.epochs=1']}; evaluation" in md.read_text()


def test_the_time_cue_experiment_reports_the_time_probe_column(tmp_path: Path) -> None:
    conf = Path(ablate.__file__).resolve().parents[1] / "conf" / "ablate"
    md = tmp_path / "tpe.md"
    job = load(ablate.AblateJob, [conf / "tpe.yaml"], [f"results_md={md}", f"out={tmp_path / 'o'}",
                                                      f"curve_png={tmp_path / 'tpe.png'}"])  # fmt: skip
    assert job.column == "TB" and [c.variant for c in ablate.plan(job)][:4] == ["no_cue", "tpe", "prompt", "tpe_prompt"]
    assert len(ablate.plan(job)) == 12
    with pytest.raises(ValueError, match="column"):
        ablate.plan(load(ablate.AblateJob, [conf / "tpe.yaml"], ["column=Speed"]))

    def tb_table(name: str, tb: float) -> AccuracyTable:  # a TB-only benchmark: no R4D question, Avg undefined
        return AccuracyTable(name, {**dict.fromkeys(TABLE_COLUMNS), "TB": tb}, {**dict.fromkeys(TABLE_COLUMNS, 0), "TB": 200})

    outcomes = [ablate.Outcome(v, s, Trained(f"abl-{v}-s{s}", "x", None, 12), tb_table(v, tb), {"loss/sft": 0.5})
                for v, s, tb in [("no_cue", 0, 30.0), ("no_cue", 1, 34.0), ("prompt", 0, 90.0), ("prompt", 1, 96.0)]]
    ablate.write_report(job, Chain(tmp_path / "o"), outcomes, [], "python -m pipelines.ablate", 60.0)
    text = md.read_text()
    assert "val+test split (200 questions)" in text
    assert "| seed 0 | - | - | - | - | - | - | - | - | - | - | - | - | +60.0 |" in text  # the 12 R4D columns, then TB
    assert "| duration sentence − no time cue | all | " in text and "| 32.0 | 93.0 | +61.0 [" in text  # curve in TB
    assert (tmp_path / "tpe.png").is_file()
