"""Time-mention embedding (``StudentConfig.time_refs``): which tokens state a time, that a mention and the frames at
its time get the same code, and that option scoring (prompt cache + continuations) sees the codes a full forward
pass sees."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rgpt4d_core.model.option_scoring import option_log_likelihoods
from rgpt4d_core.model.presets import tiny
from rgpt4d_core.model.student import Student
from rgpt4d_core.model.time_refs import PERIODS_S, time_fourier_features
from rgpt4d_core.text.prompts import build_inference_ids, r4d_user_text
from rgpt4d_core.text.time_refs import TimeMentionReader
from rgpt4d_core.text.tokenizer import tiny_tokenizer


@pytest.fixture(scope="module")
def timed_student() -> Student:
    torch.manual_seed(0)
    return Student(dataclasses.replace(tiny(), time_refs=True)).eval()


def _stated(text: str) -> list[tuple[str, float]]:
    tok = tiny_tokenizer()
    ids = tok.encode(text)
    times = TimeMentionReader(tok)(ids)
    return [(tok.decode([i]), float(t)) for i, t in zip(ids, times, strict=True) if not math.isnan(float(t))]


def test_reader_marks_every_time_mention_and_nothing_else() -> None:
    stated = _stated("Between 1.0 s and 3.5 s, how fast (in m/s) does <obj_2> move? At 2.00 sec it was 3 m away")
    assert "".join(piece for piece, _ in stated) == "1.0 s3.5 s2.00 sec"
    assert {t for _, t in stated} == {1.0, 3.5, 2.0}
    assert [t for piece, t in stated if piece == " s"] == [1.0, 3.5]
    assert _stated("It moves 2.5 m/s over 12 m, x3s, 4 ms") == []  # speeds, distances, words: no time
    assert [t for _, t in _stated("after 12 seconds or 0.5s")] == [12.0, 12.0, 12.0, 0.5, 0.5, 0.5, 0.5]


def test_fourier_features_tell_neighbouring_frames_apart_and_do_not_wrap_within_a_minute() -> None:
    f = time_fourier_features(torch.tensor([0.0, 1 / 16, 2.0, 2.0 + 64.0]))
    assert f.shape == (4, 2 * len(PERIODS_S))
    assert float((f[0] - f[1]).norm()) > 0.5  # one frame apart at 16 fps
    assert torch.allclose(f[2], f[3], atol=1e-4)  # the longest period is 64 s: 2 s and 66 s share a code


def test_a_mention_and_the_frames_at_its_time_get_the_same_code(timed_student: Student) -> None:
    tok = tiny_tokenizer()
    ids = torch.tensor(tok.encode("At 1.5 s, where is <obj_1>?"))
    plain = timed_student.llm.get_input_embeddings()(ids)
    coded = timed_student.embed_text([ids])[0]
    times = TimeMentionReader(tok)(ids)
    stated = torch.isfinite(times)
    assert int(stated.sum()) == 4  # "1", ".", "5", " s"
    assert torch.equal(coded[~stated], plain[~stated])
    emb = timed_student.time_embedding
    assert emb is not None
    code = emb.code(torch.tensor([1.5]), coded.dtype)[0]
    assert torch.allclose(coded[stated] - plain[stated], code.expand(4, -1), atol=1e-6)
    frames = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stamps = torch.tensor([1.5, 0.0])
    with torch.no_grad():
        with_codes = timed_student.encode_frames(frames, stamps)
        emb_off, timed_student.time_embedding = timed_student.time_embedding, None
        try:
            without = timed_student.encode_frames(frames, stamps)
        finally:
            timed_student.time_embedding = emb_off
    assert torch.allclose(with_codes[0] - without[0], code.expand_as(without[0]), atol=1e-5)
    assert not torch.allclose(with_codes[1] - without[1], code.expand_as(without[1]), atol=1e-3)


def test_option_scores_with_time_options_equal_the_full_forward_pass(timed_student: Student) -> None:
    tok = tiny_tokenizer()
    options = ("1.5 s", "2.0 s", "It never spins")
    prompt = torch.tensor(build_inference_ids(tok, r4d_user_text(tok, "When does <obj_1> start to spin?", options, 3.0)))
    conts = [torch.tensor(tok.encode(o) + [tok.im_end_id]) for o in options]
    g = torch.Generator().manual_seed(1)
    video, image = torch.rand(1, 4, 3, 64, 64, generator=g) * 2 - 1, torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    stamps = torch.arange(4, dtype=torch.float32)[None] * 0.5
    scores = option_log_likelihoods(timed_student, [prompt], [conts], video, stamps, image)[0]
    for k, cont in enumerate(conts):
        full = torch.cat((prompt, cont))
        with torch.no_grad():  # one teacher-forced pass over prompt + option: the mention is read whole there
            logits = timed_student([full], videos=video, timestamps_s=stamps, images=image,
                                   image_owner=torch.zeros(1, dtype=torch.long), compute_latents=False).logits[0]
        lp = torch.log_softmax(logits[-len(cont) - 1 : -1].double(), -1).gather(1, cont[:, None]).sum()
        assert float(scores[k]) == pytest.approx(float(lp), abs=2e-4)


def test_a_batch_without_mentions_or_video_keeps_the_projection_in_the_graph(timed_student: Student) -> None:
    tok = tiny_tokenizer()
    model = Student(timed_student.cfg)
    out = model([torch.tensor(tok.encode("How many objects are there?"))], compute_latents=False)
    out.logits.sum().backward()
    assert model.time_embedding is not None
    grad = model.time_embedding.proj.weight.grad
    assert grad is not None and torch.count_nonzero(grad) == 0
