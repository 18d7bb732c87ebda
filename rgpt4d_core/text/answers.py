"""THE answer extractor: raw model text + MCQ options -> chosen option index (shared by eval and serve).

Rules, in order (the first that decides wins; a rule that finds conflicting choices returns ``ambiguous``):

1. **bare letter**: the whole output is one letter with optional punctuation (``"B"``, ``"(b)"``, ``"**C.**"``);
2. **explicit letter**: an answer statement (``"Answer: B"``, ``"The correct option is (C) …"``, ``"D is
   correct"``) — if present it overrides other letters; otherwise a leading ``"B."`` / ``"B)"`` / ``"(B) …"``
   / ``"B: …"`` / ``"B - …"`` and any parenthesised ``"(B)"`` in the text;
3. **option text**: an option's text appears in the output (case-insensitive, whitespace/hyphen-insensitive,
   on word boundaries); an option found only inside a longer matched option (``"clockwise"`` inside
   ``"counter-clockwise"``) yields to it;
4. **option value**: for options that are a number with an optional unit (``"3.20 m"``, ``"3.2 m/s"``, ``"12"``),
   a number in the output with the same value and a compatible unit (same unit, or no unit on one side);
5. **lone letter**: a standalone capital letter anywhere (``"I think it's C."``), except the article ``"A"``
   before a lower-case word (``"A car …"``).

Letters outside the option range are ignored. Nothing found -> ``none``. Unlike the released R4D evaluator
(first letter A–E in the response), a letter inside a word or the article "A" never counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rgpt4d_core.text.prompts import OPTION_LETTERS

MatchMethod = Literal["letter", "option_text", "option_value", "ambiguous", "none"]


@dataclass(frozen=True)
class AnswerMatch:
    """Result of :func:`extract_answer`.

    Attributes:
        index: 0-based index of the chosen option, or ``None`` (no answer or ambiguous).
        method: which rule decided (``"letter"``, ``"option_text"``, ``"option_value"``), or ``"ambiguous"``
            (conflicting choices found) or ``"none"`` (nothing recognisable).
    """

    index: int | None
    method: MatchMethod

    @property
    def letter(self) -> str | None:
        """The chosen option's letter (``"B"``), or ``None``."""
        return None if self.index is None else OPTION_LETTERS[self.index]


_NONE = AnswerMatch(None, "none")
_AMBIGUOUS = AnswerMatch(None, "ambiguous")

_STRIP_MARKUP = re.compile(r"\*\*|__|`|<\|im_end\|>|<\|endoftext\|>")
_BARE = re.compile(r"^[^A-Za-z0-9]*([A-Ha-h])[^A-Za-z0-9]*$")
_LEADING = re.compile(r"^\s*[(\[]?([A-H])(?:[)\].:]|\s*[-\u2013\u2014]\s|\s*\n)")
_STATEMENT = re.compile(
    r"(?i:answer|option|choice)(?:\s+(?i:is|would\s+be|should\s+be|will\s+be))?\s*[:=]?\s*(?i:option\s+)?"
    r"([(\[]?)([A-Ha-h])(?![A-Za-z0-9])"
)
_IS_CORRECT = re.compile(
    r"(?<![A-Za-z0-9])[(\[]?([A-H])[)\]]?\s+is\s+(?:the\s+)?(?i:correct|right|best|answer)(?![a-z])"
)
_PAREN = re.compile(r"\(([A-H])\)")
_LONE = re.compile(r"(?<![A-Za-z0-9'\u2019/_\-])([A-H])(?![A-Za-z0-9'\u2019/_\-])")
#: "A" followed by a lower-case word reads as the article, unless that word is a connective
_ARTICLE_AFTER = re.compile(r"\s+(?!(?:or|and|nor|is|was)\b)[a-z]")

_NUMBER = r"[-+\u2212]?(?:\d+(?:\.\d*)?|\.\d+)"
_UNIT = r"m/s\^?2|m/s\u00b2|m/s|km/h|mph|cm|mm|km|meters?|metres?|m|seconds?|secs?|s|degrees?|deg|\u00b0|%|times|frames?"
_QUANTITY = re.compile(rf"(?<![\w.])({_NUMBER})(?:\s*({_UNIT}))?(?![A-Za-z0-9])")
_WHOLE_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*({_UNIT})?\s*\.?\s*$")
_UNIT_ALIASES = {
    "meter": "m",
    "meters": "m",
    "metre": "m",
    "metres": "m",
    "second": "s",
    "seconds": "s",
    "sec": "s",
    "secs": "s",
    "degree": "deg",
    "degrees": "deg",
    "\u00b0": "deg",
    "m/s^2": "m/s2",
    "m/s\u00b2": "m/s2",
    "frame": "frames",
}


def extract_answer(text: str, options: Sequence[str]) -> AnswerMatch:
    """Which of ``options`` the model's raw output ``text`` chose (rules in the module docstring).

    Args:
        text: the decoded model output (special tokens may remain; they are ignored).
        options: the option strings in order (index 0 = ``"A"``); at most 8.

    Returns:
        An :class:`AnswerMatch`; ``index`` is ``None`` for no or ambiguous answers.

    Raises:
        ValueError: no options or more than 8.
    """
    if not 1 <= len(options) <= len(OPTION_LETTERS):
        raise ValueError(f"need 1..{len(OPTION_LETTERS)} options, got {len(options)}")
    clean = _STRIP_MARKUP.sub("", text).strip()
    if not clean:
        return _NONE
    letters = OPTION_LETTERS[: len(options)]
    for rule in (_letter_rule, _text_rule, _value_rule, _lone_letter_rule):
        found = rule(clean, options, letters)
        if found is not None:
            return found
    return _NONE


def _decide(indices: set[int], method: MatchMethod) -> AnswerMatch | None:
    if not indices:
        return None
    return AnswerMatch(indices.pop(), method) if len(indices) == 1 else _AMBIGUOUS


def _letter_rule(text: str, options: Sequence[str], letters: str) -> AnswerMatch | None:
    bare = _BARE.match(text)
    if bare and bare.group(1).upper() in letters:
        return AnswerMatch(letters.index(bare.group(1).upper()), "letter")
    stated: set[int] = set()
    for m in _STATEMENT.finditer(text):
        paren, letter = m.group(1), m.group(2)
        rest = text[m.end() :]
        if letter.islower() and not (paren or not rest or rest[0] in ").]:,;"):
            continue  # "the answer is a car"
        if letter in "Aa" and not paren and _ARTICLE_AFTER.match(rest):
            continue  # "the answer is A car ..."
        if letter.upper() in letters:
            stated.add(letters.index(letter.upper()))
    stated |= {letters.index(m.group(1)) for m in _IS_CORRECT.finditer(text) if m.group(1) in letters}
    if stated:
        return _decide(stated, "letter")
    marked = {letters.index(m.group(1)) for m in _PAREN.finditer(text) if m.group(1) in letters}
    lead = _LEADING.match(text)
    if lead and lead.group(1) in letters:
        marked.add(letters.index(lead.group(1)))
    return _decide(marked, "letter")


def _normalise(s: str) -> str:
    s = s.lower().replace("\u2212", "-").replace("\u2013", "-").replace("\u2014", "-")
    s = re.sub(r"(?<=[a-z])[-_](?=[a-z])", " ", s)  # counter-clockwise == counter clockwise; keep minus signs
    return re.sub(r"\s+", " ", s).strip()


def _text_rule(text: str, options: Sequence[str], letters: str) -> AnswerMatch | None:
    haystack = _normalise(text)
    spans: dict[int, list[tuple[int, int]]] = {}
    for i, option in enumerate(options):
        needle = _normalise(option).rstrip(".!?;:, ")
        if not needle:
            continue
        left = r"(?<![a-z0-9])(?<!\d\.)" if not needle[0].isdigit() else r"(?<![a-z0-9.\-+])"
        pattern = re.compile(left + re.escape(needle) + r"(?![a-z0-9])(?!\.\d)")
        found = [(m.start(), m.end()) for m in pattern.finditer(haystack)]
        if found:
            spans[i] = found
    survivors = {
        i
        for i, occ in spans.items()
        if not all(
            any(
                j != i and a2 <= a and b <= b2 and (b2 - a2) > (b - a)
                for j, o2 in spans.items()
                for a2, b2 in o2
            )
            for a, b in occ
        )
    }
    return _decide(survivors, "option_text")


def _unit(raw: str | None) -> str | None:
    if raw is None:
        return None
    u = raw.lower()
    return _UNIT_ALIASES.get(u, u)


def _number(raw: str) -> float:
    return float(raw.replace("\u2212", "-"))


def _value_rule(text: str, options: Sequence[str], letters: str) -> AnswerMatch | None:
    numeric: dict[int, tuple[float, str | None]] = {}
    for i, option in enumerate(options):
        m = _WHOLE_QUANTITY.match(option)
        if m:
            numeric[i] = (_number(m.group(1)), _unit(m.group(2)))
    if not numeric:
        return None
    chosen: set[int] = set()
    for q in _QUANTITY.finditer(text):
        value, unit = _number(q.group(1)), _unit(q.group(2))
        for i, (ov, ou) in numeric.items():
            same_value = math.isclose(value, ov, rel_tol=1e-6, abs_tol=1e-9)
            if same_value and (unit is None or ou is None or unit == ou):
                chosen.add(i)
    return _decide(chosen, "option_value")


def _lone_letter_rule(text: str, options: Sequence[str], letters: str) -> AnswerMatch | None:
    found: set[int] = set()
    for m in _LONE.finditer(text):
        letter = m.group(1)
        if letter not in letters:
            continue
        if letter == "A" and _ARTICLE_AFTER.match(text[m.end() :]):
            continue
        found.add(letters.index(letter))
    return _decide(found, "letter")
