"""Region-level distillation for the recipe probe (``--region-aux W``): the hidden state of a question's first
``<obj_k>`` token must predict the oracle's per-frame depth, flow and moving fraction under that object's frame-1
cell (``probe_world.dense_targets``, standardised), through a linear head.

Why (docs/results.md, eighth round): a 1-bit answer gives the answer position no input-correlated signal at the
start, and its attention collapses to uniform; this target differs from question to question and is exactly the
content of the object's visual tokens, so the reference token has a reason to attend to them from the first step.
Once the reference token carries the object's motion, the answer only has to read a text position (what the
region-box embedding made learnable for SR). A probe option, not part of the product.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rgpt4d_core.model.student import Student
from rgpt4d_core.regions import find_object_refs
from rgpt4d_core.text.tokenizer import TextTokenizer
from rgpt4d_core.types import VQAItem


class RegionAux:
    """Captures the LM's last hidden states and turns them into the region loss of one batch."""

    def __init__(self, model: Student, dense: torch.Tensor, video_index: dict[str, int], size: int, patch: int,
                 merge: int, tokenizer: TextTokenizer) -> None:  # fmt: skip
        """``dense``: float ``[N_videos, T, g, g, C]`` oracle targets; ``model``: the probe's :class:`Student`
        (the head is registered on it, so the probe's optimiser trains it)."""
        frames, grid, channels = dense.shape[1], dense.shape[2], dense.shape[-1]
        self.dense, self.index, self.tok, self.grid = dense, video_index, tokenizer, grid
        self.cell_px = merge * patch / size  # a token cell's side, as a fraction of the frame
        hidden = int(model.llm.config.hidden_size)
        self.head = nn.Linear(hidden, frames * channels)
        model.add_module("region_aux_head", self.head)
        self.hidden: torch.Tensor | None = None
        norm: nn.Module = model.llm.model.norm  # type: ignore[assignment]
        norm.register_forward_hook(self._keep)
        self.losses: list[float] = []

    def _keep(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        self.hidden = output  # [B, L_fused, D]

    def cell(self, box: Sequence[float]) -> tuple[int, int]:
        """Row and column of the token cell holding the centre of a normalised box."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return min(int(cy / self.cell_px), self.grid - 1), min(int(cx / self.cell_px), self.grid - 1)

    def loss(self, qs: Sequence[VQAItem], input_ids: Sequence[Sequence[int]], attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the reference tokens' predictions (media precede the question text, and training
        pads on the right, so a text token's fused position is its index plus the sample's media expansion)."""
        assert self.hidden is not None, "run the student's forward pass first"
        preds, targets = [], []
        for b, (q, ids) in enumerate(zip(qs, input_ids, strict=True)):
            ref = find_object_refs(q.question)[0]
            token = self.tok.encode(f"<obj_{ref}>")[0]
            where = [i for i, t in enumerate(ids) if t == token]
            if not where:
                continue
            offset = int(attention_mask[b].sum()) - len(ids)
            preds.append(self.head(self.hidden[b, where[0] + offset]))
            row, col = self.cell(next(r.box for r in q.regions if r.obj_id == ref))
            targets.append(self.dense[self.index[q.video], :, row, col, :].flatten())
        loss = F.mse_loss(torch.stack(preds), torch.stack(targets))
        self.losses.append(float(loss.detach()))
        return loss
