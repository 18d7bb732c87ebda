"""Multiple choice by option likelihood: the scores are the log-probabilities of the option strings, computed
token by token on an independent path; batching and chunking do not change them; the engine of an
``answer_style="option"`` checkpoint answers with the best-scoring option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rgpt4d_core.model.option_scoring import choose_option, option_log_likelihoods, option_scores
from rgpt4d_core.model.presets import tiny
from rgpt4d_core.model.student import Student
from rgpt4d_core.regions import Region
from rgpt4d_core.serve.engine import (
    EngineConfig,
    PreparedRequest,
    VQAEngine,
    VQARequest,
    VQAResult,
    write_random_checkpoint,
)
from rgpt4d_core.text.prompts import ANSWER_WITH_OPTION, build_inference_ids, r4d_user_text
from rgpt4d_core.text.tokenizer import tiny_tokenizer
from tests.test_serve_engine import make_mp4

OPTIONS = ("It rotates clockwise", "It does not rotate", "0.75 m")


@pytest.fixture(scope="module")
def student() -> Student:
    torch.manual_seed(0)
    return Student(tiny()).eval()


def _inputs(batch: int) -> tuple[list[torch.Tensor], list[list[torch.Tensor]], torch.Tensor, torch.Tensor, torch.Tensor]:
    tok = tiny_tokenizer()
    g = torch.Generator().manual_seed(1)
    prompts = [
        torch.tensor(build_inference_ids(tok, r4d_user_text(tok, f"Does <obj_{b + 1}> spin?", OPTIONS, 2.0)))
        for b in range(batch)
    ]
    conts = [[torch.tensor(tok.encode(o) + [tok.im_end_id]) for o in OPTIONS] for _ in range(batch)]
    videos = torch.rand(batch, 4, 3, 64, 64, generator=g) * 2 - 1
    timestamps = torch.arange(4, dtype=torch.float32).repeat(batch, 1) * 0.5
    images = torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1
    return prompts, conts, videos, timestamps, images


def _token_by_token(student: Student, prompt: torch.Tensor, cont: torch.Tensor, video: torch.Tensor,
                    ts: torch.Tensor, image: torch.Tensor) -> float:
    """Σ_t log p(c_t | prompt, c_<t), each term from its own forward pass over the prefix (no labels involved)."""
    total = 0.0
    for t in range(len(cont)):
        prefix = torch.cat((prompt, cont[:t]))
        with torch.no_grad():
            out = student([prefix], videos=video[None], timestamps_s=ts[None], images=image[None],
                          image_owner=torch.zeros(1, dtype=torch.long), compute_latents=False)
        total += float(torch.log_softmax(out.logits[0, -1].double(), -1)[cont[t]])
    return total


def test_scores_are_the_log_probabilities_of_the_option_strings(student: Student) -> None:
    prompts, conts, videos, ts, images = _inputs(2)
    scores = option_log_likelihoods(student, prompts, conts, videos, ts, images)
    assert [tuple(s.shape) for s in scores] == [(3,), (3,)]
    for b in range(2):
        for k in range(3):
            expected = _token_by_token(student, prompts[b], conts[b][k], videos[b], ts[b], images[b])
            assert float(scores[b][k]) == pytest.approx(expected, abs=2e-4)
        assert bool((scores[b] <= 0).all())


def test_chunking_and_batching_do_not_change_the_scores(student: Student) -> None:
    prompts, conts, videos, ts, images = _inputs(2)
    together = option_log_likelihoods(student, prompts, conts, videos, ts, images, max_sequences=32)
    one_by_one = option_log_likelihoods(student, prompts, conts, videos, ts, images, max_sequences=1)
    alone = option_log_likelihoods(student, prompts[1:], conts[1:], videos[1:], ts[1:], images[1:])
    for a, b in zip(together, one_by_one, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    torch.testing.assert_close(together[1], alone[0], atol=1e-4, rtol=0)


def test_choose_option_takes_the_best_and_the_earlier_on_ties() -> None:
    assert choose_option(torch.tensor([-3.0, -1.0, -2.0])) == 1
    assert choose_option(torch.tensor([-1.0, -5.0, -1.0])) == 0
    with pytest.raises(ValueError, match="at least one continuation"):
        option_log_likelihoods(Student(tiny()), [torch.tensor([1, 2])], [[]])


def test_engine_of_an_option_style_checkpoint_answers_by_likelihood(tmp_path: Path) -> None:
    ckpt = write_random_checkpoint(tmp_path / "ckpt", preset="tiny", seed=0, answer_style="option")
    engine = VQAEngine(EngineConfig(checkpoint=str(ckpt), decode_threads=1))
    assert engine.answer_style == "option"
    video = tmp_path / "clip.mp4"
    video.write_bytes(make_mp4())
    request = VQARequest(video=str(video), question="Does <obj_1> rotate?", options=OPTIONS,
                         regions=(Region(obj_id=1, box=(0.05, 0.3, 0.4, 0.6)),), request_id="q")
    prepared = engine.prepare(request)
    assert isinstance(prepared, PreparedRequest)
    assert ANSWER_WITH_OPTION in engine.tokenizer.decode(prepared.inputs.input_ids.tolist())
    (result,) = engine.answer([request])
    assert isinstance(result, VQAResult) and result.method == "option_likelihood"
    tok = engine.tokenizer
    conts = [[torch.tensor(tok.encode(o) + [tok.im_end_id]) for o in OPTIONS]]
    (scores,) = option_log_likelihoods(
        engine.model, [prepared.inputs.input_ids], conts, prepared.inputs.video[None], prepared.inputs.timestamps_s[None],
        prepared.inputs.som_image[None],
    )
    assert result.answer_index == int(scores.argmax()) and result.answer == OPTIONS[result.answer_index]
    assert result.raw_output == result.answer and result.answer_letter == "ABC"[result.answer_index]


def test_option_scores_are_differentiable_and_match_the_teacher_forced_gradient(student: Student) -> None:
    """``option_scores`` (used by an option-level training loss) gives the same parameter gradient as the
    teacher-forced log-probability of the full sequence; ``option_log_likelihoods`` builds no graph."""
    prompts, conts, videos, ts, images = _inputs(1)
    params = [p for p in student.llm.parameters() if p.requires_grad]

    def grads_of(score: torch.Tensor) -> list[torch.Tensor]:
        return [g if g is not None else torch.zeros_like(p) for g, p in
                zip(torch.autograd.grad(score, params, allow_unused=True), params, strict=True)]  # fmt: skip

    (scores,) = option_scores(student, prompts, conts, videos, ts, images)
    cached = grads_of(scores[1])
    ids = torch.cat((prompts[0], conts[0][1]))
    labels = torch.cat((torch.full_like(prompts[0], -100), conts[0][1]))
    out = student([ids], [labels], videos, ts, images=images, image_owner=torch.zeros(1, dtype=torch.long),
                  compute_latents=False)  # fmt: skip
    target = out.labels[:, 1:]
    token_lp = torch.log_softmax(out.logits[:, :-1], -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
    full = grads_of((token_lp * (target != -100)).sum())
    for a, b in zip(cached, full, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-3)
    assert not option_log_likelihoods(student, prompts, conts, videos, ts, images)[0].requires_grad
