"""One engine answer, its HTTP body and its evaluation row: ``VQAAnswer.from_result`` copies the fields the body
shares with ``VQAResult`` by name, ``prediction_from_result`` maps it onto the scored ``Prediction``."""

from __future__ import annotations

import dataclasses

from rgpt4d_core.eval.predict import prediction_from_result
from rgpt4d_core.serve.api import Timings, VQAAnswer
from rgpt4d_core.serve.vqa_types import VQAError, VQAResult
from rgpt4d_core.types import VQAItem

RESULT = VQAResult(request_id="r1", answer="right", answer_index=1, answer_letter="B", method="letter",
                   raw_output="B", batch_size=3, duration_s=2.5, num_frames=16, prompt_tokens=900,
                   completion_tokens=2, decode_ms=12.0, generate_ms=40.0)  # fmt: skip


def test_http_body_takes_every_shared_field_from_the_result() -> None:
    timings = Timings(decode_ms=12.0, generate_ms=40.0, total_ms=55.0)
    body = VQAAnswer.from_result(RESULT, request_id="r1", model="tiny", timings=timings, media=None)
    own = {"request_id", "model", "timings", "media"}
    result_fields = {f.name for f in dataclasses.fields(VQAResult)}
    assert set(VQAAnswer.model_fields) - own <= result_fields  # no body field the result lacks
    dumped = body.model_dump()
    assert {k: dumped[k] for k in set(VQAAnswer.model_fields) - own} == {
        k: getattr(RESULT, k) for k in set(VQAAnswer.model_fields) - own
    }
    assert (dumped["model"], dumped["timings"]["total_ms"], dumped["media"]) == ("tiny", 55.0, None)
    assert list(dumped)[:3] == ["request_id", "model", "answer"]  # the documented order of the body


def test_evaluation_row_scores_the_result_against_the_item() -> None:
    item = VQAItem(id="r1", video="v.mp4", question="Where is <obj_1>?", options=("left", "right"), answer="left",
                   task="SR")  # fmt: skip
    wrong = prediction_from_result(item, RESULT)
    assert (wrong.pred_index, wrong.answer_index, wrong.correct, wrong.num_frames) == (1, 0, False, 16)
    right = prediction_from_result(item, dataclasses.replace(RESULT, answer_index=0))
    assert right.correct and right.to_row()["pred_letter"] == "A"
    failed = prediction_from_result(item, VQAError("r1", "video_corrupt", "video: bad"))
    assert (failed.method, failed.error_code, failed.correct) == ("error", "video_corrupt", False)
