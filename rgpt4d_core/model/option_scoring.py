"""Multiple choice by likelihood: the log-probability a student gives to each option's text after the prompt.

For a student trained with ``answer_style = "option"`` (the supervised answer is the option's text, closed by
``<|im_end|>``), the answer to an MCQ is the option whose continuation ``option ids + <|im_end|>`` is most
probable: ``score_j = Σ_t log p(c_j,t | prompt, c_j,<t)`` (natural log, summed over the continuation's tokens, so
it is the log-probability of the whole answer string). The same recipe scores CLEVRER-style and lm-eval-harness
multiple choice; the model never has to bind an option to its letter or copy digits.

Each (sample, option) pair is one teacher-forced sequence; the sample's video and Set-of-Marks image are repeated
for each of its options (the vision tower runs once per pair: fine at the tiny scale; an 8B deployment would
cache the visual tokens or the prompt's KV).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rgpt4d_core.model.student import Student


@torch.no_grad()
def option_log_likelihoods(
    model: Student,
    prompts: Sequence[torch.Tensor],
    continuations: Sequence[Sequence[torch.Tensor]],
    videos: torch.Tensor | None = None,
    timestamps_s: torch.Tensor | None = None,
    images: torch.Tensor | None = None,
    max_sequences: int = 32,
) -> list[torch.Tensor]:
    """Log-likelihood of every continuation of every prompt.

    Args:
        model: the student (its mode is left as is; call ``eval()`` first).
        prompts: ``B`` int64 ``[L_b]`` generation prompts (ending with ``<|im_start|>assistant\\n``).
        continuations: per sample, its ``K_b >= 1`` candidate answers as int64 ``[M_bk]`` ids (option text ids
            followed by the end-of-turn id).
        videos: float ``[B, T, 3, S, S]`` in ``[-1, 1]`` or ``None``; ``timestamps_s``: float ``[B, T]`` seconds.
        images: float ``[B, 3, S, S]``, one image per sample (the Set-of-Marks frame), or ``None``.
        max_sequences: (sample, option) sequences per forward pass (bounds activation memory).

    Returns:
        ``B`` float32 tensors ``[K_b]``: natural-log probability of each continuation (``<= 0``).
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuation lists")
    if any(len(c) == 0 for c in continuations):
        raise ValueError("every prompt needs at least one continuation")
    pairs = [(b, k) for b, conts in enumerate(continuations) for k in range(len(conts))]
    scores = torch.empty(len(pairs), dtype=torch.float32)
    for start in range(0, len(pairs), max_sequences):
        chunk = pairs[start : start + max_sequences]
        owner = torch.tensor([b for b, _ in chunk], dtype=torch.long)
        ids, labels = [], []
        for b, k in chunk:
            cont = continuations[b][k]
            ids.append(torch.cat((prompts[b], cont)))
            labels.append(torch.cat((torch.full_like(prompts[b], -100), cont)))
        device = prompts[0].device
        rows = owner.to(device)
        out = model(
            [t.to(device) for t in ids],
            [t.to(device) for t in labels],
            videos=None if videos is None else videos[rows],
            timestamps_s=None if timestamps_s is None else timestamps_s[rows],
            images=None if images is None else images[rows],
            image_owner=None if images is None else torch.arange(len(chunk), device=device),
            compute_latents=False,
        )
        logits, target = out.logits[:, :-1].float(), out.labels[:, 1:]
        supervised = target != -100
        token_lp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        scores[start : start + len(chunk)] = (token_lp * supervised).sum(dim=1).cpu()
    per_sample: list[torch.Tensor] = []
    offset = 0
    for conts in continuations:
        per_sample.append(scores[offset : offset + len(conts)])
        offset += len(conts)
    return per_sample


def choose_option(scores: torch.Tensor) -> int:
    """Index of the best option (ties → the earlier option)."""
    best = scores.max()
    return int(torch.nonzero(scores == best)[0, 0])
