"""Evaluation: scoring with known predictions, an R4D-Bench-shaped fixture read as is, and the Ray job end to end.

The fixture below is laid out like a downloaded R4D-Bench: real H.264 mp4 files under ``videos/stibench`` and
``videos/vlm4d``, SoM PNGs (frame 1 with marks) under ``som_images/``, one JSON list of items with ``id``,
``benchmark``, ``task`` (full category names), ``video``, ``som_image``, ``question`` (``<obj_k>`` tokens),
``options`` and ``answer`` (the option string), media paths relative to the root and no ``regions`` field.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rgpt4d_core.eval.benchmark import BenchmarkFormatError, load_benchmark
from rgpt4d_core.eval.metrics import accuracy_table, random_guess_table
from rgpt4d_core.eval.predict import BenchmarkPredictor, Prediction, error_prediction, prediction_from_text
from rgpt4d_core.eval.report import read_predictions, read_tables, summary_of, write_report
from rgpt4d_core.model.preprocess import frames_to_pixels
from rgpt4d_core.regions import draw_set_of_marks, region_from_box
from rgpt4d_core.serve.engine import EngineConfig, PreparedRequest, VQAEngine, write_random_checkpoint
from rgpt4d_core.types import VQAItem
from rgpt4d_core.video.encode import encode_video

SIZE, FRAMES, FPS = 64, 20, 10.0
ITEMS = [  # (id, source, task as R4D-Bench spells it, question, options, answer)
    ("sti_0001", "stibench", "Dimension Measurement", "How tall is <obj_1>?", ["0.5 m", "1.0 m", "1.5 m", "2.0 m", "2.5 m"], "1.0 m"),
    ("sti_0002", "stibench", "Speed & Acceleration", "How fast does <obj_1> move?", ["0.2 m/s", "0.4 m/s", "0.8 m/s", "1.6 m/s", "3.2 m/s"], "0.8 m/s"),
    ("v4d_0001", "vlm4d", "Translational", "Where does <obj_1> move?", ["left", "right", "towards the camera", "not moving"], "right"),
    ("v4d_0002", "vlm4d", "Counting", "How many times does <obj_2> cross <obj_1>?", ["0", "1", "2", "3"], "1"),
    ("v4d_0003", "vlm4d", "Rotational", "How does <obj_1> rotate?", ["clockwise", "counter-clockwise", "it does not", "both"], "clockwise"),
]
BROKEN_ID = "v4d_0003"  # its mp4 is corrupt: must be counted as an error, not dropped


def _frames(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.full((FRAMES, SIZE, SIZE, 3), 40, np.uint8)
    colour = rng.integers(80, 255, 3)
    for t in range(FRAMES):
        x = 4 + 2 * t
        frames[t, 20:36, x : x + 16] = colour
    return frames


def write_r4d_fixture(root: Path, fmt: str = "json") -> Path:
    """A tiny R4D-Bench download: videos, SoM images and the question file (``json`` or HF-style parquet)."""
    rows = []
    for n, (item_id, source, task, question, options, answer) in enumerate(ITEMS):
        video = Path("videos") / source / f"{item_id}.mp4"
        som = Path("som_images") / source / f"{item_id}.png"
        (root / video).parent.mkdir(parents=True, exist_ok=True)
        (root / som).parent.mkdir(parents=True, exist_ok=True)
        frames = _frames(n)
        if item_id == BROKEN_ID:
            (root / video).write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
        else:
            encode_video(frames, FPS, root / video)
        marks = [region_from_box(1, (4 / SIZE, 20 / SIZE, 20 / SIZE, 36 / SIZE)),
                 region_from_box(2, (0.6, 0.6, 0.9, 0.9))]  # fmt: skip
        som_rgb = draw_set_of_marks(frames[0], marks)
        assert cv2.imwrite(str(root / som), cv2.cvtColor(som_rgb, cv2.COLOR_RGB2BGR))
        rows.append({"id": item_id, "benchmark": source, "task": task, "video": str(video), "som_image": str(som),
                     "question": question, "options": options, "answer": answer})  # fmt: skip
    if fmt == "json":
        (root / "r4d_bench.json").write_text(json.dumps(rows, indent=1))
    else:
        (root / "data").mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / "data" / "test-00000-of-00001.parquet")
    return root


@pytest.fixture(scope="module")
def r4d_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_r4d_fixture(tmp_path_factory.mktemp("R4D-Bench"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_random", seed=0)


# ---------------------------------------------------------------------------------------------------- scoring


def _item(item_id: str, task: str, options: list[str], answer: str) -> VQAItem:
    return VQAItem(id=item_id, video="v.mp4", question="q <obj_1>", options=tuple(options), answer=answer, task=task)


ABCDE = ["A0", "B1", "C2", "D3", "E4"]
#: hand-made benchmark: (item, raw model output, extractor method expected, correct?)
HAND_MADE = [
    (_item("vg1", "VG", ABCDE, "B1"), "B", "letter", True),
    (_item("vg2", "VG", ABCDE, "C2"), "Answer: (D)", "letter", False),
    (_item("dm1", "DM", ["1.50 m", "3.20 m", "4.00 m", "6.25 m", "8.00 m"], "3.20 m"), "about 3.2 m", "option_value", True),
    (_item("sr1", "SR", ["left", "right", "above", "below"], "above"), "It is above the table.", "option_text", True),
    (_item("r1", "R", ["clockwise", "counter-clockwise", "no rotation", "both"], "counter-clockwise"),
     "counter-clockwise", "option_text", True),
    (_item("c1", "C", ["1", "2", "3", "4"], "3"), "(C) 3", "letter", True),
    (_item("t1", "T", ["left", "right", "towards", "away", "static"], "away"), "B or D", "ambiguous", False),
    (_item("fp1", "FP", ["yes", "no", "maybe", "never"], "no"), "I cannot tell.", "none", False),
    (_item("sa1", "SA", ["0.5 m/s", "1.0 m/s", "1.5 m/s", "2.0 m/s", "2.5 m/s"], "1.5 m/s"), "1.5 m/s", "option_text", True),
]


def test_scoring_hand_made_benchmark_through_every_extractor_path() -> None:
    preds = [prediction_from_text(item, text) for item, text, _, _ in HAND_MADE]
    for (item, _, method, correct), p in zip(HAND_MADE, preds, strict=True):
        assert (p.method, p.correct) == (method, correct), item.id
    dp = _item("dp1", "DP", ABCDE, "A0")  # its video failed to decode: an error, wrong, still in the denominator
    preds.append(error_prediction(dp, "video_corrupt", "moov atom not found"))

    table = accuracy_table((p.scored() for p in preds), "hand-made")
    # 10 questions, 6 right: Avg is over all questions (not the mean of the category accuracies, which is 61.1)
    assert table.accuracy["Avg"] == 60.0
    assert table.accuracy["Sta"] == 75.0  # VG 1/2, DM 1/1, SR 1/1 -> 3/4
    assert table.accuracy["Dyn"] == 50.0  # R, C, SA right; T, FP, DP wrong -> 3/6
    assert (table.accuracy["VG"], table.accuracy["DM"], table.accuracy["DP"]) == (50.0, 100.0, 0.0)
    assert table.counts["Avg"] == 10 and table.counts["Dyn"] == 6
    assert table.errors == {"Avg": 1, "Dyn": 1, "DP": 1}

    rnd = random_guess_table(p.scored() for p in preds)
    assert rnd.accuracy["VG"] == 20.0 and rnd.accuracy["C"] == 25.0
    assert rnd.accuracy["Sta"] == pytest.approx(100 * (1 / 5 + 1 / 5 + 1 / 5 + 1 / 4) / 4, abs=0.01)

    summary = summary_of(preds)
    assert summary["errors_by_code"] == {"video_corrupt": 1}
    assert summary["extractor_methods"]["option_text"] == 3 and summary["no_option_chosen"] == 2


def test_report_files_round_trip(tmp_path: Path) -> None:
    preds = [prediction_from_text(item, text) for item, text, _, _ in HAND_MADE]
    preds.append(error_prediction(_item("dp1", "DP", ABCDE, "A0"), "video_truncated", "cut short"))
    tables = [accuracy_table((p.scored() for p in preds), "model"), random_guess_table(p.scored() for p in preds)]
    files = write_report(tmp_path / "rep", preds, tables, title="model on hand-made")
    assert read_predictions(files.predictions) == preds
    assert [t.accuracy for t in read_tables(files.table_json)] == [t.accuracy for t in tables]
    md = files.table_md.read_text()
    assert "| model | 60.0 |" in md and "| Random |" in md and "video_truncated: 1" in md
    png = cv2.imread(str(files.chart_png))
    assert png is not None and png.shape[0] > 100 and png.std() > 0


# ------------------------------------------------------------------------------------------- benchmark reader


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_reads_an_r4d_bench_directory_as_is(tmp_path: Path, fmt: str) -> None:
    root = write_r4d_fixture(tmp_path / "R4D-Bench", fmt)
    bench = load_benchmark(str(root))
    assert bench.layout == "r4d" and len(bench) == len(ITEMS)
    by_id = {i.id: i for i in bench.items}
    assert [i.task for i in bench.items] == ["DM", "SA", "T", "C", "R"]
    for item_id, source, _, _, options, answer in ITEMS:
        item = by_id[item_id]
        assert item.video == f"{root}/videos/{source}/{item_id}.mp4" and Path(item.video).is_file()
        assert item.som_image is not None and Path(item.som_image).is_file()
        assert item.regions == () and item.options == tuple(options) and item.answer == answer


def test_reads_the_synthetic_layout_with_regions(tmp_path: Path) -> None:
    root = tmp_path / "synth"
    (root / "questions").mkdir(parents=True)
    row = {"id": "s0_T_00", "video": "videos/s0.mp4", "som_image": "som/s0.png", "question": "Where does <obj_1> go?",
           "options": ["left", "right"], "answer": "B", "task": "T",
           "regions": [{"obj_id": 1, "box": [0.1, 0.2, 0.3, 0.4], "label": "red box", "instance_id": 1}]}  # fmt: skip
    (root / "questions" / "test.jsonl").write_text(json.dumps(row) + "\n")
    bench = load_benchmark(str(root), split="test")
    (item,) = bench.items
    assert bench.layout == "synthetic" and item.answer == "right"  # a letter answer maps to its option
    assert item.regions[0].box == (0.1, 0.2, 0.3, 0.4) and item.video == f"{root}/videos/s0.mp4"
    (root / "questions" / "val.jsonl").write_text(json.dumps({**row, "id": "s1_T_00"}) + "\n")
    assert [i.id for i in load_benchmark(str(root), split="val+test").items] == ["s1_T_00", "s0_T_00"]


@pytest.mark.parametrize(
    ("change", "message"),
    [({"answer": "purple"}, "answer 'purple' is not one of the options"), ({"task": "Juggling"}, "field 'task'"),
     ({"options": []}, "field 'options'"), ({"video": None}, "missing field(s) ['video']")],  # fmt: skip
)
def test_bad_rows_are_named(tmp_path: Path, change: dict[str, object], message: str) -> None:
    row = {"id": "x1", "video": "v.mp4", "question": "q", "options": ["a", "b"], "answer": "a", "task": "Counting"}
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({**row, **change}) + "\n")
    with pytest.raises(BenchmarkFormatError, match="x1") as info:
        load_benchmark(str(path))
    assert message in str(info.value)


# -------------------------------------------------------------------------------------------- engine + SoM file


def test_predictor_uses_the_som_png_and_counts_decode_failures(r4d_root: Path, checkpoint: Path) -> None:
    engine = VQAEngine(EngineConfig(checkpoint=str(checkpoint), device="cpu", torch_threads=1, max_new_tokens=3))
    predictor = BenchmarkPredictor(engine, regions_from="auto")
    items = list(load_benchmark(str(r4d_root)).items)

    prepared = predictor.prepare(items[0])
    assert isinstance(prepared, PreparedRequest) and prepared.inputs.video.shape[0] == 16
    som_bgr = cv2.imread(str(items[0].som_image))
    assert som_bgr is not None
    som = cv2.cvtColor(som_bgr, cv2.COLOR_BGR2RGB)
    assert np.allclose(prepared.inputs.som_image.numpy(), frames_to_pixels(som, engine.image_size).numpy())

    preds = predictor.predict(items)
    assert [p.id for p in preds] == [i.id for i in items]
    broken = [p for p in preds if p.error_code is not None]
    assert [(p.id, str(p.error_code).startswith("video_")) for p in broken] == [(BROKEN_ID, True)]
    for item, p in zip(items, preds, strict=True):
        if p.error_code is None:  # the engine path and offline re-scoring agree
            assert prediction_from_text(item, p.raw_output).pred_index == p.pred_index
            assert p.num_frames == 16


# ------------------------------------------------------------------------------------------------- Ray job


def test_evaluate_job_on_ray_attaches_to_a_training_run(ray_cluster: None, r4d_root: Path, checkpoint: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    from mlflow.tracking import MlflowClient

    from pipelines import evaluate
    from rgpt4d_core.config import load
    from rgpt4d_core.tracking import MLflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    training = MLflowTracker.start(uri, "rgpt4d-distill", run_name="distill-x", job_key="k")
    job = load(evaluate.EvaluateJob, [Path(__file__).resolve().parents[1] / "conf/eval/synthetic.yaml"], [
        f"benchmark.path={r4d_root}", f"engine.checkpoint={checkpoint}", f"output.dir={tmp_path / 'report'}",
        "output.name=tiny", "benchmark.blind_from=null", "compute.batch_size=2", "compute.num_cpus_per_actor=0.5", "engine.max_new_tokens=3",
        f"mlflow.tracking_uri={uri}", f"mlflow.run_id={training.run_id}"])  # fmt: skip
    result = evaluate.run(job)

    assert len(result.predictions) == len(ITEMS) and result.table.counts["Avg"] == len(ITEMS)
    assert result.table.errors.get("Avg") == 1  # the corrupt video: wrong, reported, in the denominator
    assert result.random is not None and result.random.accuracy["DM"] == 20.0
    assert len(read_predictions(result.files.predictions)) == len(ITEMS)
    assert "could not be answered (video_" in result.files.table_md.read_text()
    run = MlflowClient(uri).get_run(training.run_id)
    assert run.data.metrics["eval/errors"] == 1 and run.data.metrics["eval/items"] == len(ITEMS)
    assert run.data.metrics["eval/random/C"] == 25.0 and "eval/Avg" in run.data.metrics
    assert run.info.status == "RUNNING"  # an attached run's status belongs to its own job
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(training.run_id, "eval/tiny")}
    assert "eval/tiny/accuracy_by_category.png" in artifacts and "eval/tiny/predictions.jsonl" in artifacts
    assert all(isinstance(p, Prediction) for p in result.predictions)
