"""Multiple choice by likelihood: the log-probability a student gives to each option's text after the prompt.

For a student trained with ``answer_style = "option"`` (the supervised answer is the option's text, closed by
``<|im_end|>``), the answer to an MCQ is the option whose continuation ``option ids + <|im_end|>`` is most
probable: ``score_j = Σ_t log p(c_j,t | prompt, c_j,<t)`` (natural log, summed over the continuation's tokens, so
it is the log-probability of the whole answer string). The same recipe scores CLEVRER-style and lm-eval-harness
multiple choice; the model never has to bind an option to its letter or copy digits.

Each prompt (with its video and Set-of-Marks image) runs once, keeping its KV cache (:meth:`Student.prefill`);
every option of the sample then continues from that cache, so the vision tower and the prompt's layers run once
per question however many options it has.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from rgpt4d_core.model.student import Prefill, Student


def option_scores(
    model: Student,
    prompts: Sequence[torch.Tensor],
    continuations: Sequence[Sequence[torch.Tensor]],
    videos: torch.Tensor | None = None,
    timestamps_s: torch.Tensor | None = None,
    images: torch.Tensor | None = None,
    max_sequences: int = 32,
    token_boxes: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Log-likelihood of every continuation of every prompt; differentiable (an option-level training loss can
    take a cross-entropy over them).

    Args:
        model: the student (its mode is left as is; call ``eval()`` first).
        prompts: ``B`` int64 ``[L_b]`` generation prompts (ending with ``<|im_start|>assistant\\n``).
        continuations: per sample, its ``K_b >= 1`` candidate answers as int64 ``[M_bk]`` ids (option text ids
            followed by the end-of-turn id).
        videos: float ``[B, T, 3, S, S]`` in ``[-1, 1]`` or ``None``; ``timestamps_s``: float ``[B, T]`` seconds.
        images: float ``[B, 3, S, S]``, one image per sample (the Set-of-Marks frame), or ``None``.
        max_sequences: (sample, option) sequences per forward pass over the options (bounds activation memory;
            at least one sample per pass).
        token_boxes: ``B`` float ``[L_b, 4]`` region boxes of the prompts' tokens (``Student.forward``); the
            continuations get none.

    Returns:
        ``B`` float32 tensors ``[K_b]``: natural-log probability of each continuation (``<= 0``).
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuation lists")
    if any(len(c) == 0 for c in continuations):
        raise ValueError("every prompt needs at least one continuation")
    if max_sequences < 1:
        raise ValueError(f"max_sequences must be >= 1, got {max_sequences}")
    scores: list[torch.Tensor] = []
    samples_per_pass = max(1, max_sequences // max(len(c) for c in continuations))
    for start in range(0, len(prompts), samples_per_pass):
        part = slice(start, start + samples_per_pass)
        rows = torch.arange(start, min(start + samples_per_pass, len(prompts)))
        state = model.prefill(
            prompts[part],
            videos=None if videos is None else videos[part],
            timestamps_s=None if timestamps_s is None else timestamps_s[part],
            images=None if images is None else images[part],
            image_owner=None if images is None else torch.arange(len(rows), device=images.device),
            token_boxes=None if token_boxes is None else token_boxes[part],
        )
        scores += _continue_from(model, state, continuations[part])
    return scores


#: :func:`option_scores` without gradients (inference: eval, Serve); same arguments and result
option_log_likelihoods = torch.no_grad()(option_scores)


def _continue_from(
    model: Student, state: Prefill, continuations: Sequence[Sequence[torch.Tensor]]
) -> list[torch.Tensor]:
    """Log-likelihoods of each sample's continuations (``[K_b]`` per sample), all in one pass over the cache."""
    owner = torch.tensor([b for b, conts in enumerate(continuations) for _ in conts], dtype=torch.long)
    flat = [c for conts in continuations for c in conts]
    device = state.attention_mask.device
    owner = owner.to(device)
    length = max(int(c.shape[0]) for c in flat)
    pad = model.cfg.tokens.pad_token_id
    ids = torch.full((len(flat), length), pad, dtype=torch.long, device=device)
    valid = torch.zeros((len(flat), length), dtype=torch.bool, device=device)
    for i, c in enumerate(flat):
        ids[i, : len(c)] = c.to(device)
        valid[i, : len(c)] = True
    cache = DynamicCache(
        ddp_cache_data=[(layer.keys[owner], layer.values[owner]) for layer in state.cache.layers]
    )
    mask = torch.cat((state.attention_mask[owner], valid.to(state.attention_mask.dtype)), dim=1)
    position = state.next_position[owner, None] + torch.arange(length, device=device)
    out = model.llm.model(
        inputs_embeds=state.continue_embeddings(model.llm.get_input_embeddings()(ids), owner),
        attention_mask=mask,
        position_ids=position,
        past_key_values=cache,
        use_cache=True,
    )
    # token t of a continuation is predicted by the prompt's last logits (t = 0) or by continuation token t - 1
    logits = torch.cat(
        (state.last_logits[owner, None], model.llm.lm_head(out.last_hidden_state[:, :-1])), dim=1
    )
    token_lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    totals = (token_lp * valid).sum(dim=1).cpu()
    return list(torch.split(totals, [len(conts) for conts in continuations]))


def choose_option(scores: torch.Tensor) -> int:
    """Index of the best option (ties → the earlier option)."""
    best = scores.max()
    return int(torch.nonzero(scores == best)[0, 0])
