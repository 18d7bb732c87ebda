"""The product's stages chained in one process on one Ray (used by ``pipelines/demo.py`` and ``pipelines/ablate.py``).

Each stage is the real job of its entry point (``make_synthetic``, ``pretrain_expert``, ``precompute``, ``distill``,
``evaluate``, ``serve``), configured from that job's own YAML files plus the paths the chain decides (everything
under one output directory, one MLflow sqlite file for every run).

Re-running reuses a stage when it is cheap and correct: a stage writes a stamp (the SHA-256 of its resolved
config and of its inputs' identities) next to its outputs when it finishes; a later run with the same stamp and
its outputs present skips it. A changed stamp removes the stage's stale outputs first (so a job never resumes
from another configuration's checkpoints); a stage that was interrupted resumes through its own mechanism
(scene-level resume of the synthetic world, written-key skip of precompute, Ray Train checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines._paths import REPO
from rgpt4d_core.config import load, to_container, to_yaml
from rgpt4d_core.inputs import INPUT_SPEC_FILE
from rgpt4d_core.synth.config import GENERATOR_VERSION
from rgpt4d_core.tracking import default_tracking_uri

if TYPE_CHECKING:
    from rgpt4d_core.train.config import DistillJobConfig

STAMP = ".chain_stamp.json"
#: what a distillation stage's export holds; part of its stamp, so that an export of an older layout is retrained
#: (2: ``input_spec.json`` beside ``config.json``, read back by the evaluation and serving stages)
EXPORT_LAYOUT = 2


@dataclass
class StageSection:
    """One stage's job config: YAML ``config`` files (merged in order) and ``key=value`` ``overrides``."""

    config: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


@dataclass
class VariantSection:
    """One training recipe compared by the chain: ``label`` (table row), distill config files and overrides layered
    over the common ``distill`` section; ``teacher``: ``"trained"`` (the pretrained expert and its shards) or
    ``"untrained"`` (the same architecture at its initial weights, :meth:`Chain.untrained_expert`, and shards
    precomputed with it)."""

    label: str = ""
    config: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    teacher: str = "trained"


def conf_files(paths: list[str]) -> list[str]:
    """Config paths as given when they exist from the working directory, else relative to the repository."""
    return [p if Path(p).exists() or Path(p).is_absolute() else str(REPO / p) for p in paths]


def distill_settings(section: StageSection, *overrides: str) -> DistillJobConfig:
    """The :class:`DistillJobConfig` of a distill stage section (placeholder shards and storage: for reading its
    training settings, not for running it)."""
    from rgpt4d_core.train.config import DistillJobConfig  # noqa: F811  (runtime import, kept lazy)

    return load(DistillJobConfig, conf_files(section.config), [*section.overrides, *overrides],
                {"data.shards": "x", "run.storage_path": "x"})  # fmt: skip


@dataclass(frozen=True)
class Trained:
    """A finished distillation: the exported inference checkpoint and its MLflow run."""

    name: str
    export: str
    run_id: str | None
    steps: int


def digest(*parts: Any) -> str:
    """SHA-256 (16 hex digits) of the JSON of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: settings of a training job that cannot change what it produces (which environment variables reach the
#: workers, which MLflow run its run is nested under): left out of its stamp, so that adding or changing one does not retrain finished runs
OPERATIONAL_KEYS: tuple[tuple[str, str], ...] = (("run", "forward_env"), ("mlflow", "parent_run_id"))


def outputs_yaml(cfg: Any) -> str:
    """``to_yaml(cfg)`` without :data:`OPERATIONAL_KEYS`: what a stage's stamp covers."""
    from omegaconf import OmegaConf

    tree = to_container(cfg)
    for section, key in OPERATIONAL_KEYS:
        tree.get(section, {}).pop(key, None)
    return OmegaConf.to_yaml(OmegaConf.create(tree))


def world_key(synth: Any) -> str:
    """The reuse key of a synthetic world: its ``make_synthetic.world_identity`` (generator version and config; a
    generator that renders or asks differently for the same seed must not reuse a world written by an older one)."""
    from pipelines.make_synthetic import world_identity

    return digest(world_identity(synth))


def file_digest(path: str | Path) -> str:
    """SHA-256 (16 hex digits) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Chain:
    """Runs stages under ``out`` with one MLflow sqlite store; records wall times and MLflow run ids.

    Args:
        out: output root (created); every stage writes below it.
        log: where progress lines go (``print`` by default).
    """

    def __init__(self, out: str | Path, log: Callable[[str], None] = print) -> None:
        self.out = Path(out).expanduser().resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = default_tracking_uri(self.out)
        self.log = log
        self.timings: dict[str, float] = {}
        self.reused: dict[str, bool] = {}
        self.runs: dict[str, str] = {}

    # ------------------------------------------------------------------------------------------- bookkeeping
    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.log(f"[{time.strftime('%H:%M:%S')}] >> {name}")
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        note = " (reused)" if self.reused.get(name) else ""
        self.log(f"[{time.strftime('%H:%M:%S')}] << {name}: {self.timings[name]:.1f} s{note}")

    def _reuse(self, name: str, directory: Path, key: str, *outputs: Path) -> dict[str, Any] | None:
        """The payload of a finished stage with this ``key`` whose outputs exist; else clears stale outputs."""
        stamp = directory / STAMP
        if stamp.is_file():
            saved = json.loads(stamp.read_text())
            if saved.get("key") == key and saved.get("done") and all(p.exists() for p in outputs):
                self.reused[name] = True
                return dict(saved.get("payload", {}))
            if saved.get("key") != key:  # another configuration's outputs: never resume from them
                shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"key": key, "done": False}))
        self.reused[name] = False
        return None

    def finished(self, run_name: str) -> bool:
        """Whether the distillation ``run_name`` finished in an earlier run of this chain (stamp ``done``)."""
        stamp = self.out / "runs" / run_name / STAMP
        return stamp.is_file() and bool(json.loads(stamp.read_text()).get("done"))

    @staticmethod
    def _done(directory: Path, key: str, payload: dict[str, Any]) -> None:
        (directory / STAMP).write_text(json.dumps({"key": key, "done": True, "payload": payload}, indent=1))

    # ------------------------------------------------------------------------------------------------ stages
    def synth(self, section: StageSection) -> Path:
        """Generate the synthetic world (``<out>/synth``); returns its root."""
        from pipelines._console import progress_wanted
        from pipelines.make_synthetic import MakeSyntheticJob, generate

        root = self.out / "synth"
        job = load(MakeSyntheticJob, conf_files(section.config), section.overrides, {"out": root})
        key = world_key(job.synth)
        with self.stage("synthetic world"):
            if self._reuse("synthetic world", root, key, root / "dataset.json") is None:
                summary = generate(job, progress=progress_wanted())
                card = summary["card"]
                if card is None:
                    raise RuntimeError(f"{summary['failed']} scene(s) failed: see {root / 'failures.json'}")
                self.log(f"   {card['num_scenes']} scenes, questions per split {card['questions_per_split']}")
                self._done(root, key, {"questions_per_split": card["questions_per_split"]})
        return root

    def expert(self, section: StageSection) -> Path:
        """Pretrain the tiny L4P expert on its own world (``<out>/expert``); returns the safetensors path."""
        from pipelines import pretrain_expert as P
        from rgpt4d_core.experts.l4p import get_preset

        directory = self.out / "expert"
        output = directory / "l4p_tiny.safetensors"
        cfg = load(P.PretrainExpertJob, conf_files(section.config), section.overrides, {
            "output": output, "data.root": directory / "world", "run.storage_path": directory / "runs",
            "mlflow.tracking_uri": self.tracking_uri})  # fmt: skip
        # the preset's architecture too (a checkpoint of an older head layout must not be reused), and the generator
        # version of the world it trains on
        key = digest(to_yaml(cfg), repr(get_preset(cfg.preset)), GENERATOR_VERSION)
        with self.stage("pretrain expert"):
            saved = self._reuse("pretrain expert", directory, key, output)
            if saved is None:
                summary = P.run(cfg)
                saved = {"run_id": summary.get("mlflow_run_id"), "metrics": summary.get("metrics", {})}
                self._done(directory, key, saved)
            metrics = saved.get("metrics", {})
            shown = {k: round(v, 3) for k, v in metrics.items() if k.endswith(("abs_rel", "flow_epe", "iou"))}
            self.log(f"   held-out: {shown}")
        if saved.get("run_id"):
            self.runs["pretrain expert"] = saved["run_id"]
        return output

    def untrained_expert(self, section: StageSection) -> Path:
        """The expert of ``section`` (its preset) with the initial weights its pretraining starts from and no
        training (``<out>/expert_untrained``): the teacher of the untrained-teacher control (issue 16)."""
        from pipelines import pretrain_expert as P
        from rgpt4d_core.experts.l4p import build_model, get_preset, save_checkpoint

        directory = self.out / "expert_untrained"
        cfg = load(P.PretrainExpertJob, conf_files(section.config), section.overrides, {"output": "unused"})
        output = directory / f"{cfg.preset}.safetensors"
        key = digest(cfg.preset, cfg.loop.seed, repr(get_preset(cfg.preset)))
        with self.stage("untrained expert"):
            if self._reuse("untrained expert", directory, key, output) is None:
                save_checkpoint(build_model(cfg.preset, seed=cfg.loop.seed), output, cfg.preset)
                self._done(directory, key, {"preset": cfg.preset, "seed": cfg.loop.seed})
        return output

    def precompute(self, section: StageSection, world: Path, expert: Path, name: str = "shards") -> Path:
        """Expert targets of the world's training split in Parquet shards (``<out>/<name>``)."""
        from pipelines import precompute as P

        shards = self.out / name
        job = load(P.PrecomputeJob, conf_files(section.config), section.overrides, {
            "input.dataset_root": world, "input.splits": ["train"], "expert.checkpoint": expert,
            "output.uri": shards})  # fmt: skip
        key = digest(to_yaml(job), file_digest(expert), file_digest(world / "dataset.json"))
        stage = "precompute shards" if name == "shards" else f"precompute {name}"
        with self.stage(stage):
            if self._reuse(stage, shards, key, shards / "_manifest.json") is None:
                job.ray_target().init()
                summary = P.run(job)
                self.log("   " + summary.text().replace("\n", "\n   "))
                self._done(shards, key, {"rows": summary.total_rows})
        return shards

    def distill(self, name: str, common: StageSection, variant: VariantSection, shards: Path, expert: Path,
                seed: int = 0, extra: tuple[str, ...] = (), values: dict[str, Any] | None = None) -> Trained:  # fmt: skip
        """Train one recipe on the shards (``<out>/runs/<name>``); returns its export and MLflow run. ``extra``:
        more ``key=value`` settings from the user's config (e.g. a training-set size); ``values``: typed settings
        the calling program decides (e.g. ``mlflow.parent_run_id``)."""
        from pipelines import distill as D
        from rgpt4d_core.train.config import DistillJobConfig

        run_dir = self.out / "runs" / name
        cfg = load(DistillJobConfig, conf_files([*common.config, *variant.config]),
                   [*common.overrides, *variant.overrides, *extra], {
                       "data.shards": shards, "run.name": name, "run.storage_path": self.out / "runs",
                       "mlflow.tracking_uri": self.tracking_uri, "expert.checkpoint": expert, "loop.seed": seed,
                       **(values or {})})  # fmt: skip
        key = digest(outputs_yaml(cfg), file_digest(shards / "_manifest.json"), EXPORT_LAYOUT)
        stage = f"distill {name}"
        with self.stage(stage):
            saved = self._reuse(stage, run_dir, key)
            if saved is not None and not Path(saved["export"], "config.json").is_file():
                saved = None
            if saved is None:
                result = D.run(cfg)
                if result.export is None:
                    raise RuntimeError(f"distill {name}: no exported checkpoint")
                saved = {"export": result.export, "run_id": result.mlflow_run_id,
                         "steps": int(result.metrics.get("step", result.plan.total_steps))}  # fmt: skip
                self._done(run_dir, key, saved)
            self.log(f"   {saved['steps']} optimiser steps -> {saved['export']}")
        if saved.get("run_id"):
            self.runs[stage] = saved["run_id"]
        return Trained(name, saved["export"], saved.get("run_id"), saved["steps"])

    def evaluate(self, section: StageSection, world: Path, trained: Trained, label: str, tag: str = "") -> Any:
        """Evaluate ``trained`` on the world's held-out split of ``section`` (``<out>/eval/<name><tag>``: another
        ``tag`` keeps another evaluation of the same training), attached to its training run; returns its tables."""
        from pipelines import evaluate as E
        from rgpt4d_core.eval.report import TABLE_JSON, read_tables

        directory = self.out / "eval" / f"{trained.name}{tag}"
        values = {"benchmark.path": world, "engine.checkpoint": trained.export, "output.dir": directory,
                  "output.name": label, "mlflow.tracking_uri": self.tracking_uri}  # fmt: skip
        if trained.run_id:
            values["mlflow.run_id"] = trained.run_id
        job = load(E.EvaluateJob, conf_files(section.config), section.overrides, values)
        key = digest(
            to_yaml(job), *(file_digest(Path(trained.export, f)) for f in ("config.json", INPUT_SPEC_FILE))
        )
        stage = f"evaluate {trained.name}{tag}"
        with self.stage(stage):
            if self._reuse(stage, directory, key, directory / TABLE_JSON) is None:
                result = E.run(job)
                self._done(directory, key, {"items": len(result.predictions)})
        tables = read_tables(directory / TABLE_JSON)
        return tables

    def serve_job(self, section: StageSection, world: Path, trained: Trained,
                  values: dict[str, Any] | None = None) -> Any:  # fmt: skip
        """The :class:`pipelines.serve.ServeJob` of ``trained`` (the section's config and overrides, then the chain's
        paths: media root ``out``, the world's test split as the page's one-click examples; then ``values``, e.g.
        ``{"server.port": 8001}``)."""
        from pipelines import serve as S

        return S.load_job(conf_files(section.config), section.overrides, {
            "engine.checkpoint": trained.export, "security.media_root": self.out, "ui.examples": world,
            **(values or {})})  # fmt: skip

    def serve_one_question(self, section: StageSection, world: Path, trained: Trained) -> dict[str, Any]:
        """Start Ray Serve on ``trained`` and answer one region-level test question over HTTP; then shut down."""
        from ray import serve

        from pipelines import serve as S
        from rgpt4d_core.eval.benchmark import load_benchmark

        marked = [i for i in load_benchmark(str(world), "test").items if i.regions]
        item = next((i for i in marked if i.task == "T"), marked[0])  # a motion question reads best in a demo
        job = self.serve_job(section, world, trained, {"server.port": free_port()})
        payload = {
            "video": {"path": str(Path(item.video).relative_to(self.out))},
            "question": item.question,
            "options": list(item.options),
            "regions": [{"obj_id": r.obj_id, "box": list(r.box), "label": r.label} for r in item.regions],
        }
        with self.stage("serve one question"):
            url, _ = S.start(job)
            self.log(f"   Serve is up: page {url}/ui/ , API POST {url}/v1/vqa (for this question only; "
                     "`make demo ARGS=--serve` keeps serving)")  # fmt: skip
            try:
                request = urllib.request.Request(f"{url}/v1/vqa", data=json.dumps(payload).encode(),
                                                 headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
                start = time.perf_counter()
                with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback only
                    answer = json.loads(response.read())
                latency_ms = (time.perf_counter() - start) * 1e3
            finally:
                serve.shutdown()
        return {"url": f"{url}/v1/vqa", "item": item, "answer": answer, "latency_ms": latency_ms, "payload": payload}
