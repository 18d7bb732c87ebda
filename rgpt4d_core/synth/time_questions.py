"""The time probe TB, after the paper's TimeBench toy test (Table A3): "How much time has passed in the video?".

The paper's options are 0.25x, 0.5x, 1x, 2x and 4x the true duration, so the answer is always the middle value: a
model that is *trained* on such questions learns "pick the median" from the text alone. A ladder with the answer at
a random rank does not fix it in a synthetic world: its lengths are drawn on a 0.5 s grid, so the one option on the
grid would be the answer. Here the options are the world's own possible lengths (:func:`duration_options`), as the
counting questions always offer the same four counts: with answers balanced per length, nothing in the text tells
them apart, and only a time cue in the input (the duration sentence of the prompt, or timestamps such as TPE's)
answers above 1 / (number of options).

The answer is the video's length ``num_frames / fps`` in seconds: the number the duration sentence states.
"""

from __future__ import annotations

from typing import Any

from rgpt4d_core.synth.options import fmt_number, shuffle
from rgpt4d_core.synth.question_context import QuestionContext

TIME_PASSED_QUESTION = "How much time has passed in the video?"
#: options per question; a world with more possible lengths offers a window of them around the answer
TB_OPTIONS = 5


def duration_options(duration: float, durations: tuple[float, ...], start: int) -> list[float] | None:
    """The option lengths (s, ascending) for a video of ``duration`` s in a world of lengths ``durations``.

    All of them when the world has at most :data:`TB_OPTIONS` (then the options never depend on the answer);
    else the window of :data:`TB_OPTIONS` consecutive lengths that starts at index ``start`` when it contains the
    answer (the caller draws ``start``; near the ends of the range a window's position hints at its answer).
    ``None`` when ``duration`` is not one of ``durations`` (a clip cut at ``max_frames``) or fewer than 4 exist.
    """
    grid = sorted(durations)
    if len(grid) < 4 or not any(abs(d - duration) < 1e-6 for d in grid):
        return None
    if len(grid) <= TB_OPTIONS:
        return grid
    window = grid[start : start + TB_OPTIONS]
    inside = len(window) == TB_OPTIONS and window[0] - 1e-6 <= duration <= window[-1] + 1e-6
    return window if inside else None


def tb_question(c: QuestionContext) -> dict[str, Any] | None:
    """TB: the video's length in seconds among the world's possible lengths (``None``: not askable fairly)."""
    duration = c.scene.duration_s
    start = int(c.rng.integers(max(1, len(c.durations) - TB_OPTIONS + 1)))
    lengths = duration_options(duration, c.durations, start)
    if lengths is None:
        return None
    texts = [fmt_number(d, "seconds") for d in lengths]
    answer = fmt_number(duration, "seconds")
    meta = {"kind": "time_passed", "duration_s": duration}
    return {"question": TIME_PASSED_QUESTION, "options": shuffle(texts, c.rng), "answer": answer, "meta": meta}
