"""Chat template, supervised labels and the exact R4D prompt text."""

from __future__ import annotations

import pytest

from rgpt4d_core.text.prompts import (
    ANSWER_DIRECTLY,
    ANSWER_WITH_OPTION,
    IGNORE_INDEX,
    ChatConfig,
    build_inference_ids,
    build_training_example,
    format_options,
    mcq_target,
    r4d_question_text,
    r4d_user_text,
    render_prompt,
)
from rgpt4d_core.text.tokenizer import TextTokenizer, qwen2_tokenizer, tiny_tokenizer

QUESTION = "At 2.00 sec, how far does <obj_1> travel until the end?"
OPTIONS = ["1.5 m", "3.20 m", "0.4 m", "6 m"]


@pytest.fixture(scope="module", params=["tiny", "qwen2"])
def tok(request: pytest.FixtureRequest) -> TextTokenizer:
    return tiny_tokenizer() if request.param == "tiny" else qwen2_tokenizer()


def test_r4d_prompt_exact_text() -> None:
    expected = (
        "These images are uniformly sampled from a video of 12.50 seconds.\n"
        "At 2.00 sec, how far does <obj_1> travel until the end?\n"
        "Options:\n"
        "(A) 1.5 m\n"
        "(B) 3.20 m\n"
        "(C) 0.4 m\n"
        "(D) 6 m\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert r4d_question_text(QUESTION, OPTIONS, 12.5) == expected
    without = r4d_question_text(QUESTION, OPTIONS, 12.5, include_duration=False)
    assert without == expected.split("\n", 1)[1]
    assert r4d_question_text(QUESTION, OPTIONS, None) == without


def test_r4d_user_text_puts_som_image_then_video_first(tok: TextTokenizer) -> None:
    text = r4d_user_text(tok, QUESTION, OPTIONS, 3.0)
    assert text.startswith(tok.image_token + tok.video_token + "These images")
    ids = build_inference_ids(tok, text)
    assert ids.count(tok.image_id) == 1 and ids.count(tok.video_id) == 1
    assert ids.index(tok.image_id) + 1 == ids.index(tok.video_id)
    no_som = r4d_user_text(tok, QUESTION, OPTIONS, 3.0, with_som_image=False)
    assert tok.image_id not in build_inference_ids(tok, no_som)


def test_chat_template_text() -> None:
    assert render_prompt("hi") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (
        render_prompt("hi", ChatConfig(system_prompt=""))
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_training_labels_supervise_only_the_answer_and_im_end(tok: TextTokenizer) -> None:
    user = r4d_user_text(tok, QUESTION, OPTIONS, 12.5)
    answer = "B. 3.20 m"
    ex = build_training_example(tok, user, answer)
    assert len(ex.input_ids) == len(ex.labels)
    supervised = [(i, lab) for i, lab in enumerate(ex.labels) if lab != IGNORE_INDEX]
    positions = [i for i, _ in supervised]
    # supervised positions are exactly the tail after the prompt, contiguous
    assert positions == list(range(ex.prompt_length, len(ex.input_ids)))
    # labels equal the input ids there (the loss does the shift)
    assert all(ex.input_ids[i] == lab for i, lab in supervised)
    assert tok.decode([lab for _, lab in supervised]) == answer + "<|im_end|>"
    assert ex.labels[-1] == tok.im_end_id
    # the prompt part is identical to what inference feeds the model
    assert list(ex.input_ids[: ex.prompt_length]) == build_inference_ids(tok, user)
    assert tok.decode(list(ex.input_ids[: ex.prompt_length])).endswith("<|im_start|>assistant\n")


def test_bad_inputs_are_rejected_with_clear_errors() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="non-empty"):
        build_training_example(tok, "q", "")
    with pytest.raises(ValueError, match="<\\|im_end\\|>"):
        build_training_example(tok, "q", "B<|im_end|>")
    with pytest.raises(ValueError, match="options"):
        format_options([])
    with pytest.raises(ValueError, match="'7 m' is not one of the options"):
        mcq_target(OPTIONS, "7 m")
    with pytest.raises(ValueError, match="duration"):
        r4d_question_text(QUESTION, OPTIONS, -1.0)


def test_mcq_target_is_the_letter() -> None:
    assert mcq_target(OPTIONS, "3.20 m") == "B"
    assert mcq_target(OPTIONS, "6 m") == "D"


def test_option_answer_style_supervises_the_text_and_says_so(tok: TextTokenizer) -> None:
    assert mcq_target(OPTIONS, "3.20 m", "option") == "3.20 m"
    with pytest.raises(ValueError, match="answer style"):
        mcq_target(OPTIONS, "3.20 m", "number")
    with pytest.raises(ValueError, match="not one of the options"):
        mcq_target(OPTIONS, "7 m", "option")
    letter = r4d_user_text(tok, QUESTION, OPTIONS, 3.0)
    option = r4d_user_text(tok, QUESTION, OPTIONS, 3.0, answer_style="option")
    assert letter.endswith(ANSWER_DIRECTLY) and option.endswith(ANSWER_WITH_OPTION)
    assert letter[: -len(ANSWER_DIRECTLY)] == option[: -len(ANSWER_WITH_OPTION)]
