"""Statistics of a shard set's expert targets for ``P4DLossConfig.normalize_targets`` (issue 16).

Computed on the distillation driver, once per job, from the clip table (schema v2: a clip's targets are stored once
however many questions refer to it): every ``stride``-th committed clip file whose clips are referred to by a
question of the training ``split`` is read whole, so the statistics come from at most ``max_clips`` clips spread
evenly over the shard set, the same ones in every run (a resumed or repeated job gets identical statistics).
Why on the driver and not in the manifest: shards written before this existed, or by another precompute
configuration, need no rewrite, and the manifest (and so every stamp keyed on it) stays unchanged.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc

from rgpt4d_core.losses.normalise import MomentAccumulator, TargetNorm
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.batch import tensor_stack
from rgpt4d_core.shards.reader import ShardSet, open_parquet

#: clips read for the statistics by default (≈ 0.5 MB of targets each at the ``l4p_tiny`` shapes)
DEFAULT_MAX_CLIPS = 256


def target_norm_from_shards(shards: ShardSet, split: str, depth_eps: float,
                            max_clips: int = DEFAULT_MAX_CLIPS) -> TargetNorm:  # fmt: skip
    """Per-channel mean and std of every provided target (``normalise.py`` layout) over ok clips of ``split``
    (``""`` = all), from an evenly spaced subset of the clip files holding about ``max_clips`` clips."""
    questions = shards.read_table(S.QUESTIONS, columns=[S.CLIP_ID, S.SPLIT, S.STATUS])
    keep = pc.equal(questions.column(S.STATUS), S.STATUS_OK)
    if split:
        keep = pc.and_(keep, pc.equal(questions.column(S.SPLIT), split))
    wanted = pa.array(sorted(set(questions.filter(keep).column(S.CLIP_ID).to_pylist())), type=pa.string())
    files = shards.manifest.files_of(S.CLIPS)
    clips_per_file = max(1, sum(f.rows for f in files) // max(1, len(files)))
    stride = max(1, math.ceil(len(files) * clips_per_file / max(1, max_clips)))
    shapes = shards.manifest.shapes()
    provided = [n for n in S.TENSOR_COLUMNS if shapes.get(n) is not None]
    acc = MomentAccumulator(depth_eps)
    for uri in shards.file_uris(S.CLIPS)[::stride]:
        table = open_parquet(uri).read(columns=[S.CLIP_ID, S.STATUS, *provided])
        ok = pc.and_(pc.equal(table.column(S.STATUS), S.STATUS_OK), pc.is_in(table.column(S.CLIP_ID), wanted))
        table = table.filter(ok)
        if table.num_rows == 0:
            continue
        stacks = {n: tensor_stack(table.column(n), shapes[n], n) for n in provided}  # type: ignore[arg-type]
        for i in range(table.num_rows):
            acc.add({n: s[i] for n, s in stacks.items()})
    return acc.result()

