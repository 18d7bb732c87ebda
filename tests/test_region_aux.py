"""scripts/region_aux.py: the region loss reads the hidden state at the question's first ``<obj_k>`` token and the
oracle targets under that object's frame-1 cell."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import region_aux  # noqa: E402

from rgpt4d_core.model.presets import tiny  # noqa: E402
from rgpt4d_core.model.student import Student  # noqa: E402
from rgpt4d_core.text.prompts import build_training_example, r4d_user_text  # noqa: E402
from rgpt4d_core.text.tokenizer import tiny_tokenizer  # noqa: E402
from rgpt4d_core.types import Region, VQAItem  # noqa: E402


def test_the_loss_reads_the_reference_tokens_hidden_state_and_its_objects_cell() -> None:
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = Student(tiny())
    frames, grid, channels = 4, 3, 2
    dense = torch.arange(2 * frames * grid * grid * channels, dtype=torch.float32).reshape(2, frames, grid, grid, channels)
    aux = region_aux.RegionAux(model, dense, {"a.mp4": 0, "b.mp4": 1}, size=64, patch=8, merge=3, tokenizer=tok)
    assert aux.cell((0.0, 0.0, 0.2, 0.2)) == (0, 0) and aux.cell((0.8, 0.5, 1.0, 0.9)) == (1, 2)
    assert aux.cell((0.30, 0.60, 0.40, 0.70)) == (1, 0)  # centre (0.35, 0.65): cells are 24 px = 0.375 wide
    qs = [VQAItem(id=f"q{i}", video=v, question=f"Does <obj_{k}> move?", options=("yes", "no"), answer="yes", task="MV",
                  regions=(Region(1, (0.0, 0.0, 0.2, 0.2)), Region(2, (0.30, 0.60, 0.40, 0.70))))
          for i, (v, k) in enumerate([("a.mp4", 2), ("b.mp4", 1)])]  # fmt: skip
    ids = [build_training_example(tok, r4d_user_text(tok, q.question, q.options, 2.0), "yes").input_ids for q in qs]
    g = torch.Generator().manual_seed(0)
    seen: dict[str, torch.Tensor] = {}
    model.llm.model.register_forward_pre_hook(lambda _m, _a, kw: seen.update(embeds=kw["inputs_embeds"]), with_kwargs=True)
    out = model([torch.tensor(i) for i in ids], videos=torch.rand(2, frames, 3, 64, 64, generator=g) * 2 - 1,
                timestamps_s=torch.arange(frames, dtype=torch.float32).expand(2, -1), images=torch.rand(2, 3, 64, 64, generator=g),
                image_owner=torch.arange(2), compute_latents=False)  # fmt: skip
    captured: list[torch.Tensor] = []
    aux.head.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    loss = aux.loss(qs, ids, out.attention_mask)
    embed = model.llm.get_input_embeddings()
    for b, k in enumerate((2, 1)):  # the hidden state read is the one at the fused position of <obj_k>'s embedding
        pos = next(p for p in range(seen["embeds"].shape[1])
                   if torch.equal(seen["embeds"][b, p], embed(torch.tensor(tok.encode(f"<obj_{k}>")[0]))))  # fmt: skip
        assert torch.equal(captured[b], aux.hidden[b, pos])
    expected = torch.stack([dense[0, :, 1, 0].flatten(), dense[1, :, 0, 0].flatten()])
    assert torch.allclose(loss, torch.nn.functional.mse_loss(aux.head(torch.stack(captured)), expected))
