"""Generate the synthetic 4D world dataset in parallel with Ray Data (local Ray by default).

    python -m pipelines.make_synthetic --config conf/synth/demo.yaml --out data/synth_demo --preview
    python -m pipelines.make_synthetic --config conf/synth/default.yaml --out s3://bucket/synth --address auto

One Ray task per scene renders it, encodes the video and writes its files (scene record last); the driver shows
a progress bar, then gathers the question files and the dataset card. Re-running with the same ``--out`` skips
scenes already written (resume) when the same generator version and configuration wrote them (``generator.json`` at
the root records both; another one's directory is refused, never mixed). A scene that fails is recorded in ``failures.json`` (and the run exits non-zero)
instead of stopping the others.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

if __package__ in (None, ""):  # `python pipelines/<job>.py`: put this repository first on sys.path
    import _paths  # noqa: F401  (pipelines/_paths.py, found beside the script)

from pipelines._cli import job_from_args, job_parser
from rgpt4d_core import storage
from rgpt4d_core.config import to_yaml
from rgpt4d_core.synth.config import GENERATOR_VERSION, SynthConfig
from rgpt4d_core.synth.scenes import scene_id_for
from rgpt4d_core.synth.writer import build_scene, finalize, write_scene


@dataclass
class MakeSyntheticJob:
    """Job config (``conf/synth/*.yaml`` are deltas over these defaults).

    Attributes:
        synth: the generator config.
        out: dataset root, a local path or ``s3://bucket/prefix``.
        workers: scene tasks running at once (one CPU each).
        preview_scenes: scenes (rows) in the ``--preview`` contact sheet.
        forward_env: environment variables copied from the driver into the scene tasks when set (S3 endpoint and
            region by default). Naming credentials here puts them into the job's runtime_env, readable by anyone
            with access to the cluster's dashboard: prefer credentials configured on the nodes.
    """

    synth: SynthConfig = field(default_factory=SynthConfig)
    out: str = "data/synth"
    workers: int = 2
    preview_scenes: int = 4
    forward_env: list[str] = field(
        default_factory=lambda: list(storage.S3_ENV_VARS)
    )


#: at a world's root, written before its first scene: the generator version and configuration that write it
IDENTITY_FILE = "generator.json"


class WorldMismatchError(ValueError):
    """``--out`` holds scenes that another generator version or configuration wrote: resuming would mix worlds."""


def world_identity(cfg: SynthConfig) -> dict[str, str]:
    """What makes two worlds the same for a resume or a reuse: the generator version and the resolved configuration
    (the same pair gives byte-identical scenes)."""
    return {"generator_version": GENERATOR_VERSION, "synth": to_yaml(cfg)}


def claim_world(out: str, cfg: SynthConfig, done: set[str]) -> None:
    """Record (first run) or check (resume) which generator version and configuration write ``out``.

    Args:
        out: the world's root.
        cfg: this run's generator configuration.
        done: scene ids already written under ``out``.

    Raises:
        WorldMismatchError: ``out`` was written by another generator version or configuration, or holds scenes
            without an identity (written before it was recorded).
    """
    identity = world_identity(cfg)
    path = storage.join(out, IDENTITY_FILE)
    if storage.exists(path):
        saved = json.loads(storage.read_bytes(path))
        if saved != identity:
            what = ("generator " + str(saved.get("generator_version"))
                    if saved.get("generator_version") != GENERATOR_VERSION else "another synth configuration")  # fmt: skip
            raise WorldMismatchError(
                f"{out} was written by {what} (this is generator {GENERATOR_VERSION}); resuming would mix two "
                "worlds: write to a new --out or delete that directory"
            )
        return
    if done:
        raise WorldMismatchError(
            f"{out} holds {len(done)} scenes but no {IDENTITY_FILE} (written by a generator before 1.3.0, or not by "
            "this tool); resuming would mix two worlds: write to a new --out or delete that directory"
        )
    storage.write_bytes(path, json.dumps(identity, indent=1).encode())


def done_scene_ids(out: str) -> set[str]:
    """Scene ids whose record (written last) exists under ``out/scenes``: one listing, local or S3."""
    return {u.rsplit("/", 1)[-1][: -len(".json")] for u in storage.listdir(storage.join(out, "scenes")) if u.endswith(".json")}


def generate_scene(row: dict[str, Any], cfg: SynthConfig, out: str) -> dict[str, Any]:
    """Ray Data map function: build and write one scene; a failure comes back as data (``error`` column)."""
    index = int(row["index"])
    start = time.perf_counter()
    try:
        scene = build_scene(cfg, index)
        write_scene(out, scene)
        n_q, err = len(scene.record["questions"]), ""
    except Exception as exc:  # recorded per scene; the run goes on
        n_q, err = 0, f"{type(exc).__name__}: {exc}"
    return {"index": index, "scene_id": scene_id_for(index), "questions": n_q, "error": err,
            "seconds": time.perf_counter() - start}


def generate(job: MakeSyntheticJob, address: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Generate (or finish) the dataset of ``job``; returns a summary with ``generated``, ``skipped``, ``failed``
    and the dataset ``card`` (``None`` when scenes failed)."""
    from pipelines._progress import bar
    from pipelines._ray import forwarded_env, init_ray

    job.synth.validate()
    done = done_scene_ids(job.out)
    claim_world(job.out, job.synth, done)
    todo = [i for i in range(job.synth.num_scenes) if scene_id_for(i) not in done]
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    if todo:
        init_ray(address)
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_items([{"index": i} for i in todo], override_num_blocks=len(todo)).map(
            functools.partial(generate_scene, cfg=job.synth, out=job.out), num_cpus=1,
            compute=ray.data.TaskPoolStrategy(size=max(1, min(job.workers, len(todo)))),
            runtime_env=forwarded_env(job.forward_env),
        )
        with bar(len(todo), "synthetic world", "scene", enabled=progress) as scenes:
            for row in ds.iter_rows():
                results.append(row)
                scenes.update(1)
    elapsed = time.perf_counter() - start
    failed = sorted((r for r in results if r["error"]), key=lambda r: r["index"])
    summary: dict[str, Any] = {
        "out": job.out, "generated": len(results) - len(failed), "skipped": job.synth.num_scenes - len(todo),
        "failed": len(failed), "seconds": round(elapsed, 2),
        "scenes_per_s": round((len(results) - len(failed)) / elapsed, 3) if results and elapsed > 0 else None,
        "card": None,
    }
    if failed:
        storage.write_bytes(storage.join(job.out, "failures.json"), json.dumps(failed, indent=1).encode())
        return summary
    summary["card"] = finalize(job.out, job.synth)
    return summary


def write_preview(job: MakeSyntheticJob, dest: str | None = None) -> str:
    """Write the contact sheet of the first ``job.preview_scenes`` scenes; returns its URI."""
    from rgpt4d_core.synth.preview import contact_sheet

    ids = [scene_id_for(i) for i in range(min(job.preview_scenes, job.synth.num_scenes))]
    uri = dest or storage.join(job.out, "preview.png")
    storage.write_bytes(uri, contact_sheet(job.out, ids))
    return uri


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__, "conf/synth/*.yaml", "synth.num_scenes=10", full_doc=True,
                        out_help="output root: local path or s3://bucket/prefix (overrides 'out')")  # fmt: skip
    parser.add_argument("--address", default=None, help="Ray address (default: a local Ray; 'auto' for a cluster)")
    parser.add_argument("--preview", nargs="?", const="", default=None, help="write a contact-sheet PNG (default <out>/preview.png)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    job = job_from_args(MakeSyntheticJob, args)
    if job is None:
        return 0
    try:
        summary = generate(job, address=args.address, progress=not args.no_progress)
    except WorldMismatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    card = summary.pop("card")
    print(json.dumps(summary))
    if card is None:
        print(f"{summary['failed']} scene(s) failed: see {storage.join(job.out, 'failures.json')}", file=sys.stderr)
        return 1
    print("questions per task:", json.dumps(card["questions_per_task"]))
    print("questions per split:", json.dumps(card["questions_per_split"]))
    if args.preview is not None:
        print("preview:", write_preview(job, args.preview or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
