"""Batched region-level video VQA on a student checkpoint, without Ray (used by Serve replicas and eval actors).

One call of :meth:`VQAEngine.answer` on ``B`` requests:

1. **prepare** each request on its own (errors stay with that request): decode ``num_frames`` uniformly sampled
   frames under the configured limits and timeout, then the training collate's own sample preparation
   (:func:`rgpt4d_core.sample_prep.prepare_sample`): Set-of-Marks on frame 1, the R4D prompt (``[SoM image][video]``
   + optional duration sentence + question + options + instruction), region boxes and pixels;
2. **one batched greedy generation** over the prepared requests (if the batch fails as a whole, each request is
   retried alone so that one bad request never takes its batch-mates down);
3. **extract** the chosen option with the shared extractor (``rgpt4d_core.text.answers``).

Serve splits the two halves: :meth:`VQAEngine.prepare` runs per request (in threads, while another batch
generates) and :meth:`VQAEngine.run` runs once per formed batch.

The request and result values are in ``vqa_types.py``, :class:`EngineConfig` in ``engine_config.py``, the
checkpoint helpers (:func:`load_tokenizer`, :func:`write_random_checkpoint`) in ``checkpoints.py``; all are
re-exported here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from rgpt4d_core.model.checkpoint import checkpoint_model_id, load_student
from rgpt4d_core.model.option_scoring import choose_option, option_log_likelihoods
from rgpt4d_core.regions import RegionError, validate_refs
from rgpt4d_core.sample_prep import SampleFormat, prepare_sample, stack_media
from rgpt4d_core.serve.checkpoints import load_tokenizer, write_random_checkpoint
from rgpt4d_core.serve.engine_config import EngineConfig, pick_device, pick_dtype
from rgpt4d_core.serve.media import clip_media
from rgpt4d_core.serve.vqa_types import PreparedRequest, VQAError, VQARequest, VQAResult
from rgpt4d_core.text.answers import extract_answer
from rgpt4d_core.text.prompts import OPTION_LETTERS
from rgpt4d_core.video.decode import VideoDecodeError, decode_clip

__all__ = [
    "EngineConfig",
    "PreparedRequest",
    "VQAEngine",
    "VQAError",
    "VQARequest",
    "VQAResult",
    "load_tokenizer",
    "write_random_checkpoint",
]

log = logging.getLogger(__name__)


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
        self.device = pick_device(cfg.device)
        self.dtype = pick_dtype(cfg.dtype, self.device)
        self.model = load_student(cfg.checkpoint, dtype=self.dtype).to(self.device).eval()
        self.tokenizer = load_tokenizer(cfg.checkpoint)
        self.model_id = cfg.model_id or checkpoint_model_id(cfg.checkpoint)
        self.image_size = self.model.cfg.vision.image_size
        #: the input the checkpoint was trained on (its ``input_spec.json``), with the config's explicit overrides
        self.input = cfg.input_spec()
        if self.input.frame_size is not None and self.input.frame_size != self.image_size:
            raise ValueError(f"engine.checkpoint: input spec frame_size={self.input.frame_size} but the vision tower "
                             f"takes {self.image_size} pixels ({cfg.checkpoint})")  # fmt: skip
        #: ``"letter"``: generate and extract the option; ``"option"``: score each option's likelihood
        self.answer_style = self.model.cfg.answer_style
        #: how a request is presented to the student: as in its training (``data.*`` of the distill job)
        self.format = SampleFormat.for_student(self.tokenizer, self.model.cfg, som_image=self.input.som_image,
                                               duration_sentence=self.input.duration_sentence,
                                               show_labels=cfg.show_labels)  # fmt: skip
        self._decode_cfg = self.input.decode_config()
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
            som = request.som_image
            if som is None:
                som = self.format.mark(clip.frames[0], request.regions)
            inputs = prepare_sample(self.format, frames=clip.frames, timestamps_s=clip.timestamps_s,
                                    duration_s=clip.duration_s, question=request.question, options=request.options,
                                    regions=request.regions, source=clip.uri, marked=som,
                                    include_duration=request.include_duration)  # fmt: skip
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
            inputs=inputs,
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
                            item.request.request_id,
                            "internal",
                            f"generation failed: {type(exc).__name__}: {exc}",
                        )
        return [p if isinstance(p, VQAError) else outputs[id(p)] for p in prepared]

    # ------------------------------------------------------------------------------------------ generation
    def _media(
        self, items: Sequence[PreparedRequest]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Videos ``[B, T, 3, S, S]``, timestamps ``[B, T]``, SoM images ``[B, 3, S, S]`` and their owners ``[B]``
        on the device (no images when the input spec has ``som_image`` off), batched as the training collate does."""
        device, dtype = self.device, self.dtype
        videos, timestamps, images, owner = stack_media([p.inputs for p in items])
        if images is None or owner is None:
            return videos.to(device, dtype), timestamps.to(device), None, None
        return videos.to(device, dtype), timestamps.to(device), images.to(device, dtype), owner.to(device)

    def _token_boxes(self, items: Sequence[PreparedRequest]) -> list[torch.Tensor] | None:
        """Per prompt, its tokens' region boxes on the device (``None`` unless the student embeds them)."""
        boxes = [p.inputs.token_boxes for p in items]
        return [b.to(self.device) for b in boxes if b is not None] if self.format.region_boxes else None

    def _generate(self, items: Sequence[PreparedRequest]) -> list[VQAResult]:
        if self.answer_style == "option":
            return self._score_options(items)
        start = time.perf_counter()
        device = self.device
        videos, timestamps, images, owner = self._media(items)
        ids = [p.inputs.input_ids.to(device) for p in items]
        out = self.model.generate(
            ids,
            videos=videos,
            timestamps_s=timestamps,
            images=images,
            image_owner=owner,
            max_new_tokens=self.cfg.max_new_tokens,
            eos_token_id=self.tokenizer.eos_id,
            token_boxes=self._token_boxes(items),
        )
        generate_ms = (time.perf_counter() - start) * 1e3
        results = []
        for item, new_ids in zip(items, out.as_lists(), strict=True):
            text = self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
            match = extract_answer(text, item.request.options)
            results.append(
                self._result(item, match.index, match.method, text, len(new_ids), len(items), generate_ms)
            )
        return results

    def _score_options(self, items: Sequence[PreparedRequest]) -> list[VQAResult]:
        """The ``"option"`` answer style: the option whose text (+ ``<|im_end|>``) is most likely."""
        start = time.perf_counter()
        videos, timestamps, images, _ = self._media(items)
        end = [self.tokenizer.im_end_id]
        continuations = [
            [
                torch.tensor(self.tokenizer.encode(o) + end, dtype=torch.long, device=self.device)
                for o in p.request.options
            ]
            for p in items
        ]
        scores = option_log_likelihoods(
            self.model,
            [p.inputs.input_ids.to(self.device) for p in items],
            continuations,
            videos,
            timestamps,
            images,
            token_boxes=self._token_boxes(items),
        )
        generate_ms = (time.perf_counter() - start) * 1e3
        results = []
        for item, conts, row in zip(items, continuations, scores, strict=True):
            index = choose_option(row)
            chosen = item.request.options[index]
            results.append(
                self._result(
                    item, index, "option_likelihood", chosen, len(conts[index]) - 1, len(items), generate_ms
                )
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
        num_frames = int(item.inputs.video.shape[0])
        visual = (num_frames + 1) * self.model.tokens_per_frame
        return VQAResult(
            request_id=item.request.request_id,
            answer=None if index is None else item.request.options[index],
            answer_index=index,
            answer_letter=None if index is None else OPTION_LETTERS[index],
            method=method,
            raw_output=text,
            batch_size=batch_size,
            duration_s=item.duration_s,
            num_frames=num_frames,
            prompt_tokens=int(item.inputs.input_ids.shape[0]) - 2 + visual,
            completion_tokens=completion_tokens,
            decode_ms=item.decode_ms,
            generate_ms=generate_ms,
            media=item.media,
        )
