"""Reading a benchmark in R4D-Bench's format: a downloaded R4D-Bench directory as is, or the synthetic test split.

Each item has ``id, video, som_image, question, options, answer, task`` (paper-spec §6): ``video`` and
``som_image`` are paths relative to the benchmark root (``videos/stibench/<name>.mp4``), ``options`` a list of
strings, ``answer`` the correct option *string* (its letter is its index), ``task`` a category name in any
spelling (``"Speed & Acceleration"``, ``"SA"``). Extra fields are kept out of the way, except the extension field
``regions`` (``[{"obj_id": 1, "box": [x0, y0, x1, y1], "label": ...}]``, boxes normalised on frame 1) that the
synthetic world writes.

Layouts :func:`load_benchmark` accepts (local paths or ``s3://`` URIs):

* the synthetic world: ``<root>/questions/<split>.jsonl`` (+ ``videos/``, ``som/``);
* an R4D-Bench download: ``<root>/*.json|*.jsonl|*.parquet`` or ``<root>/data/*.{json,jsonl,parquet}`` (files whose
  name contains the split are preferred; otherwise all are read), videos relative to ``<root>``;
* a single question file (``.json``: a list of items, or a mapping holding one under ``data``/``items``/
  ``questions``/``annotations``; ``.jsonl``; ``.parquet``), media relative to its folder.

Region marks: with ``regions_from="auto"`` an item with a ``regions`` field is marked by drawing its boxes on the
decoded frame 1 (as the training collator does); an item without it (the real benchmark) uses its ``som_image``
file as the marked image. ``regions_from="som_image"`` forces the SoM file for every item.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rgpt4d_core import storage
from rgpt4d_core.eval.tasks import canonical_task
from rgpt4d_core.regions import RegionError, region_from_box
from rgpt4d_core.text.prompts import OPTION_LETTERS
from rgpt4d_core.types import Region, VQAItem

RegionsFrom = Literal["auto", "som_image"]
REGIONS_FROM: tuple[str, ...] = ("auto", "som_image")
QUESTION_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".parquet")
REQUIRED_FIELDS: tuple[str, ...] = ("id", "video", "question", "options", "answer", "task")
_LIST_KEYS: tuple[str, ...] = ("data", "items", "questions", "annotations")


class BenchmarkFormatError(ValueError):
    """A benchmark file or row is not in R4D-Bench's format; the message names the file, the row and the field."""


@dataclass(frozen=True)
class Benchmark:
    """A loaded benchmark.

    Attributes:
        name: short name (the root directory's or file's name).
        root: base of the relative media paths (local path or ``s3://`` URI).
        files: the question files that were read.
        layout: ``"synthetic"`` (``questions/<split>.jsonl``) or ``"r4d"`` (question files at the root or a file).
        items: the questions, in file order; ``video``/``som_image`` resolved against ``root``; ``task`` is the
            canonical code (``"VG"`` ... ``"DP"``).
    """

    name: str
    root: str
    files: tuple[str, ...]
    layout: str
    items: tuple[VQAItem, ...]

    def __len__(self) -> int:
        return len(self.items)


def _is_absolute(path: str) -> bool:
    return path.startswith("/") or "://" in path


def resolve(root: str, path: str) -> str:
    """``path`` made absolute against ``root`` (absolute paths and URIs are returned unchanged)."""
    return path if _is_absolute(path) else storage.join(root, path)


def _where(source: str, n: int, row: Mapping[str, Any]) -> str:
    return f"{source} row {n} (id {row.get('id', '?')!r})"


def _options(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):  # a JSON-encoded list (some exports flatten lists to strings)
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BenchmarkFormatError(f"{where}: field 'options' is a string that is not a JSON list") from None
    if isinstance(value, Mapping):  # {"A": "...", "B": "..."}
        value = [value[k] for k in sorted(value)]
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
        raise BenchmarkFormatError(f"{where}: field 'options' must be a non-empty list of strings")
    options = tuple(str(o) for o in value)
    if len(options) > len(OPTION_LETTERS):
        raise BenchmarkFormatError(f"{where}: {len(options)} options, at most {len(OPTION_LETTERS)} are supported")
    if len(set(options)) != len(options):
        raise BenchmarkFormatError(f"{where}: field 'options' has duplicates: {list(options)}")
    return options


def _answer(value: Any, options: tuple[str, ...], where: str) -> str:
    """The answer option string; a letter (``"B"``, ``"(B)"``) or an int index outside the options is mapped."""
    if isinstance(value, str) and value in options:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
        return options[value]
    if isinstance(value, str):
        letter = value.strip().strip("().").upper()
        if len(letter) == 1 and letter in OPTION_LETTERS[: len(options)]:
            return options[OPTION_LETTERS.index(letter)]
    raise BenchmarkFormatError(f"{where}: answer {value!r} is not one of the options {list(options)}")


def _media_path(value: Any, where: str, field: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, Mapping) and isinstance(value.get("path"), str):  # HF Image/Video feature {"path", "bytes"}
        return str(value["path"])
    if isinstance(value, str):
        return value
    raise BenchmarkFormatError(f"{where}: field {field!r} must be a relative path string, got {type(value).__name__}")


def _regions(value: Any, where: str) -> tuple[Region, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = json.loads(value)
    out = []
    try:
        for r in value:
            out.append(region_from_box(int(r["obj_id"]), [float(v) for v in r["box"]], r.get("label")))
    except (KeyError, TypeError, ValueError, RegionError) as exc:
        raise BenchmarkFormatError(f"{where}: field 'regions' is invalid: {exc}") from None
    return tuple(out)


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def parse_item(row: Mapping[str, Any], root: str, where: str) -> VQAItem:
    """One benchmark row -> :class:`VQAItem` with media resolved against ``root`` and the task canonicalised.

    Raises:
        BenchmarkFormatError: a required field is missing or malformed (the message names ``where`` and the field).
    """
    missing = [f for f in REQUIRED_FIELDS if f not in row or row[f] is None]
    if missing:
        raise BenchmarkFormatError(f"{where}: missing field(s) {missing}; R4D-Bench rows need {list(REQUIRED_FIELDS)}")
    options = _options(row["options"], where)
    try:
        task = canonical_task(str(row["task"]))
    except ValueError as exc:
        raise BenchmarkFormatError(f"{where}: field 'task': {exc}") from None
    video = _media_path(row["video"], where, "video")
    if video is None:
        raise BenchmarkFormatError(f"{where}: field 'video' is empty")
    som = _media_path(row.get("som_image"), where, "som_image")
    return VQAItem(
        id=str(row["id"]),
        video=resolve(root, video),
        question=str(row["question"]),
        options=options,
        answer=_answer(row["answer"], options, where),
        task=task,
        som_image=None if som is None else resolve(root, som),
        regions=_regions(row.get("regions"), where),
        duration_s=_float_or_none(row.get("duration_s")),
        fps=_float_or_none(row.get("fps")),
    )


def read_rows(uri: str) -> list[dict[str, Any]]:
    """The rows of one question file (``.jsonl``, ``.json`` or ``.parquet``).

    Raises:
        BenchmarkFormatError: unknown suffix, unparsable content, or no list of rows found.
    """
    data = storage.read_bytes(uri)
    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        return [dict(r) for r in pq.read_table(io.BytesIO(data)).to_pylist()]
    text = data.decode("utf-8-sig")
    if uri.endswith(".jsonl"):
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BenchmarkFormatError(f"{uri}:{n}: not JSON: {exc}") from None
        return rows
    if uri.endswith(".json"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BenchmarkFormatError(f"{uri}: not JSON: {exc}") from None
        if isinstance(obj, dict):
            lists = [obj[k] for k in _LIST_KEYS if isinstance(obj.get(k), list)]
            if lists:
                obj = lists[0]
            elif obj and all(isinstance(v, dict) for v in obj.values()):  # {id: row}
                obj = [{"id": k, **v} for k, v in obj.items()]
        if not isinstance(obj, list):
            raise BenchmarkFormatError(f"{uri}: expected a list of items (or a mapping with {list(_LIST_KEYS)})")
        return obj
    raise BenchmarkFormatError(f"{uri}: unsupported question file (expected one of {QUESTION_SUFFIXES})")


def _question_files(directory: str, split: str) -> list[str]:
    found: list[str] = []
    for folder in (directory, storage.join(directory, "data")):
        found += [u for u in storage.listdir(folder) if u.endswith(QUESTION_SUFFIXES) and not _hidden(u)]
    preferred = [u for u in found if split and split in u.rsplit("/", 1)[-1]]
    return preferred or found


def _hidden(uri: str) -> bool:
    name = uri.rsplit("/", 1)[-1]
    return name.startswith((".", "_")) or name == "dataset.json"


def _base_name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _pick_root(candidates: Iterable[str], first_video: str | None) -> str:
    """The first candidate root under which ``first_video`` exists (else the first candidate)."""
    cands = list(dict.fromkeys(candidates))
    if first_video and not _is_absolute(first_video):
        for c in cands:
            if storage.exists(storage.join(c, first_video)):
                return c
    return cands[0]


def load_benchmark(path: str, split: str = "test", video_root: str | None = None, limit: int = 0) -> Benchmark:
    """Load a benchmark directory or question file (see the module docstring for the layouts).

    Args:
        path: directory or question file (local or ``s3://``).
        split: which split of a synthetic world (``questions/<split>.jsonl``; ``"val+test"`` reads both); for
            R4D-Bench directories, files whose name contains it are preferred.
        video_root: base of relative media paths (default: the benchmark directory, or the question file's
            folder; for files under ``data/`` the first of ``<root>``/``<root>/data`` that holds the first video).
        limit: keep only the first N items (0 = all).

    Raises:
        FileNotFoundError: nothing usable at ``path``.
        BenchmarkFormatError: malformed rows (naming file, row and field) or duplicate ids.
    """
    path = path.rstrip("/")
    if path.endswith(QUESTION_SUFFIXES):
        if not storage.exists(path):
            raise FileNotFoundError(f"benchmark file {path} does not exist")
        files, layout, name = [path], "r4d", _base_name(path).rsplit(".", 1)[0]
        roots = [path.rsplit("/", 1)[0] if "/" in path else "."]
    else:
        synthetic = [storage.join(path, "questions", f"{s}.jsonl") for s in split.split("+")]
        if all(storage.exists(f) for f in synthetic):
            files, layout, roots = synthetic, "synthetic", [path]
        else:
            files, layout, roots = _question_files(path, split), "r4d", [path, storage.join(path, "data")]
            if not files:
                raise FileNotFoundError(
                    f"no benchmark at {path}: neither questions/{split}.jsonl nor *.json/*.jsonl/*.parquet files "
                    "(at the top level or under data/)"
                )
        name = _base_name(path)
    items: list[VQAItem] = []
    seen: set[str] = set()
    for uri in files:
        rows = read_rows(uri)
        first_video = _media_path(rows[0].get("video"), uri, "video") if rows else None
        root = video_root or _pick_root(roots if layout == "r4d" else roots[:1], first_video)
        for n, row in enumerate(rows, start=1):
            if not isinstance(row, Mapping):
                raise BenchmarkFormatError(f"{uri} row {n}: expected an object, got {type(row).__name__}")
            item = parse_item(row, root, _where(uri, n, row))
            if item.id in seen:
                raise BenchmarkFormatError(f"{uri} row {n}: duplicate item id {item.id!r}")
            seen.add(item.id)
            items.append(item)
    if limit > 0:
        items = items[:limit]
    return Benchmark(name=name, root=video_root or roots[0], files=tuple(files), layout=layout, items=tuple(items))


def uses_som_file(item: VQAItem, regions_from: str) -> bool:
    """Whether ``item`` is marked with its ``som_image`` file (else its ``regions`` are drawn on frame 1)."""
    if regions_from not in REGIONS_FROM:
        raise ValueError(f"regions_from must be one of {REGIONS_FROM}, got {regions_from!r}")
    return regions_from == "som_image" or not item.regions


# --------------------------------------------------------------------------- transport rows (Ray Data, JSONL)


def item_to_row(item: VQAItem) -> dict[str, Any]:
    """A flat, Arrow-friendly dict of ``item`` (regions as a JSON string); inverse of :func:`item_from_row`."""
    return {
        "id": item.id,
        "video": item.video,
        "som_image": item.som_image or "",
        "question": item.question,
        "options": list(item.options),
        "answer": item.answer,
        "task": item.task,
        "regions": json.dumps([{"obj_id": r.obj_id, "box": list(r.box), "label": r.label} for r in item.regions]),
    }


def item_from_row(row: Mapping[str, Any]) -> VQAItem:
    """Rebuild the :class:`VQAItem` written by :func:`item_to_row`."""
    where = f"row {row.get('id', '?')!r}"
    return VQAItem(
        id=str(row["id"]),
        video=str(row["video"]),
        question=str(row["question"]),
        options=tuple(str(o) for o in row["options"]),
        answer=str(row["answer"]),
        task=str(row["task"]),
        som_image=str(row["som_image"]) or None,
        regions=_regions(row.get("regions"), where),
    )
