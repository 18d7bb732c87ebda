"""Shard layout benchmark: schema v2 (clip table + question table) vs v1 (one row per question), side by side.

    .venv/bin/python bench/shards.py [--clips 24] [--questions-per-clip 8] [--batch 8] [--epochs 3]

One run, on the same data (``tests/distill_testkit.write_shards``: real ``l4p_tiny`` targets, 16 PNG frames at
64x64, ``--questions-per-clip`` questions about each clip) written as v2 and as the v1 layout (the v2 join written
with pyarrow's defaults, as Ray Data's ``write_parquet`` wrote v1 sets; ``tests/shards_testkit.write_v1_copy``):

1. bytes on disk per question, v2 / v1 (target <= 0.2x at >= 8 questions per clip), against v1 as pyarrow wrote
   it (dictionary encoding stores a value repeated within a row group once, so a clip's repeated targets were
   partly deduplicated on disk) and against v1 storing every copy; and the same from the schema at the real L4P
   shapes (fp16 targets, ~1 MB of JPEG frames, ~300 B of QA per question);
2. training-reader samples/s delivered to a Ray Train worker (one ``TorchTrainer`` worker iterating its dataset
   shard with the distill job's local shuffle buffer and building ``TrainingBatch`` objects, no model), v2 / v1
   (target >= 1.0x); v2 joins through the worker's ``ClipStore`` (its hit rate is printed), v1 decodes each row's
   own copy of its clip. Timed inside the worker from its first batch on (start-up excluded). The same readers
   in this process without Ray (2a) separate the readers' own cost from Ray Data's delivery;
3. peak RSS of that worker process (``ru_maxrss``) after its first epoch vs after all 10 (target <= 1.2x:
   streaming; the same process, so the baseline of Ray, torch and pyarrow is the same on both sides).

Every figure is printed with ``os.getloadavg()`` beside it: the machine is shared, so read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from rgpt4d_core.experts.base import ExpertSpec  # noqa: E402
from rgpt4d_core.shards import schema as S  # noqa: E402
from rgpt4d_core.shards.batch import TrainingBatch, assemble_batch, decode_clip_rows  # noqa: E402
from rgpt4d_core.shards.manifest import Manifest, read_manifest  # noqa: E402
from rgpt4d_core.shards.reader import ShardSet, open_shards  # noqa: E402
from tests.distill_testkit import write_shards  # noqa: E402
from tests.shards_testkit import write_v1_copy  # noqa: E402

#: the v1 columns the v1 training reader loaded (its TRAIN_COLUMNS): both tables' training columns, no clip id
V1_TRAIN_COLUMNS = [c for c in dict.fromkeys([*S.QUESTION_TRAIN_COLUMNS, *S.CLIP_TRAIN_COLUMNS]) if c != S.CLIP_ID]
REAL_L4P = ExpertSpec("l4p", "v1", 16, (224, 224), (14, 21, 28, 36), (8, 16, 16), 1408, (16, 224, 224), (16, 16, 16),
                      targets=("latents", "depth", "flow_2d_backward", "dyn_mask", "camray"))  # fmt: skip


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"[load {one:.2f} {five:.2f} {fifteen:.2f}]"


def v1_batch(table: Any, shapes: dict) -> TrainingBatch:
    """A v1 micro-batch: each row carries its own copy of its clip, decoded per row (what the v1 reader did)."""
    t = table.append_column(S.CLIP_ID, table.column(S.SAMPLE_ID))  # one "clip" per row
    return assemble_batch(t, decode_clip_rows(t, shapes))


def reader_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: iterate the dataset shard like ``pipelines/_distill_worker.py`` and build batches."""
    import ray.train

    from rgpt4d_core.shards.clip_store import ClipStore

    manifest = Manifest.from_json(config["manifest_json"])
    store = ClipStore(ShardSet(config["root"], manifest), config["cache_bytes"]) if config["v2"] else None
    shapes = manifest.shapes()
    shard = ray.train.get_dataset_shard("train")
    samples, t0, rss_first = 0, None, 0
    for epoch in range(config["epochs"]):
        if epoch == 1:
            rss_first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for table in shard.iter_batches(batch_size=config["batch"], batch_format="pyarrow", drop_last=True,
                                        local_shuffle_buffer_size=256, local_shuffle_seed=epoch):  # fmt: skip
            batch = store.batch(table) if store is not None else v1_batch(table, shapes)
            if t0 is None:
                t0 = time.perf_counter()  # from the first batch on: start-up and first-read latency excluded
                continue
            samples += len(batch)
    wall = time.perf_counter() - (t0 or time.perf_counter())
    Path(config["out"]).write_text(json.dumps({  # this machine only; Train V2 keeps metrics with checkpoints
        "samples": samples, "wall_s": wall, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "maxrss_first_epoch_kb": rss_first or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "hit_rate": store.stats.hit_rate if store else 0.0,
        "row_groups_read": store.stats.row_groups_read if store else 0}))  # fmt: skip


def keep_ok(batch: Any) -> Any:
    import pyarrow.compute as pc

    return batch.filter(pc.equal(batch.column(S.STATUS), S.STATUS_OK))


def train_read(root: str, v2: bool, epochs: int, batch: int, storage: Path) -> dict[str, float]:
    """One ``TorchTrainer`` (1 worker) reading ``epochs`` epochs of the set at ``root``; the worker's metrics."""
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.data.DataContext.get_current().enable_progress_bars = False
    manifest = read_manifest(root, check_version=v2)
    if v2:
        shards = open_shards(root)
        ds = ray.data.read_parquet(shards.file_uris(S.QUESTIONS)).select_columns(list(S.QUESTION_TRAIN_COLUMNS))
    else:
        ds = ray.data.read_parquet([f"{root}/{f.path}" for f in manifest.files]).select_columns(V1_TRAIN_COLUMNS)
    ds = ds.map_batches(keep_ok, batch_format="pyarrow", batch_size=None)
    config = {"root": root, "manifest_json": manifest.to_json(), "v2": v2, "epochs": epochs, "batch": batch,
              "cache_bytes": 1 << 30}  # fmt: skip
    name = f"bench-shards-{'v2' if v2 else 'v1'}-{epochs}"
    config["out"] = str(storage / f"{name}.json")
    storage.mkdir(parents=True, exist_ok=True)
    scaling = ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5})  # leaves the read tasks a CPU
    trainer = TorchTrainer(reader_loop, train_loop_config=config, scaling_config=scaling,
                           datasets={"train": ds}, run_config=RunConfig(name=name, storage_path=str(storage)))  # fmt: skip
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return json.loads(Path(config["out"]).read_text())


def local_read(root: str, v2: bool, epochs: int, batch: int) -> float:
    """Samples/s of the in-process reader (bare pyarrow, no Ray) over ``epochs`` epochs, first batch excluded."""
    import pyarrow as pa

    from rgpt4d_core.shards.reader import open_parquet

    manifest = read_manifest(root, check_version=v2)
    samples, t0 = 0, None
    for _ in range(epochs):
        if v2:
            batches = open_shards(root).iter_batches(batch, include_partial=False)
        else:
            tables = (keep_ok(pa.Table.from_batches([rb])) for f in manifest.files
                      for rb in open_parquet(f"{root}/{f.path}").iter_batches(batch, columns=V1_TRAIN_COLUMNS))
            batches = (v1_batch(t, manifest.shapes()) for t in tables if len(t))
        for b in batches:
            if t0 is None:
                t0 = time.perf_counter()
                continue
            samples += len(b)
    return samples / (time.perf_counter() - (t0 or time.perf_counter()))


def real_scale_bytes(questions_per_clip: float, rows_per_group: int = 8) -> tuple[float, float, float]:
    """Bytes per question at the real L4P shapes (fp16 targets + ~1 MB JPEG frames per clip, ~300 B of QA): v1
    storing every copy, v1 as pyarrow wrote it (one copy per distinct clip in each row group of ``rows_per_group``
    rows, 256 MiB / 30.5 MB in conf/precompute/cluster.yaml, a video's questions adjacent), and v2."""
    clip = S.tensor_nbytes(S.tensor_shapes(REAL_L4P)) + 1_000_000
    distinct = 1 + (rows_per_group - 1) / questions_per_clip  # expected clips touched by a window of rows
    return clip + 300, clip * min(1.0, distinct / rows_per_group) + 300, clip / questions_per_clip + 300


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--questions-per-clip", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10, help="epochs each reader runs (throughput and RSS)")
    args = p.parse_args()
    from pipelines._ray import init_ray

    with tempfile.TemporaryDirectory() as tmp:
        q = args.questions_per_clip
        v2 = str(write_shards(Path(tmp, "v2"), num_samples=args.clips * q, questions_per_clip=q, files=3))
        v1 = write_v1_copy(v2, str(Path(tmp, "v1")))
        v1_plain = write_v1_copy(v2, str(Path(tmp, "v1-plain")), dictionary=False)
        m2 = open_shards(v2).manifest
        n = m2.counts.total
        b2 = m2.bytes / n
        print(f"world: {args.clips} clips x {q} questions = {n} questions (l4p_tiny targets "
              f"{S.tensor_nbytes(m2.shapes()) / 1e3:.0f} kB/clip, PNG frames 16x64x64)")
        print(f"\n1. bytes on disk per question (v2 {b2 / 1e3:.1f} kB; target v2/v1 <= 0.2):")
        bytes_ratios = []
        for label, root in (("v1 as written (dictionary-encoded)", v1), ("v1, every copy stored", v1_plain)):
            b1 = read_manifest(root, check_version=False).bytes / n
            bytes_ratios.append(round(b2 / b1, 3))
            print(f"   {label:<36} {b1 / 1e3:8.1f} kB | v2/v1 x{b2 / b1:.3f}  {load()}")
        for qpc in (q, 210_000 / 16_000):
            r1, r1_dict, r2 = real_scale_bytes(qpc)
            print(f"   real L4P shapes (schema), {qpc:4.1f} questions/clip: v2 {r2 / 1e6:5.2f} MB | v1 every copy "
                  f"{r1 / 1e6:5.2f} MB (x{r2 / r1:.3f}) | v1 dictionary-encoded in 8-row groups ~{r1_dict / 1e6:5.2f} MB "
                  f"(x{r2 / r1_dict:.3f})")  # fmt: skip

        l1, l2 = local_read(v1, False, args.epochs, args.batch), local_read(v2, True, args.epochs, args.batch)
        print(f"\n2a. in-process reader (bare pyarrow, no Ray; {args.epochs} epochs, batch {args.batch}): v1 {l1:8.1f} "
              f"samples/s | v2 {l2:8.1f} samples/s | v2/v1 x{l2 / l1:.2f}  {load()}")  # fmt: skip
        init_ray(num_cpus=2)
        runs = Path(tmp, "runs")
        t1 = train_read(v1, False, args.epochs, args.batch, runs)
        t2 = train_read(v2, True, args.epochs, args.batch, runs)
        s1, s2 = t1["samples"] / t1["wall_s"], t2["samples"] / t2["wall_s"]
        print(f"\n2b. training reader in a Ray Train worker ({args.epochs} epochs, batch {args.batch}, local shuffle 256):")
        print(f"   v1 {s1:8.1f} samples/s | v2 {s2:8.1f} samples/s | v2/v1 x{s2 / s1:.2f} (target >= 1.0)  {load()}")
        print(f"   v2 clip cache: hit rate {t2['hit_rate']:.3f}, {t2['row_groups_read']} row groups read for "
              f"{args.epochs} epochs ({len(m2.files_of(S.CLIPS))} clip files)")  # fmt: skip

        print(f"\n3. peak RSS of the Train worker process (ru_maxrss) after 1 and after {args.epochs} epochs "
              f"(target <= 1.2):")  # fmt: skip
        ratios = {}
        for label, t in (("v1", t1), ("v2", t2)):
            r1, rn = t["maxrss_first_epoch_kb"] / 1024, t["maxrss_kb"] / 1024
            ratios[label] = rn / r1
            print(f"   {label}: 1 epoch {r1:7.1f} MiB | {args.epochs} epochs {rn:7.1f} MiB | x{rn / r1:.3f}  {load()}")
        print(json.dumps({"bytes_v2_over_v1_as_written": bytes_ratios[0], "bytes_v2_over_v1_every_copy": bytes_ratios[1],
                          "train_reader_v2_over_v1": round(s2 / s1, 3), "local_reader_v2_over_v1": round(l2 / l1, 3),
                          "v2_rss_last_over_first_epoch": round(ratios["v2"], 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
