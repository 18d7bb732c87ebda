"""The student MLLM (NVILA-Lite + TPE, plus the training-only D_4DP): wiring of the parts in this package.

Data flow per video frame: pixels ``[3, S, S]`` → SigLIP layer features ``[g*g, C_v]`` (+TPE) → projector
``[n, D]`` (+TPE post) → spliced at the ``<video>`` placeholder → Qwen2 → logits; D_4DP reads the LLM's last
hidden states at the video's visual tokens and predicts the expert's latents.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import Qwen2ForCausalLM

from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.model.fusion import FusedBatch, FusionConfig, MediaTokens, compact_supervised, fuse
from rgpt4d_core.model.llm import build_llm
from rgpt4d_core.model.perception_decoder import (
    LatentLayout,
    PerceptionDecoder,
    gather_frame_tokens,
)
from rgpt4d_core.model.projector import DownsampleProjector, build_projector
from rgpt4d_core.model.region_boxes import RegionBoxEmbedding
from rgpt4d_core.model.region_tracks import RegionDense, RegionTrackEncoder
from rgpt4d_core.model.student_types import (  # noqa: F401  (re-exported: the student's public types)
    GenerationOutput,
    Prefill,
    StudentConfig,
    StudentOutput,
    TokenConfig,
)
from rgpt4d_core.model.tpe import add_timestamp_encoding
from rgpt4d_core.model.vision import VisionTower


def answer_positions(
    input_ids: Sequence[torch.Tensor], labels: Sequence[torch.Tensor] | None
) -> list[int]:
    """Per sample, the index of the token whose output predicts the answer's first token: the token before the first
    supervised label (``labels`` are aligned with ``input_ids``), or the last token of a prompt without labels."""
    if labels is None:
        return [int(ids.shape[0]) - 1 for ids in input_ids]
    positions = []
    for ids, lab in zip(input_ids, labels, strict=True):
        supervised = torch.nonzero(lab != -100).flatten()
        positions.append(int(supervised[0]) - 1 if len(supervised) else int(ids.shape[0]) - 1)
    return positions


def prompt_boxes_only(
    token_boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor] | None
) -> Sequence[torch.Tensor]:
    """``token_boxes`` with the supervised answer's rows set to NaN: a region reference inside the answer (an SR
    option names the other region) is a plain token. Option scoring and generation continue from the prompt's KV
    cache without region boxes, so the answer's tokens must look the same when teacher-forced in training."""
    if labels is None:
        return token_boxes
    return [
        torch.where((lab != -100)[:, None].to(boxes.device), torch.full_like(boxes, float("nan")), boxes)
        for boxes, lab in zip(token_boxes, labels, strict=True)
    ]


class Student(nn.Module):
    """NVILA-Lite-style video LLM with TPE; with ``expert_spec`` (latents) also the D_4DP decoder.

    Args:
        cfg: the configuration.
        expert_spec: the frozen expert whose latent layout D_4DP predicts; ``None`` → no decoder.
        vision, projector, llm: pre-built parts (loading a checkpoint); built from ``cfg`` when omitted.
    """

    def __init__(
        self,
        cfg: StudentConfig,
        expert_spec: ExpertSpec | None = None,
        *,
        vision: VisionTower | None = None,
        projector: DownsampleProjector | None = None,
        llm: Qwen2ForCausalLM | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = vision if vision is not None else VisionTower(cfg.vision)
        self.llm: Qwen2ForCausalLM = llm if llm is not None else build_llm(cfg.llm)
        hidden = int(self.llm.config.hidden_size)
        self.projector = (
            projector
            if projector is not None
            else build_projector(cfg.projector, cfg.vision.hidden_size, hidden)
        )
        self.expert_spec = expert_spec
        self.decoder: PerceptionDecoder | None = None
        if expert_spec is not None and cfg.decoder.enabled and expert_spec.hook_layers:
            self.decoder = PerceptionDecoder(cfg.decoder, hidden, LatentLayout.from_spec(expert_spec))
        self.region_box_embedding = RegionBoxEmbedding(hidden) if cfg.region_boxes else None
        self.region_track_encoder = (
            RegionTrackEncoder(cfg.region_tracks, cfg.vision.hidden_size, hidden)
            if cfg.region_tracks.enabled
            else None
        )
        self._media = MediaTokens(
            cfg.tokens.video_token_id, cfg.tokens.image_token_id, cfg.tokens.pad_token_id
        )

    # ------------------------------------------------------------------ parts
    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens per frame / image after the projector (real preset: 121)."""
        return self.projector.output_grid(self.vision.grid) ** 2

    def adopt_region_modules(self, other: Student) -> None:
        """Take ``other``'s trained region-box embedding and region-track encoder where both students have one
        (building a student from a loaded checkpoint's parts keeps what the checkpoint learned)."""
        if self.region_box_embedding is not None and other.region_box_embedding is not None:
            self.region_box_embedding = other.region_box_embedding
        if self.region_track_encoder is not None and other.region_track_encoder is not None:
            self.region_track_encoder = other.region_track_encoder

    def strip_decoder(self) -> None:
        """Drop D_4DP (inference never uses it)."""
        self.decoder = None

    def encode_frames(self, pixels: torch.Tensor, timestamps_s: torch.Tensor | None) -> torch.Tensor:
        """Visual tokens of frames or images.

        Args:
            pixels: float ``[F, 3, S, S]`` in ``[-1, 1]``.
            timestamps_s: float ``[F]`` seconds for video frames (TPE), ``None`` for images (no TPE).

        Returns:
            float ``[F, n, D_llm]``.
        """
        return self.project_features(self.vision(pixels), timestamps_s)

    def project_features(self, feats: torch.Tensor, timestamps_s: torch.Tensor | None) -> torch.Tensor:
        """Visual tokens ``[F, n, D_llm]`` from the vision tower's features ``[F, g*g, C_v]`` (TPE where configured,
        projector, the visual-position codes when ``cfg.visual_positions``)."""
        tpe = self.cfg.tpe
        if timestamps_s is not None and tpe.placement == "pre_projector":
            feats = add_timestamp_encoding(feats, timestamps_s, tpe.base)
        tokens = self.projector(feats.to(self._param_dtype(self.projector)))
        if timestamps_s is not None and tpe.placement == "post_projector":
            tokens = add_timestamp_encoding(tokens, timestamps_s, tpe.base)
        if self.cfg.visual_positions and self.region_box_embedding is not None:
            grid, patches = self.projector.output_grid(self.vision.grid), self.vision.grid
            cell = -(-patches // grid) / patches  # a token covers ceil(patches / grid) patches per side
            tokens = tokens + self.region_box_embedding.cell_codes(grid, cell, tokens.dtype)
        return tokens

    @staticmethod
    def _param_dtype(module: nn.Module) -> torch.dtype:
        return next(module.parameters()).dtype

    # ------------------------------------------------------------------ fusion
    def _fuse(
        self,
        input_ids: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor] | None,
        videos: torch.Tensor | None,
        timestamps_s: torch.Tensor | None,
        video_mask: torch.Tensor | None,
        images: torch.Tensor | None,
        image_owner: torch.Tensor | None,
        padding_side: str,
        token_boxes: Sequence[torch.Tensor] | None = None,
    ) -> tuple[FusedBatch, torch.Tensor | None, list[RegionDense]]:
        """The fused LLM inputs, the region tracks' answer query ``[B, D]`` that each token after the prompt
        gets (``None`` unless ``region_tracks.query_span == "answer"``), and the region tracks' dense predictions
        (empty without ``region_tracks.dense_head``)."""
        batch = len(input_ids)
        embed = self.llm.get_input_embeddings()
        per_video: list[list[torch.Tensor]] = [[] for _ in range(batch)]
        video_features: list[torch.Tensor | None] = [None] * batch
        if videos is not None:
            if videos.dim() != 5 or videos.shape[0] != batch:
                raise ValueError(f"videos must be [B={batch}, T, 3, S, S], got {tuple(videos.shape)}")
            mask = video_mask if video_mask is not None else torch.ones(batch, dtype=torch.bool)
            rows = torch.nonzero(mask.to(torch.bool)).flatten().tolist()
            if self.cfg.tpe.placement != "off" and timestamps_s is None:
                raise ValueError("timestamps_s [B, T] is required for videos when tpe.placement is not 'off'")
            if rows:
                frames = videos.shape[1]
                pix = videos[rows].flatten(0, 1)
                ts = timestamps_s[rows].flatten() if timestamps_s is not None else None
                feats = self.vision(pix)
                tokens = self.project_features(feats, ts).unflatten(0, (len(rows), frames))
                feats = feats.unflatten(0, (len(rows), frames))
                for i, b in enumerate(rows):
                    per_video[b] = [tokens[i]]
                    video_features[b] = feats[i]
        lengths = [int(ids.shape[0]) for ids in input_ids]
        text = list(torch.split(embed(torch.cat(list(input_ids))), lengths))
        answer_query = None
        dense: list[RegionDense] = []
        if token_boxes is not None:
            token_boxes = prompt_boxes_only(token_boxes, labels)
            if self.region_box_embedding is not None:
                text = self.region_box_embedding(text, token_boxes)
            if self.region_track_encoder is not None:
                tracked = self.region_track_encoder(
                    text, token_boxes, video_features, answer_positions(input_ids, labels)
                )
                text, answer_query, dense = tracked.text, tracked.answer_query, tracked.dense
        per_image: list[list[torch.Tensor]] = [[] for _ in range(batch)]
        if images is not None:
            if images.dim() != 4 or image_owner is None or image_owner.shape != images.shape[:1]:
                raise ValueError(
                    "images must be [N, 3, S, S] with image_owner int64 [N] naming each image's sample"
                )
            if images.shape[0]:
                img_tokens = self.encode_frames(images, None)
                for i, b in enumerate(image_owner.tolist()):
                    if not 0 <= b < batch:
                        raise ValueError(
                            f"image_owner[{i}] = {b} is not a sample index of a batch of {batch}"
                        )
                    per_image[b].append(img_tokens[i])
        fusion = self.cfg.fusion
        cfg = FusionConfig(padding_side, fusion.max_length, fusion.truncation, fusion.frame_separator)
        separator = None
        if fusion.frame_separator:
            sep_id = torch.tensor([self.cfg.tokens.frame_separator_token_id], device=text[0].device)
            separator = embed(sep_id)[0]
        fused = fuse(input_ids, text, self._media, per_video, per_image, labels, separator, cfg)
        return fused, answer_query, dense

    # ------------------------------------------------------------------ forward
    def _teacher_forced_mask(self, fused: FusedBatch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(attention_mask, position_ids)`` for the LLM's teacher-forced pass over ``fused``.

        Right padding puts every real token's causal context on real tokens, and its position equals its index, so
        the pass needs neither: ``(None, None)`` lets SDPA run its causal kernel without a materialised
        ``[B, 1, L, L]`` mask (it skips the masked half: in a profile of the tiny recipe an LLM layer's attention,
        forward + backward, went from ≈ 56 to ≈ 42 ms per batch of 8; a whole training step is 1.21x faster,
        ``bench/llm_mask.py``). Real tokens' outputs are unchanged; padding rows' outputs change and nothing reads
        them (labels are ignored there, D_4DP gathers video positions). Left padding keeps both.
        """
        if self.cfg.fusion.padding_side == "right":
            return None, None
        return fused.attention_mask, fused.position_ids

    def forward(
        self,
        input_ids: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor] | None = None,
        videos: torch.Tensor | None = None,
        timestamps_s: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_owner: torch.Tensor | None = None,
        compute_latents: bool = True,
        supervised_logits_only: bool = False,
        token_boxes: Sequence[torch.Tensor] | None = None,
    ) -> StudentOutput:
        """Teacher-forced forward pass.

        Args:
            input_ids: ``B`` int64 ``[L_b]`` unpadded prompts(+answers) with one ``<video>`` placeholder per
                sample that has a video and one ``<image>`` per image.
            labels: ``B`` int64 ``[L_b]`` aligned with ``input_ids`` (``-100`` where no loss); default none.
            videos: float ``[B, T, 3, S, S]`` in ``[-1, 1]`` (see ``preprocess.py``); rows of samples without
                video are ignored (any values).
            timestamps_s: float ``[B, T]`` frame times in seconds (needed unless TPE is off).
            video_mask: bool ``[B]``, which samples have a video; default all when ``videos`` is given.
            images: float ``[N, 3, S, S]`` images (SoM first frame, SAT images), placeholder order per sample.
            image_owner: int64 ``[N]`` sample index of each image.
            compute_latents: run D_4DP (when the model has one and the batch has a video).
            supervised_logits_only: training with ``labels``: run the LM head only where the next token is supervised
                (:func:`fusion.compact_supervised`); ``logits``/``labels`` are then the compact ``[B, M + 1, ...]``
                view, on which :func:`losses.sft_loss` gives the same values as on the full sequence.
            token_boxes: ``B`` float ``[L_b, 4]``, the normalised box of the region each token names (NaN rows
                elsewhere; ``rgpt4d_core.text.region_refs.token_region_boxes``); embedded when
                ``cfg.region_boxes`` is on, ignored otherwise; ``None``: no region embedding.

        Returns:
            :class:`StudentOutput`.
        """
        fused, _, region_dense = self._fuse(
            input_ids,
            labels,
            videos,
            timestamps_s,
            video_mask,
            images,
            image_owner,
            self.cfg.fusion.padding_side,
            token_boxes,
        )
        decode = self.decoder is not None and compute_latents
        layer = self.cfg.decoder.hidden_layer
        mask, positions = self._teacher_forced_mask(fused)
        out = self.llm.model(
            inputs_embeds=fused.inputs_embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
            output_hidden_states=decode and layer != -1,
        )
        hidden = out.last_hidden_state
        scored, labels_out = hidden, fused.labels
        if supervised_logits_only and labels is not None:
            scored, labels_out = compact_supervised(hidden, fused.labels)
        logits = self.llm.lm_head(scored)
        result = StudentOutput(
            logits=logits, labels=labels_out, attention_mask=fused.attention_mask, region_dense=region_dense
        )
        if decode:
            assert self.decoder is not None
            read = hidden if layer == -1 else out.hidden_states[layer]
            index, has_video = fused.first_video_index()
            if bool(has_video.any()):
                rows = torch.nonzero(has_video).flatten()
                pred = self.decoder(gather_frame_tokens(read[rows], index[rows]))
                latents = pred.new_zeros((len(input_ids), *pred.shape[1:]))
                result.latents = latents.index_copy(0, rows, pred)
                result.latent_mask = has_video
        return result

    # ------------------------------------------------------------------ generation
    def prefill(
        self,
        input_ids: Sequence[torch.Tensor],
        videos: torch.Tensor | None = None,
        timestamps_s: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_owner: torch.Tensor | None = None,
        token_boxes: Sequence[torch.Tensor] | None = None,
    ) -> Prefill:
        """Run the prompts once (media spliced in, left padding) and keep the KV cache. Differentiable when called
        with gradients enabled (option-level training); :meth:`generate` calls it under ``no_grad``.

        Arguments as in :meth:`forward` (``input_ids`` are prompts ending where the answer starts).
        """
        fused, answer_query, _ = self._fuse(
            input_ids, None, videos, timestamps_s, video_mask, images, image_owner, "left", token_boxes
        )
        out = self.llm.model(
            inputs_embeds=fused.inputs_embeds,
            attention_mask=fused.attention_mask,
            position_ids=fused.position_ids,
            use_cache=True,
        )
        return Prefill(
            last_logits=self.llm.lm_head(out.last_hidden_state[:, -1]),
            cache=out.past_key_values,
            attention_mask=fused.attention_mask,
            next_position=fused.attention_mask.sum(dim=1),
            answer_query=answer_query,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: Sequence[torch.Tensor],
        videos: torch.Tensor | None = None,
        timestamps_s: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_owner: torch.Tensor | None = None,
        max_new_tokens: int = 8,
        eos_token_id: int | None = None,
        token_boxes: Sequence[torch.Tensor] | None = None,
    ) -> GenerationOutput:
        """Batched greedy decoding with a KV cache (left-padded prompts; stops when all samples hit EOS).

        Arguments as in :meth:`forward` (``input_ids`` are prompts ending where the answer starts).
        """
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        eos = self.cfg.tokens.eos_token_id if eos_token_id is None else eos_token_id
        pad = self.cfg.tokens.pad_token_id
        state = self.prefill(input_ids, videos, timestamps_s, video_mask, images, image_owner, token_boxes)
        mask, position, cache, logits = (
            state.attention_mask,
            state.next_position,
            state.cache,
            state.last_logits,
        )
        batch = len(input_ids)
        finished = torch.zeros(batch, dtype=torch.bool, device=mask.device)
        lengths = torch.zeros(batch, dtype=torch.long, device=mask.device)
        steps: list[torch.Tensor] = []
        embed = self.llm.get_input_embeddings()
        for _ in range(max_new_tokens):
            token = logits.argmax(dim=-1)
            token = torch.where(finished, torch.full_like(token, pad), token)
            steps.append(token)
            lengths += (~finished & (token != eos)).long()
            finished |= token == eos
            if bool(finished.all()) or len(steps) == max_new_tokens:
                break
            mask = torch.cat((mask, torch.ones(batch, 1, dtype=mask.dtype, device=mask.device)), dim=1)
            out = self.llm.model(
                inputs_embeds=state.continue_embeddings(embed(token.unsqueeze(1))),
                attention_mask=mask,
                position_ids=position.unsqueeze(1),
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            position = position + 1
            logits = self.llm.lm_head(out.last_hidden_state[:, -1])
        return GenerationOutput(torch.stack(steps, dim=1), lengths)
