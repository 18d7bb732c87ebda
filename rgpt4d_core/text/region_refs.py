"""Which prompt tokens name which region: the per-token boxes that ``StudentConfig.region_boxes`` embeds."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rgpt4d_core.regions import obj_token
from rgpt4d_core.text.tokenizer import TextTokenizer
from rgpt4d_core.types import Region


def token_region_boxes(
    tokenizer: TextTokenizer, input_ids: Sequence[int], regions: Sequence[Region]
) -> torch.Tensor:
    """The box of the region each token of ``input_ids`` names.

    Every occurrence of the token sequence of ``<obj_k>`` (as the tokenizer encodes it alone) is a reference to the
    region with ``obj_id == k``; with the ``tiny`` tokenizer ``<obj_k>`` is one token, so this is exact. A BPE
    tokenizer may merge the reference with its neighbours, and those occurrences are then not found (the embedding
    is off in the paper preset).

    Returns:
        float ``[L, 4]``: normalised ``x0, y0, x1, y1`` at the tokens of a reference, NaN elsewhere.
    """
    ids = torch.as_tensor(list(input_ids), dtype=torch.long)
    boxes = torch.full((len(ids), 4), float("nan"))
    for region in regions:
        pattern = torch.as_tensor(tokenizer.encode(obj_token(region.obj_id)), dtype=torch.long)
        n = len(pattern)
        if n == 0 or n > len(ids):
            continue
        windows = ids.unfold(0, n, 1)  # [L - n + 1, n]
        for start in torch.nonzero((windows == pattern).all(dim=1)).flatten().tolist():
            boxes[start : start + n] = torch.tensor(region.box, dtype=torch.float32)
    return boxes
