"""Batched region-level video VQA on a student checkpoint, without Ray (used by Serve replicas and eval actors).

One call of :meth:`VQAEngine.answer` on ``B`` requests:

1. **prepare** each request on its own (errors stay with that request): decode ``num_frames`` uniformly sampled
   frames under the configured limits and timeout, draw Set-of-Marks on frame 1, build the R4D prompt
   (``[SoM image][video]`` + optional duration sentence + question + options + answer-directly instruction);
2. **one batched greedy generation** over the prepared requests (if the batch fails as a whole, each request is
   retried alone so that one bad request never takes its batch-mates down);
3. **extract** the chosen option with the shared extractor (``rgpt4d_core.text.answers``).

Serve splits the two halves: :meth:`VQAEngine.prepare` runs per request (in threads, while another batch
generates) and :meth:`VQAEngine.run` runs once per formed batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import torch

from rgpt4d_core.model.checkpoint import checkpoint_model_id, load_student, save_student
from rgpt4d_core.model.option_scoring import choose_option, option_log_likelihoods
from rgpt4d_core.model.preprocess import frames_to_pixels, preprocess_clip
from rgpt4d_core.model.presets import student_config
from rgpt4d_core.model.student import Student
from rgpt4d_core.regions import RegionError, draw_set_of_marks, validate_refs
from rgpt4d_core.serve.media import ClipMedia, clip_media
from rgpt4d_core.text.answers import extract_answer
from rgpt4d_core.text.prompts import OPTION_LETTERS, build_inference_ids, r4d_user_text
from rgpt4d_core.text.tokenizer import TOKENIZERS, TextTokenizer
from rgpt4d_core.types import Region, VQAItem
from rgpt4d_core.video.decode import DecodeConfig, VideoDecodeError, decode_clip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """How the engine loads its checkpoint, decodes videos and generates.

    Attributes:
        checkpoint: path of a student checkpoint in the NVILA layout (tokenizer in ``llm/``).
        model_id: name reported to clients; ``""`` = the id recorded in the checkpoint (a trained export is
            ``<run name>-step<N>``), else its directory's name.
        num_frames: frames sampled uniformly per video (paper protocol: 16).
        include_duration: add "These images are uniformly sampled from a video of X seconds." (requests may
            override).
        max_new_tokens: greedy decoding budget per request (an MCQ letter needs 1-2).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``/``"cuda:N"``.
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
        torch_threads: intra-op CPU threads (``0`` leaves PyTorch's default).
        decode_threads: videos of one batch decoded in parallel by :meth:`VQAEngine.answer`.
        max_file_bytes: largest video file in bytes.
        max_pixels_per_frame: largest source frame (``H*W``).
        max_duration_s: longest video in seconds.
        max_source_frames: most frames in the source video.
        decode_timeout_s: wall-clock budget for decoding one video, seconds.
        show_labels: write ``"k:label"`` in Set-of-Marks tags when regions carry labels.
    """

    checkpoint: str = ""
    model_id: str = ""
    num_frames: int = 16
    include_duration: bool = True
    max_new_tokens: int = 8
    device: str = "auto"
    dtype: str = "auto"
    torch_threads: int = 0
    decode_threads: int = 4
    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels_per_frame: int = 1920 * 1080
    max_duration_s: float = 600.0
    max_source_frames: int = 36_000
    decode_timeout_s: float = 30.0
    show_labels: bool = False

    def decode_config(self) -> DecodeConfig:
        """The :class:`DecodeConfig` these limits describe."""
        return DecodeConfig(
            num_frames=self.num_frames,
            max_file_bytes=self.max_file_bytes,
            max_pixels_per_frame=self.max_pixels_per_frame,
            max_duration_s=self.max_duration_s,
            max_source_frames=self.max_source_frames,
            timeout_s=self.decode_timeout_s,
            allow_repeats=True,
        )


@dataclass(frozen=True)
class VQARequest:
    """One question about one video (already validated and access-checked by the caller).

    Attributes:
        video: a local path, an ``s3://`` URI, or the file's bytes.
        question: text with ``<obj_k>`` tokens for the regions.
        options: 1-8 option strings (index 0 = ``"A"``).
        regions: region prompts on frame 1 (masks may have any resolution; they are resized to the frame).
        include_duration: overrides :attr:`EngineConfig.include_duration` when not ``None``.
        request_id: echoed in the result.
        som_image: an already marked frame 1, uint8 ``[H, W, 3]`` RGB (e.g. R4D-Bench's ``som_image`` file); when
            given it is used as is and ``regions`` are neither drawn nor required for the ``<obj_k>`` tokens.
        include_media: also return the sampled frames and the SoM image as JPEGs (:attr:`VQAResult.media`).
    """

    video: str | bytes
    question: str
    options: tuple[str, ...]
    regions: tuple[Region, ...] = ()
    include_duration: bool | None = None
    request_id: str = ""
    som_image: np.ndarray | None = None
    include_media: bool = False

    @classmethod
    def from_item(cls, item: VQAItem, video: str | bytes | None = None) -> VQARequest:
        """The request for a benchmark item (``request_id = item.id``); ``video`` overrides ``item.video``
        (e.g. the path joined with the dataset root, or the bytes)."""
        return cls(
            video=item.video if video is None else video,
            question=item.question,
            options=tuple(item.options),
            regions=tuple(item.regions),
            request_id=item.id,
        )


@dataclass(frozen=True)
class VQAResult:
    """The model's answer to one request.

    Attributes:
        answer: the chosen option string, or ``None`` when the output names no option (or several).
        answer_index: 0-based option index or ``None``; ``answer_letter`` likewise (``"B"``).
        method: how the extractor decided (``letter``, ``option_text``, ``option_value``, ``ambiguous``,
            ``none``), or ``option_likelihood`` for a student of the ``"option"`` answer style.
        raw_output: the generated text (special tokens removed); the chosen option for ``option_likelihood``.
        batch_size: requests in the generation batch this one ran in.
        duration_s: source video duration in seconds; ``num_frames``: frames the model saw.
        prompt_tokens: prompt length in LLM positions (text + visual tokens); ``completion_tokens``: new tokens.
        decode_ms / generate_ms: wall time of this request's decode and of its batch's generation.
        media: the frames the model saw and its SoM image, when the request asked (``include_media``).
    """

    request_id: str
    answer: str | None
    answer_index: int | None
    answer_letter: str | None
    method: str
    raw_output: str
    batch_size: int
    duration_s: float
    num_frames: int
    prompt_tokens: int
    completion_tokens: int
    decode_ms: float
    generate_ms: float
    media: ClipMedia | None = None


@dataclass(frozen=True)
class VQAError:
    """Why one request got no answer.

    Attributes:
        code: ``video_<reason>`` (a :class:`VideoDecodeError` reason, e.g. ``video_corrupt``), ``invalid_region``,
            ``invalid_request`` or ``internal``.
        message: human-readable, names the field or video.
        field: request field at fault (``"video"``, ``"regions"``, ``"question"``) or ``None``.
    """

    request_id: str
    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class PreparedRequest:
    """A request ready for generation (output of :meth:`VQAEngine.prepare`).

    Attributes:
        video: float32 ``[T, 3, S, S]`` in ``[-1, 1]``; ``timestamps_s``: float32 ``[T]`` seconds;
        som_image: float32 ``[3, S, S]`` in ``[-1, 1]``, frame 1 with Set-of-Marks;
        input_ids: int64 ``[L]`` prompt ids (one image and one video placeholder);
        media: JPEGs for the client when the request asked for them.
    """

    request: VQARequest
    video: torch.Tensor
    timestamps_s: torch.Tensor
    som_image: torch.Tensor
    input_ids: torch.Tensor
    duration_s: float
    decode_ms: float
    media: ClipMedia | None = None


def _fit_mask(region: Region, height: int, width: int) -> Region:
    """``region`` with its mask (if any) resized to ``[height, width]`` (the frame as displayed) by nearest neighbour.

    A mask at another resolution is accepted when its shape is the frame's, scaled. One whose aspect matches the
    frame turned a quarter (and not the frame itself) was drawn on the stored pixels of a rotated video, not on
    what the user saw: stretching it would mark the wrong place, so it is refused with that explanation.
    """
    if region.mask is None or region.mask.shape == (height, width):
        return region
    mh, mw = region.mask.shape
    log_aspect = math.log(mh / mw)
    off_frame = abs(log_aspect - math.log(height / width))
    off_turned = abs(log_aspect + math.log(height / width))
    if off_turned < off_frame and off_frame > math.log(1.25):
        raise RegionError(
            f"region {region.obj_id}: mask is {mh}x{mw} (H x W) but the video is displayed at {height}x{width}; "
            "masks are drawn on the frame as displayed (a rotated video's display matrix is applied)"
        )
    mask = cv2.resize(region.mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    if not mask.any():
        raise RegionError(f"region {region.obj_id}: mask vanishes when resized to the video's {height}x{width}")
    return dataclasses.replace(region, mask=mask)


def load_tokenizer(checkpoint: str | Path) -> TextTokenizer:
    """The tokenizer saved with a checkpoint (``<root>/llm`` in the NVILA layout, or ``<root>`` itself)."""
    return TextTokenizer.load(checkpoint)


def write_random_checkpoint(
    path: str | Path, preset: str = "tiny", seed: int = 0, answer_style: str | None = None
) -> Path:
    """Save an untrained student of ``preset`` (fixed ``seed``; ``answer_style`` overrides the preset's) with its
    tokenizer: for tests, demos, benches."""
    cfg = student_config(preset)
    if answer_style is not None:
        cfg = dataclasses.replace(cfg, answer_style=answer_style)
    torch.manual_seed(seed)
    student = Student(cfg)
    builder = cast(Callable[[], TextTokenizer], TOKENIZERS[cfg.tokenizer])
    return save_student(
        student, path, tokenizer=builder(), include_decoder=False, model_id=f"{preset}-untrained-seed{seed}"
    )


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"engine.dtype: {name!r} is not one of {['auto', *dtypes]}")
    return dtypes[name]


class VQAEngine:
    """A loaded student + tokenizer answering batches of :class:`VQARequest` (thread-safe for ``prepare``).

    Args:
        cfg: the engine configuration; ``cfg.checkpoint`` is loaded (decoder stripped, eval mode).
    """

    def __init__(self, cfg: EngineConfig) -> None:
        if not cfg.checkpoint:
            raise ValueError("engine.checkpoint: a checkpoint path is required")
        if not Path(cfg.checkpoint, "config.json").is_file():
            raise FileNotFoundError(f"engine.checkpoint: no checkpoint (config.json) at {cfg.checkpoint}")
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        self.cfg = cfg
        self.device = _pick_device(cfg.device)
        self.dtype = _pick_dtype(cfg.dtype, self.device)
        self.model = load_student(cfg.checkpoint, dtype=self.dtype).to(self.device).eval()
        self.tokenizer = load_tokenizer(cfg.checkpoint)
        self.model_id = cfg.model_id or checkpoint_model_id(cfg.checkpoint)
        self.image_size = self.model.cfg.vision.image_size
        #: ``"letter"``: generate and extract the option; ``"option"``: score each option's likelihood
        self.answer_style = self.model.cfg.answer_style
        self._decode_cfg = cfg.decode_config()
        self._pool = ThreadPoolExecutor(max(1, cfg.decode_threads), thread_name_prefix="vqa-decode")

    # ------------------------------------------------------------------------------------------ public API
    def answer(self, requests: Sequence[VQARequest]) -> list[VQAResult | VQAError]:
        """Answer ``requests`` (decoded in parallel, then ONE batched generation); results in input order."""
        prepared = list(self._pool.map(self.prepare, requests))
        return self.run(prepared)

    def prepare(self, request: VQARequest) -> PreparedRequest | VQAError:
        """Decode, mark and tokenize one request; failures come back as a :class:`VQAError`, never raised."""
        start = time.perf_counter()
        try:
            if request.som_image is None:
                validate_refs(request.question, request.regions)
            clip = decode_clip(request.video, self._decode_cfg)
            if request.som_image is None:
                height, width = clip.frames.shape[1:3]
                regions = [_fit_mask(r, height, width) for r in request.regions]
                som = draw_set_of_marks(clip.frames[0], regions, show_labels=self.cfg.show_labels)
            else:
                som = request.som_image
            video, timestamps = preprocess_clip(clip, self.image_size)
            include = self.cfg.include_duration if request.include_duration is None else request.include_duration
            text = r4d_user_text(
                self.tokenizer,
                request.question,
                request.options,
                clip.duration_s,
                include_duration=include,
                answer_style=self.answer_style,
            )
            ids = torch.tensor(build_inference_ids(self.tokenizer, text), dtype=torch.long)
            media = clip_media(clip, som) if request.include_media else None
        except VideoDecodeError as exc:
            return VQAError(request.request_id, f"video_{exc.reason}", f"video: {exc}", "video")
        except RegionError as exc:
            return VQAError(request.request_id, "invalid_region", f"regions: {exc}", "regions")
        except ValueError as exc:  # prompt building: options count, chat specials in the question
            return VQAError(request.request_id, "invalid_request", f"question: {exc}", "question")
        except Exception as exc:  # noqa: BLE001 - isolate anything else to this request
            log.exception("prepare failed for request %s", request.request_id)
            return VQAError(request.request_id, "internal", f"{type(exc).__name__}: {exc}")
        return PreparedRequest(
            request=request,
            video=video,
            timestamps_s=timestamps,
            som_image=frames_to_pixels(som, self.image_size),
            input_ids=ids,
            duration_s=clip.duration_s,
            decode_ms=(time.perf_counter() - start) * 1e3,
            media=media,
        )

    def run(self, prepared: Sequence[PreparedRequest | VQAError]) -> list[VQAResult | VQAError]:
        """One batched generation over the prepared requests; errors pass through in place."""
        ready = [p for p in prepared if isinstance(p, PreparedRequest)]
        outputs: dict[int, VQAResult | VQAError] = {}
        if ready:
            try:
                for item, result in zip(ready, self._generate(ready), strict=True):
                    outputs[id(item)] = result
            except Exception:  # noqa: BLE001 - find the culprit: retry each request alone
                log.exception("batched generation of %d requests failed; retrying one by one", len(ready))
                for item in ready:
                    try:
                        outputs[id(item)] = self._generate([item])[0]
                    except Exception as exc:  # noqa: BLE001
                        outputs[id(item)] = VQAError(
                            item.request.request_id, "internal", f"generation failed: {type(exc).__name__}: {exc}"
                        )
        return [p if isinstance(p, VQAError) else outputs[id(p)] for p in prepared]

    # ------------------------------------------------------------------------------------------ generation
    def _media(self, items: Sequence[PreparedRequest]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Videos ``[B, T, 3, S, S]``, timestamps ``[B, T]`` and SoM images ``[B, 3, S, S]`` on the device."""
        device, dtype = self.device, self.dtype
        videos = torch.stack([p.video for p in items]).to(device, dtype)
        timestamps = torch.stack([p.timestamps_s for p in items]).to(device)
        images = torch.stack([p.som_image for p in items]).to(device, dtype)
        return videos, timestamps, images

    def _generate(self, items: Sequence[PreparedRequest]) -> list[VQAResult]:
        if self.answer_style == "option":
            return self._score_options(items)
        start = time.perf_counter()
        device = self.device
        videos, timestamps, images = self._media(items)
        owner = torch.arange(len(items), device=device)
        ids = [p.input_ids.to(device) for p in items]
        out = self.model.generate(
            ids,
            videos=videos,
            timestamps_s=timestamps,
            images=images,
            image_owner=owner,
            max_new_tokens=self.cfg.max_new_tokens,
            eos_token_id=self.tokenizer.eos_id,
        )
        generate_ms = (time.perf_counter() - start) * 1e3
        results = []
        for item, new_ids in zip(items, out.as_lists(), strict=True):
            text = self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
            match = extract_answer(text, item.request.options)
            results.append(self._result(item, match.index, match.method, text, len(new_ids), len(items), generate_ms))
        return results

    def _score_options(self, items: Sequence[PreparedRequest]) -> list[VQAResult]:
        """The ``"option"`` answer style: the option whose text (+ ``<|im_end|>``) is most likely."""
        start = time.perf_counter()
        videos, timestamps, images = self._media(items)
        end = [self.tokenizer.im_end_id]
        continuations = [
            [torch.tensor(self.tokenizer.encode(o) + end, dtype=torch.long, device=self.device) for o in p.request.options]
            for p in items
        ]
        scores = option_log_likelihoods(
            self.model, [p.input_ids.to(self.device) for p in items], continuations, videos, timestamps, images
        )
        generate_ms = (time.perf_counter() - start) * 1e3
        results = []
        for item, conts, row in zip(items, continuations, scores, strict=True):
            index = choose_option(row)
            chosen = item.request.options[index]
            results.append(
                self._result(item, index, "option_likelihood", chosen, len(conts[index]) - 1, len(items), generate_ms)
            )
        return results

    def _result(
        self,
        item: PreparedRequest,
        index: int | None,
        method: str,
        text: str,
        completion_tokens: int,
        batch_size: int,
        generate_ms: float,
    ) -> VQAResult:
        visual = (item.video.shape[0] + 1) * self.model.tokens_per_frame
        return VQAResult(
            request_id=item.request.request_id,
            answer=None if index is None else item.request.options[index],
            answer_index=index,
            answer_letter=None if index is None else OPTION_LETTERS[index],
            method=method,
            raw_output=text,
            batch_size=batch_size,
            duration_s=item.duration_s,
            num_frames=int(item.video.shape[0]),
            prompt_tokens=int(item.input_ids.shape[0]) - 2 + visual,
            completion_tokens=completion_tokens,
            decode_ms=item.decode_ms,
            generate_ms=generate_ms,
            media=item.media,
        )
