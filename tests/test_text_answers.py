"""The shared answer extractor against a table of tricky model outputs."""

from __future__ import annotations

import pytest

from rgpt4d_core.text.answers import extract_answer

DIRS = ["left", "right", "towards the camera", "away from the camera", "not moving"]
ROT = ["clockwise", "counter-clockwise", "not rotating", "first clockwise then counter-clockwise"]
DIST = ["1.5 m", "3.20 m", "0.4 m", "6 m", "12 m"]
SPEED = ["0.5 m/s", "3.2 m/s", "3.2 m", "10 m/s"]
COUNT = ["1", "2", "3", "4"]
YESNO = ["Yes", "No"]
OBJS = ["A car", "A person", "A dog", "None of them"]

# (output, options, expected index or None, expected method)
TABLE: list[tuple[str, list[str], int | None, str]] = [
    # bare letters
    ("B", DIRS, 1, "letter"),
    ("(C)", DIRS, 2, "letter"),
    ("D.", DIRS, 3, "letter"),
    ("**E**", DIRS, 4, "letter"),
    ("b", DIRS, 1, "letter"),
    ("  A\n", DIRS, 0, "letter"),
    ("C<|im_end|>", DIRS, 2, "letter"),
    # leading letters followed by text
    ("B. right", DIRS, 1, "letter"),
    ("B) right", DIRS, 1, "letter"),
    ("(B) right", DIRS, 1, "letter"),
    ("B: right", DIRS, 1, "letter"),
    ("D - 6 m", DIST, 3, "letter"),
    ("C\nBecause the object turns.", ROT, 2, "letter"),
    # answer statements
    ("Answer: B", DIRS, 1, "letter"),
    ("The answer is (C) towards the camera.", DIRS, 2, "letter"),
    ("The correct option is D", DIRS, 3, "letter"),
    ("answer: (b)", DIRS, 1, "letter"),
    ("Looking at (A) and (B), the answer is B.", DIRS, 1, "letter"),
    ("Option C is correct.", DIRS, 2, "letter"),
    ("E is the correct answer", DIRS, 4, "letter"),
    ("The answer is A.", OBJS, 0, "letter"),
    # letters that must not count
    ("A car moves to the left.", DIRS, 0, "option_text"),  # the article "A", then option text
    ("Based on the video, the object moves right.", DIRS, 1, "option_text"),  # B in "Based"
    ("F", DIRS, None, "none"),  # out of range
    ("The answer is a person.", OBJS, 1, "option_text"),
    # option text: case/space/hyphen-insensitive, longest match wins
    ("It rotates counter-clockwise.", ROT, 1, "option_text"),
    ("counter clockwise", ROT, 1, "option_text"),
    ("CLOCKWISE", ROT, 0, "option_text"),
    ("The object is first   clockwise then counter-clockwise", ROT, 3, "option_text"),
    ("It is not moving.", DIRS, 4, "option_text"),
    ("Towards The Camera", DIRS, 2, "option_text"),
    ("No, it does not.", YESNO, 1, "option_text"),
    ("yes", YESNO, 0, "option_text"),
    # option value: numbers with units
    ("3.2 m", DIST, 1, "option_value"),
    ("About 3.2 meters.", DIST, 1, "option_value"),
    ("6.0m", DIST, 3, "option_value"),
    ("3.2", SPEED[:2], 1, "option_value"),  # no unit in the output matches "3.2 m/s"
    ("3.2 m/s", SPEED, 1, "option_text"),  # "3.2 m" inside "3.2 m/s" yields to the longer option
    ("3.20 m/s", SPEED, 1, "option_value"),  # unit decides between "3.2 m/s" and "3.2 m"
    ("3.2", SPEED, None, "ambiguous"),  # two options have value 3.2 and no unit decides
    ("2 m", DIST, None, "none"),  # 2 is not 12
    ("There are 3 objects.", COUNT, 2, "option_text"),
    ("0.4", DIST, 2, "option_value"),
    ("It travels 3.2 m in 2.0 s.", DIST, 1, "option_value"),  # "2.0 s" has the wrong unit
    ("\u22120.75 m", ["0.75 m", "-0.75 m"], 1, "option_text"),  # unicode minus == "-"
    ("Answer: A person", OBJS, 1, "option_text"),  # "A" is the article here
    ("A is the correct answer.", OBJS, 0, "letter"),
    (
        '{"center": [1.0, 2.0, 0.5], "size": [2, 1, 1]}',
        ['{"center": [0.0, 2.0, 0.5], "size": [2, 1, 1]}', '{"center": [1.0, 2.0, 0.5], "size": [2, 1, 1]}'],
        1,
        "option_text",
    ),
    # ambiguous and empty outputs
    ("A or B", DIRS, None, "ambiguous"),
    ("(A) left (B) right", DIRS, None, "ambiguous"),
    ("It moves left and then right.", DIRS, None, "ambiguous"),
    ("I think it's C.", DIRS, 2, "letter"),
    ("", DIRS, None, "none"),
    ("I cannot determine this from the video.", DIRS, None, "none"),
    ("Between 2 and 3 cars.", COUNT, None, "ambiguous"),
]


@pytest.mark.parametrize(
    ("output", "options", "index", "method"), TABLE, ids=[repr(t[0])[:40] for t in TABLE]
)
def test_extractor_table(output: str, options: list[str], index: int | None, method: str) -> None:
    got = extract_answer(output, options)
    assert (got.index, got.method) == (index, method), f"{output!r} -> {got}"


def test_table_is_large_enough_and_letters_map() -> None:
    assert len(TABLE) >= 30
    assert extract_answer("(B)", DIRS).letter == "B"
    assert extract_answer("?", DIRS).letter is None


def test_bad_option_counts_raise() -> None:
    with pytest.raises(ValueError, match="options"):
        extract_answer("A", [])
    with pytest.raises(ValueError, match="options"):
        extract_answer("A", [str(i) for i in range(9)])
