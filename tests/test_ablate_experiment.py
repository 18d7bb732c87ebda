"""The experiment driver end to end with the stages faked (no training): the MLflow parent run and its nested
children on a real sqlite store, the untrained-teacher wiring, resumption under the same parent; and the
untrained-expert stage itself."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from pipelines import ablate
from pipelines._chain import Chain, StageSection, Trained, VariantSection
from rgpt4d_core.config import load
from rgpt4d_core.eval.metrics import AccuracyTable
from rgpt4d_core.eval.tasks import TABLE_COLUMNS
from rgpt4d_core.tracking import PARENT_RUN_TAG, MLflowTracker

CONF = Path(__file__).resolve().parents[1] / "conf"
AVG = {"sft": 40.0, "p4d": 44.0, "p4d_untrained": 41.0}


class FakeChain(Chain):
    """Stages that only record what they were given; a training is an MLflow run like the real job's."""

    calls: list[dict[str, Any]] = []

    def synth(self, section: StageSection) -> Path:
        (self.out / "synth").mkdir(exist_ok=True)
        return self.out / "synth"

    def expert(self, section: StageSection) -> Path:
        return self.out / "expert" / "l4p_tiny.safetensors"

    def untrained_expert(self, section: StageSection) -> Path:
        return self.out / "expert_untrained" / "l4p_tiny.safetensors"

    def precompute(self, section: StageSection, world: Path, expert: Path, name: str = "shards") -> Path:
        return self.out / name / expert.parent.name

    def distill(self, name: str, common: StageSection, variant: VariantSection, shards: Path, expert: Path,
                seed: int = 0, extra: tuple[str, ...] = (), values: dict[str, Any] | None = None) -> Trained:  # fmt: skip
        parent = (values or {}).get("mlflow.parent_run_id")
        # the distill job tags its run with the parent it is given; a run "trained before parents existed" is not
        tags = {PARENT_RUN_TAG: parent} if parent and name != "abl-sft-2k-s0" else {}
        run = MLflowTracker.start(self.tracking_uri, "rgpt4d-distill", name, f"{self.out}/runs/{name}", tags=tags)
        run.log_metrics({"loss/sft": 0.5}, step=10)
        run.set_terminated()
        FakeChain.calls.append({"name": name, "shards": shards, "expert": expert, "extra": extra})
        return Trained(name, "export", run.run_id, 10)

    def evaluate(self, section: StageSection, world: Path, trained: Trained, label: str, tag: str = "") -> Any:
        variant = trained.name.split("-")[1]
        seed = int(trained.name.rsplit("-s", 1)[1])
        avg = AVG[variant] + seed
        return [AccuracyTable(label, dict.fromkeys(TABLE_COLUMNS, avg), dict.fromkeys(TABLE_COLUMNS, 100))]


def test_parent_run_with_nested_children_and_the_untrained_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setattr(ablate, "Chain", FakeChain)
    monkeypatch.setattr(ablate.AblateJob, "ray_target", lambda self: SimpleNamespace(init=lambda **_: None))
    FakeChain.calls = []
    overrides = [f"out={tmp_path / 'o'}", f"results_md={tmp_path / 'r.md'}", "seeds=[0]", f"curve_png={tmp_path / 'c.png'}",
                 "only=[sft,p4d,p4d_untrained]", "compare=[[p4d,sft],[p4d_untrained,sft]]"]  # fmt: skip
    files = [CONF / "ablate" / "p4d.yaml", CONF / "ablate" / "p4d_controls.yaml"]
    job = load(ablate.AblateJob, files, overrides)
    outcomes, report = ablate.run(job, "python -m pipelines.ablate ...")
    assert len(outcomes) == 3

    by_name = {c["name"]: c for c in FakeChain.calls}
    untrained = by_name["abl-p4d_untrained-2k-s0"]
    assert untrained["shards"] == tmp_path / "o" / "shards_untrained" / "expert_untrained"
    assert untrained["expert"].parent.name == "expert_untrained"
    assert by_name["abl-p4d-2k-s0"]["shards"] == tmp_path / "o" / "shards" / "expert"
    assert "data.max_samples=2000" in by_name["abl-sft-2k-s0"]["extra"]

    client = MlflowClient(Chain(tmp_path / "o").tracking_uri)
    experiment = client.get_experiment_by_name("rgpt4d-distill")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.info.run_name == "ablate p4d-controls"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    children = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == parent]
    assert sorted(r.info.run_name for r in children) == sorted(by_name)  # all three, the untagged one nested too
    artifacts = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/ablate.md", "report/comparison.csv", "report/c.png"} <= artifacts
    assert client.get_run(parent).data.metrics["diff/p4d-sft/2k/Avg"] == pytest.approx(4.0)
    assert "| P4D (LD+ED) − SFT-only | 2k |" in report.read_text()

    ablate.run(job, "python -m pipelines.ablate ...")  # a second invocation re-opens the same parent
    again = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == "ablate p4d-controls"]
    assert [r.info.run_id for r in again] == [parent]


def test_untrained_expert_stage_saves_the_initial_weights_once(tmp_path: Path) -> None:
    from rgpt4d_core.experts.l4p import build_model, load_checkpoint_state

    chain = Chain(tmp_path, log=lambda _: None)
    section = StageSection([str(CONF / "pretrain_expert" / "tiny.yaml")], ["loop.seed=3"])
    path = chain.untrained_expert(section)
    state, meta = load_checkpoint_state(path)
    reference = build_model("l4p_tiny", seed=3).state_dict()
    assert meta["preset"] == "l4p_tiny" and state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    before = path.stat().st_mtime_ns
    assert chain.untrained_expert(section) == path and chain.reused["untrained expert"]
    assert path.stat().st_mtime_ns == before


def test_a_world_from_another_generator_version_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The synth stage's reuse key holds the generator version: after a generator change (other questions for the
    same seed) `make demo` and the experiments regenerate their world instead of reusing the old one."""
    from pipelines import _chain, make_synthetic
    from rgpt4d_core.synth.config import SynthConfig

    cfg = SynthConfig()
    before = _chain.world_key(cfg)
    assert _chain.world_key(SynthConfig()) == before
    monkeypatch.setattr(make_synthetic, "GENERATOR_VERSION", "0.0.0-test")
    assert _chain.world_key(cfg) != before
