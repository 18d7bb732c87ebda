"""One question about one clip → the student's inputs: the one sample-preparation path of training and serving.

The training collate (``rgpt4d_core.train.collate``) and the serving engine (``rgpt4d_core.serve.engine``) both
call :func:`prepare_sample`, so that a student is served exactly the inputs it was trained on:

* the **Set-of-Marks image**: frame 1 with the regions drawn (:meth:`SampleFormat.mark`; masks resized to the
  frame first), or an already marked image the caller has (R4D-Bench's ``som_image`` file);
* the **prompt**: ``[SoM image][video]`` placeholders + optional duration sentence + question + options +
  instruction (``rgpt4d_core.text.prompts``), as generation-prompt ids, or as prompt + supervised answer ids and
  labels when the sample has an answer (training);
* the **region boxes** of the prompt tokens that name a region (``rgpt4d_core.text.region_refs``);
* the **pixels**: frames and SoM image resized and normalised (``rgpt4d_core.model.preprocess``).

:func:`stack_media` batches the media of prepared samples the same way for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rgpt4d_core.model.preprocess import frames_to_pixels, video_pixels
from rgpt4d_core.model.student_types import StudentConfig
from rgpt4d_core.regions import draw_set_of_marks, fit_mask
from rgpt4d_core.text.prompts import build_inference_ids, build_training_example, mcq_target, r4d_user_text
from rgpt4d_core.text.region_refs import token_region_boxes
from rgpt4d_core.text.tokenizer import TextTokenizer
from rgpt4d_core.types import Region


@dataclass(frozen=True)
class SampleFormat:
    """How a sample is presented to one student (the same for its training and its serving).

    Attributes:
        tokenizer: the student's tokenizer.
        image_size: the vision tower's input side ``S`` (pixels).
        som_image: prepend the Set-of-Marks image (R4D-Bench's input format).
        duration_sentence: add "These images are uniformly sampled from a video of X seconds." (the paper's
            prompt trick; TPE makes it unnecessary).
        answer_style: ``"letter"`` (the option letter) or ``"option"`` (the option's text): the instruction closing
            the prompt and, in training, the supervised answer (``rgpt4d_core.text.prompts``).
        region_boxes: also give the per-token region boxes (for ``StudentConfig.region_boxes``).
        show_labels: draw each region's label next to its mark id (a serving option; training draws ids only).
    """

    tokenizer: TextTokenizer
    image_size: int
    som_image: bool = True
    duration_sentence: bool = False
    answer_style: str = "letter"
    region_boxes: bool = False
    show_labels: bool = False

    @classmethod
    def for_student(
        cls, tokenizer: TextTokenizer, student: StudentConfig, *, som_image: bool, duration_sentence: bool,
        show_labels: bool = False,
    ) -> SampleFormat:
        """The format of a student of config ``student`` (its pixel size, answer style and region boxes)."""
        return cls(tokenizer, student.vision.image_size, som_image=som_image, duration_sentence=duration_sentence,
                   answer_style=student.answer_style, region_boxes=student.region_boxes, show_labels=show_labels)  # fmt: skip

    def mark(self, frame: np.ndarray, regions: Sequence[Region]) -> np.ndarray:
        """uint8 ``[H, W, 3]``: ``frame`` (frame 1) with ``regions`` drawn as Set-of-Marks (masks resized to it).

        Raises:
            RegionError: a mask that cannot be fitted to the frame.
        """
        height, width = frame.shape[:2]
        fitted = [fit_mask(r, height, width) for r in regions]
        return draw_set_of_marks(frame, fitted, show_labels=self.show_labels)


@dataclass(frozen=True)
class SampleInputs:
    """One sample's inputs to the student.

    Attributes:
        input_ids: int64 ``[L]``: the generation prompt (one image and one video placeholder when SoM is on), then,
            for a training sample, the answer and ``<|im_end|>``.
        labels: int64 ``[L]``, ``-100`` except on the answer and the closing ``<|im_end|>`` (``None`` without answer).
        video: float32 ``[T, 3, S, S]`` in ``[-1, 1]``; ``timestamps_s``: float32 ``[T]`` seconds from the start.
        som_image: float32 ``[3, S, S]`` in ``[-1, 1]``, frame 1 with Set-of-Marks (``None`` when SoM is off).
        token_boxes: float32 ``[L, 4]`` region box of each token that names a region, NaN elsewhere (``None``
            unless the format asks for region boxes).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor | None
    video: torch.Tensor
    timestamps_s: torch.Tensor
    som_image: torch.Tensor | None
    token_boxes: torch.Tensor | None


def prepare_sample(
    fmt: SampleFormat,
    *,
    frames: np.ndarray,
    timestamps_s: np.ndarray,
    duration_s: float,
    question: str,
    options: Sequence[str],
    regions: Sequence[Region],
    source: str,
    answer: str | None = None,
    marked: np.ndarray | None = None,
    include_duration: bool | None = None,
) -> SampleInputs:
    """The student's inputs for one question about one clip.

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB; ``timestamps_s``: ``[T]`` seconds; ``duration_s``: the video's length.
        question: text with ``<obj_k>`` tokens; ``options``: 1-8 strings; ``regions``: the regions on frame 1.
        source: names the clip in errors (a URI or a sample id).
        answer: the correct option (training: the answer is appended and supervised); ``None`` at inference.
        marked: an already marked frame 1, uint8 ``[H, W, 3]`` (used as is); ``None`` draws ``regions`` on frame 1.
        include_duration: overrides ``fmt.duration_sentence`` when not ``None`` (a request's choice).

    Raises:
        ValueError: options count, chat specials in the question, an answer not among the options, frames that
            are not uint8 RGB or do not match their timestamps; :class:`~rgpt4d_core.regions.RegionError` (a
            ``ValueError``) for a mask that does not fit the frame.
    """
    include = fmt.duration_sentence if include_duration is None else include_duration
    tok = fmt.tokenizer
    user = r4d_user_text(tok, question, options, duration_s, with_som_image=fmt.som_image,
                         include_duration=include, answer_style=fmt.answer_style)  # fmt: skip
    labels = None
    if answer is None:
        ids = torch.tensor(build_inference_ids(tok, user), dtype=torch.long)
    else:
        example = build_training_example(tok, user, mcq_target(options, answer, fmt.answer_style))
        ids = torch.tensor(example.input_ids, dtype=torch.long)
        labels = torch.tensor(example.labels, dtype=torch.long)
    video, stamps = video_pixels(frames, timestamps_s, fmt.image_size, source)
    som = None
    if fmt.som_image:
        som = frames_to_pixels(fmt.mark(frames[0], regions) if marked is None else marked, fmt.image_size)
    boxes = token_region_boxes(tok, ids.tolist(), regions) if fmt.region_boxes else None
    return SampleInputs(ids, labels, video, stamps, som, boxes)


def stack_media(
    samples: Sequence[SampleInputs],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The media of ``B`` prepared samples as one batch (on the CPU, float32).

    Returns:
        ``(videos [B, T, 3, S, S], timestamps_s [B, T], images [B, 3, S, S], image_owner [B])``; images and owner
        (the sample index of each image) are ``None`` when the samples have no SoM image.
    """
    if not samples:
        raise ValueError("stack_media needs at least one sample")
    videos = torch.stack([s.video for s in samples])
    timestamps = torch.stack([s.timestamps_s for s in samples])
    if any(s.som_image is None for s in samples):
        return videos, timestamps, None, None
    images = torch.stack([s.som_image for s in samples])  # type: ignore[misc]
    return videos, timestamps, images, torch.arange(len(samples), dtype=torch.long)
