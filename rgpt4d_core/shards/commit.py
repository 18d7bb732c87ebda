"""Commit a shard directory: check what its data files hold, then write the manifest (last).

Shared by the precompute job, the v1 converter and the test/bench writers, so that every v2 set is committed under
the same rules: no clip id and no sample id twice, every ok question's clip an ok row of the clip table, the
manifest listing exactly the complete data files of both tables with their counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.shards import manifest as M
from rgpt4d_core.shards import schema as S
from rgpt4d_core.shards.reader import TableState, WrittenState


class ShardCommitError(RuntimeError):
    """The data files do not form a consistent shard set; the message names the ids at fault."""


def counts_of(table: TableState) -> M.Counts:
    """Row counts of one table from its key columns (``status``, ``error_reason``)."""
    statuses, reasons = table.column(S.STATUS), table.column(S.ERROR_REASON)
    errors = Counter(r for s, r in zip(statuses, reasons, strict=True) if s == S.STATUS_ERROR)
    return M.Counts(total=len(statuses), ok=statuses.count(S.STATUS_OK), error=sum(errors.values()),
                    errors_by_reason=dict(errors))  # fmt: skip


def check_committable(root: str, state: WrittenState) -> None:
    """Raise :class:`ShardCommitError` for a clip id or sample id written twice, or an ok question whose clip is
    missing from the clip table or an error row there."""
    for name, ids in (("clip", state.clips.column(S.CLIP_ID)), ("sample", state.questions.column(S.SAMPLE_ID))):
        dup = [i for i, n in Counter(ids).items() if n > 1]
        if dup:
            raise ShardCommitError(f"{root}: {len(dup)} {name} ids written more than once (e.g. {dup[:3]}); "
                                   f"not committing")  # fmt: skip
    ok_clips = {i for i, s in zip(state.clips.column(S.CLIP_ID), state.clips.column(S.STATUS), strict=True)
                if s == S.STATUS_OK}  # fmt: skip
    orphans = [i for i, s in zip(state.questions.column(S.CLIP_ID), state.questions.column(S.STATUS), strict=True)
               if s == S.STATUS_OK and i not in ok_clips]  # fmt: skip
    if orphans:
        raise ShardCommitError(f"{root}: {len(orphans)} ok questions refer to clips that are not ok rows of the "
                               f"clip table (e.g. {orphans[:3]}); not committing")  # fmt: skip


def commit(
    root: str,
    state: WrittenState,
    spec: ExpertSpec,
    sampling: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> M.Manifest:
    """Check ``state`` (a fresh :func:`~rgpt4d_core.shards.reader.scan_written` of ``root`` with no partial
    files) and write ``<root>/_manifest.json``; returns the manifest."""
    if state.partial:
        raise ShardCommitError(f"{root}: partial data files {state.partial[:3]}; remove them before committing")
    check_committable(root, state)
    manifest = M.build_manifest(spec, sampling, counts_of(state.questions), counts_of(state.clips), state.files,
                                extra=extra)  # fmt: skip
    M.write_manifest(root, manifest)
    return manifest
