"""The time probe TB, after the paper's TimeBench toy test (Table A3): "How much time has passed in the video?".

The paper's options are 0.25x, 0.5x, 1x, 2x and 4x the true duration, so the answer is always the middle value: a
model that is *trained* on such questions learns "pick the median" from the text alone. Here the options are a
geometric ladder with the answer at a random rank (:func:`~rgpt4d_core.synth.options.numeric_options`, as for the
other numeric categories) and the answer balance keeps every rank equally frequent, so only a time cue in the input
(the duration sentence of the prompt, or timestamps such as TPE's) answers it above the world's duration prior.

The answer is the video's length ``num_frames / fps`` in seconds: the number the duration sentence states.
"""

from __future__ import annotations

from typing import Any

from rgpt4d_core.synth.question_context import QuestionContext, numeric_or_none

TIME_PASSED_QUESTION = "How much time has passed in the video?"


def tb_question(c: QuestionContext) -> dict[str, Any] | None:
    """TB: the video's duration in seconds, among five options on a ladder (``None`` if no fair ladder exists)."""
    duration = c.scene.duration_s
    built = numeric_or_none(duration, "seconds", c.rng)
    if built is None:
        return None
    options, answer = built
    meta = {"kind": "time_passed", "duration_s": duration}
    return {"question": TIME_PASSED_QUESTION, "options": options, "answer": answer, "meta": meta}
