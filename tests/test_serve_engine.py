"""VQAEngine alone (no Ray): a seeded tiny checkpoint on disk, real mp4 files, real decoding and generation."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from rgpt4d_core.regions import region_from_mask, rle_encode
from rgpt4d_core.serve.engine import (
    EngineConfig,
    PreparedRequest,
    VQAEngine,
    VQAError,
    VQARequest,
    VQAResult,
    load_tokenizer,
    write_random_checkpoint,
)
from rgpt4d_core.text.answers import extract_answer
from rgpt4d_core.text.prompts import DURATION_SENTENCE
from rgpt4d_core.types import Region, VQAItem
from rgpt4d_core.video.encode import encode_video

OPTIONS = ("left", "right", "towards the camera", "not moving")


def make_mp4(
    seed: int = 0, frames: int = 24, size: tuple[int, int] = (64, 80), fps: float = 8.0, rotation_deg: int = 0
) -> bytes:
    """A small real H.264 mp4: a bright square moving over noise, displayed at ``size``.

    With ``rotation_deg`` the pixels are stored turned back by that much and the display matrix turns them upright,
    as a phone held sideways records.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    video = rng.integers(0, 60, size=(frames, h, w, 3), dtype=np.uint8)
    for t in range(frames):
        x = 4 + t
        video[t, 20:36, x : x + 16] = (230, 40, 40)
    stored = np.ascontiguousarray(np.rot90(video, k=-(rotation_deg // 90), axes=(1, 2)))
    buf = io.BytesIO()
    encode_video(stored, fps, buf, rotation_deg=rotation_deg)
    return buf.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> Iterator[VQAEngine]:
    torch.set_num_threads(1)
    yield VQAEngine(EngineConfig(checkpoint=str(checkpoint), max_new_tokens=4, decode_threads=2))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    path.write_bytes(make_mp4())
    return path


def _request(video: str | bytes, rid: str = "r", question: str = "Where does <obj_1> move?") -> VQARequest:
    region = Region(obj_id=1, box=(0.05, 0.3, 0.4, 0.6))
    return VQARequest(video=video, question=question, options=OPTIONS, regions=(region,), request_id=rid)


def test_answers_are_parsed_by_the_shared_extractor(engine: VQAEngine, video: Path) -> None:
    results = engine.answer([_request(str(video), "a"), _request(video.read_bytes(), "b")])
    assert [r.request_id for r in results] == ["a", "b"]
    for res in results:
        assert isinstance(res, VQAResult), res
        assert res.batch_size == 2 and res.num_frames == 16
        assert res.duration_s == pytest.approx(3.0, abs=0.2)  # 24 frames at 8 fps
        assert 1 <= res.completion_tokens <= 4
        again = extract_answer(res.raw_output, OPTIONS)
        assert (res.answer_index, res.method) == (again.index, again.method)
        if res.answer_index is None:
            assert res.answer is None and res.method in ("none", "ambiguous")
        else:
            assert res.answer == OPTIONS[res.answer_index] and res.answer_letter == "ABCD"[res.answer_index]
    # the same video as a path and as bytes gives the same greedy output
    a, b = results
    assert isinstance(a, VQAResult) and isinstance(b, VQAResult) and a.raw_output == b.raw_output


def test_request_from_benchmark_item(engine: VQAEngine, video: Path) -> None:
    region = Region(obj_id=1, box=(0.05, 0.3, 0.4, 0.6))
    item = VQAItem(id="stibench-7", video="clip.mp4", question="Where does <obj_1> move?", options=OPTIONS,
                   answer="left", task="T", regions=(region,))
    request = VQARequest.from_item(item, video=str(video))
    assert (request.request_id, request.video, request.regions) == ("stibench-7", str(video), (region,))
    (res,) = engine.answer([request])
    assert isinstance(res, VQAResult) and res.request_id == "stibench-7"


def test_batched_generation_equals_one_by_one(engine: VQAEngine, video: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.mp4"
    other.write_bytes(make_mp4(seed=3, frames=40, size=(96, 64)))
    reqs = [_request(str(video), "x", "What is <obj_1> doing?"), _request(str(other), "y")]
    together = engine.answer(reqs)
    alone = [engine.answer([r])[0] for r in reqs]
    for t, a in zip(together, alone, strict=True):
        assert isinstance(t, VQAResult) and isinstance(a, VQAResult)
        assert (t.batch_size, a.batch_size) == (2, 1)
        assert t.raw_output == a.raw_output


def test_corrupt_and_bad_requests_do_not_fail_their_batch_mates(engine: VQAEngine, video: Path) -> None:
    good = video.read_bytes()
    reqs = [
        _request(good, "good1"),
        _request(b"\x00\x01 definitely not a video" * 50, "garbage"),
        _request(good[: len(good) // 3], "truncated"),
        _request(str(video), "badref", "Is <obj_2> left of <obj_1>?"),
        _request(str(video.parent / "missing.mp4"), "missing"),
        _request(good, "good2"),
    ]
    results = engine.answer(reqs)
    by_id = {r.request_id: r for r in results}
    for rid in ("good1", "good2"):
        res = by_id[rid]
        assert isinstance(res, VQAResult) and res.batch_size == 2
    for rid, code, field in [
        ("garbage", "video_corrupt", "video"),
        ("truncated", "video_", "video"),
        ("badref", "invalid_region", "regions"),
        ("missing", "video_missing", "video"),
    ]:
        err = by_id[rid]
        assert isinstance(err, VQAError), (rid, err)
        assert err.code.startswith(code) and err.field == field, err
    assert "<obj_2>" in by_id["badref"].message  # type: ignore[union-attr]


def test_prompt_has_som_image_video_and_switchable_duration(engine: VQAEngine, video: Path) -> None:
    tok = engine.tokenizer
    mask = np.zeros((32, 40), dtype=bool)  # a mask at half the video's resolution: resized to the frame
    mask[10:18, 2:10] = True
    region = Region(obj_id=1, box=(0.05, 0.3, 0.25, 0.6), mask=mask)
    base = VQARequest(video=str(video), question="Where does <obj_1> go?", options=OPTIONS, regions=(region,))
    with_dur = engine.prepare(base)
    without = engine.prepare(VQARequest(**{**base.__dict__, "include_duration": False}))
    assert isinstance(with_dur, PreparedRequest) and isinstance(without, PreparedRequest)
    text = tok.decode(with_dur.inputs.input_ids.tolist())
    assert text.count(tok.image_token) == 1 and text.count(tok.video_token) == 1
    assert text.index(tok.image_token) < text.index(tok.video_token) < text.index("Where does <obj_1> go?")
    assert DURATION_SENTENCE.split("{")[0] in text and "3.00 seconds" in text
    assert DURATION_SENTENCE.split("{")[0] not in tok.decode(without.inputs.input_ids.tolist())
    assert "(D) not moving" in text
    # Set-of-Marks changed frame 1 (the SoM image) but not the video's first frame
    assert with_dur.inputs.som_image.shape == with_dur.inputs.video.shape[1:]
    assert not torch.equal(with_dur.inputs.som_image, with_dur.inputs.video[0])
    unmarked = engine.prepare(VQARequest(video=str(video), question="What moves?", options=OPTIONS))
    assert isinstance(unmarked, PreparedRequest) and torch.equal(unmarked.inputs.som_image, unmarked.inputs.video[0])
    rle = rle_encode(mask)
    assert rle["size"] == [32, 40]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_is_served_as_displayed(engine: VQAEngine, rotation: int) -> None:
    """A phone video (display matrix) gives the model the same pixels, and marks the same place, as upright."""
    mask = np.zeros((64, 80), dtype=bool)
    mask[20:36, 4:20] = True  # on the displayed frame
    region = region_from_mask(1, mask)
    question = "Where does <obj_1> go?"
    upright, turned = (
        engine.prepare(VQARequest(video=make_mp4(rotation_deg=r), question=question, options=OPTIONS, regions=(region,)))
        for r in (0, rotation)
    )
    assert isinstance(upright, PreparedRequest) and isinstance(turned, PreparedRequest)
    assert (turned.inputs.video - upright.inputs.video).abs().mean() < 0.04  # pixels in [-1, 1]: 0.04 is 5 grey levels
    assert (turned.inputs.som_image - upright.inputs.som_image).abs().mean() < 0.04
    if rotation == 180:
        return
    # A mask drawn on the stored (sideways) pixels is refused, not stretched onto the wrong place.
    sideways = region_from_mask(1, np.ascontiguousarray(np.rot90(mask)))
    err = engine.prepare(VQARequest(video=make_mp4(rotation_deg=rotation), question=question, options=OPTIONS,
                                    regions=(sideways,)))  # fmt: skip
    assert isinstance(err, VQAError) and err.code == "invalid_region" and "displayed at 64x80" in err.message


def test_limits_from_config_are_enforced(checkpoint: Path, video: Path) -> None:
    strict = VQAEngine(EngineConfig(checkpoint=str(checkpoint), max_duration_s=1.0, max_new_tokens=1))
    (err,) = strict.answer([_request(str(video), "long")])
    assert isinstance(err, VQAError) and err.code == "video_too_long" and err.field == "video"
    tiny_files = VQAEngine(EngineConfig(checkpoint=str(checkpoint), max_file_bytes=1000, max_new_tokens=1))
    (err,) = tiny_files.answer([_request(video.read_bytes(), "big")])
    assert isinstance(err, VQAError) and err.code == "video_too_large"


def test_checkpoint_and_tokenizer_load_by_path(checkpoint: Path, tmp_path: Path) -> None:
    tok = load_tokenizer(checkpoint)
    assert (tok.kind, tok.video_id, tok.image_id, tok.eos_id) == ("tiny", 4, 3, 2)
    with pytest.raises(FileNotFoundError, match="engine.checkpoint"):
        VQAEngine(EngineConfig(checkpoint=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="engine.checkpoint"):
        VQAEngine(EngineConfig())
    with pytest.raises(ValueError, match="engine.dtype"):
        VQAEngine(EngineConfig(checkpoint=str(checkpoint), dtype="int4"))
