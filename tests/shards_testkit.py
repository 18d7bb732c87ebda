"""Small builders shared by the shard tests: a tiny expert spec, a clip, targets and a QA item (seeded)."""

from __future__ import annotations

import numpy as np

from rgpt4d_core.experts.base import DENSE_TARGETS, LATENTS, ExpertSpec, ExpertTargets
from rgpt4d_core.types import Clip, Region, VQAItem

T, H, W = 4, 32, 48


def tiny_spec(targets: tuple[str, ...] = (LATENTS, *DENSE_TARGETS)) -> ExpertSpec:
    """A tiny expert spec: 2 hooks, latent grid 2x2x3 of width 8, dense 4x8x12, camray 2x2x2."""
    return ExpertSpec(
        name="testexpert",
        revision="rev-test",
        num_frames=T,
        input_size=(16, 16),
        hook_layers=(1, 2),
        latent_grid=(2, 2, 3),
        latent_dim=8,
        dense_shape=(T, 8, 12),
        camray_shape=(2, 2, 2),
        targets=targets,
    )


def tiny_clip(seed: int = 0, uri: str = "/data/v0.mp4") -> Clip:
    """Smooth seeded colour gradients (JPEG-friendly), uint8 [T, H, W, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, size=(T, 1, 1, 3))
    wave = np.sin(2 * np.pi * (xx + 0.5 * yy)[None, :, :, None] + phase)
    frames = (127.5 + 100.0 * wave).astype(np.uint8)
    idx = np.array([0, 3, 6, 9], dtype=np.int64)
    return Clip(frames=frames, timestamps_s=idx / 10.0, frame_indices=idx, fps=10.0, num_source_frames=10, uri=uri)


def tiny_targets(spec: ExpertSpec, seed: int = 0) -> ExpertTargets:
    """Random targets of ``spec``'s shapes (float32) for the targets it provides."""
    rng = np.random.default_rng(seed)
    t, h, w = spec.dense_shape
    full = {
        "latents": rng.normal(size=(len(spec.hook_layers), *spec.latent_grid, spec.latent_dim)),
        "depth": rng.uniform(0.5, 20.0, size=(t, h, w)),
        "flow_2d_backward": rng.normal(scale=3.0, size=(t, h, w, 2)),
        "dyn_mask": rng.uniform(0, 1, size=(t, h, w)),
        "camray": rng.normal(size=(*spec.camray_shape, 6)),
    }
    return ExpertTargets(**{k: v.astype(np.float32) for k, v in full.items() if spec.provides(k)})


def tiny_item(qid: str = "q0", video: str = "/data/v0.mp4") -> VQAItem:
    return VQAItem(
        id=qid,
        video=video,
        question="How far does <obj_1> move relative to <obj_2>?",
        options=("1 m", "2 m", "3 m", "4 m"),
        answer="2 m",
        task="displacement",
        som_image="som/v0.png",
        regions=(Region(1, (0.1, 0.2, 0.3, 0.4), label="box"), Region(2, (0.5, 0.5, 0.9, 1.0), label=None)),
        duration_s=1.0,
        fps=10.0,
    )


#: the sampling config the shard tests record (what make_clip_id hashes with the video URI)
SAMPLING = {"num_frames": 4, "size": [32, 48], "image_format": "png"}


def tiny_rows(n_clips: int, questions_per_clip: int = 1, n_err: int = 0, offset: int = 0,
              spec: ExpertSpec | None = None) -> tuple[list[dict], list[dict]]:
    """Clip rows and question rows (in clip order) of ``n_clips`` ok clips with ``questions_per_clip`` ok
    questions each, plus ``n_err`` undecodable videos (an error clip row and one error question each)."""
    from rgpt4d_core.shards.codec import make_clip_id
    from rgpt4d_core.shards.rows import SampleSource, clip_error_row, clip_row, question_row
    from rgpt4d_core.shards.schema import tensor_shapes

    spec = spec or tiny_spec()
    shapes = tensor_shapes(spec)
    clips, questions = [], []
    for i in range(offset, offset + n_clips):
        video = f"/data/v{i}.mp4"
        cid = make_clip_id(video, SAMPLING)
        clips.append(clip_row(cid, video, spec, tiny_clip(i, video), tiny_targets(spec, i), shapes, image_format="png"))
        for q in range(questions_per_clip):
            questions.append(question_row(SampleSource(tiny_item(f"q{i}-{q}", video), "train"), cid))
    for i in range(offset, offset + n_err):
        video = f"/data/missing{i}.mp4"
        cid = make_clip_id(video, SAMPLING)
        clips.append(clip_error_row(cid, video, spec, "decode:missing", "no such file"))
        questions.append(question_row(SampleSource(tiny_item(f"bad{i}", video), "train"), cid,
                                      ("decode:missing", "no such file")))
    return clips, questions


def write_v1_copy(v2_root: str, v1_root: str, row_group_bytes: int = 8 << 20, dictionary: bool = True) -> str:
    """Write the schema-v1 layout of a committed v2 set: ``<v1_root>/data/part-*.parquet`` with one row per question
    carrying a copy of its clip's columns (no ``clip_id``), and a version-1 ``_manifest.json`` (written last).

    For the converter test and ``bench/shards.py`` (the code that wrote v1 sets is gone; its layout is the v2 join).
    Row groups are sized by bytes as v1's precompute sized them; ``dictionary`` is pyarrow's (and so Ray Data's)
    default, which stores a value repeated within a row group once: a clip's targets repeated for its questions
    are deduplicated on disk as far as they share a row group (they are still decoded into one copy per row).
    """
    import json

    import pyarrow.parquet as pq

    from rgpt4d_core import storage
    from rgpt4d_core.shards import manifest as M
    from rgpt4d_core.shards import schema as S
    from rgpt4d_core.shards.reader import open_shards

    shards = open_shards(v2_root)
    joined = shards.read_joined().drop_columns([S.CLIP_ID])
    row_bytes = max(1, joined.nbytes // max(1, joined.num_rows))
    files, per_file = [], 64
    for n, lo in enumerate(range(0, joined.num_rows, per_file)):
        rel = f"{M.V1_DATA_DIR}/part-{n:05d}.parquet"
        fs, path = storage.filesystem_for(storage.join(v1_root, rel))
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(joined.slice(lo, per_file), path, filesystem=fs, row_group_size=max(1, row_group_bytes // row_bytes),
                       use_dictionary=dictionary)
        files.append({"path": rel, "rows": min(per_file, joined.num_rows - lo), "bytes": fs.get_file_info(path).size})
    d = json.loads(shards.manifest.to_json())
    d.pop("clip_counts")
    d.update(schema_version=1, schema_fingerprint="fbb7991389ed6f1cb372cc9cb3debede507323ec6fb6a2e21f453d2127bdb862",
             files=files, bytes=sum(f["bytes"] for f in files))
    storage.write_bytes(storage.join(v1_root, M.MANIFEST_NAME), json.dumps(d, indent=2).encode())
    return v1_root
