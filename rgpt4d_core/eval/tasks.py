"""R4D-Bench's task taxonomy (paper-spec §6): nine region-level categories split into static and dynamic, plus
the time probe TB (a TimeBench-style "How much time has passed in the video?", paper Table A3), which is scored in
a column of its own and never enters Avg, Sta or Dyn.

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
#: probes outside R4D-Bench, each scored only in its own column (after the 12, when a benchmark has any)
TIME_TASKS: tuple[str, ...] = ("TB",)
#: every column a table can have, in order
SCORED_COLUMNS: tuple[str, ...] = (*TABLE_COLUMNS, *TIME_TASKS)

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
    "TB": "Time Passed",
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
        _key("TimeBench"): "TB",
        _key("Time"): "TB",
    }
)


class UnknownTaskError(ValueError):
    """A benchmark row names a task outside R4D-Bench's nine categories and the time probe."""


def canonical_task(name: str) -> str:
    """The short code (``"VG"`` ... ``"DP"``, ``"TB"``) for any spelling of a task name."""
    code = _ALIASES.get(_key(name))
    if code is None:
        raise UnknownTaskError(f"unknown R4D-Bench task {name!r}; known: {', '.join(TASK_NAMES.values())}")
    return code


def is_static(task: str) -> bool:
    """Whether the (canonical) task is in the static group (VG, DM, SR)."""
    return canonical_task(task) in STATIC_TASKS
