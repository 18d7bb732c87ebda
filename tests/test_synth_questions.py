"""Every generated answer is re-derived from the written ground-truth arrays alone (frame differences of the
per-frame boxes, camera matrices, instance masks), not from the scene's analytic motion used by the generator."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rgpt4d_core.synth.balance import answer_class, balance_answers, classes_of
from rgpt4d_core.synth.config import SynthConfig
from rgpt4d_core.synth.dataset import GroundTruth
from rgpt4d_core.synth.questions import DYNAMIC_TASKS, STATIC_TASKS, TASKS
from rgpt4d_core.synth.writer import build_scene, finalize, load_ground_truth, write_scene

CFG = SynthConfig(seed=3, num_scenes=14, width=64, height=64, fps_choices=(10, 12), min_duration_s=2.0,
                  max_duration_s=3.5, max_frames=42, min_objects=3, max_objects=6, balance_answers=False)
#: the same kind of world with answer balancing on and several questions per category (the experiment world's form)
BALANCED = dataclasses.replace(CFG, seed=4, num_scenes=40, questions_per_category=4, balance_answers=True)


_GT_CACHE: dict[str, GroundTruth] = {}


def _gt(root: Path, row: dict[str, Any]) -> GroundTruth:
    key = str(root / row["video"])
    if key not in _GT_CACHE:
        _GT_CACHE[key] = load_ground_truth(key)
    return _GT_CACHE[key]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth_q")
    for i in range(CFG.num_scenes):
        write_scene(str(root), build_scene(CFG, i))
    finalize(str(root), CFG)
    return root


def _rows(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for s in ("train", "val", "test") for line in (root / "questions" / f"{s}.jsonl").read_text().splitlines()]


PHRASES = {
    "left": "to the left of", "right": "to the right of", "closer": "closer to the camera", "farther": "farther from",
    "none": "It does not rotate", "clockwise": "It rotates clockwise", "counter-clockwise": "It rotates counter-clockwise",
    "does not change": "It does not change", "away": "Away from", "towards": "Towards",
    "To the right": "To the right", "To the left": "To the left",
}


def _frame(gt: GroundTruth, t: float) -> int:
    i = int(np.argmin(np.abs(gt.timestamps_s - t)))
    assert abs(gt.timestamps_s[i] - t) < 1e-9, f"question time {t} is not a frame time"
    return i


def _number(text: str) -> float:
    return float(text.split()[0])


def _series(gt: GroundTruth, inst: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``[F, 3]`` and yaws ``[F]`` of one object from the stored boxes."""
    return gt.boxes[:, inst - 1, :3], gt.boxes[:, inst - 1, 6]


def _first_change(values: np.ndarray) -> int | None:
    """Index of the first frame whose value differs from frame 0's, or None."""
    diff = np.abs(values - values[0]).reshape(len(values), -1).max(-1)
    idx = np.nonzero(diff > 1e-9)[0]
    return int(idx[0]) if len(idx) else None


def _expected(row: dict[str, Any], gt: GroundTruth) -> Any:
    """The answer re-derived from ground truth: a number, a key string, or a box dict."""
    meta = row["meta"]
    inst = {r["obj_id"]: r["instance_id"] for r in row["regions"]}
    a = inst.get(meta.get("obj", -1), 0)
    b = inst.get(meta.get("obj2", -1), 0)
    kind = meta["kind"]
    dt = 1.0 / gt.fps
    if kind == "box":
        f = _frame(gt, meta["t"])
        return {"center": gt.boxes[f, a - 1, :3], "size": gt.boxes[f, a - 1, 3:6], "yaw": gt.boxes[f, a - 1, 6]}
    if kind == "height":
        return gt.boxes[0, a - 1, 5]
    if kind == "distance_camera":
        f = _frame(gt, meta["t"])
        return np.linalg.norm(gt.boxes[f, a - 1, :3] - gt.cam_to_world[f, :3, 3])
    if kind == "distance_pair":
        f = _frame(gt, meta["t"])
        return np.linalg.norm(gt.boxes[f, a - 1, :3] - gt.boxes[f, b - 1, :3])
    if kind == "relation":
        f = _frame(gt, meta["t"])
        w2c = np.linalg.inv(gt.cam_to_world[f].astype(np.float64))
        pa, pb = (w2c @ np.append(gt.boxes[f, k - 1, :3], 1.0) for k in (a, b))
        return ("left" if pa[0] < pb[0] else "right", "closer" if pa[2] < pb[2] else "farther")
    if kind == "rotation":
        dyaw = np.diff(_series(gt, a)[1])
        return "none" if np.all(dyaw == 0) else ("counter-clockwise" if np.all(dyaw >= 0) else "clockwise")
    if kind.startswith("count_"):
        ids = [inst[k] for k in meta["objs"]]
        assert all(f"<obj_{k}>" in row["question"] for k in meta["objs"]), row["question"]
        moved = [_first_change(_series(gt, k)[0][:, :2]) is not None for k in ids]
        spun = [_first_change(_series(gt, k)[1]) is not None for k in ids]
        return {"count_translating": sum(moved), "count_rotating": sum(spun),
                "count_static": sum(not (m or s) for m, s in zip(moved, spun, strict=True))}[kind]
    if kind == "direction":
        c = _series(gt, a)[0]
        d = c[_frame(gt, meta["t1"])] - c[_frame(gt, meta["t0"])]
        if np.abs(d[:2]).max() == 0:
            return "does not change"
        if abs(d[0]) > abs(d[1]):
            return "To the right" if d[0] > 0 else "To the left"
        return "away" if d[1] > 0 else "towards"
    if kind in ("start_moving", "start_rotating"):
        series = _series(gt, a)[0][:, :2] if kind == "start_moving" else _series(gt, a)[1]
        first = _first_change(series)
        return None if first is None else float(gt.timestamps_s[first - 1])
    if kind in ("avg_speed", "path_length", "displacement"):
        c = _series(gt, a)[0]
        i0, i1 = _frame(gt, meta["t0"]), _frame(gt, meta["t1"])
        steps = np.linalg.norm(np.diff(c[i0 : i1 + 1], axis=0), axis=1).sum()
        if kind == "avg_speed":
            return steps / (meta["t1"] - meta["t0"])
        return steps if kind == "path_length" else np.linalg.norm(c[i1] - c[i0])
    if kind in ("speed_at", "acceleration"):
        c = _series(gt, a)[0]
        i = _frame(gt, meta["t"])
        if kind == "speed_at":  # central difference: exact for piecewise-quadratic motion away from the kink
            return np.linalg.norm(c[i + 1] - c[i - 1]) / (2 * dt)
        return np.linalg.norm(c[i + 1] - 2 * c[i] + c[i - 1]) / dt**2
    raise AssertionError(f"unknown meta kind {kind}")


def _check(row: dict[str, Any], expected: Any) -> None:
    ans, others = row["answer"], [o for o in row["options"] if o != row["answer"]]
    kind = row["meta"]["kind"]
    if kind == "box":
        box = json.loads(ans)
        np.testing.assert_allclose(box["center"], expected["center"], atol=0.006)
        np.testing.assert_allclose(box["size"], expected["size"], atol=0.006)
        for o in others:
            ob = json.loads(o)
            diff = max(np.abs(np.subtract(ob["center"], expected["center"])).max(), np.abs(np.subtract(ob["size"], expected["size"])).max())
            assert diff > 0.2, f"distractor {o} too close to the true box"
    elif kind == "relation":
        side, depth = expected
        phrase = "closer to the camera" if depth == "closer" else "farther from the camera"
        assert ans.startswith(f"to the {side} of ") and ans.endswith(phrase), (row["id"], ans, expected)
    elif isinstance(expected, str):
        phrase = PHRASES[expected]
        assert ans.startswith(phrase), f"{row['id']}: expected {phrase!r}, answer {ans!r}"
        assert not any(o.startswith(phrase) for o in others), row["options"]
    elif kind.startswith("count_"):
        assert int(ans) == expected
    elif kind in ("start_moving", "start_rotating"):
        if expected is None:
            assert ans.startswith("It never") or ans.startswith("They never"), (row["id"], ans)
        else:
            assert ans == f"At {expected:.1f} s", (row["id"], ans, expected)
    else:
        assert _number(ans) == pytest.approx(float(expected), abs=0.006), (row["id"], row["question"], ans, expected)
        assert all(abs(_number(o) - float(expected)) > 0.025 for o in others), (row["id"], row["options"])


def test_every_answer_rederived_from_ground_truth(dataset: Path) -> None:
    rows = _rows(dataset)
    assert len(rows) > 9 * CFG.num_scenes * 0.8
    for row in rows:
        _check(row, _expected(row, _gt(dataset, row)))
    kinds = {row["meta"]["kind"] for row in rows}
    assert len(kinds) >= 15, f"too few question kinds exercised: {sorted(kinds)}"


def test_rows_are_well_formed_r4d_items(dataset: Path) -> None:
    for row in _rows(dataset):
        assert row["task"] in TASKS
        assert 4 <= len(row["options"]) <= 5 and len(set(row["options"])) == len(row["options"])
        assert row["options"].count(row["answer"]) == 1
        ids = {r["obj_id"] for r in row["regions"]}
        refs = {int(k) for k in re.findall(r"<obj_(\d+)>", " ".join([row["question"], *row["options"]]))}
        assert refs <= ids, f"{row['id']} references marks that are not on the SoM image"
        gt = _gt(dataset, row)
        for r in row["regions"]:  # every region is visible on frame 1 and its box is the mask's box
            ys, xs = np.nonzero(gt.instance[0] == r["instance_id"])
            h, w = gt.instance.shape[1:]
            assert len(xs) >= 12
            np.testing.assert_allclose(r["box"], [xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h], atol=1e-4)


def test_category_balance_and_answer_positions(dataset: Path) -> None:
    rows = _rows(dataset)
    counts = Counter(r["task"] for r in rows)
    assert set(counts) == set(TASKS)
    assert min(counts.values()) >= 0.7 * max(counts.values()), counts
    assert sum(counts[t] for t in DYNAMIC_TASKS) > sum(counts[t] for t in STATIC_TASKS)
    letters = Counter(r["options"].index(r["answer"]) for r in rows)
    assert len(letters) >= 4 and max(letters.values()) < 0.45 * len(rows), letters  # shuffled, not always "A"
    timed = sum(" s," in r["question"] or " s and " in r["question"] for r in rows)
    assert timed > 0.4 * len(rows)  # many questions are anchored in time


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth_balanced")
    for i in range(BALANCED.num_scenes):
        write_scene(str(root), build_scene(BALANCED, i))
    finalize(str(root), BALANCED)
    return root


def test_balanced_world_has_equal_answer_classes_in_every_group(balanced: Path) -> None:
    by_group: dict[tuple[str, str, str], Counter[str]] = {}
    for s in ("train", "val", "test"):
        for line in (balanced / "questions" / f"{s}.jsonl").read_text().splitlines():
            row = json.loads(line)
            by_group.setdefault((s, row["task"], row["meta"]["kind"]), Counter())[answer_class(row)] += 1
    train_tasks = {task for (s, task, _) in by_group if s == "train"}
    assert train_tasks == set(TASKS), f"a category vanished from the training split: {sorted(train_tasks)}"
    for key, counts in by_group.items():
        assert set(counts) <= set(classes_of(key[2])) and len(counts) >= 2, (key, counts)
        assert len(set(counts.values())) == 1, (key, counts)  # equally many of each class present
        if key[0] == "train" and key[2] != "acceleration":  # the big split has every class of every kind
            assert set(counts) == set(classes_of(key[2])), (key, counts)
    for row in _rows(balanced):  # the kept questions are still answered correctly
        _check(row, _expected(row, _gt(balanced, row)))


def _row(task: str, kind: str, key: str) -> dict[str, Any]:
    return {"task": task, "options": [], "answer": key, "meta": {"kind": kind, "answer_key": key}}


def test_balance_cuts_every_class_to_the_rarest_present_and_drops_single_class_groups() -> None:
    rows = [_row("R", "rotation", k) for k in ["none"] * 6 + ["cw"] * 3 + ["ccw"] * 2]
    rows += [_row("T", "direction", k) for k in ["none"] * 4 + ["left", "right", "away"]]  # no "towards"
    rows += [_row("C", "count_static", "2")] * 3  # a single class: nothing to balance against
    kept = balance_answers(rows, ["train"] * len(rows), seed=0)
    assert Counter(rows[i]["answer"] for i in kept if rows[i]["task"] == "R") == {"none": 2, "cw": 2, "ccw": 2}
    assert Counter(rows[i]["answer"] for i in kept if rows[i]["task"] == "T") == {"none": 1, "left": 1, "right": 1, "away": 1}
    assert not any(rows[i]["task"] == "C" for i in kept)
    assert kept == sorted(kept) and kept == balance_answers(rows, ["train"] * len(rows), seed=0)
    assert kept != balance_answers(rows, ["train"] * len(rows), seed=1)  # the seed chooses which ones
    split = ["train"] * 6 + ["test"] * 5 + ["train"] * 10  # per split: train has only "none" rotations
    kept = balance_answers(rows, split, seed=0)
    assert Counter(rows[i]["answer"] for i in kept if rows[i]["task"] == "R") == {"cw": 2, "ccw": 2}
