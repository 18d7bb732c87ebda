"""The ``make demo`` chain at a very small size (conf/demo/smoke.yaml) on the session Ray cluster.

One run does every stage for real: synthetic world -> expert pretraining -> precompute shards -> distill P4D and
SFT-only (same data, steps, seed) -> evaluate both (attached to their MLflow runs) -> Serve answers one
region-level question over HTTP. A second run with the same config must reuse every stage and give the same table.
The first run goes through the command line (``demo.main``) and its terminal output is checked: the stages, one
progress bar per long stage and the results, with the engines' own output in ``<out>/logs/engine.log``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines import demo
from pipelines._chain import STAMP
from rgpt4d_core.config import load
from rgpt4d_core.eval.report import read_predictions

# what the engines print when their output reaches the terminal (seen in `make demo` before it was routed to a file)
ENGINE_LINE = re.compile(r"\(raylet\)|\(\w+ pid=\d+\)|core_worker\.cc|streaming_executor|\bINFO\b|\bWARNING\b|"
                         r"Warning:|Loading weights|mlflow\.store|Traceback")  # fmt: skip
BAR_LINE = re.compile(r"^(synthetic world|pretrain \S+|precompute|distill \S+|evaluate .+): +\d+%\|")
LONG_STAGES = ("synthetic world", "pretrain", "precompute", "distill demo-sft_only", "distill demo-p4d",
               "evaluate SFT-only", "evaluate P4D (LD+ED)")  # fmt: skip


@pytest.mark.timeout(900)
def test_demo_chain_smoke(ray_cluster: None, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from mlflow.tracking import MlflowClient

    result = demo.main(["--smoke", "--out", str(tmp_path / "demo")])
    assert result is not None
    printed, bars = capfd.readouterr()

    # the terminal shows the stages, a bar per long stage and the results; the engines' output is in the log file
    assert not [line for line in printed.splitlines() if ENGINE_LINE.search(line)], printed
    bar_lines = [line for line in re.split(r"[\r\n]+", bars) if line.strip()]
    assert bar_lines and all(BAR_LINE.match(line) for line in bar_lines), bars
    for stage in LONG_STAGES:
        assert any(line.startswith(stage) and "100%|" in line for line in bar_lines), f"no finished bar for {stage}"
    engine_log = (result.out / "logs" / "engine.log").read_text()
    assert "streaming_executor" in engine_log, "Ray Data's own lines should be in the engine log"
    assert f"{result.out / 'logs' / 'engine.log'}" in printed

    names = [t.name for t in result.tables]
    assert names == ["SFT-only", "P4D (LD+ED)", "Random", "Blind (answer prior)"]
    n = result.tables[0].counts["Avg"]
    assert n > 0 and all(t.counts["Avg"] == n for t in result.tables)
    assert "| SFT-only |" in printed and "| P4D (LD+ED) |" in printed and "mlflow ui --backend-store-uri" in printed

    # same data and steps for both recipes; each evaluation is attached to its own training run
    assert {t.steps for t in result.trained.values()} == {2}
    client = MlflowClient(result.chain.tracking_uri)
    for trained in result.trained.values():
        run = client.get_run(str(trained.run_id))
        assert run.info.status == "FINISHED" and run.data.metrics["eval/items"] == n
        assert len(read_predictions(result.out / "eval" / trained.name / "predictions.jsonl")) == n
    p4d = client.get_run(str(result.trained["p4d"].run_id)).data.metrics
    sft = client.get_run(str(result.trained["sft_only"].run_id)).data.metrics
    assert "loss/ld" in p4d and "loss/ld" not in sft  # the recipes really differ

    # Serve answered one region-level question over HTTP with the P4D checkpoint
    answer = result.served["answer"]
    assert answer["model"] and answer["num_frames"] == 16 and result.served["payload"]["regions"]
    assert answer["method"] == "option_likelihood"  # the tiny recipe's answer style, read from the checkpoint
    assert (result.out / "comparison.png").stat().st_size > 0

    # a re-run reuses every finished stage; with the P4D evaluation's stamp removed it evaluates that checkpoint
    # again, and the freshly computed table must equal the first one (re-reading table.json would prove nothing)
    p4d = result.trained["p4d"].name
    (result.out / "eval" / p4d / STAMP).unlink()
    again = demo.run(load(demo.DemoJob, [demo.SMOKE_CONFIG], [f"out={tmp_path / 'demo'}", "serve_question=false"]))
    assert len(again.chain.reused) == 7 and {k for k, v in again.chain.reused.items() if not v} == {f"evaluate {p4d}"}
    assert [t.accuracy for t in again.tables] == [t.accuracy for t in result.tables]
