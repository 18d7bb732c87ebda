"""Builders of the dynamic categories (over time): R (rotation direction), C (counting), T (translation
direction), FP (events that do not happen), SA (speed / acceleration), DP (displacement / path length). Each
returns ``question, options, answer, meta`` or ``None`` when this scene cannot ask it fairly
(:func:`~rgpt4d_core.synth.questions.make_questions` retries).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rgpt4d_core.synth.marks import Mark
from rgpt4d_core.synth.options import fmt_time, shuffle, time_options
from rgpt4d_core.synth.question_context import QuestionContext, numeric_or_none

ROTATION_OPTIONS = {
    "cw": "It rotates clockwise (seen from above)",
    "ccw": "It rotates counter-clockwise (seen from above)",
    "none": "It does not rotate",
    "tumble": "It tumbles about a horizontal axis",
}
#: counting options: always the same four counts (a window around the answer would leak it at the window's edge)
COUNT_OPTIONS = ("0", "1", "2", "3")
#: regions a counting question names (all of them when the frame shows fewer)
COUNT_NAMED = 4
DIRECTION_OPTIONS = {
    "left": "To the left",
    "right": "To the right",
    "away": "Away from the camera",
    "towards": "Towards the camera",
    "none": "It does not change its position",
}


def r_question(c: QuestionContext) -> dict[str, Any] | None:
    """R: the rotation direction about the vertical axis (the answer class first, then an object of it)."""
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


def c_question(c: QuestionContext) -> dict[str, Any] | None:
    """C: how many of up to ``COUNT_NAMED`` named regions translate, rotate or stay still (options ``COUNT_OPTIONS``).

    The question names the regions it counts (``"How many of <obj_1>, <obj_3> and <obj_4> ..."``), as region-level
    benchmarks do, so that the student reads each one's motion where the prompt points at it; ``meta["objs"]`` lists
    them."""
    if len(c.marks) < 2:
        return None
    kind = c.pick(["translating", "rotating", "static"])
    chosen = sorted(c.rng.choice(len(c.marks), size=min(len(c.marks), COUNT_NAMED), replace=False).tolist())
    named = [c.marks[i] for i in chosen]
    objs = [c.obj(m) for m in named]
    regions = ", ".join(m.token for m in named[:-1]) + f" and {named[-1].token}"
    if kind == "translating":
        n, q = sum(o.translates for o in objs), f"How many of {regions} change their position during the video?"
    elif kind == "rotating":
        n, q = sum(o.rotates for o in objs), f"How many of {regions} spin about their vertical axis during the video?"
    else:
        n, q = sum(not o.moves for o in objs), f"How many of {regions} stay completely still during the video?"
    if n >= len(COUNT_OPTIONS):
        return None
    return {
        "question": q,
        "options": shuffle(list(COUNT_OPTIONS), c.rng),
        "answer": str(n),
        "meta": {"kind": f"count_{kind}", "objs": [m.obj_id for m in named]},
    }


def _direction_key(c: QuestionContext, m: Mark, t0: float, t1: float) -> str:
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


def t_question(c: QuestionContext) -> dict[str, Any] | None:
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
    q = (
        f"Between {fmt_time(t0)} and {fmt_time(t1)}, in which direction does {m.token} move over the ground, "
        "relative to the camera's initial viewpoint?"
    )
    meta = {"kind": "direction", "obj": m.obj_id, "t0": t0, "t1": t1, "answer_key": key}
    return {
        "question": q,
        "options": shuffle(list(DIRECTION_OPTIONS.values()), c.rng),
        "answer": DIRECTION_OPTIONS[key],
        "meta": meta,
    }


def fp_question(c: QuestionContext) -> dict[str, Any] | None:
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
        q, never = (
            f"At what time does {m.token} start to change its position?",
            "It never changes its position",
        )
    else:
        q, never = f"At what time does {m.token} start spinning about its vertical axis?", "It never spins"
    meta: dict[str, Any] = {"kind": kind, "obj": m.obj_id}
    try:
        options, answer = time_options(event, never, c.grid, c.rng)
    except RuntimeError:
        return None
    return {"question": q, "options": options, "answer": answer, "meta": meta}


def sa_question(c: QuestionContext) -> dict[str, Any] | None:
    """SA: average speed over an interval, speed at a time (m/s) or acceleration magnitude (m/s²)."""
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
        times = [
            t
            for t in c.grid
            if t >= obj.start_s + dt - 1e-9 and c.frame(t) + 1 < c.scene.num_frames and t >= dt
        ]
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
    built = numeric_or_none(value, unit, c.rng)
    if built is None:
        return None
    options, answer = built
    return {"question": q, "options": options, "answer": answer, "meta": meta}


def _path_length(obj: Any, t0: float, t1: float) -> float:
    """Ground path length (m) of ``obj`` between ``t0`` and ``t1``: straight-line motion, so the displacement."""
    c = obj.pose(np.array([t0, t1]))[0]
    return float(np.linalg.norm(c[1] - c[0]))


def dp_question(c: QuestionContext) -> dict[str, Any] | None:
    """DP: displacement or path length (metres) between two times."""
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
    built = numeric_or_none(value, "m", c.rng)
    if built is None:
        return None
    options, answer = built
    return {
        "question": q,
        "options": options,
        "answer": answer,
        "meta": {"kind": kind, "obj": m.obj_id, "t0": t0, "t1": t1},
    }
