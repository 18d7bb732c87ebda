"""Shard batches → student inputs: chat-templated ids/labels, pixels, timestamps, SoM images, expert targets.

Each shard row is one R4D-style multiple-choice question about one video. The user turn is
``[SoM image][video] question + options + instruction`` (``rgpt4d_core.text.prompts``); the supervised answer is
the option letter (``answer_style="letter"``) or the option's text (``"option"``). The Set-of-Marks image is
frame 1 with the row's region boxes drawn on it (``rgpt4d_core.regions``). Expert targets stay float32 tensors in the layouts of ``experts/base.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from rgpt4d_core.model.preprocess import frames_to_pixels
from rgpt4d_core.regions import draw_set_of_marks
from rgpt4d_core.shards.reader import TrainingBatch
from rgpt4d_core.text.prompts import build_training_example, mcq_target, r4d_user_text
from rgpt4d_core.text.region_refs import token_region_boxes
from rgpt4d_core.text.tokenizer import TextTokenizer


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
        tokenizer: the student's tokenizer.
        image_size: the vision tower's input side ``S`` (pixels).
        tokens_per_frame: visual tokens per frame/image after the projector (for token counts).
        som_image: prepend the Set-of-Marks image (R4D-Bench's input format).
        include_duration: add "These images are uniformly sampled from a video of X seconds." (the paper's
            prompt trick; TPE makes it unnecessary).
        answer_style: ``"letter"`` supervises the option letter, ``"option"`` the option's text (and the prompt
            closes with the matching instruction; ``rgpt4d_core.text.prompts``).
        region_boxes: also give each sample's per-token region boxes (for ``StudentConfig.region_boxes``).
    """

    tokenizer: TextTokenizer
    image_size: int
    tokens_per_frame: int
    som_image: bool = True
    include_duration: bool = False
    answer_style: str = "letter"
    region_boxes: bool = False

    def __call__(self, batch: TrainingBatch) -> StudentBatch:
        if len(batch) == 0:
            raise ValueError("cannot collate an empty batch")
        ids: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        for i in range(len(batch)):
            try:
                user = r4d_user_text(
                    self.tokenizer,
                    batch.questions[i],
                    batch.options[i],
                    float(batch.duration_s[i]),
                    with_som_image=self.som_image,
                    include_duration=self.include_duration,
                    answer_style=self.answer_style,
                )
                target = mcq_target(batch.options[i], batch.answers[i], self.answer_style)
                example = build_training_example(self.tokenizer, user, target)
            except ValueError as exc:
                raise ValueError(
                    f"sample {batch.sample_ids[i]}: cannot build the training example: {exc}"
                ) from exc
            ids.append(torch.tensor(example.input_ids, dtype=torch.long))
            labels.append(torch.tensor(example.labels, dtype=torch.long))
        frames = batch.frames  # uint8 [B, T, H, W, 3]
        videos = torch.stack([frames_to_pixels(f, self.image_size) for f in frames])
        images = owner = None
        if self.som_image:
            marked = np.stack(
                [draw_set_of_marks(f[0], r) for f, r in zip(frames, batch.regions, strict=True)]
            )
            images = frames_to_pixels(marked, self.image_size)
            owner = torch.arange(len(batch), dtype=torch.long)
        visual_per_sample = self.tokens_per_frame * (frames.shape[1] + int(self.som_image))
        return StudentBatch(
            input_ids=ids,
            labels=labels,
            videos=videos,
            timestamps_s=torch.from_numpy(np.ascontiguousarray(batch.timestamps_s, dtype=np.float32)),
            images=images,
            image_owner=owner,
            targets=_targets(batch.targets),
            token_boxes=[
                token_region_boxes(self.tokenizer, t.tolist(), r)
                for t, r in zip(ids, batch.regions, strict=True)
            ]
            if self.region_boxes
            else None,
            # each media placeholder id is replaced by its visual tokens
            num_tokens=sum(len(t) for t in ids) + (visual_per_sample - 1 - int(self.som_image)) * len(batch),
        )


def _targets(targets: Mapping[str, np.ndarray | None]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in targets.items() if v is not None}
