"""Answer balance: within every split, category and question kind, each answer class is equally frequent.

A question builder can draw its answer class uniformly, but a scene often lacks a case of the class drawn (few
objects spin, so "It does not rotate" is available far more often than "clockwise"), and the per-scene builders
cannot see the dataset's totals. :func:`balance_answers` therefore cuts the dataset afterwards: in each
``(split, task, kind)`` group, every class keeps as many questions as the rarest class of that group has, chosen by
a seeded permutation. A class the group never produced is left out of the count (small held-out splits often
miss one: the others stay equally frequent, so no class present is favoured); a group with a single class is
dropped.

What a "class" is (:func:`answer_class`) is whatever a model could otherwise win by prior:

* categorical answers (R, T, SR, C): the answer's key (``meta["answer_key"]``) or the count;
* event times (FP): ``never``, or the rank of the true time among the option times;
* numbers (DM, DP, SA) and VG boxes: the rank of the answer on its option ladder.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

#: the classes each question kind must balance over (the builders in :mod:`questions` produce exactly these)
_LADDER = tuple(f"rank{k}" for k in range(5))
KIND_CLASSES: dict[str, tuple[str, ...]] = {
    "rotation": ("cw", "ccw", "none"),
    "direction": ("left", "right", "away", "towards", "none"),
    "relation": ("left-closer", "left-farther", "right-closer", "right-farther"),
    "count_translating": ("0", "1", "2", "3"),
    "count_rotating": ("0", "1", "2", "3"),
    "count_static": ("0", "1", "2", "3"),
    "start_moving": ("never", "rank0", "rank1", "rank2"),
    "start_rotating": ("never", "rank0", "rank1", "rank2"),
}


def _number(text: str) -> float:
    return float(text.split()[0])


def _box_key(text: str, ladder: str) -> float:
    box = json.loads(text)
    return {"x": box["center"][0], "y": box["center"][1]}.get(ladder, box["size"][0])


def answer_class(row: dict[str, Any]) -> str:
    """The balance class of one question row (``task``, ``options``, ``answer``, ``meta``)."""
    meta, answer, options = row["meta"], row["answer"], row["options"]
    kind = meta["kind"]
    if kind in ("rotation", "direction", "relation"):
        return str(meta["answer_key"])
    if kind.startswith("count_"):
        return answer
    if kind in ("start_moving", "start_rotating"):
        times = sorted(_number(o.removeprefix("At ")) for o in options if o.startswith("At "))
        return "never" if not answer.startswith("At ") else f"rank{times.index(_number(answer.removeprefix('At ')))}"
    if kind == "box":
        ranked = sorted(options, key=lambda o: _box_key(o, meta["ladder"]))
    else:
        ranked = sorted(options, key=_number)
    return f"rank{ranked.index(answer)}"


def classes_of(kind: str) -> tuple[str, ...]:
    """The classes a kind balances over: :data:`KIND_CLASSES`, or the five ladder ranks."""
    return KIND_CLASSES.get(kind, _LADDER)


def balance_answers(rows: Sequence[dict[str, Any]], split_of: Sequence[str], seed: int) -> list[int]:
    """Indices (ascending) of the rows kept so that every ``(split, task, kind)`` group has equal class counts.

    Args:
        rows: question rows in dataset order.
        split_of: the split of each row (``train`` / ``val`` / ``test``).
        seed: the dataset's seed; the same rows and seed keep the same subset.
    """
    groups: dict[tuple[str, str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (row, split) in enumerate(zip(rows, split_of, strict=True)):
        groups[(split, row["task"], row["meta"]["kind"])][answer_class(row)].append(i)
    rng = np.random.default_rng([seed, 0xBA1])
    kept: list[int] = []
    for key in sorted(groups):
        by_class = groups[key]
        present = [len(by_class[c]) for c in classes_of(key[2]) if by_class.get(c)]
        quota = min(present) if len(present) >= 2 else 0
        for c in classes_of(key[2]):
            members = by_class.get(c, [])
            kept += [members[j] for j in rng.permutation(len(members))[:quota]]
    return sorted(kept)
