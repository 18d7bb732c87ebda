"""Precompute job (Ray Data): videos + QA -> frozen-expert targets in versioned Parquet shards + manifest.

    python pipelines/precompute.py --config conf/precompute/tiny.yaml [key=value ...]
    ray job submit --working-dir . -- python pipelines/precompute.py --config conf/precompute/tiny.yaml

Stages (the work itself is framework-free, in ``rgpt4d_core.shards.precompute``):
read QA manifest / video list (driver) -> decode (CPU tasks) -> expert (``map_batches`` with a callable class on
an actor pool; size, batch size, ``num_gpus`` from config) -> encode + write (CPU tasks, ``output.clips_per_file``
videos each). That is the split layout (``compute.fuse_stages: false``, GPU nodes); by default the stages are
fused: each expert actor decodes, runs the expert on, encodes and writes one part of ``output.clips_per_file``
videos per call (``PartActor``), which is faster where CPUs are scarce (``_precompute_job.ComputeConfig``).
Either way each part is one clip row per video into ``<output>/clips/part-*.parquet`` (row groups sized by
bytes), then one question row per QA item into ``<output>/questions/part-*.parquet`` beside it, in the same clip
order (schema v2, :mod:`rgpt4d_core.shards.schema`) -> ``_manifest.json`` covering both tables (last).
The expert's spec (recorded in ``_run.json`` and the manifest) is read on the driver where the expert tells it
without its weights (``l4p``: preset + checkpoint hash), else by a one-off task that builds the expert; each
actor checks that it builds the same spec.

Resume and exactly-once: a re-run into the same output first drops the manifest (the set is incomplete while it
runs), deletes data files a killed writer left unreadable (no Parquet footer; S3 objects appear atomically),
skips the (video, question) pairs present in the complete question files, and writes the rest; a video whose
clip row is already written (the job was killed between a part's clip file and its question file) is not
decoded or run through the expert again, only its missing questions are written. The job refuses to commit a
set in which a clip id or a sample id appears twice, or an ok question's clip is missing or an error row; the
manifest lists exactly the complete files. One job at a time per output directory (two concurrent writers are
not detected).

Under ``ray job submit`` the entry point must be the cluster's Python with this project installed, and a
working dir with large untracked folders needs ``--runtime-env-json '{"working_dir": ".", "excludes":
["/data/", "/out/", "/runs/"]}'`` (Ray refuses uploads over 100 MiB).

The job's configuration (``PrecomputeJob`` and its sections) and ``Summary`` are in ``_precompute_job.py``.
"""

from __future__ import annotations

import importlib
import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python pipelines/<job>.py`: put this repository first on sys.path
    import _paths  # noqa: F401  (pipelines/_paths.py, found beside the script)

import pyarrow as pa

from pipelines._cli import job_from_args, job_parser
from pipelines._console import progress_wanted
from pipelines._precompute_job import ComputeConfig, InputConfig, OutputConfig, PrecomputeJob, Summary
from pipelines._precompute_timing import PartDone, startup_s, steady_clips_per_s
from pipelines._progress import polled
from rgpt4d_core import config as config_lib
from rgpt4d_core import storage
from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.experts.registry import ExpertConfig, build_expert, spec_without_weights
from rgpt4d_core.inputs import check_expert_frames
from rgpt4d_core.shards import manifest as M
from rgpt4d_core.shards import precompute as P
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.commit import commit
from rgpt4d_core.shards.reader import WrittenState, scan_written
from rgpt4d_core.shards.writer import clip_rows_per_group, write_part

__all__ = [
    "ComputeConfig",
    "ExpertActor",
    "InputConfig",
    "OutputConfig",
    "PartActor",
    "PrecomputeJob",
    "Summary",
    "estimated_clip_bytes",
    "load_records",
    "main",
    "run",
]


# ---- Ray stage callables (thin: the work is in rgpt4d_core.shards.precompute) -----------------------------


def _import_plugins(plugins: list[str]) -> None:
    for name in plugins:
        importlib.import_module(name)


def _decode_batch(batch: pa.Table, sampling: P.SamplingConfig) -> pa.Table:
    return P.to_table(P.decode_requests(batch.to_pylist(), sampling))


class ExpertActor:
    """Holds one frozen expert (built inside the actor from config) and applies it to request batches.

    ``spec`` is what the driver recorded for the output (``_expert_spec``); an expert that builds to another
    spec here (other weights on this node) stops the job before it writes a row.
    """

    def __init__(self, expert: ExpertConfig, plugins: list[str], torch_threads: int, spec: dict[str, Any]) -> None:
        _import_plugins(plugins)
        P.limit_threads(torch_threads)
        self.expert = build_expert(expert)
        if self.expert.spec.to_dict() != spec:
            raise RuntimeError(f"the expert built in this actor has spec {self.expert.spec.to_dict()}, the driver "
                               f"recorded {spec} for {expert}: are the weights the same file on every node?")  # fmt: skip

    def __call__(self, batch: pa.Table) -> pa.Table:
        return P.to_table(P.expert_requests(self.expert, batch.to_pylist()))


class PartActor(ExpertActor):
    """The fused stages (``compute.fuse_stages``): decodes a batch of requests (one part, ``output.clips_per_file``
    videos), runs the expert on it ``compute.batch_size`` clips at a time, and encodes and writes the part."""

    def __init__(self, expert: ExpertConfig, plugins: list[str], torch_threads: int, spec: dict[str, Any],
                 sampling: P.SamplingConfig, root: str, rows_per_group: int, batch_size: int) -> None:  # fmt: skip
        super().__init__(expert, plugins, torch_threads, spec)
        self.sampling, self.spec, self.root = sampling, self.expert.spec, root
        self.rows_per_group, self.batch_size = rows_per_group, max(1, batch_size)

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.time()
        decoded = P.decode_requests(batch.to_pylist(), self.sampling)
        done = [r for i in range(0, len(decoded), self.batch_size)
                for r in P.expert_requests(self.expert, decoded[i : i + self.batch_size])]  # fmt: skip
        return _write_requests(done, self.spec, self.sampling, self.root, self.rows_per_group, started)


def _write_requests(requests: list[dict[str, Any]], spec: ExpertSpec, sampling: P.SamplingConfig, root: str,
                    rows_per_group: int, started: float) -> pa.Table:  # fmt: skip
    """Encode and write one part; returns one row: its clip and question rows and when its call started and
    finished (``time.time()`` here, where the work ran: see :mod:`pipelines._precompute_timing`)."""
    clips, questions = P.rows_tables(*P.rows_from_requests(requests, spec, sampling), spec)
    part = write_part(root, clips, questions, rows_per_group)
    return pa.table({"clip_rows": [part.clip_rows], "question_rows": [part.question_rows], "started": [started],
                     "finished": [time.time()]})  # fmt: skip


def _encode_and_write(batch: pa.Table, spec: dict[str, Any], sampling: P.SamplingConfig, root: str,
                      rows_per_group: int) -> pa.Table:
    """Encode a batch of requests into clip and question rows and write them as one part of both tables."""
    return _write_requests(batch.to_pylist(), ExpertSpec.from_dict(spec), sampling, root, rows_per_group,
                           time.time())  # the split layout times only this stage: its steady rate is approximate


def _spec_of(expert: ExpertConfig, plugins: list[str]) -> dict[str, Any]:
    _import_plugins(plugins)
    return build_expert(expert).spec.to_dict()


def _expert_spec(job: PrecomputeJob) -> ExpertSpec:
    """The expert's spec, read on the driver where the expert tells it without its weights (``l4p``: the
    preset and the checkpoint's hash); otherwise from a one-off task that builds the expert where the actors will
    run (a GPU, the plugins). The actors check that they build the same spec."""
    import ray

    spec = spec_without_weights(job.expert)
    if spec is not None:
        return spec
    task = ray.remote(_spec_of).options(num_gpus=job.compute.num_gpus_per_actor, num_cpus=0,
                                        **job.ray_target().remote_args())  # fmt: skip
    return ExpertSpec.from_dict(ray.get(task.remote(job.expert, list(job.plugins))))


# ---- driver --------------------------------------------------------------------------------------------------


def load_records(inp: InputConfig) -> list[dict[str, Any]]:
    """All input records (QA lines and plain videos), in input order."""
    records: list[dict[str, Any]] = []
    if inp.dataset_root:
        for split in inp.splits:
            uri = storage.join(inp.dataset_root, "questions", f"{split}.jsonl")
            text = storage.read_bytes(uri).decode()
            records += P.qa_records(text, split, inp.video_root or inp.dataset_root, f"{split}.jsonl")
    if inp.qa_manifest:
        text = storage.read_bytes(inp.qa_manifest).decode()
        root = inp.video_root or inp.qa_manifest.rsplit("/", 1)[0]
        split = inp.splits[0] if inp.splits else "train"
        records += P.qa_records(text, split, root, inp.qa_manifest.rsplit("/", 1)[-1])
    if inp.video_list:
        lines = storage.read_bytes(inp.video_list).decode().splitlines()
        root = inp.video_root or inp.video_list.rsplit("/", 1)[0]
        uris = [P.resolve_video(u.strip(), root) for u in lines if u.strip()]
        records += P.video_records(uris, inp.splits[0] if inp.splits else "train")
    if not (inp.dataset_root or inp.qa_manifest or inp.video_list):
        raise config_lib.ConfigError("input: set dataset_root, qa_manifest or video_list")
    return records[: inp.limit] if inp.limit > 0 else records


def _delete(uri: str) -> None:
    if storage.is_s3(uri):
        storage.s3fs_for().rm(uri[len(storage.S3_SCHEME) :])
    else:
        Path(uri).unlink(missing_ok=True)


def estimated_clip_bytes(spec: ExpertSpec, sampling: P.SamplingConfig) -> int:
    """Rough bytes of one ok clip row: fp16 targets + encoded frames (JPEG ~1/10, PNG ~1/2 of raw RGB)."""
    h, w = sampling.frame_size or spec.input_size
    raw_frames = sampling.num_frames * h * w * 3
    return S.tensor_nbytes(S.tensor_shapes(spec)) + raw_frames // (10 if sampling.image_format == "jpeg" else 2)


def _write(job: PrecomputeJob, spec: ExpertSpec, requests: list[dict[str, Any]]) -> list[PartDone]:
    """Run the dataset; returns each written part's timing, as its worker recorded it."""
    import ray

    c, per_part = job.compute, job.output.clips_per_file
    renv = job.ray_target().remote_args()
    rows_per_group = clip_rows_per_group(job.output.row_group_bytes, estimated_clip_bytes(spec, job.sampling))
    actor_kwargs = {"expert": job.expert, "plugins": list(job.plugins), "torch_threads": c.torch_threads,
                    "spec": spec.to_dict()}  # fmt: skip
    pool = {"compute": ray.data.ActorPoolStrategy(size=c.num_actors), "num_gpus": c.num_gpus_per_actor,
            "num_cpus": c.num_cpus_per_actor, "batch_format": "pyarrow", **renv}  # fmt: skip
    ds: Any
    if c.fuse_stages:  # one block of exactly one part's requests per actor call (the last part may be smaller)
        ds = ray.data.from_arrow([P.to_table(requests[i : i + per_part]) for i in range(0, len(requests), per_part)])
        ds = ds.map_batches(PartActor, fn_constructor_kwargs={**actor_kwargs, "sampling": job.sampling,
                            "root": job.output.uri, "rows_per_group": rows_per_group, "batch_size": c.batch_size},
                            batch_size=per_part, **pool)  # fmt: skip
    else:
        ds = ray.data.from_items(requests, override_num_blocks=-(-len(requests) // max(1, c.decode_batch_size)))
        ds = ds.map_batches(_decode_batch, fn_kwargs={"sampling": job.sampling}, batch_size=c.decode_batch_size,
                            batch_format="pyarrow", num_cpus=c.num_cpus_per_task, memory=c.decode_memory_mb << 20,
                            **renv)  # fmt: skip
        ds = ds.map_batches(ExpertActor, fn_constructor_kwargs=actor_kwargs, batch_size=c.batch_size, **pool)
        ds = ds.map_batches(_encode_and_write, fn_kwargs={"spec": spec.to_dict(), "sampling": job.sampling,
                            "root": job.output.uri, "rows_per_group": rows_per_group},
                            batch_size=per_part, batch_format="pyarrow", num_cpus=c.num_cpus_per_task,
                            **renv)  # fmt: skip
    parts = []
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        cols = [batch.column(c).to_pylist() for c in ("started", "finished", "clip_rows")]
        parts += [PartDone(*row) for row in zip(*cols, strict=True)]
    return parts


def _resume_state(root: str, summary: Summary) -> tuple[WrittenState, set[tuple[str, str]], dict[str, list[Any]]]:
    """What ``root`` already holds after deleting partial files: the state, written (video, question id) pairs and
    the written clips by video (``[status, reason, message]``)."""
    state = scan_written(root)
    for uri in state.partial:
        _delete(uri)
    summary.removed_partial_files = len(state.partial)
    q, c = state.questions, state.clips
    written = set(zip(q.column(S.VIDEO_URI), q.column(S.QUESTION_ID), strict=True))
    clips = {v: [s, r, m] for v, s, r, m in zip(c.column(S.VIDEO_URI), c.column(S.STATUS), c.column(S.ERROR_REASON),
                                                 c.column(S.ERROR_MESSAGE), strict=True)}  # fmt: skip
    return state, written, clips


def run(job: PrecomputeJob) -> Summary:
    """Run the job (Ray must be initialised, see :func:`main`); returns the summary after the manifest is written."""
    t0, t0_epoch = time.perf_counter(), time.time()
    root = job.output.uri
    summary = Summary(output=root)
    _import_plugins(job.plugins)
    spec = _expert_spec(job)
    check_expert_frames(job.sampling.num_frames, spec.name, spec.num_frames)  # before any video is decoded
    sampling = job.sampling.to_dict()
    M.claim_directory(root, spec, sampling)
    M.remove_manifest(root)  # incomplete from here until the new manifest lands
    state, written, written_clips = _resume_state(root, summary)
    plan = P.build_requests(load_records(job.input), written, written_clips)
    summary.videos, summary.records = len(plan.requests), plan.num_records
    summary.skipped_written, summary.skipped_duplicate = plan.skipped_written, plan.skipped_duplicate
    summary.clips_reused = sum(1 for r in plan.requests if r.get(P.REQ_CLIP_DONE) is not None)
    if plan.requests:
        before = state.questions.keys.num_rows
        with polled(plan.num_records, "precompute", "sample",
                    poll=lambda: scan_written(root).questions.keys.num_rows - before,
                    interval_s=5.0, enabled=progress_wanted()):  # fmt: skip
            parts = _write(job, spec, plan.requests)
        summary.startup_s = startup_s(t0_epoch, parts)
        summary.steady_clips_per_s = steady_clips_per_s(parts, first_round=job.compute.num_actors)
    summary.wall_s = time.perf_counter() - t0

    final = scan_written(root)
    for uri in final.partial:  # cannot come from this run (every write task finished); do not commit them
        _delete(uri)
    new = [(sid, s, r) for sid, s, r in zip(final.questions.column(S.SAMPLE_ID), final.questions.column(S.STATUS),
                                            final.questions.column(S.ERROR_REASON), strict=True)
           if sid not in state.sample_ids]  # fmt: skip
    summary.clips_written = len(final.clip_ids - state.clip_ids)
    summary.written_ok = sum(1 for _, s, _ in new if s == S.STATUS_OK)
    summary.written_error = len(new) - summary.written_ok
    summary.errors_by_reason = dict(Counter(r for _, s, r in new if s == S.STATUS_ERROR))
    extra = {"config": json.loads(json.dumps(asdict(job), default=str)), "last_run": {
        "videos": summary.videos, "records": summary.records, "wall_s": round(summary.wall_s, 3),
        "clips_per_s": round(summary.clips_per_s, 4), "startup_s": round(summary.startup_s, 3),
        "steady_clips_per_s": round(summary.steady_clips_per_s, 4)}}  # fmt: skip
    manifest = commit(root, scan_written(root), spec, sampling, extra)
    summary.total_rows, summary.total_clips = manifest.counts.total, manifest.clip_counts.total
    summary.total_bytes, summary.files = manifest.bytes, len(final.files)
    return summary


def main(argv: list[str] | None = None) -> Summary | None:
    args = job_parser(__doc__, "conf/precompute/*.yaml, conf/expert/*.yaml", "output.uri=s3://b/shards").parse_args(argv)
    job = job_from_args(PrecomputeJob, args)
    if job is None:
        return None
    job.ray_target().init()
    summary = run(job)
    print(summary.text(), flush=True)
    return summary


if __name__ == "__main__":
    main()
