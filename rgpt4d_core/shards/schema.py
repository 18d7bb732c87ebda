"""THE shard contract (DESIGN.md §4): schema version, column specs of the two tables, derived Arrow schemas.

Schema v2 stores a shard set as two Parquet tables under one root (plus ``_manifest.json``, written last):

* the **clip table** (``<root>/clips/*.parquet``): one row per sampled clip, keyed by a deterministic ``clip_id``
  (sha256 of the video URI and the sampling config, :func:`~rgpt4d_core.shards.codec.make_clip_id`): the 16
  (configurable) frames the student sees (JPEG/PNG bytes at student resolution) with their timestamps, the frozen
  expert's targets for those frames, provenance and status. A clip is written once however many questions
  refer to it (≈ 30 MB of targets at the real L4P shapes, which v1 repeated for every question);
* the **question table** (``<root>/questions/*.parquet``): one row per training sample, a region-level QA item
  carrying its ``clip_id``; a few hundred bytes. Question files are written beside the clip file of the same
  part, in the same clip order, so a stream of questions in file order is clip-sorted
  (:mod:`~rgpt4d_core.shards.clip_store` relies on that locality).

Tensors are plain Arrow: little-endian ``float16`` bytes in a ``large_binary`` column; the concrete shape of
each tensor column is fixed per shard set (it follows from the expert spec and the sampling config, see
:func:`tensor_shapes`) and is stored in the manifest and in the Arrow field metadata, so a shard opens with bare
pyarrow. Bad clips and bad questions stay rows with ``status == "error"`` (a clip's tensors are then null).
Version 1 (one row per question, the clip columns repeated in each) is refused by the reader with a message
naming the converter (:mod:`rgpt4d_core.shards.convert_v1`).

No other module spells a column name as a string: import the constants below.

Changing a column (name, type, shape symbols, dtype, unit, nullability) requires bumping ``SCHEMA_VERSION``;
``tests/test_shards_schema.py`` holds a snapshot per version and fails otherwise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from rgpt4d_core.experts.base import ExpertSpec

#: bumped whenever :data:`COLUMNS` changes; readers refuse shards written with another version
SCHEMA_VERSION = 2

#: the two tables (and the folders under the shard root holding their data files)
CLIPS = "clips"
QUESTIONS = "questions"

# ---- column names (the only place they are spelled) ---------------------------------------------------------
CLIP_ID = "clip_id"
SAMPLE_ID = "sample_id"
VIDEO_URI = "video_uri"
QUESTION_ID = "question_id"
SPLIT = "split"
SCENE_ID = "scene_id"
EXPERT_NAME = "expert_name"
EXPERT_REVISION = "expert_revision"
STATUS = "status"
ERROR_REASON = "error_reason"
ERROR_MESSAGE = "error_message"
FPS = "fps"
NUM_SOURCE_FRAMES = "num_source_frames"
DURATION_S = "duration_s"
FRAME_INDICES = "frame_indices"
TIMESTAMPS_S = "timestamps_s"
FRAMES = "frames"
FRAMES_FORMAT = "frames_format"
FRAME_HEIGHT = "frame_height"
FRAME_WIDTH = "frame_width"
REGIONS = "regions"
TASK = "task"
QUESTION = "question"
OPTIONS = "options"
ANSWER = "answer"
SOM_IMAGE = "som_image"
LATENTS = "latents"
DEPTH = "depth"
FLOW_2D_BACKWARD = "flow_2d_backward"
DYN_MASK = "dyn_mask"
CAMRAY = "camray"

#: fields of one element of the ``regions`` list
REGION_OBJ_ID = "obj_id"
REGION_BOX = "box"
REGION_LABEL = "label"

#: values of the ``status`` column
STATUS_OK = "ok"
STATUS_ERROR = "error"

#: values of the ``frames_format`` column
IMAGE_FORMATS = ("jpeg", "png")

#: the expert-target tensor columns, in a fixed order (names match ``ExpertTargets`` attributes)
TENSOR_COLUMNS: tuple[str, ...] = (LATENTS, DEPTH, FLOW_2D_BACKWARD, DYN_MASK, CAMRAY)
#: dtype of every tensor column on disk
TENSOR_DTYPE = "float16"

#: Arrow field-metadata keys (bytes, as Arrow stores them)
META_SHAPE = b"rgpt4d.shape"
META_DTYPE = b"rgpt4d.dtype"
META_UNIT = b"rgpt4d.unit"
#: Arrow schema-metadata key holding the schema version
META_SCHEMA_VERSION = b"rgpt4d.schema_version"
#: Arrow schema-metadata key naming the table a data file belongs to
META_TABLE = b"rgpt4d.table"

REGION_TYPE = pa.struct(
    [
        pa.field(REGION_OBJ_ID, pa.int32(), nullable=False),
        pa.field(REGION_BOX, pa.list_(pa.float32(), 4), nullable=False),
        pa.field(REGION_LABEL, pa.string()),
    ]
)


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a shard table.

    Attributes:
        name: column name.
        arrow_type: Arrow type on disk.
        shape: symbolic shape of the value (``()`` for scalars; symbols are resolved per shard set for tensors).
        dtype: element dtype of the decoded value (``"float16"`` for tensors, ``"utf8"``, ``"int64"`` ...).
        unit: physical unit (``"s"``, ``"m"``, ``"px"``, ``""`` when none).
        description: what the value is.
        nullable: whether the value may be null (always true for data an error row cannot have).
        train: whether the training reader loads this column.
    """

    name: str
    arrow_type: pa.DataType
    shape: tuple[str, ...]
    dtype: str
    unit: str
    description: str
    nullable: bool = True
    train: bool = False

    @property
    def is_tensor(self) -> bool:
        return self.name in TENSOR_COLUMNS

    def describe(self) -> dict[str, object]:
        """A JSON-able description (used by the snapshot test and the manifest)."""
        return {
            "name": self.name,
            "arrow_type": str(self.arrow_type),
            "shape": list(self.shape),
            "dtype": self.dtype,
            "unit": self.unit,
            "nullable": self.nullable,
            "train": self.train,
        }


_STR = pa.string()
_TENSOR = pa.large_binary()

CLIP_COLUMNS: tuple[ColumnSpec, ...] = (
    # identity and provenance
    ColumnSpec(CLIP_ID, _STR, (), "utf8", "", "sha256 of video URI and sampling config (hex, 32 chars): the clip table's key", nullable=False, train=True),
    ColumnSpec(VIDEO_URI, _STR, (), "utf8", "", "the source video as a local path or s3:// URI", nullable=False),
    ColumnSpec(EXPERT_NAME, _STR, (), "utf8", "", "registry name of the expert that produced the targets", nullable=False),
    ColumnSpec(EXPERT_REVISION, _STR, (), "utf8", "", "weights revision of that expert", nullable=False),
    ColumnSpec(STATUS, _STR, (), "utf8", "", "'ok', or 'error' (targets and frames are then null)", nullable=False, train=True),
    ColumnSpec(ERROR_REASON, _STR, (), "utf8", "", "machine-readable failure reason (e.g. 'decode:corrupt'), null when ok"),
    ColumnSpec(ERROR_MESSAGE, _STR, (), "utf8", "", "human-readable failure message, null when ok"),
    # sampling
    ColumnSpec(FPS, pa.float64(), (), "float64", "1/s", "average frame rate of the source stream"),
    ColumnSpec(NUM_SOURCE_FRAMES, pa.int64(), (), "int64", "", "frames in the source video"),
    ColumnSpec(DURATION_S, pa.float64(), (), "float64", "s", "duration of the source video", train=True),
    ColumnSpec(FRAME_INDICES, pa.list_(pa.int64()), ("T",), "int64", "", "index of each sampled frame in the source video"),
    ColumnSpec(TIMESTAMPS_S, pa.list_(pa.float64()), ("T",), "float64", "s", "presentation time of each sampled frame", train=True),
    # what the student sees
    ColumnSpec(FRAMES, pa.list_(pa.binary()), ("T",), "bytes", "", "each sampled frame as an encoded RGB image at student resolution", train=True),
    ColumnSpec(FRAMES_FORMAT, _STR, (), "utf8", "", "image codec of FRAMES: 'jpeg' or 'png'", train=True),
    ColumnSpec(FRAME_HEIGHT, pa.int32(), (), "int32", "px", "height of the encoded frames", train=True),
    ColumnSpec(FRAME_WIDTH, pa.int32(), (), "int32", "px", "width of the encoded frames", train=True),
    # the frozen expert's targets (fp16 little-endian bytes, C order)
    ColumnSpec(LATENTS, _TENSOR, ("K", "Tl", "hl", "wl", "Cl"), TENSOR_DTYPE, "", "expert token maps at each hook layer (L_LD targets)", train=True),
    ColumnSpec(DEPTH, _TENSOR, ("Td", "Hd", "Wd"), TENSOR_DTYPE, "m", "per-pixel depth", train=True),
    ColumnSpec(FLOW_2D_BACKWARD, _TENSOR, ("Td", "Hd", "Wd", "2"), TENSOR_DTYPE, "px", "backward optical flow (dx, dy) frame t -> t-1; frame 0 zeros", train=True),
    ColumnSpec(DYN_MASK, _TENSOR, ("Td", "Hd", "Wd"), TENSOR_DTYPE, "probability", "probability the pixel belongs to a moving object", train=True),
    ColumnSpec(CAMRAY, _TENSOR, ("Tc", "hc", "wc", "6"), TENSOR_DTYPE, "", "Plücker camera rays (direction, moment)", train=True),
)

QUESTION_COLUMNS: tuple[ColumnSpec, ...] = (
    # identity and provenance
    ColumnSpec(SAMPLE_ID, _STR, (), "utf8", "", "sha256 of clip id and question id (hex, 32 chars)", nullable=False, train=True),
    ColumnSpec(CLIP_ID, _STR, (), "utf8", "", "the clip the question is about (an ok question's clip is an ok row of the clip table; an error question's clip may be absent)", nullable=False, train=True),
    ColumnSpec(VIDEO_URI, _STR, (), "utf8", "", "the source video as a local path or s3:// URI", nullable=False),
    ColumnSpec(QUESTION_ID, _STR, (), "utf8", "", "id of the QA item in its manifest", nullable=False),
    ColumnSpec(SPLIT, _STR, (), "utf8", "", "dataset split the QA item came from (train/val/test)", nullable=False, train=True),
    ColumnSpec(SCENE_ID, _STR, (), "utf8", "", "scene the video shows (synthetic world), or null"),
    ColumnSpec(STATUS, _STR, (), "utf8", "", "'ok', or 'error' (bad QA record, or its clip is an error row)", nullable=False, train=True),
    ColumnSpec(ERROR_REASON, _STR, (), "utf8", "", "machine-readable failure reason (e.g. 'qa:undefined_region'), null when ok"),
    ColumnSpec(ERROR_MESSAGE, _STR, (), "utf8", "", "human-readable failure message, null when ok"),
    ColumnSpec(REGIONS, pa.list_(REGION_TYPE), ("R",), "struct", "", "region prompts on frame 1: obj_id (1-based, <obj_k>), normalised box (x0,y0,x1,y1), label", nullable=False, train=True),
    # the QA conversation (the chat template is applied at training time by text/prompts.py)
    ColumnSpec(TASK, _STR, (), "utf8", "", "R4D-Bench task category", nullable=False, train=True),
    ColumnSpec(QUESTION, _STR, (), "utf8", "", "question text with <obj_k> region tokens", nullable=False, train=True),
    ColumnSpec(OPTIONS, pa.list_(_STR), ("O",), "utf8", "", "answer options in order (letters A, B, ...)", nullable=False, train=True),
    ColumnSpec(ANSWER, _STR, (), "utf8", "", "the correct option string", nullable=False, train=True),
    ColumnSpec(SOM_IMAGE, _STR, (), "utf8", "", "Set-of-Marks image path relative to the dataset root, or null"),
)

#: the two tables of a shard set: name (also the data folder under the shard root) -> columns
TABLES: Mapping[str, tuple[ColumnSpec, ...]] = {CLIPS: CLIP_COLUMNS, QUESTIONS: QUESTION_COLUMNS}
#: every column of either table by name (a name in both tables has the same spec in both)
COLUMNS_BY_NAME: Mapping[str, ColumnSpec] = {c.name: c for cols in TABLES.values() for c in cols}
#: the columns the training reader loads from each table
CLIP_TRAIN_COLUMNS: tuple[str, ...] = tuple(c.name for c in CLIP_COLUMNS if c.train)
QUESTION_TRAIN_COLUMNS: tuple[str, ...] = tuple(c.name for c in QUESTION_COLUMNS if c.train)
#: the columns resume needs to know what is already written
CLIP_KEY_COLUMNS: tuple[str, ...] = (CLIP_ID, VIDEO_URI, STATUS, ERROR_REASON, ERROR_MESSAGE)
QUESTION_KEY_COLUMNS: tuple[str, ...] = (SAMPLE_ID, CLIP_ID, VIDEO_URI, QUESTION_ID, STATUS, ERROR_REASON)
KEY_COLUMNS: Mapping[str, tuple[str, ...]] = {CLIPS: CLIP_KEY_COLUMNS, QUESTIONS: QUESTION_KEY_COLUMNS}


def tensor_shapes(spec: ExpertSpec) -> dict[str, tuple[int, ...] | None]:
    """Concrete shape of every tensor column for shards written by ``spec``'s expert (``None``: not provided).

    Returns:
        ``{column: shape}`` with latents ``[K, T', h', w', C']``, depth/dyn_mask ``[T, H, W]``, flow
        ``[T, H, W, 2]``, camray ``[Tc, hc, wc, 6]``.
    """
    t, h, w = spec.dense_shape
    shapes: dict[str, tuple[int, ...] | None] = {
        LATENTS: (len(spec.hook_layers), *spec.latent_grid, spec.latent_dim),
        DEPTH: (t, h, w),
        FLOW_2D_BACKWARD: (t, h, w, 2),
        DYN_MASK: (t, h, w),
        CAMRAY: (*spec.camray_shape, 6),
    }
    return {name: (shape if spec.provides(name) else None) for name, shape in shapes.items()}


def tensor_nbytes(shapes: Mapping[str, tuple[int, ...] | None]) -> int:
    """Bytes of all fp16 tensors of one row for the given shapes."""
    total = 0
    for shape in shapes.values():
        if shape is not None:
            n = 2
            for d in shape:
                n *= d
            total += n
    return total


def arrow_schema(table: str, shapes: Mapping[str, tuple[int, ...] | None] | None = None) -> pa.Schema:
    """The Arrow schema of a data file of ``table`` (:data:`CLIPS` or :data:`QUESTIONS`).

    Args:
        table: which table.
        shapes: concrete tensor shapes (from :func:`tensor_shapes`) to record in the field metadata; when
            omitted the metadata holds only the symbolic shapes.
    """
    fields = []
    for c in columns_of(table):
        meta = {META_DTYPE: c.dtype.encode(), META_UNIT: c.unit.encode()}
        if c.is_tensor:
            concrete = None if shapes is None else shapes.get(c.name)
            meta[META_SHAPE] = json.dumps(list(concrete) if concrete is not None else list(c.shape)).encode()
        fields.append(pa.field(c.name, c.arrow_type, nullable=c.nullable, metadata=meta))
    return pa.schema(fields, metadata={META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(), META_TABLE: table.encode()})


def columns_of(table: str) -> tuple[ColumnSpec, ...]:
    """The column specs of ``table``; ``KeyError`` naming the tables for another name."""
    try:
        return TABLES[table]
    except KeyError:
        raise KeyError(f"no shard table {table!r}; tables are {sorted(TABLES)}") from None


def describe() -> dict[str, list[dict[str, object]]]:
    """JSON-able description of every column of each table, in order (snapshot test, docs)."""
    return {name: [c.describe() for c in cols] for name, cols in TABLES.items()}


def fingerprint() -> str:
    """sha256 of :func:`describe` (canonical JSON): changes whenever a column changes."""
    return hashlib.sha256(json.dumps(describe(), sort_keys=True).encode()).hexdigest()
