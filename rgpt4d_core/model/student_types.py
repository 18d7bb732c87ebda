"""The student's typed configuration and the values its forward, prefill and generation return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rgpt4d_core.model.fusion import FusionConfig
from rgpt4d_core.model.llm import LLMConfig
from rgpt4d_core.model.perception_decoder import DecoderConfig
from rgpt4d_core.model.projector import ProjectorConfig
from rgpt4d_core.model.region_tracks import RegionDense, RegionTrackConfig
from rgpt4d_core.model.tpe import TPEConfig
from rgpt4d_core.model.vision import VisionConfig
from rgpt4d_core.text.prompts import ANSWER_STYLES


@dataclass(frozen=True)
class TokenConfig:
    """Token ids the model itself needs (values come from the tokenizer, ``rgpt4d_core.text.tokenizer``).

    Defaults: the Qwen2 + VILA vocabulary of NVILA-Lite-8B.
    """

    video_token_id: int = 151_650
    image_token_id: int = 151_649
    pad_token_id: int = 151_643
    eos_token_id: int = 151_645
    #: id whose embedding follows each frame when ``fusion.frame_separator`` is on (VILA: ``"\n"`` = 198)
    frame_separator_token_id: int = 198


@dataclass(frozen=True)
class StudentConfig:
    """Typed configuration of the whole student (see ``presets.py`` for ``tiny`` and ``nvila_lite_8b``)."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    tpe: TPEConfig = field(default_factory=TPEConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    tokens: TokenConfig = field(default_factory=TokenConfig)
    #: tokenizer builder name in ``rgpt4d_core.text.tokenizer.TOKENIZERS`` (real checkpoints ship their own)
    tokenizer: str = "qwen2"
    #: how the student answers MCQs (``rgpt4d_core.text.prompts.AnswerStyle``): ``"letter"`` (R4D-Bench, the paper)
    #: is trained on and generates the option letter; ``"option"`` is trained on the option's text and answers by
    #: scoring each option's likelihood (``model/option_scoring.py``)
    answer_style: str = "letter"
    #: add a learned embedding of each region's frame-1 box to the tokens of its ``<obj_k>`` references
    #: (``model/region_boxes.py``; the ``tiny`` recipe's explicit region position; off in the paper preset)
    region_boxes: bool = False
    #: also add the same box embedding (shared weights) of each visual token's grid cell to that token, so that a
    #: region reference and the visual tokens at its place share a spatial code (``model/region_boxes.py``;
    #: needs ``region_boxes``; an experiment option, off in every preset)
    visual_positions: bool = False
    #: a read-out of the video at and around each named region, added to its reference tokens
    #: (``model/region_tracks.py``; needs ``region_boxes``; off in the paper preset)
    region_tracks: RegionTrackConfig = field(default_factory=RegionTrackConfig)

    def __post_init__(self) -> None:
        if self.answer_style not in ANSWER_STYLES:
            raise ValueError(f"answer_style must be one of {ANSWER_STYLES}, got {self.answer_style!r}")
        if self.visual_positions and not self.region_boxes:
            raise ValueError("visual_positions shares the region-box embedding: set region_boxes too")
        if self.region_tracks.enabled and not self.region_boxes:
            raise ValueError("region_tracks reads the region-box token boxes: set region_boxes too")


@dataclass
class StudentOutput:
    """Result of :meth:`Student.forward`.

    Attributes:
        logits: float ``[B, L, V]`` next-token logits at every fused position (``[B, M + 1, V]`` at the supervised
            positions only with ``supervised_logits_only``).
        labels: int64 ``[B, L]`` targets aligned with the positions (NOT shifted: the loss predicts
            ``labels[:, 1:]`` from ``logits[:, :-1]``); ``-100`` on prompt, media and padding (``[B, M + 1]``
            with ``supervised_logits_only``).
        attention_mask: int64 ``[B, L]``, 1 = real token.
        latents: float ``[B, K, T', h', w', C']`` D_4DP predictions in the expert latent layout (zeros for
            samples without video), or ``None`` when the model has no decoder or it was not asked for.
        latent_mask: bool ``[B]``, ``True`` where ``latents`` are real predictions; ``None`` with ``latents``.
        region_dense: the region tracks' dense predictions (``RegionTrackConfig.dense_head``; empty without it).
    """

    logits: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    latents: torch.Tensor | None = None
    latent_mask: torch.Tensor | None = None
    region_dense: list[RegionDense] = field(default_factory=list)


@dataclass
class GenerationOutput:
    """Result of :meth:`Student.generate`.

    Attributes:
        sequences: int64 ``[B, N]`` new tokens (``N <= max_new_tokens``); after a sample's EOS: pad id.
        lengths: int64 ``[B]`` number of new tokens before EOS (EOS excluded).
    """

    sequences: torch.Tensor
    lengths: torch.Tensor

    def as_lists(self) -> list[list[int]]:
        """New token ids per sample, EOS and padding removed."""
        return [row[:n].tolist() for row, n in zip(self.sequences, self.lengths.tolist(), strict=True)]


@dataclass
class Prefill:
    """The prompts' state after one forward pass with a KV cache (left-padded): what generation and option
    scoring continue from.

    Attributes:
        last_logits: float ``[B, V]`` logits for the first new token.
        cache: the LLM's KV cache over the ``L`` prompt positions (``transformers`` ``Cache``).
        attention_mask: int64 ``[B, L]`` (0 on the left padding).
        next_position: int64 ``[B]`` position id of each sample's first new token.
        answer_query: float ``[B, D]`` added to the embedding of every new token (the region tracks' answer
            query with ``query_span = "answer"``), or ``None``.
    """

    last_logits: torch.Tensor
    cache: Any
    attention_mask: torch.Tensor
    next_position: torch.Tensor
    answer_query: torch.Tensor | None = None

    def continue_embeddings(self, embeds: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
        """``embeds`` ``[N, M, D]`` of new tokens plus the answer query of their sample (``owner`` int64 ``[N]``:
        the prompt each row continues; default row ``i`` continues prompt ``i``)."""
        if self.answer_query is None:
            return embeds
        query = self.answer_query if owner is None else self.answer_query[owner]
        return embeds + query[:, None].to(embeds.dtype)
