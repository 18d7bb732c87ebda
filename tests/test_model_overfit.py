"""End-to-end learning check: the tiny student memorises 8 video QA items whose answers depend on the video only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from rgpt4d_core.losses import sft_loss
from rgpt4d_core.model.presets import student_config
from rgpt4d_core.model.student import Student
from rgpt4d_core.text.prompts import build_inference_ids, build_training_example, media_placeholders
from rgpt4d_core.text.tokenizer import tiny_tokenizer

#: eight distinct frame colours (RGB in [-1, 1]); the correct letter of item i is LETTERS[i % 4]
COLOURS = [(-1, -1, -1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1), (1, 1, -1), (1, -1, 1), (-1, 1, 1), (1, 1, 1)]
LETTERS = "ABCD"
QUESTION = "Which colour is the object?\nOptions:\n(A) red\n(B) green\n(C) blue\n(D) yellow"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """2 shared cores: thread oversubscription slows the small convolutions and matmuls down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_student_overfits_eight_video_questions() -> None:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    student = Student(student_config("tiny"))
    assert tok.vocab_size <= student.cfg.llm.vocab_size and tok.video_id == student.cfg.tokens.video_token_id
    user = media_placeholders(tok, has_video=True) + QUESTION
    examples = [build_training_example(tok, user, LETTERS[i % 4]) for i in range(8)]
    ids = [torch.tensor(e.input_ids) for e in examples]
    labels = [torch.tensor(e.labels) for e in examples]
    prompt = [torch.tensor(build_inference_ids(tok, user)) for _ in range(8)]
    frames = 4
    videos = torch.tensor(COLOURS, dtype=torch.float32).reshape(8, 1, 3, 1, 1).expand(8, frames, 3, 64, 64)
    videos = videos + 0.05 * torch.randn(8, frames, 3, 64, 64)
    times = torch.arange(frames, dtype=torch.float32).expand(8, frames) * 0.5
    optim = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=2e-3)

    def accuracy() -> float:
        student.eval()
        answers = student.generate(prompt, videos, times, max_new_tokens=3).as_lists()
        student.train()
        return sum(tok.decode(a).strip() == LETTERS[i % 4] for i, a in enumerate(answers)) / 8

    start = accuracy()
    steps, acc = 0, start
    while steps < 400 and acc < 1.0:
        for _ in range(20):
            out = student(ids, labels, videos, times)
            loss, _, _ = sft_loss(out.logits, out.labels)
            optim.zero_grad()
            loss.backward()
            optim.step()
        steps += 20
        acc = accuracy()
    print(f"overfit: accuracy {start} -> {acc} after {steps} steps")
    assert start < 1.0
    assert acc == 1.0, f"accuracy {acc} after {steps} steps (loss {float(loss):.3f})"
