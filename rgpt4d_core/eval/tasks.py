"""R4D-Bench's task taxonomy (paper-spec §6): nine region-level categories split into static and dynamic.

The released benchmark names tasks in different spellings across versions (``"VG"``, ``"3D Video Grounding"``,
``"Speed & Acceleration"`` ...); :func:`canonical_task` maps them all to the short codes used in the table.
"""

from __future__ import annotations

import re

STATIC_TASKS: tuple[str, ...] = ("VG", "DM", "SR")
DYNAMIC_TASKS: tuple[str, ...] = ("R", "C", "T", "FP", "SA", "DP")
ALL_TASKS: tuple[str, ...] = STATIC_TASKS + DYNAMIC_TASKS
#: the 12 columns of R4D-Bench Table 3, in order
TABLE_COLUMNS: tuple[str, ...] = ("Avg", "Sta", "Dyn", *ALL_TASKS)

TASK_NAMES: dict[str, str] = {
    "VG": "3D Video Grounding",
    "DM": "Dimension Measurement",
    "SR": "Spatial Relation",
    "R": "Rotational",
    "C": "Counting",
    "T": "Translational",
    "FP": "False Positive",
    "SA": "Speed & Acceleration",
    "DP": "Displacement & Path Length",
}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower().replace("&", "and"))


_ALIASES: dict[str, str] = {}
for _code, _name in TASK_NAMES.items():
    _ALIASES[_key(_code)] = _code
    _ALIASES[_key(_name)] = _code
_ALIASES.update(
    {
        _key("Video Grounding"): "VG",
        _key("3D Grounding"): "VG",
        _key("Dimension"): "DM",
        _key("Rotation"): "R",
        _key("Count"): "C",
        _key("Translation"): "T",
        _key("FalsePositive"): "FP",
        _key("Speed and Acceleration"): "SA",
        _key("Speed"): "SA",
        _key("Displacement and Path Length"): "DP",
        _key("Displacement"): "DP",
        _key("Path Length"): "DP",
    }
)


class UnknownTaskError(ValueError):
    """A benchmark row names a task outside R4D-Bench's nine categories."""


def canonical_task(name: str) -> str:
    """The short code (``"VG"`` ... ``"DP"``) for any spelling of an R4D-Bench task name."""
    code = _ALIASES.get(_key(name))
    if code is None:
        raise UnknownTaskError(f"unknown R4D-Bench task {name!r}; known: {', '.join(TASK_NAMES.values())}")
    return code


def is_static(task: str) -> bool:
    """Whether the (canonical) task is in the static group (VG, DM, SR)."""
    return canonical_task(task) in STATIC_TASKS
