"""``_manifest.json``: the commit record of a shard directory, written LAST.

A shard directory (schema v2) is ``<root>/clips/*.parquet`` (the clip table), ``<root>/questions/*.parquet``
(the question table) plus ``<root>/_manifest.json``. The manifest lists the data files of both tables that
belong to the set (with row counts and sizes), so files left behind by a killed writer are never read, and
counts both tables. A directory without a manifest is incomplete; a reader refuses it, and refuses a manifest
whose schema version is not this code's :data:`~rgpt4d_core.shards.schema.SCHEMA_VERSION` (a v1 set, one row
per question, with the command that converts it: :data:`CONVERT_V1_COMMAND`).

While a job runs, ``<root>/_run.json`` records what the job is writing (schema version, expert spec, sampling
config); a resumed job checks it so that two incompatible runs never mix rows in one directory.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rgpt4d_core import storage
from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.shards import schema as S

MANIFEST_NAME = "_manifest.json"
RUN_MARKER_NAME = "_run.json"
#: the data folder of schema v1 (one table); v2 keeps each table in the folder named after it
V1_DATA_DIR = "data"
#: how to turn a v1 shard set into a v2 one without re-running the expert
CONVERT_V1_COMMAND = "python -m rgpt4d_core.shards.convert_v1 <v1-root> <new-v2-root>"


class ShardManifestError(RuntimeError):
    """The shard directory is incomplete, of another schema version, or inconsistent; the message says which."""


@dataclass(frozen=True)
class ShardFile:
    """One committed data file: ``path`` relative to the shard root, its rows and size in bytes."""

    path: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class Counts:
    """Row counts of one table: ``total == ok + error``; ``errors_by_reason`` sums to ``error``."""

    total: int = 0
    ok: int = 0
    error: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """Everything a consumer needs to trust a shard directory.

    Attributes:
        schema_version: :data:`schema.SCHEMA_VERSION` of the writer.
        schema_fingerprint: :func:`schema.fingerprint` of the writer.
        expert: ``ExpertSpec.to_dict()`` of the expert (name, revision, shapes).
        tensor_shapes: concrete shape of each tensor column (``None``: not provided).
        sampling: the sampling/decode config (frames, size, image format ...).
        counts: question-table row counts (training samples), errors by reason.
        clip_counts: clip-table row counts, errors by reason.
        files: the committed data files of both tables (``clips/...``, ``questions/...``).
        bytes: total bytes of ``files``.
        git_sha: commit of the code that wrote the set (``"unknown"`` outside a git checkout).
        created_at: ISO-8601 UTC time the manifest was written.
        extra: free-form job facts (config, wall time, clips/s).
    """

    schema_version: int
    schema_fingerprint: str
    expert: dict[str, Any]
    tensor_shapes: dict[str, list[int] | None]
    sampling: dict[str, Any]
    counts: Counts
    clip_counts: Counts
    files: tuple[ShardFile, ...]
    bytes: int
    git_sha: str
    created_at: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def expert_spec(self) -> ExpertSpec:
        return ExpertSpec.from_dict(self.expert)

    def shapes(self) -> dict[str, tuple[int, ...] | None]:
        """``tensor_shapes`` as tuples, the form the codec takes."""
        return {k: (tuple(v) if v is not None else None) for k, v in self.tensor_shapes.items()}

    def files_of(self, table: str) -> tuple[ShardFile, ...]:
        """The committed data files of ``table`` (:data:`schema.CLIPS` or :data:`schema.QUESTIONS`), in order."""
        S.columns_of(table)
        return tuple(f for f in self.files if f.path.startswith(table + "/"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "?") -> Manifest:
        try:
            d = json.loads(text)
            return cls(
                schema_version=int(d["schema_version"]),
                schema_fingerprint=d["schema_fingerprint"],
                expert=d["expert"],
                tensor_shapes=d["tensor_shapes"],
                sampling=d["sampling"],
                counts=Counts(**d["counts"]),
                clip_counts=Counts(**d.get("clip_counts", {})),  # absent in v1 manifests
                files=tuple(ShardFile(**f) for f in d["files"]),
                bytes=int(d["bytes"]),
                git_sha=d["git_sha"],
                created_at=d["created_at"],
                extra=d.get("extra", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardManifestError(f"{where}: malformed manifest ({exc!r})") from exc


def git_sha(cwd: str | Path | None = None) -> str:
    """HEAD commit of the checkout containing ``cwd`` (default: this package), or ``"unknown"``."""
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def build_manifest(
    spec: ExpertSpec,
    sampling: Mapping[str, Any],
    counts: Counts,
    clip_counts: Counts,
    files: list[ShardFile],
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    """A manifest for the current code version (schema version, fingerprint, git sha, time filled in)."""
    shapes = S.tensor_shapes(spec)
    return Manifest(
        schema_version=S.SCHEMA_VERSION,
        schema_fingerprint=S.fingerprint(),
        expert=spec.to_dict(),
        tensor_shapes={k: (list(v) if v is not None else None) for k, v in shapes.items()},
        sampling=dict(sampling),
        counts=counts,
        clip_counts=clip_counts,
        files=tuple(sorted(files, key=lambda f: f.path)),
        bytes=sum(f.bytes for f in files),
        git_sha=git_sha(),
        created_at=utc_now(),
        extra=dict(extra or {}),
    )


def write_manifest(root: str, manifest: Manifest) -> str:
    """Write ``<root>/_manifest.json`` (atomically on local disks); call only after every data file is final."""
    uri = storage.join(root, MANIFEST_NAME)
    storage.write_bytes(uri, manifest.to_json().encode())
    return uri


def read_manifest(root: str, check_version: bool = True) -> Manifest:
    """The manifest of a complete shard directory.

    Raises:
        ShardManifestError: no ``_manifest.json`` (incomplete or not a shard directory), malformed, or written
            with another schema version (when ``check_version``; for version 1 the message says how to convert).
    """
    uri = storage.join(root, MANIFEST_NAME)
    try:
        text = storage.read_bytes(uri).decode()
    except FileNotFoundError:
        raise ShardManifestError(
            f"{root} has no {MANIFEST_NAME}: the shard set is incomplete (its job did not finish) or not a shard directory"
        ) from None
    version = _version_of(text, uri)
    if check_version and version == 1:
        raise ShardManifestError(
            f"{uri}: shards have schema version 1 (one row per question, each repeating its clip's targets); this "
            f"code reads version {S.SCHEMA_VERSION} (a clip table and a question table). Convert the set without "
            f"re-running the expert: {CONVERT_V1_COMMAND}, or re-run precompute into a new directory"
        )
    if check_version and version != S.SCHEMA_VERSION:
        raise ShardManifestError(
            f"{uri}: shards have schema version {version}, this code reads version "
            f"{S.SCHEMA_VERSION}; re-run precompute or use a matching rgpt4d version"
        )
    return Manifest.from_json(text, where=uri)


def _version_of(text: str, where: str) -> int:
    try:
        return int(json.loads(text)["schema_version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ShardManifestError(f"{where}: malformed manifest ({exc!r})") from exc


def remove_manifest(root: str) -> None:
    """Mark ``root`` incomplete again (a resumed job is about to add files)."""
    uri = storage.join(root, MANIFEST_NAME)
    if not storage.exists(uri):
        return
    if storage.is_s3(uri):
        storage.s3fs_for().rm(uri[len(storage.S3_SCHEME) :])
    else:
        Path(uri).unlink()


def run_marker(spec: ExpertSpec, sampling: Mapping[str, Any]) -> dict[str, Any]:
    """What a job writes: the facts two runs into one directory must agree on."""
    return {
        "schema_version": S.SCHEMA_VERSION,
        "schema_fingerprint": S.fingerprint(),
        "expert": spec.to_dict(),
        "sampling": dict(sampling),
    }


def claim_directory(root: str, spec: ExpertSpec, sampling: Mapping[str, Any]) -> bool:
    """Record (or check) ``<root>/_run.json`` before writing; True when the directory already had one (resume).

    Raises:
        ShardManifestError: the directory holds shards of another schema, expert or sampling config.
    """
    uri = storage.join(root, RUN_MARKER_NAME)
    mine = run_marker(spec, sampling)
    if storage.exists(uri):
        theirs = json.loads(storage.read_bytes(uri).decode())
        for key in mine:
            if json.dumps(theirs.get(key), sort_keys=True) != json.dumps(mine[key], sort_keys=True):
                raise ShardManifestError(
                    f"{root} holds shards written with another {key} ({theirs.get(key)!r} != {mine[key]!r}); "
                    f"write to a new directory"
                )
        return True
    storage.write_bytes(uri, json.dumps(mine, indent=2, sort_keys=True).encode())
    return False
