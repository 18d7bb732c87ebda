"""Shard batches → student inputs: chat-templated ids/labels, pixels, timestamps, SoM images, expert targets.

Each shard row is one R4D-style multiple-choice question about one video; its inputs are prepared by
:func:`rgpt4d_core.sample_prep.prepare_sample`, the path the serving engine uses too (so a student is served what
it was trained on): the user turn ``[SoM image][video] question + options + instruction``, the supervised answer
(the option letter for ``answer_style="letter"``, the option's text for ``"option"``), the Set-of-Marks image
(frame 1 with the row's region boxes drawn), the pixels and the per-token region boxes. Expert targets stay float32
tensors in the layouts of ``experts/base.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from rgpt4d_core.sample_prep import SampleFormat, SampleInputs, prepare_sample, stack_media
from rgpt4d_core.shards.batch import TrainingBatch


@dataclass
class StudentBatch:
    """One micro-batch of ``B`` samples, ready for ``Student.forward``.

    Attributes:
        input_ids: ``B`` int64 ``[L_b]`` prompt + answer ids (one ``<image>`` and one ``<video>`` placeholder each).
        labels: ``B`` int64 ``[L_b]``, ``-100`` except on the answer letter and the closing ``<|im_end|>``.
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

    def __call__(self, batch: TrainingBatch) -> StudentBatch:
        if len(batch) == 0:
            raise ValueError("cannot collate an empty batch")
        samples = [self.sample(batch, i) for i in range(len(batch))]
        videos, timestamps, images, owner = stack_media(samples)
        ids = [s.input_ids for s in samples]
        boxes = [s.token_boxes for s in samples if s.token_boxes is not None]
        som = int(self.format.som_image)
        visual_per_sample = self.tokens_per_frame * (videos.shape[1] + som)
        return StudentBatch(
            input_ids=ids,
            labels=[s.labels for s in samples if s.labels is not None],  # every training sample has labels
            videos=videos,
            timestamps_s=timestamps,
            images=images,
            image_owner=owner,
            targets=_targets(batch.targets),
            token_boxes=boxes if self.format.region_boxes else None,
            # each media placeholder id is replaced by its visual tokens
            num_tokens=sum(len(t) for t in ids) + (visual_per_sample - 1 - som) * len(batch),
        )

    def sample(self, batch: TrainingBatch, i: int) -> SampleInputs:
        """The inputs of sample ``i`` of ``batch``, answer supervised."""
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
                answer=batch.answers[i],
            )
        except ValueError as exc:
            raise ValueError(f"sample {batch.sample_ids[i]}: cannot build the training example: {exc}") from exc


def _targets(targets: Mapping[str, np.ndarray | None]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in targets.items() if v is not None}
