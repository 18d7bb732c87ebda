"""Builders of the static categories (one time instant): VG (3D box at a time), DM (size / distance in metres),
SR (left/right and closer/farther between two regions). Each returns ``question, options, answer, meta`` or
``None`` when this scene cannot ask it fairly (:func:`~rgpt4d_core.synth.questions.make_questions` retries).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from rgpt4d_core.synth.options import fmt_time, shuffle
from rgpt4d_core.synth.question_context import QuestionContext, numeric_or_none

FRAME_NOTE = "the ground frame of the first camera (x right, y forward, z up, metres)"
RELATION_KEYS = ("left-closer", "left-farther", "right-closer", "right-farther")


def _box_json(centre: np.ndarray, size: np.ndarray, yaw: float, kind: str) -> str:
    """A VG option: centre and size (metres, rounded to cm) and yaw about z (degrees; 0 for non-boxes) as JSON."""
    yaw_deg = 0.0 if kind != "box" else ((np.rad2deg(yaw) + 90.0) % 180.0) - 90.0
    d = {
        "center": [round(float(v), 2) for v in centre],
        "size": [round(float(v), 2) for v in size],
        "yaw_deg": round(float(yaw_deg)),
    }
    return json.dumps(d)


#: VG distractor ladders: (axis, step): a shift of the centre in metres along x or y, or a scale of the size
_VG_LADDERS = (("x", 1.0), ("y", 1.2), ("size", 1.5))


def vg_question(c: QuestionContext) -> dict[str, Any] | None:
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
            boxes.append(
                _box_json(
                    np.array([centre[0], centre[1], s[2] / 2.0]) if k != rank else centre, s, yaw, obj.kind
                )
            )
        else:
            shift = np.array([step * (k - rank), 0.0, 0.0] if axis == "x" else [0.0, step * (k - rank), 0.0])
            boxes.append(_box_json(centre + shift, size, yaw, obj.kind))
    answer = boxes[rank]
    if len(set(boxes)) != len(boxes):
        return None
    q = f"At {fmt_time(t)}, which is the 3D bounding box of {m.token} in {FRAME_NOTE}? (yaw in degrees about z)"
    meta = {"kind": "box", "obj": m.obj_id, "t": t, "ladder": axis}
    return {"question": q, "options": shuffle(boxes, c.rng), "answer": answer, "meta": meta}


def dm_question(c: QuestionContext) -> dict[str, Any] | None:
    """DM: a height, an object-camera distance or an object-object distance in metres (numeric options)."""
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
    built = numeric_or_none(value, "m", c.rng)
    if built is None:
        return None
    options, answer = built
    return {"question": q, "options": options, "answer": answer, "meta": meta}


def sr_question(c: QuestionContext) -> dict[str, Any] | None:
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
        return {
            "question": q,
            "options": shuffle(list(options.values()), c.rng),
            "answer": options[key],
            "meta": meta,
        }
    return None


def _relation_text(key: str, other: str) -> str:
    """``"left-closer", "<obj_2>"`` -> ``"to the left of <obj_2> and closer to the camera"``."""
    side, depth = key.split("-")
    return f"to the {side} of {other} and {'closer to' if depth == 'closer' else 'farther from'} the camera"
