"""Shard batches → student inputs: chat-templated ids/labels, pixels, timestamps, SoM images, expert targets.

Each shard row is one R4D-style multiple-choice question about one video; its inputs are prepared by
:func:`rgpt4d_core.sample_prep.prepare_sample`, the path the serving engine uses too (so a student is served what
it was trained on): the user turn ``[SoM image][video] question + options + instruction``, the supervised answer
(the option letter for ``answer_style="letter"``, the option's text for ``"option"``), the Set-of-Marks image
(frame 1 with the row's region boxes drawn), the pixels and the per-token region boxes. Expert targets stay float32
tensors in the layouts of ``experts/base.py``. Distillation-only rows (``data.distill_only_per_micro_batch``,
:mod:`rgpt4d_core.train.distill_only`) follow a micro-batch's questions: the inference prompt, no answer, every
label ignored, so only the distillation terms see them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from rgpt4d_core.sample_prep import SampleFormat, SampleInputs, prepare_sample, stack_media
from rgpt4d_core.shards.batch import TrainingBatch
from rgpt4d_core.text.prompts import IGNORE_INDEX


@dataclass
class StudentBatch:
    """One micro-batch of ``B`` samples, ready for ``Student.forward``.

    Attributes:
        input_ids: ``B`` int64 ``[L_b]`` prompt + answer ids (one ``<image>`` and one ``<video>`` placeholder each).
        labels: ``B`` int64 ``[L_b]``, ``-100`` except on the answer and the closing ``<|im_end|>`` (all ``-100``
            for a distillation-only sample).
        videos: float32 ``[B, T, 3, S, S]`` in ``[-1, 1]``.
        timestamps_s: float32 ``[B, T]`` seconds from the video start.
        images: float32 ``[B, 3, S, S]`` Set-of-Marks images (``None`` when SoM is off).
        image_owner: int64 ``[B]`` sample index of each image (``None`` when SoM is off).
        targets: expert targets, float32 ``[B, ...]`` per name (``latents``, ``depth`` (m), ``flow_2d_backward`` (px),
            ``dyn_mask`` (probability), ``camray``); names the shards do not provide are absent.
        num_tokens: text tokens + visual tokens over the batch (throughput accounting).
        token_boxes: ``B`` float32 ``[L_b, 4]`` region box of each token that names a region, NaN elsewhere
            (``None`` unless the student embeds region boxes, ``StudentConfig.region_boxes``).
    """

    input_ids: list[torch.Tensor]
    labels: list[torch.Tensor]
    videos: torch.Tensor
    timestamps_s: torch.Tensor
    images: torch.Tensor | None
    image_owner: torch.Tensor | None
    targets: dict[str, torch.Tensor]
    num_tokens: int
    token_boxes: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def to(self, device: torch.device) -> StudentBatch:
        """The same batch with every tensor on ``device``."""
        return StudentBatch(
            input_ids=[t.to(device, non_blocking=True) for t in self.input_ids],
            labels=[t.to(device, non_blocking=True) for t in self.labels],
            videos=self.videos.to(device, non_blocking=True),
            timestamps_s=self.timestamps_s.to(device, non_blocking=True),
            images=None if self.images is None else self.images.to(device, non_blocking=True),
            image_owner=None if self.image_owner is None else self.image_owner.to(device, non_blocking=True),
            targets={k: v.to(device, non_blocking=True) for k, v in self.targets.items()},
            num_tokens=self.num_tokens,
            token_boxes=None if self.token_boxes is None else [t.to(device) for t in self.token_boxes],
        )


@dataclass(frozen=True)
class Collator:
    """Turns :class:`TrainingBatch` objects into :class:`StudentBatch` objects.

    Attributes:
        format: how each sample is presented to the student (prompt, SoM image, region boxes, pixel size).
        tokens_per_frame: visual tokens per frame/image after the projector (for token counts).
    """

    format: SampleFormat
    tokens_per_frame: int

    def __call__(self, batch: TrainingBatch, distill_only: TrainingBatch | None = None) -> StudentBatch:
        """``batch``'s samples with their answers supervised, then ``distill_only``'s (if any) without answers:
        ``B = len(batch) + len(distill_only)``."""
        if len(batch) == 0:
            raise ValueError("cannot collate an empty batch")
        samples = [self.sample(batch, i) for i in range(len(batch))]
        if distill_only is not None:
            samples += [self.sample(distill_only, i, supervised=False) for i in range(len(distill_only))]
        videos, timestamps, images, owner = stack_media(samples)
        ids = [s.input_ids for s in samples]
        boxes = [s.token_boxes for s in samples if s.token_boxes is not None]
        som = int(self.format.som_image)
        visual_per_sample = self.tokens_per_frame * (videos.shape[1] + som)
        return StudentBatch(
            input_ids=ids,
            labels=[_ignored(s.input_ids) if s.labels is None else s.labels for s in samples],
            videos=videos,
            timestamps_s=timestamps,
            images=images,
            image_owner=owner,
            targets=_targets(batch.targets, None if distill_only is None else distill_only.targets),
            token_boxes=boxes if self.format.region_boxes else None,
            # each media placeholder id is replaced by its visual tokens
            num_tokens=sum(len(t) for t in ids) + (visual_per_sample - 1 - som) * len(samples),
        )

    def sample(self, batch: TrainingBatch, i: int, supervised: bool = True) -> SampleInputs:
        """The inputs of sample ``i`` of ``batch``: answer appended and supervised, or (``supervised=False``) the
        inference prompt without answer (``labels`` ``None``)."""
        try:
            return prepare_sample(
                self.format,
                frames=batch.frames[i],
                timestamps_s=batch.timestamps_s[i],
                duration_s=float(batch.duration_s[i]),
                question=batch.questions[i],
                options=batch.options[i],
                regions=batch.regions[i],
                source=batch.sample_ids[i],
                answer=batch.answers[i] if supervised else None,
            )
        except ValueError as exc:
            raise ValueError(f"sample {batch.sample_ids[i]}: cannot build the training example: {exc}") from exc


def _ignored(input_ids: torch.Tensor) -> torch.Tensor:
    """Labels of a sample without answer: int64 ``[L]``, every position ignored."""
    return torch.full_like(input_ids, IGNORE_INDEX)


def _targets(targets: Mapping[str, np.ndarray | None],
             more: Mapping[str, np.ndarray | None] | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """float32 tensors of the targets the shards provide; ``more``'s rows (the same names) appended along B."""
    out = {}
    for name, value in targets.items():
        if value is None:
            continue
        extra = None if more is None else more.get(name)
        if more is not None and extra is None:
            raise ValueError(f"distillation-only rows lack the target {name!r} the question rows have")
        stacked = value if extra is None else np.concatenate([value, extra])
        out[name] = torch.from_numpy(np.asarray(stacked, dtype=np.float32))
    return out
