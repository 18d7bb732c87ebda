"""Chat template, supervised training examples and the R4D-Bench prompt.

The chat format is Qwen2's ChatML as VILA/NVILA use it::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{user}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>

Media go at the start of the user turn as placeholder tokens, in the order ``[SoM image] [video] [text]``
(GUESS, paper-spec §8.10); each placeholder is ONE token id that the model's fusion step replaces by the visual
tokens. Only the answer tokens and the closing ``<|im_end|>`` are supervised (labels elsewhere are
:data:`IGNORE_INDEX`).

Prompt ids are built segment by segment (prefix text, answer, ``<|im_end|>``), so the ids a training example
conditions on are exactly the ids :func:`build_inference_ids` gives at inference time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rgpt4d_core.text.tokenizer import IM_END, IM_START, TextTokenizer

#: label value ignored by the SFT loss (same as PyTorch's ``cross_entropy`` default)
IGNORE_INDEX = -100
#: Qwen2's default system prompt, used by VILA's Qwen2 conversation template
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
#: option letters, index i -> letter
OPTION_LETTERS = "ABCDEFGH"
#: the answer-directly instruction closing an MCQ prompt (GUESS: LLaVA/VILA's standard MCQ wording; the
#: released R4D evaluator's exact sentence is not public)
ANSWER_DIRECTLY = "Answer with the option's letter from the given choices directly."
#: the instruction of the ``"option"`` answer style: the answer is the chosen option's text (tiny recipe)
ANSWER_WITH_OPTION = "Answer with the text of the correct option."
#: how a student answers an MCQ: ``"letter"`` (R4D-Bench / VILA: the option letter, read by the answer extractor)
#: or ``"option"`` (the option's text; inference scores each option's likelihood and takes the best)
AnswerStyle = Literal["letter", "option"]
ANSWER_STYLES: tuple[str, ...] = ("letter", "option")
#: the duration sentence of the released R4D evaluator (paper Tab. 6 "prompt" trick)
DURATION_SENTENCE = "These images are uniformly sampled from a video of {duration} seconds."


@dataclass(frozen=True)
class ChatConfig:
    """How prompts are rendered.

    Attributes:
        system_prompt: text of the system turn; ``""`` omits the system turn entirely.
    """

    system_prompt: str = DEFAULT_SYSTEM_PROMPT


@dataclass(frozen=True)
class TokenizedExample:
    """One supervised example.

    Attributes:
        input_ids: int token ids ``[L]``: prompt, answer, ``<|im_end|>``.
        labels: int ``[L]``, aligned with ``input_ids`` (NOT shifted): the token id where supervised (answer
            tokens and the closing ``<|im_end|>``), :data:`IGNORE_INDEX` elsewhere. The loss shifts.
        prompt_length: number of leading prompt ids (= index of the first supervised token).
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    prompt_length: int


def media_placeholders(tokenizer: TextTokenizer, *, num_images: int = 0, has_video: bool = False) -> str:
    """Placeholder text for the media of one user turn: ``num_images`` image tokens then the video token.

    For R4D: ``num_images=1`` (the SoM image, frame 1 with marks) and ``has_video=True``.
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    return tokenizer.image_token * num_images + (tokenizer.video_token if has_video else "")


def render_prompt(user_text: str, chat: ChatConfig = ChatConfig()) -> str:
    """The chat text up to and including ``<|im_start|>assistant\\n`` (the generation prompt).

    ``user_text`` already contains any media placeholders (see :func:`media_placeholders`).
    """
    system = f"{IM_START}system\n{chat.system_prompt}{IM_END}\n" if chat.system_prompt else ""
    return f"{system}{IM_START}user\n{user_text}{IM_END}\n{IM_START}assistant\n"


def _check_no_chat_specials(text: str, what: str) -> None:
    for special in (IM_START, IM_END):
        if special in text:
            raise ValueError(f"{what} must not contain the chat special {special!r}: {text[:80]!r}")


def build_inference_ids(
    tokenizer: TextTokenizer, user_text: str, chat: ChatConfig = ChatConfig()
) -> list[int]:
    """Token ids of the generation prompt for ``user_text`` (generation continues after ``assistant\\n``)."""
    _check_no_chat_specials(user_text, "user_text")
    return tokenizer.encode(render_prompt(user_text, chat))


def build_training_example(
    tokenizer: TextTokenizer, user_text: str, answer: str, chat: ChatConfig = ChatConfig()
) -> TokenizedExample:
    """Prompt + ``answer`` + ``<|im_end|>``, with only the answer and the closing ``<|im_end|>`` supervised.

    Raises:
        ValueError: empty answer, or chat specials inside ``user_text`` / ``answer``.
    """
    if not answer:
        raise ValueError("answer must be non-empty")
    _check_no_chat_specials(answer, "answer")
    prompt_ids = build_inference_ids(tokenizer, user_text, chat)
    answer_ids = tokenizer.encode(answer) + [tokenizer.im_end_id]
    input_ids = tuple(prompt_ids + answer_ids)
    labels = tuple([IGNORE_INDEX] * len(prompt_ids) + answer_ids)
    return TokenizedExample(input_ids=input_ids, labels=labels, prompt_length=len(prompt_ids))


def format_duration(seconds: float) -> str:
    """Duration as written in the R4D prompt: two decimals (``12.5`` -> ``"12.50"``). GUESS on precision."""
    if seconds < 0:
        raise ValueError(f"duration must be >= 0 seconds, got {seconds}")
    return f"{seconds:.2f}"


def format_options(options: Sequence[str]) -> str:
    """``"(A) first\\n(B) second…"`` for 1–8 options."""
    if not 1 <= len(options) <= len(OPTION_LETTERS):
        raise ValueError(f"need 1..{len(OPTION_LETTERS)} options, got {len(options)}")
    return "\n".join(f"({OPTION_LETTERS[i]}) {opt}" for i, opt in enumerate(options))


def r4d_question_text(
    question: str,
    options: Sequence[str],
    duration_s: float | None = None,
    *,
    include_duration: bool = True,
    instruction: str = ANSWER_DIRECTLY,
) -> str:
    """The text part of the R4D-Bench prompt (no media placeholders)::

        These images are uniformly sampled from a video of 12.50 seconds.
        {question}
        Options:
        (A) …
        (B) …
        Answer with the option's letter from the given choices directly.

    The duration line appears iff ``include_duration`` and ``duration_s`` is not ``None``.
    """
    lines = []
    if include_duration and duration_s is not None:
        lines.append(DURATION_SENTENCE.format(duration=format_duration(duration_s)))
    lines += [question.strip(), "Options:", format_options(options)]
    if instruction:
        lines.append(instruction)
    return "\n".join(lines)


def instruction_for(style: str) -> str:
    """The sentence closing the MCQ prompt for an answer ``style`` (see :data:`AnswerStyle`)."""
    if style not in ANSWER_STYLES:
        raise ValueError(f"answer style must be one of {ANSWER_STYLES}, got {style!r}")
    return ANSWER_DIRECTLY if style == "letter" else ANSWER_WITH_OPTION


def r4d_user_text(
    tokenizer: TextTokenizer,
    question: str,
    options: Sequence[str],
    duration_s: float | None = None,
    *,
    with_som_image: bool = True,
    with_video: bool = True,
    include_duration: bool = True,
    answer_style: str = "letter",
) -> str:
    """The full R4D user turn: ``[SoM image][video]`` placeholders, then :func:`r4d_question_text` closed by the
    instruction of ``answer_style``."""
    media = media_placeholders(tokenizer, num_images=int(with_som_image), has_video=with_video)
    text = r4d_question_text(
        question, options, duration_s, include_duration=include_duration, instruction=instruction_for(answer_style)
    )
    return media + text


def mcq_target(options: Sequence[str], answer: str, style: str = "letter") -> str:
    """Supervised answer text for an MCQ item: the letter of ``answer`` among ``options`` (``"B"``) for the
    ``"letter"`` style, ``answer`` itself for the ``"option"`` style.

    Raises:
        ValueError: ``answer`` is not one of ``options`` (message names both), or an unknown ``style``.
    """
    instruction_for(style)  # validates the style
    try:
        index = list(options).index(answer)
    except ValueError:
        raise ValueError(f"answer {answer!r} is not one of the options {list(options)!r}") from None
    return OPTION_LETTERS[index] if style == "letter" else answer
