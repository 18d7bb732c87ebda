"""Region-level 4D multiple-choice questions in R4D-Bench's nine categories, answered exactly from the scene.

Static: VG (3D box at a time), DM (size / distance in metres), SR (left/right, closer/farther between regions).
Dynamic: R (rotation direction), C (counting), T (translation direction), FP (events that do not happen),
SA (speed / acceleration), DP (displacement / path length).

Every question carries ``meta``: a machine-readable statement of what is asked (object ids, times, quantity) so
that answers can be re-derived from the ground-truth arrays alone (``tests/test_synth_questions.py`` does).
Frames of the world: positions are in the ground frame of the first camera (x right, y forward, z up, metres).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rgpt4d_core.synth.options import fmt_number, fmt_time, numeric_options, shuffle, time_options
from rgpt4d_core.synth.render import Rendering
from rgpt4d_core.synth.scenes import Scene

STATIC_TASKS: tuple[str, ...] = ("VG", "DM", "SR")
DYNAMIC_TASKS: tuple[str, ...] = ("R", "C", "T", "FP", "SA", "DP")
TASKS: tuple[str, ...] = STATIC_TASKS + DYNAMIC_TASKS
FRAME_NOTE = "the ground frame of the first camera (x right, y forward, z up, metres)"
ROTATION_OPTIONS = {
    "cw": "It rotates clockwise (seen from above)",
    "ccw": "It rotates counter-clockwise (seen from above)",
    "none": "It does not rotate",
    "tumble": "It tumbles about a horizontal axis",
}
RELATION_KEYS = ("left-closer", "left-farther", "right-closer", "right-farther")
#: counting options: always the same four counts (a window around the answer would leak it at the window's edge)
COUNT_OPTIONS = ("0", "1", "2", "3")
DIRECTION_OPTIONS = {
    "left": "To the left",
    "right": "To the right",
    "away": "Away from the camera",
    "towards": "Towards the camera",
    "none": "It does not change its position",
}


@dataclass(frozen=True)
class Mark:
    """A region shown on frame 1: ``obj_id`` (1-based, ``<obj_k>``), scene object index, normalised box, label."""

    obj_id: int
    index: int
    box: tuple[float, float, float, float]
    label: str

    @property
    def token(self) -> str:
        return f"<obj_{self.obj_id}>"


def find_marks(
    scene: Scene, rendering: Rendering, min_fraction: float = 0.002, order_rng: np.random.Generator | None = None
) -> list[Mark]:
    """Objects visible on frame 1 (at least ``min_fraction`` of the pixels, >= 12), numbered left to right, or in
    the random order ``order_rng`` draws (the dataset's choice: with left-to-right numbers, "is <obj_2> to the
    right of <obj_1>?" is answered by the numbers alone)."""
    inst = rendering.instance[0]
    h, w = inst.shape
    found = []
    for k, obj in enumerate(scene.objects):
        rows, cols = np.nonzero(inst == k + 1)
        if len(rows) >= max(12, min_fraction * h * w):
            box = (cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h)
            found.append((box, k, obj.label))
    found.sort(key=lambda b: (b[0][0] + b[0][2], b[1]))
    if order_rng is not None:
        found = [found[i] for i in order_rng.permutation(len(found))]
    marks = []
    for i, ((x0, y0, x1, y1), k, label) in enumerate(found):
        marks.append(Mark(i + 1, k, (round(float(x0), 4), round(float(y0), 4), round(float(x1), 4), round(float(y1), 4)), label))
    return marks


class _Context:
    """Scene, rendering, marks and a seeded generator shared by the question builders of one scene."""

    def __init__(self, scene: Scene, rendering: Rendering, marks: list[Mark], rng: np.random.Generator) -> None:
        self.scene, self.r, self.marks, self.rng = scene, rendering, marks, rng
        last = (scene.num_frames - 1) / scene.fps
        self.grid = np.arange(0.0, last + 1e-9, 0.5)

    def frame(self, t: float) -> int:
        return int(round(t * self.scene.fps))

    def pick(self, items: list[Any]) -> Any:
        return items[int(self.rng.integers(len(items)))]

    def time(self) -> float:
        return float(self.pick(list(self.grid)))

    def interval(self, min_len: float = 1.0) -> tuple[float, float] | None:
        pairs = [(float(a), float(b)) for a in self.grid for b in self.grid if b - a >= min_len - 1e-9]
        return self.pick(pairs) if pairs else None

    def centre(self, mark: Mark, t: float) -> np.ndarray:
        return self.r.box_centers[self.frame(t), mark.index]

    def cam_point(self, mark: Mark, t: float) -> np.ndarray:
        """Object centre in the camera frame at time ``t`` (x right, y down, z forward)."""
        c2w = self.r.cam_to_world[self.frame(t)]
        return c2w[:3, :3].T @ (self.centre(mark, t) - c2w[:3, 3])

    def obj(self, mark: Mark) -> Any:
        return self.scene.objects[mark.index]

    def pick_class(self, classes: Sequence[str], present: Mapping[str, list[Any]]) -> str | None:
        """An answer class drawn uniformly from all ``classes`` (so that answers balance over the dataset), or
        ``None`` when this scene has no case of it (the builder then skips; :func:`make_questions` retries)."""
        key = self.pick(list(classes))
        return key if present.get(key) else None

    def prefer(self, good: Callable[[Mark], bool], p: float = 0.7) -> Mark:
        """A random mark, drawn from those satisfying ``good`` with probability ``p`` (when any does)."""
        pool = [m for m in self.marks if good(m)]
        return self.pick(pool if pool and self.rng.random() < p else self.marks)


def _numeric(value: float, unit: str, rng: np.random.Generator) -> tuple[list[str], str] | None:
    """:func:`numeric_options`, or ``None`` (skip the question) when ``value`` is too small for a fair ladder."""
    try:
        return numeric_options(value, unit, rng)
    except RuntimeError:
        return None


def _box_json(centre: np.ndarray, size: np.ndarray, yaw: float, kind: str) -> str:
    yaw_deg = 0.0 if kind != "box" else ((np.rad2deg(yaw) + 90.0) % 180.0) - 90.0
    d = {"center": [round(float(v), 2) for v in centre], "size": [round(float(v), 2) for v in size], "yaw_deg": round(float(yaw_deg))}
    return json.dumps(d)


#: VG distractor ladders: (axis, step): a shift of the centre in metres along x or y, or a scale of the size
_VG_LADDERS = (("x", 1.0), ("y", 1.2), ("size", 1.5))


def _vg(c: _Context) -> dict[str, Any] | None:
    """Five boxes on one ladder (centre shifted along x or y, or size scaled, resting on the ground), the true
    box at a uniformly drawn rank, so that it is neither the middle nor the mean of the options."""
    m, t = c.pick(c.marks), c.time()
    f, obj = c.frame(t), c.obj(m)
    centre, size, yaw = c.r.box_centers[f, m.index], c.r.box_sizes[m.index], float(c.r.box_yaws[f, m.index])
    axis, step = c.pick(list(_VG_LADDERS))
    ranks = list(range(5))
    if axis == "size":  # neighbouring sizes at least 0.25 m apart in every dimension
        ranks = [r for r in ranks if size.min() * step ** (-r) * (step - 1.0) >= 0.25]
        if not ranks:
            (axis, step), ranks = _VG_LADDERS[0], list(range(5))
    rank = c.pick(ranks)
    boxes = []
    for k in range(5):
        if axis == "size":
            s = size * step ** (k - rank)
            boxes.append(_box_json(np.array([centre[0], centre[1], s[2] / 2.0]) if k != rank else centre, s, yaw, obj.kind))
        else:
            shift = np.array([step * (k - rank), 0.0, 0.0] if axis == "x" else [0.0, step * (k - rank), 0.0])
            boxes.append(_box_json(centre + shift, size, yaw, obj.kind))
    answer = boxes[rank]
    if len(set(boxes)) != len(boxes):
        return None
    q = f"At {fmt_time(t)}, which is the 3D bounding box of {m.token} in {FRAME_NOTE}? (yaw in degrees about z)"
    meta = {"kind": "box", "obj": m.obj_id, "t": t, "ladder": axis}
    return {"question": q, "options": shuffle(boxes, c.rng), "answer": answer, "meta": meta}


def _dm(c: _Context) -> dict[str, Any] | None:
    m = c.pick(c.marks)
    kind = c.pick(["height", "distance_camera"] + (["distance_pair"] if len(c.marks) > 1 else []))
    t = c.time()
    if kind == "height":
        value, q = float(c.r.box_sizes[m.index, 2]), f"How tall is {m.token}, in metres?"
        meta: dict[str, Any] = {"kind": "height", "obj": m.obj_id}
    elif kind == "distance_camera":
        value = float(np.linalg.norm(c.centre(m, t) - c.r.cam_to_world[c.frame(t), :3, 3]))
        q = f"At {fmt_time(t)}, how far is the centre of {m.token} from the camera, in metres?"
        meta = {"kind": "distance_camera", "obj": m.obj_id, "t": t}
    else:
        m2 = c.pick([o for o in c.marks if o.obj_id != m.obj_id])
        value = float(np.linalg.norm(c.centre(m, t) - c.centre(m2, t)))
        q = f"At {fmt_time(t)}, what is the distance between the centres of {m.token} and {m2.token}, in metres?"
        meta = {"kind": "distance_pair", "obj": m.obj_id, "obj2": m2.obj_id, "t": t}
    built = _numeric(value, "m", c.rng)
    if built is None:
        return None
    options, answer = built
    return {"question": q, "options": options, "answer": answer, "meta": meta}


def _sr(c: _Context) -> dict[str, Any] | None:
    """Where ``a`` is relative to ``b`` on both camera axes at once: four options (left/right x closer/farther),
    every one of them a possible answer; asked only when both separations are clear."""
    if len(c.marks) < 2:
        return None
    t = c.time()
    pairs = [(a, b) for a in c.marks for b in c.marks if a.obj_id != b.obj_id]
    for i in c.rng.permutation(len(pairs)):
        a, b = pairs[int(i)]
        pa, pb = c.cam_point(a, t), c.cam_point(b, t)
        if abs(pa[0] - pb[0]) < 0.5 or abs(pa[2] - pb[2]) < 0.8:
            continue
        key = f"{'right' if pa[0] > pb[0] else 'left'}-{'farther' if pa[2] > pb[2] else 'closer'}"
        options = {k: _relation_text(k, b.token) for k in RELATION_KEYS}
        q = f"At {fmt_time(t)}, seen from the camera, where is {a.token} relative to {b.token}?"
        meta = {"kind": "relation", "obj": a.obj_id, "obj2": b.obj_id, "t": t, "answer_key": key}
        return {"question": q, "options": shuffle(list(options.values()), c.rng), "answer": options[key], "meta": meta}
    return None


def _relation_text(key: str, other: str) -> str:
    """``"left-closer", "<obj_2>"`` -> ``"to the left of <obj_2> and closer to the camera"``."""
    side, depth = key.split("-")
    return f"to the {side} of {other} and {'closer to' if depth == 'closer' else 'farther from'} the camera"


def _r(c: _Context) -> dict[str, Any] | None:
    by_key: dict[str, list[Mark]] = {}
    for mark in c.marks:
        dyaw = float(c.r.box_yaws[-1, mark.index] - c.r.box_yaws[0, mark.index])
        by_key.setdefault("none" if dyaw == 0 else ("ccw" if dyaw > 0 else "cw"), []).append(mark)
    key = c.pick_class(("cw", "ccw", "none"), by_key)  # the answer class first, then an object of it
    if key is None:
        return None
    m = c.pick(by_key[key])
    q = f"Does {m.token} rotate during the video, and if so in which direction?"
    options = shuffle(list(ROTATION_OPTIONS.values()), c.rng)
    meta = {"kind": "rotation", "obj": m.obj_id, "answer_key": key}
    return {"question": q, "options": options, "answer": ROTATION_OPTIONS[key], "meta": meta}


def _c(c: _Context) -> dict[str, Any] | None:
    kind = c.pick(["translating", "rotating", "static"])
    objs = [c.obj(m) for m in c.marks]
    if kind == "translating":
        n, q = sum(o.translates for o in objs), "How many of the marked objects change their position during the video?"
    elif kind == "rotating":
        n, q = sum(o.rotates for o in objs), "How many of the marked objects spin about their vertical axis during the video?"
    else:
        n, q = sum(not o.moves for o in objs), "How many of the marked objects stay completely still during the video?"
    if n >= len(COUNT_OPTIONS):
        return None
    return {"question": q, "options": shuffle(list(COUNT_OPTIONS), c.rng), "answer": str(n), "meta": {"kind": f"count_{kind}"}}


def _direction_key(c: _Context, m: Mark, t0: float, t1: float) -> str:
    """``left/right/away/towards/none`` for a clear ground motion of ``m`` between ``t0`` and ``t1``, else ``""``."""
    d = c.centre(m, t1) - c.centre(m, t0)
    dx, dy = float(d[0]), float(d[1])
    if abs(dx) < 1e-9 and abs(dy) < 1e-9:
        return "none" if not c.obj(m).translates else ""
    if abs(dx) >= 2 * abs(dy) and abs(dx) >= 0.25:
        return "right" if dx > 0 else "left"
    if abs(dy) >= 2 * abs(dx) and abs(dy) >= 0.25:
        return "away" if dy > 0 else "towards"
    return ""


def _t(c: _Context) -> dict[str, Any] | None:
    """The answer direction first (uniform over the five), then an object and interval that show it."""
    by_key: dict[str, list[tuple[Mark, float, float]]] = {}
    for _ in range(6):
        iv = c.interval(1.0)
        if iv is None:
            return None
        for m in c.marks:
            shown = _direction_key(c, m, *iv)
            if shown:
                by_key.setdefault(shown, []).append((m, *iv))
    key = c.pick_class(tuple(DIRECTION_OPTIONS), by_key)
    if key is None:
        return None
    m, t0, t1 = c.pick(by_key[key])
    q = (f"Between {fmt_time(t0)} and {fmt_time(t1)}, in which direction does {m.token} move over the ground, "
         "relative to the camera's initial viewpoint?")
    meta = {"kind": "direction", "obj": m.obj_id, "t0": t0, "t1": t1, "answer_key": key}
    return {"question": q, "options": shuffle(list(DIRECTION_OPTIONS.values()), c.rng), "answer": DIRECTION_OPTIONS[key], "meta": meta}


def _fp(c: _Context) -> dict[str, Any] | None:
    """When an object starts to move or spin; "never" is drawn for a quarter of the questions, as one of four
    options. (The world has no collisions, so a collision question would always be "never".)"""
    kind = c.pick(["start_moving", "start_rotating"])
    attr = "translates" if kind == "start_moving" else "rotates"
    happens = [m for m in c.marks if getattr(c.obj(m), attr)]
    never_marks = [m for m in c.marks if not getattr(c.obj(m), attr)]
    group = never_marks if c.rng.random() < 0.25 else happens
    if not group:
        return None
    m = c.pick(group)
    obj = c.obj(m)
    event = obj.start_s if getattr(obj, attr) else None
    if kind == "start_moving":
        q, never = f"At what time does {m.token} start to change its position?", "It never changes its position"
    else:
        q, never = f"At what time does {m.token} start spinning about its vertical axis?", "It never spins"
    meta: dict[str, Any] = {"kind": kind, "obj": m.obj_id}
    try:
        options, answer = time_options(event, never, c.grid, c.rng)
    except RuntimeError:
        return None
    return {"question": q, "options": options, "answer": answer, "meta": meta}


def _sa(c: _Context) -> dict[str, Any] | None:
    m = c.prefer(lambda k: c.obj(k).translates, p=0.85)
    obj = c.obj(m)
    kind = c.pick(["avg_speed", "speed_at"] + (["acceleration"] if any(obj.acc) else []))
    if kind == "avg_speed":
        iv = c.interval(1.0)
        if iv is None:
            return None
        t0, t1 = iv
        value = _path_length(obj, t0, t1) / (t1 - t0)
        q = f"What is the average speed of {m.token} between {fmt_time(t0)} and {fmt_time(t1)}, in m/s?"
        meta: dict[str, Any] = {"kind": "avg_speed", "obj": m.obj_id, "t0": t0, "t1": t1}
        unit = "m/s"
    else:
        dt = 1.0 / c.scene.fps
        times = [t for t in c.grid if t >= obj.start_s + dt - 1e-9 and c.frame(t) + 1 < c.scene.num_frames and t >= dt]
        if not times:
            return None
        t = float(c.pick(times))
        tau = t - obj.start_s
        vel = np.asarray(obj.vel) + tau * np.asarray(obj.acc)
        if kind == "speed_at":
            value, unit = float(np.linalg.norm(vel)), "m/s"
            q = f"At {fmt_time(t)}, how fast is {m.token} moving, in m/s?"
        else:
            value, unit = float(np.linalg.norm(obj.acc)), "m/s²"
            q = f"At {fmt_time(t)}, what is the magnitude of the acceleration of {m.token}, in m/s²?"
        meta = {"kind": kind, "obj": m.obj_id, "t": t}
    built = _numeric(value, unit, c.rng)
    if built is None:
        return None
    options, answer = built
    return {"question": q, "options": options, "answer": answer, "meta": meta}


def _path_length(obj: Any, t0: float, t1: float) -> float:
    """Ground path length (m) of ``obj`` between ``t0`` and ``t1``: straight-line motion, so the displacement."""
    c = obj.pose(np.array([t0, t1]))[0]
    return float(np.linalg.norm(c[1] - c[0]))


def _dp(c: _Context) -> dict[str, Any] | None:
    iv = c.interval(1.0)
    if iv is None:
        return None
    t0, t1 = iv
    m = c.prefer(lambda k: c.obj(k).translates, p=0.85)
    value = _path_length(c.obj(m), t0, t1)
    if c.rng.random() < 0.5:
        q = f"How far is {m.token} at {fmt_time(t1)} from where it was at {fmt_time(t0)}, in metres?"
        kind = "displacement"
    else:
        q = f"What distance does {m.token} travel between {fmt_time(t0)} and {fmt_time(t1)}, in metres?"
        kind = "path_length"
    built = _numeric(value, "m", c.rng)
    if built is None:
        return None
    options, answer = built
    return {"question": q, "options": options, "answer": answer, "meta": {"kind": kind, "obj": m.obj_id, "t0": t0, "t1": t1}}


BUILDERS: dict[str, Callable[[_Context], dict[str, Any] | None]] = {
    "VG": _vg, "DM": _dm, "SR": _sr, "R": _r, "C": _c, "T": _t, "FP": _fp, "SA": _sa, "DP": _dp,
}


def make_questions(
    scene: Scene, rendering: Rendering, marks: list[Mark], rng: np.random.Generator, per_category: int = 1
) -> list[dict[str, Any]]:
    """Up to ``per_category`` questions of every task for one scene (none when no region is visible).

    Returns:
        dicts with ``task, question, options, answer, meta`` (the writer adds ids, paths and regions).
        Each answer appears exactly once in its options; options are distinct and 4-5 long.
    """
    if not marks:
        return []
    ctx = _Context(scene, rendering, marks, rng)
    out: list[dict[str, Any]] = []
    for task in TASKS:
        seen: set[str] = set()
        answers: set[str] = set()  # one question per answer per scene: a scene of still objects would fill the
        for _ in range(per_category * 4):  # rotation task with "It does not rotate" otherwise
            item = BUILDERS[task](ctx)
            if item is None or item["question"] in seen or item["answer"] in answers:
                continue
            seen.add(item["question"])
            answers.add(item["answer"])
            out.append({"task": task, **item})
            if len(seen) == per_category:
                break
    for item in out:
        assert item["answer"] in item["options"] and 4 <= len(item["options"]) <= 5, item
    return out


__all__ = ["TASKS", "STATIC_TASKS", "DYNAMIC_TASKS", "Mark", "find_marks", "make_questions", "fmt_number"]
