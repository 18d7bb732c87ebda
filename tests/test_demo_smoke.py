"""The ``make demo`` chain at a very small size (conf/demo/smoke.yaml) on the session Ray cluster.

One run does every stage for real: synthetic world -> expert pretraining -> precompute shards -> distill P4D and
SFT-only (same data, steps, seed) -> evaluate both (attached to their MLflow runs) -> Serve answers one
region-level question over HTTP. A second run with the same config must reuse every stage and give the same table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import demo
from pipelines._chain import STAMP
from rgpt4d_core.config import load
from rgpt4d_core.eval.report import read_predictions


@pytest.mark.timeout(900)
def test_demo_chain_smoke(ray_cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow.tracking import MlflowClient

    job = load(demo.DemoJob, [demo.SMOKE_CONFIG], [f"out={tmp_path / 'demo'}"])
    result = demo.run(job)
    demo.print_summary(job, result)
    printed = capsys.readouterr().out

    names = [t.name for t in result.tables]
    assert names == ["SFT-only", "P4D (LD+ED)", "Random"]
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
    assert answer["method"] in {"letter", "option_text", "option_value", "ambiguous", "none"}
    assert (result.out / "comparison.png").stat().st_size > 0

    # a re-run reuses every finished stage; with the evaluations' stamps removed it evaluates the same checkpoints
    # again, and the freshly computed table must equal the first one (re-reading table.json would prove nothing)
    for trained in result.trained.values():
        (result.out / "eval" / trained.name / STAMP).unlink()
    again = demo.run(load(demo.DemoJob, [demo.SMOKE_CONFIG], [f"out={tmp_path / 'demo'}", "serve_question=false"]))
    evaluated = {f"evaluate {trained.name}" for trained in result.trained.values()}
    assert len(again.chain.reused) == 7 and {k for k, v in again.chain.reused.items() if not v} == evaluated
    assert [t.accuracy for t in again.tables] == [t.accuracy for t in result.tables]
