"""Where the repository is, and the one rule that pins a job's relative local paths (shared by the entry points).

Also the script bootstrap of every entry point: ``python pipelines/<job>.py`` (what ``ray job submit`` runs) puts
``pipelines/`` first on ``sys.path``, not the repository, so each entry point starts with::

    if __package__ in (None, ""):  # `python pipelines/<job>.py`: put this repository first on sys.path
        import _paths  # noqa: F401  (this file, found beside the script by its bare name)

Imported by that bare name, this module puts the repository root first on ``sys.path`` (so ``pipelines.*`` and
``rgpt4d_core`` come from this checkout); imported as ``pipelines._paths`` it changes nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import overload

#: the repository root (``conf/``, ``pipelines/``, ``rgpt4d_core/`` below it)
REPO = Path(__file__).resolve().parents[1]
#: the YAML configs
CONF = REPO / "conf"

if __name__ == "_paths":  # imported by its bare name from an entry point run as a script
    sys.path.insert(0, str(REPO))


@overload
def absolute(path: str) -> str: ...
@overload
def absolute(path: None) -> None: ...
@overload
def absolute(path: str | None) -> str | None: ...
def absolute(path: str | None) -> str | None:
    """``path`` pinned to the driver's working directory: a local relative path (``~`` expanded) becomes absolute
    and normalised; ``None``, ``""`` and URIs (``s3://...``) are returned as they are.

    Ray workers and Serve replicas run elsewhere (other nodes, or a job's unpacked working directory), so a job
    hands them only absolute paths or URIs.
    """
    return path if not path or "://" in path else os.path.abspath(os.path.expanduser(path))
