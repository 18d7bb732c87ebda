"""Splicing visual tokens into the text sequence (pure function, no parameters).

Each prompt carries one placeholder token per media item: ``<video>`` (replaced by all of the video's frame
tokens, frame after frame, optionally each frame followed by a separator embedding as in VILA's default video
encoder) and ``<image>`` (replaced by the image's tokens, e.g. the Set-of-Marks first frame). Media items are
consumed in placeholder order. Labels of media and padding positions are :data:`IGNORE_INDEX`.

Truncation policy (``max_length``): ``"right"`` drops trailing *text* tokens of a sample whose fused length
exceeds ``max_length``; if that would cut into (or leave no room after) a media span the call raises
:class:`FusionError` naming the sample, because a partial video is never a valid input. ``"error"`` raises
for any over-long sample. Media is never cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: label value ignored by the cross-entropy
IGNORE_INDEX = -100
PADDING_SIDES: tuple[str, ...] = ("left", "right")
TRUNCATIONS: tuple[str, ...] = ("right", "error")


class FusionError(ValueError):
    """Inputs of one sample are inconsistent (placeholder count, widths, length); the message names it."""


@dataclass(frozen=True)
class MediaTokens:
    """Token ids the fusion step looks for / pads with (defined by the tokenizer in ``rgpt4d_core.text``)."""

    video_token_id: int
    image_token_id: int
    pad_token_id: int


@dataclass(frozen=True)
class FusionConfig:
    """Attributes:
    padding_side: ``"right"`` (training) or ``"left"`` (batched generation).
    max_length: longest fused sequence; ``None`` = unlimited.
    truncation: ``"right"`` or ``"error"`` (see module docstring).
    frame_separator: append the separator embedding after each video frame (VILA's ``"\\n"`` token).
    """

    padding_side: str = "right"
    max_length: int | None = None
    truncation: str = "right"
    frame_separator: bool = False

    def __post_init__(self) -> None:
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"fusion.padding_side must be one of {PADDING_SIDES}, got {self.padding_side!r}")
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"fusion.truncation must be one of {TRUNCATIONS}, got {self.truncation!r}")
        if self.max_length is not None and self.max_length <= 0:
            raise ValueError(f"fusion.max_length must be positive, got {self.max_length}")


@dataclass
class FusedBatch:
    """The LLM input for a batch.

    Attributes:
        inputs_embeds: float ``[B, L, D]``; padding rows are zeros.
        attention_mask: int64 ``[B, L]``, 1 = real token.
        labels: int64 ``[B, L]`` aligned with positions (not shifted); :data:`IGNORE_INDEX` on media/padding.
        position_ids: int64 ``[B, L]``, 0-based position among the sample's real tokens (padding: 1).
        video_token_index: per sample, per video: int64 ``[T, n]`` positions (in the padded row) of every
            frame's visual tokens.
        image_token_index: per sample, per image: int64 ``[n]`` positions of the image's tokens.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    video_token_index: list[list[torch.Tensor]]
    image_token_index: list[list[torch.Tensor]]

    def first_video_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense gather index of each sample's first video.

        Returns:
            ``(index, has_video)``: int64 ``[B, T, n]`` (zeros for samples without video) and bool ``[B]``.

        Raises:
            FusionError: if the first videos of the batch differ in ``(T, n)``.
        """
        batch = len(self.video_token_index)
        shapes = {tuple(v[0].shape) for v in self.video_token_index if v}
        if len(shapes) > 1:
            raise FusionError(
                f"first videos of the batch have different [frames, tokens] shapes: {sorted(shapes)}"
            )
        device = self.attention_mask.device
        has_video = torch.tensor([bool(v) for v in self.video_token_index], dtype=torch.bool, device=device)
        if not shapes:
            return torch.zeros(batch, 0, 0, dtype=torch.long, device=device), has_video
        t, n = shapes.pop()
        index = torch.zeros(batch, t, n, dtype=torch.long, device=device)
        for b, videos in enumerate(self.video_token_index):
            if videos:
                index[b] = videos[0]
        return index, has_video


@dataclass
class _Sample:
    embeds: torch.Tensor  # [L, D]
    labels: torch.Tensor  # [L]
    videos: list[torch.Tensor]  # [T, n] positions before padding
    images: list[torch.Tensor]  # [n]
    media_end: int  # first position after the last media token (0 if none)


def _fuse_one(
    b: int,
    ids: torch.Tensor,
    text: torch.Tensor,
    labels: torch.Tensor,
    videos: Sequence[torch.Tensor],
    images: Sequence[torch.Tensor],
    tokens: MediaTokens,
    separator: torch.Tensor | None,
) -> _Sample:
    if ids.dim() != 1 or text.dim() != 2 or text.shape[0] != ids.shape[0] or labels.shape != ids.shape:
        raise FusionError(
            f"sample {b}: input_ids [L], text_embeds [L, D] and labels [L] disagree: {tuple(ids.shape)}, "
            f"{tuple(text.shape)}, {tuple(labels.shape)}"
        )
    dim = text.shape[1]
    is_video = ids == tokens.video_token_id
    is_image = ids == tokens.image_token_id
    n_vid, n_img = int(is_video.sum()), int(is_image.sum())
    if n_vid != len(videos) or n_img != len(images):
        raise FusionError(
            f"sample {b}: {n_vid} <video> / {n_img} <image> placeholders but {len(videos)} videos / "
            f"{len(images)} images given"
        )
    segments: list[torch.Tensor] = []
    seg_labels: list[torch.Tensor] = []
    video_pos: list[torch.Tensor] = []
    image_pos: list[torch.Tensor] = []
    cursor = prev = media_end = 0
    vi = ii = 0
    for p in torch.nonzero(is_video | is_image).flatten().tolist():
        segments.append(text[prev:p])
        seg_labels.append(labels[prev:p])
        cursor += p - prev
        if bool(is_video[p]):
            video = videos[vi]
            vi += 1
            if video.dim() != 3 or video.shape[2] != dim:
                raise FusionError(
                    f"sample {b}: video {vi - 1} must be [T, n, {dim}], got {tuple(video.shape)}"
                )
            frames, n, _ = video.shape
            video = video.to(text.dtype)
            if separator is not None:
                stride = n + 1
                sep = separator.to(text.dtype).reshape(1, 1, dim).expand(frames, 1, dim)
                media = torch.cat((video, sep), dim=1).reshape(frames * stride, dim)
            else:
                stride = n
                media = video.reshape(frames * n, dim)
            offsets = torch.arange(frames, device=ids.device).unsqueeze(1) * stride
            video_pos.append(cursor + offsets + torch.arange(n, device=ids.device).unsqueeze(0))
        else:
            image = images[ii]
            ii += 1
            if image.dim() != 2 or image.shape[1] != dim:
                raise FusionError(f"sample {b}: image {ii - 1} must be [n, {dim}], got {tuple(image.shape)}")
            media = image.to(text.dtype)
            image_pos.append(cursor + torch.arange(media.shape[0], device=ids.device))
        segments.append(media)
        seg_labels.append(
            torch.full((media.shape[0],), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
        )
        cursor += media.shape[0]
        media_end = cursor
        prev = p + 1
    segments.append(text[prev:])
    seg_labels.append(labels[prev:])
    return _Sample(torch.cat(segments), torch.cat(seg_labels), video_pos, image_pos, media_end)


def _truncate(b: int, sample: _Sample, cfg: FusionConfig) -> _Sample:
    length = sample.embeds.shape[0]
    if cfg.max_length is None or length <= cfg.max_length:
        return sample
    if cfg.truncation == "error":
        raise FusionError(f"sample {b}: fused length {length} exceeds max_length {cfg.max_length}")
    if sample.media_end >= cfg.max_length:
        raise FusionError(
            f"sample {b}: fused length {length} exceeds max_length {cfg.max_length} and its media spans end at "
            f"{sample.media_end}; truncating would cut or end on media"
        )
    keep = cfg.max_length
    return _Sample(sample.embeds[:keep], sample.labels[:keep], sample.videos, sample.images, sample.media_end)


def fuse(
    input_ids: Sequence[torch.Tensor],
    text_embeds: Sequence[torch.Tensor],
    tokens: MediaTokens,
    videos: Sequence[Sequence[torch.Tensor]] | None = None,
    images: Sequence[Sequence[torch.Tensor]] | None = None,
    labels: Sequence[torch.Tensor] | None = None,
    frame_separator: torch.Tensor | None = None,
    cfg: FusionConfig | None = None,
) -> FusedBatch:
    """Build padded LLM inputs by replacing media placeholders with visual tokens.

    Args:
        input_ids: ``B`` int64 ``[L_b]`` unpadded token ids containing the placeholders.
        text_embeds: ``B`` float ``[L_b, D]`` embeddings of ``input_ids`` (rows at placeholders are discarded).
        tokens: placeholder and pad ids.
        videos: per sample, per ``<video>`` placeholder in order: float ``[T, n, D]`` frame tokens.
        images: per sample, per ``<image>`` placeholder in order: float ``[n, D]`` image tokens.
        labels: ``B`` int64 ``[L_b]`` targets aligned with ``input_ids``; default all :data:`IGNORE_INDEX`.
        frame_separator: float ``[D]`` appended after each frame when ``cfg.frame_separator`` is set.
        cfg: padding side, truncation and separator policy.

    Returns:
        A :class:`FusedBatch` with ``L = max_b`` fused length (after truncation).

    Raises:
        FusionError: placeholder/media count mismatch, width mismatch or a length that cannot be truncated.
    """
    cfg = cfg or FusionConfig()
    batch = len(input_ids)
    if batch == 0:
        raise FusionError("empty batch")
    if len(text_embeds) != batch or (labels is not None and len(labels) != batch):
        raise FusionError("input_ids, text_embeds and labels must have one entry per sample")
    videos = videos if videos is not None else [[] for _ in range(batch)]
    images = images if images is not None else [[] for _ in range(batch)]
    if len(videos) != batch or len(images) != batch:
        raise FusionError(f"videos/images must have one (possibly empty) list per sample ({batch})")
    if cfg.frame_separator and frame_separator is None:
        raise FusionError("fusion.frame_separator is set but no separator embedding was given")
    separator = frame_separator if cfg.frame_separator else None
    samples = []
    for b in range(batch):
        lab = labels[b] if labels is not None else torch.full_like(input_ids[b], IGNORE_INDEX)
        sample = _fuse_one(b, input_ids[b], text_embeds[b], lab, videos[b], images[b], tokens, separator)
        samples.append(_truncate(b, sample, cfg))
    return _pad(samples, cfg.padding_side)


def _pad(samples: list[_Sample], side: str) -> FusedBatch:
    batch = len(samples)
    first = samples[0].embeds
    dim, dtype, device = first.shape[1], first.dtype, first.device
    length = max(s.embeds.shape[0] for s in samples)
    embeds = torch.zeros(batch, length, dim, dtype=dtype, device=device)
    mask = torch.zeros(batch, length, dtype=torch.long, device=device)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long, device=device)
    position_ids = torch.ones(batch, length, dtype=torch.long, device=device)
    video_index: list[list[torch.Tensor]] = []
    image_index: list[list[torch.Tensor]] = []
    for b, s in enumerate(samples):
        n = s.embeds.shape[0]
        start = length - n if side == "left" else 0
        embeds[b, start : start + n] = s.embeds.to(dtype)
        mask[b, start : start + n] = 1
        labels[b, start : start + n] = s.labels
        position_ids[b, start : start + n] = torch.arange(n, device=device)
        video_index.append([v + start for v in s.videos])
        image_index.append([i + start for i in s.images])
    return FusedBatch(embeds, mask, labels, position_ids, video_index, image_index)


def compact_supervised(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only the positions whose next token is supervised, so the LM head runs on ~20 positions per sample
    instead of every prompt and media position (the loss is unchanged).

    Args:
        hidden: float ``[B, L, D]`` hidden states; position ``i`` predicts token ``i + 1``.
        labels: int64 ``[B, L]`` aligned with the positions (not shifted), :data:`IGNORE_INDEX` where unsupervised.

    Returns:
        ``(hidden', labels')`` float ``[B, M + 1, D]`` and int64 ``[B, M + 1]`` (``M`` = most supervised targets in
        one sample) in the same convention: ``hidden'[b, j]`` is the state that predicts ``labels'[b, j + 1]``, the
        ``j``-th supervised target of sample ``b`` in order; unused slots are zeros / :data:`IGNORE_INDEX`.
    """
    if hidden.dim() != 3 or labels.shape != hidden.shape[:2]:
        raise ValueError(
            f"hidden [B, L, D] and labels [B, L] expected, got {tuple(hidden.shape)}, {tuple(labels.shape)}"
        )
    batch = hidden.shape[0]
    supervised = labels[:, 1:] != IGNORE_INDEX
    counts = supervised.sum(dim=1)
    most = int(counts.max()) if batch else 0
    rows, cols = supervised.nonzero(as_tuple=True)  # row-major: within a row, positions ascend
    slots = torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    compact = hidden.new_zeros((batch, most + 1, hidden.shape[2]))
    compact = compact.index_put((rows, slots), hidden[rows, cols])
    compact_labels = labels.new_full((batch, most + 1), IGNORE_INDEX)
    compact_labels[rows, slots + 1] = labels[rows, cols + 1]
    return compact, compact_labels
