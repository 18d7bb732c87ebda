"""Which prompt tokens state a time ("2.0 s", "At 1.50 sec"): the per-token seconds that ``StudentConfig.time_refs``
embeds. Read from the token ids themselves, so every path that embeds text (training, option scoring, Serve) finds
the same mentions without passing anything beside the ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from rgpt4d_core.text.tokenizer import TextTokenizer, byte_level_decoder

#: a number followed by a unit of seconds, not part of a longer number or word ("2.5 m/s" is not a time)
TIME_MENTION = re.compile(rb"(?<![\w.])(\d+(?:\.\d+)?) ?(?:seconds|second|secs|sec|s)(?![\w])")


class TimeMentionReader:
    """Finds the time mentions in token ids of one tokenizer (byte-level BPE: the ``tiny`` and Qwen2 ones).

    Built once per model (a table of every token id's bytes); calling it costs one regex pass over the prompt.
    """

    def __init__(self, tokenizer: TextTokenizer) -> None:
        to_bytes = byte_level_decoder()
        pieces = tokenizer.hf.convert_ids_to_tokens(list(range(len(tokenizer.hf))))
        self._bytes = [to_bytes(p) if p is not None else b"" for p in pieces]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes ``token_id`` stands for (``b""`` for ids past the tokenizer's vocabulary)."""
        return self._bytes[token_id] if 0 <= token_id < len(self._bytes) else b""

    def __call__(self, input_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The time each token states.

        Args:
            input_ids: ``[L]`` token ids.

        Returns:
            float ``[L]``: the mention's value in seconds at every token that overlaps a time mention (number and
            unit), NaN elsewhere.
        """
        ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
        times = torch.full((len(ids),), float("nan"))
        chunks = [self.token_bytes(int(i)) for i in ids]
        text = b"".join(chunks)
        if not TIME_MENTION.search(text):
            return times
        ends = torch.tensor([len(c) for c in chunks]).cumsum(0)
        starts = ends - torch.tensor([len(c) for c in chunks])
        for match in TIME_MENTION.finditer(text):
            overlaps = (starts < match.end()) & (ends > match.start())
            times[overlaps] = float(match.group(1))
        return times
