"""Region tracks: what the video shows at and around each named region, over time (a ``tiny`` recipe option).

4D-RGPT has no region encoder: a pretrained 8B model finds the region's Set-of-Marks mark and reads the object's
motion from the visual tokens by attention. A from-scratch tiny student does not learn that two-hop lookup at our
budget: the answer position's attention stays uniform over the ~275 fused positions and the answer's dependence on
the video collapses within a few hundred steps (``docs/results.md``, "Eighth round"). This option gives each region
reference a direct read-out of the video, in the spirit of the RoI-pooling region encoders of region-level MLLMs
(GPT4RoI, Osprey): at every prompt token that names a region, the vision tower's patch features are sampled
(bilinear, RoIAlign-style) on a ``k x k`` grid over a window around the region's frame-1 box and over the whole
frame (the camera's own motion), in every frame; a per-frame MLP compresses them and a temporal summary (the means of
``segments`` equal time segments and the mean absolute frame-to-frame change) is projected to the LLM width and
added to the token's embedding. The answer then needs one hop (to the ``<obj_k>`` tokens) as the region-box
embedding's SR questions do. The paper preset keeps it off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from rgpt4d_core.model.region_boxes import FEATURES as BOX_FEATURES
from rgpt4d_core.model.region_boxes import box_fourier_features, keep_in_graph

#: where :class:`RegionTrackConfig`'s answer query is added
QUERY_SPANS = ("first", "answer")
#: channels of the dense head's prediction per sample point: log-depth, backward flow (x, y), dynamic-mask probability
DENSE_CHANNELS = 4


@dataclass(frozen=True)
class RegionTrackConfig:
    """Sizes of :class:`RegionTrackEncoder`.

    Attributes:
        enabled: turn the encoder on (needs ``StudentConfig.region_boxes``: it reads the same per-token boxes).
        samples: ``k``, sample points per side of each window (``k x k`` per window and frame).
        window_scale: the local window's side as a multiple of the box's longer side (the object moves out of its
            frame-1 box; the window shows where to).
        min_window: the local window's smallest side, fraction of the frame.
        frame_width: width of the per-frame code.
        segments: equal time segments whose mean per-frame code enters the summary (adaptive average pooling over
            the frames, so any ``T >= 1``).
        answer_query: also add, at the position that predicts the answer's first token, a projection of the first
            ``query_regions`` regions the prompt names (each its track code and box features, in order of first
            mention): the answer reads the regions from its own residual stream instead of finding their tokens
            by attention, the lookup a from-scratch student does not learn (``docs/results.md``, ninth round).
        query_regions: regions (by first mention) the answer query carries; absent ones are zeros (4: a counting
            question names up to four, ``synth.dynamic_questions.COUNT_NAMED``).
        query_span: where the answer query is added: ``"first"``, only the position that predicts the answer's
            first token; ``"answer"``, that position and every later one (the answer's own tokens when
            teacher-forced, each generated or scored token at inference), so that options sharing a prefix
            ("It rotates ..." / "It does not ...", "To the left" / "To the right") are told apart at the token
            where they differ with the evidence in that token's own residual stream.
        motion_pairs: also code each pair of consecutive frames' samples jointly (one linear map of both, then a
            GELU: a learned motion-energy unit, selective to the direction in which the window's content moves,
            where a single frame's code and the mean absolute change are not) and add the ``segments`` means of
            those pair codes to the summary; for the direction questions (T: left / right / away / towards, R:
            clockwise / counter-clockwise).
        dense_head: also build a training-only head that predicts, from each pair of consecutive frames' codes, the
            expert's dense maps (log-depth, backward flow, dynamic-mask probability; :data:`DENSE_CHANNELS`)
            sampled at the same window points as the codes (region-level explicit distillation,
            ``rgpt4d_core/train/region_distill.py``): the teacher's motion delivered to the read-out the answers
            use. Not in 4D-RGPT, which has no region encoder.
    """

    enabled: bool = False
    samples: int = 4
    window_scale: float = 2.0
    min_window: float = 0.25
    frame_width: int = 64
    segments: int = 4
    answer_query: bool = True
    query_regions: int = 4
    query_span: str = "answer"
    motion_pairs: bool = False
    dense_head: bool = False

    def __post_init__(self) -> None:
        if self.query_span not in QUERY_SPANS:
            raise ValueError(f"query_span must be one of {QUERY_SPANS}, got {self.query_span!r}")


def window_grid(boxes: torch.Tensor, samples: int, scale: float, min_side: float) -> torch.Tensor:
    """Sample points of square windows centred on boxes, in ``grid_sample`` coordinates.

    Args:
        boxes: float ``[N, 4]`` normalised ``x0, y0, x1, y1`` in ``[0, 1]``.
        samples: points per side ``k``.
        scale: window side / the box's longer side.
        min_side: smallest window side (fraction of the frame).

    Returns:
        float ``[N, k, k, 2]``: ``(x, y)`` in ``[-1, 1]`` (``align_corners=False``), cell centres of the window.
    """
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * scale
    side = side.clamp(min=min_side)
    steps = (torch.arange(samples, dtype=boxes.dtype, device=boxes.device) + 0.5) / samples - 0.5  # [k]
    xs = cx[:, None] + side[:, None] * steps  # [N, k]
    ys = cy[:, None] + side[:, None] * steps
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)  # [N, k, k, 2]
    return grid * 2 - 1


def sample_windows(maps: torch.Tensor, boxes: torch.Tensor, cfg: RegionTrackConfig) -> torch.Tensor:
    """Bilinear samples of per-frame maps on each region's local window and on the whole frame.

    Args:
        maps: float ``[T, C, H, W]`` one video's per-frame maps (the vision tower's patch features, or the
            expert's dense targets).
        boxes: float ``[N, 4]`` normalised frame-1 boxes.
        cfg: the window sizes (``samples`` = ``k``, ``window_scale``, ``min_window``).

    Returns:
        float ``[N, T, 2, k, k, C]``: index 0 of the third axis the local window, 1 the whole frame.
    """
    frames, width = maps.shape[:2]
    k, n = cfg.samples, boxes.shape[0]
    local = window_grid(boxes, k, cfg.window_scale, cfg.min_window)  # [N, k, k, 2]
    whole = window_grid(boxes.new_tensor([[0.0, 0.0, 1.0, 1.0]]), k, 1.0, 0.0).expand(n, k, k, 2)
    grid = torch.cat([local, whole], dim=2).transpose(0, 1).reshape(1, k, n * 2 * k, 2)  # regions side by side
    grid = grid.expand(frames, -1, -1, -1)
    sampled = F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", align_corners=False)  # [T, C, k, 2kN]
    return sampled.reshape(frames, width, k, n, 2, k).permute(3, 0, 4, 2, 5, 1)


def code_unit(width: int, out: int) -> nn.Sequential:
    """The encoder's coding unit: ``LayerNorm(width)``, ``Linear(width, out)``, GELU (float ``[..., width]`` ->
    ``[..., out]``)."""
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, out), nn.GELU())


@dataclass
class RegionDense:
    """The dense head's prediction for the regions one sample names (``RegionTrackConfig.dense_head``).

    Attributes:
        sample: the sample's index in the batch.
        boxes: float ``[U, 4]`` the distinct regions' normalised frame-1 boxes.
        pred: float ``[U, T-1, 2, k, k, DENSE_CHANNELS]`` for frames 1..T-1 (each from its own and the previous
            frame's code), at the points of :func:`sample_windows`.
    """

    sample: int
    boxes: torch.Tensor
    pred: torch.Tensor


@dataclass
class TrackedText:
    """What :class:`RegionTrackEncoder` returns.

    Attributes:
        text: ``B`` float ``[L_b, D]`` text embeddings with the region codes (and the answer query) added.
        answer_query: float ``[B, D]``, the query every token after the prompt gets (generation, option
            scoring; zeros for a sample without a named region or video), when ``query_span = "answer"``;
            else ``None``.
        dense: the dense head's predictions, one per sample with video and named regions (empty without the head).
    """

    text: list[torch.Tensor]
    answer_query: torch.Tensor | None
    dense: list[RegionDense] = field(default_factory=list)


class RegionTrackEncoder(nn.Module):
    """Adds a learned summary of the video at and around each named region to the region's text tokens.

    Args:
        cfg: sizes.
        vision_width: ``C_v``, the vision tower's feature width.
        hidden: ``D_llm``.
    """

    def __init__(self, cfg: RegionTrackConfig, vision_width: int, hidden: int) -> None:
        super().__init__()
        self.cfg = cfg
        samples = 2 * cfg.samples * cfg.samples * vision_width  # one frame's local + whole-frame samples
        self.frame_code = code_unit(samples, cfg.frame_width)
        self.pair_code = code_unit(2 * samples, cfg.frame_width) if cfg.motion_pairs else None
        summaries = 2 * cfg.segments + 1 if cfg.motion_pairs else cfg.segments + 1
        self.out = nn.Linear(summaries * cfg.frame_width, hidden)
        self.query = (
            nn.Linear(cfg.query_regions * (hidden + BOX_FEATURES), hidden) if cfg.answer_query else None
        )
        points = 2 * cfg.samples * cfg.samples * DENSE_CHANNELS
        self.dense_head = nn.Linear(2 * cfg.frame_width, points) if cfg.dense_head else None

    def predict_dense(self, codes: torch.Tensor) -> torch.Tensor:
        """The dense head on consecutive frames' codes ``[N, T, H]`` (``T >= 2``) → float
        ``[N, T-1, 2, k, k, DENSE_CHANNELS]`` (frames 1..T-1)."""
        assert self.dense_head is not None
        k = self.cfg.samples
        pred = self.dense_head(torch.cat([codes[:, 1:], codes[:, :-1]], dim=-1))
        return pred.unflatten(-1, (2, k, k, DENSE_CHANNELS))

    def track_codes(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Codes of regions in one video.

        Args:
            features: float ``[T, g*g, C_v]`` the vision tower's patch features of the video's frames.
            boxes: float ``[N, 4]`` normalised frame-1 boxes.

        Returns:
            float ``[N, D_llm]``.
        """
        return self._summary(*self._frame_codes(features, boxes))

    def _frame_codes(self, features: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(each frame's code float ``[N, T, H]``, each frame's samples float ``[N, T, 2k²C_v]``) of the regions
        ``boxes`` ``[N, 4]`` in a video's features ``[T, g*g, C_v]``."""
        frames, cells, width = features.shape
        g = int(round(cells**0.5))
        maps = features.transpose(1, 2).reshape(frames, width, g, g)
        # [N, T, 2k²C] in the order the frame code reads: sample row, window (local, whole), sample column, channel
        per_region = sample_windows(maps, boxes, self.cfg).transpose(2, 3).flatten(2)
        return self.frame_code(per_region), per_region

    def _summary(self, codes: torch.Tensor, per_region: torch.Tensor) -> torch.Tensor:
        """A region's code ``[N, D_llm]`` from its frames' codes ``[N, T, H]`` and samples ``[N, T, 2k²C_v]``."""
        n, frames = codes.shape[:2]
        segments = F.adaptive_avg_pool1d(codes.transpose(1, 2), self.cfg.segments).flatten(1)  # [N, S*H]
        if frames > 1:
            change = (codes[:, 1:] - codes[:, :-1]).abs().mean(dim=1)
        else:  # a single frame shows no change
            change = codes.new_zeros(n, codes.shape[-1])
        summary = [segments, change]
        if self.pair_code is not None:
            summary.append(self._pair_segments(per_region))
        return self.out(torch.cat(summary, dim=-1))

    def _pair_segments(self, per_region: torch.Tensor) -> torch.Tensor:
        """``segments`` means of the codes of consecutive frame pairs: ``per_region`` float ``[N, T, 2k²C]`` (each
        frame's samples) -> float ``[N, S*H]`` (zeros for a single frame)."""
        assert self.pair_code is not None
        n, frames = per_region.shape[:2]
        width = self.cfg.frame_width
        if frames < 2:
            return per_region.new_zeros(n, self.cfg.segments * width)
        pairs = self.pair_code(torch.cat([per_region[:, :-1], per_region[:, 1:]], dim=-1))  # [N, T-1, H]
        return F.adaptive_avg_pool1d(pairs.transpose(1, 2), self.cfg.segments).flatten(1)

    def forward(
        self,
        text: Sequence[torch.Tensor],
        token_boxes: Sequence[torch.Tensor],
        features: Sequence[torch.Tensor | None],
        answer_positions: Sequence[int] | None = None,
    ) -> TrackedText:
        """Args:
            text: ``B`` float ``[L_b, D]`` text embeddings.
            token_boxes: ``B`` float ``[L_b, 4]`` region box per token, NaN rows where a token names none.
            features: ``B`` float ``[T, g*g, C_v]`` vision features of each sample's video, ``None`` without video.
            answer_positions: per sample, the index of the token whose output predicts the answer's first token
                (the prompt's last token); needed when ``cfg.answer_query``.

        Returns:
            :class:`TrackedText`: ``text`` plus each region's track code at the tokens that name it, and the answer
            query at ``answer_positions`` (and after, with ``query_span = "answer"``).
        """
        if not len(text) == len(token_boxes) == len(features):
            raise ValueError(
                f"text, token_boxes and features disagree on the batch: {len(text)}, {len(token_boxes)}, "
                f"{len(features)}"
            )
        if self.query is not None and (answer_positions is None or len(answer_positions) != len(text)):
            raise ValueError("region_tracks.answer_query needs one answer position per sample")
        out, queries, dense, used = [], [], [], False
        for b, (emb, boxes, feats) in enumerate(zip(text, token_boxes, features, strict=True)):
            named = torch.isfinite(boxes).all(dim=1)
            if feats is None or not bool(named.any()):
                out.append(emb)
                queries.append(emb.new_zeros(emb.shape[-1]))
                continue
            unique, which = torch.unique(boxes[named], dim=0, return_inverse=True)
            frame_codes, samples = self._frame_codes(feats, unique.to(feats.dtype))
            codes = self._summary(frame_codes, samples).to(emb.dtype)  # [U, D]
            if self.dense_head is not None and feats.shape[0] > 1:
                dense.append(RegionDense(b, unique, self.predict_dense(frame_codes)))
            emb = emb.index_add(0, torch.nonzero(named).flatten(), codes[which])
            if self.query is not None:
                assert answer_positions is not None
                query = self._query(codes, unique.to(emb.dtype), which)
                emb = self._add_query(emb, query, answer_positions[b])
                queries.append(query)
            out.append(emb)
            used = True
        if not used:
            keep_in_graph(self, out)
        carried = self.query is not None and self.cfg.query_span == "answer"
        return TrackedText(out, torch.stack(queries) if carried else None, dense)

    def _query(self, codes: torch.Tensor, boxes: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """The answer query ``[D]`` from the regions' ``codes`` ``[U, D]`` and ``boxes`` ``[U, 4]`` (``which``
        ``[N]``: the unique region of each named token, in token order)."""
        assert self.query is not None
        first_seen = list(dict.fromkeys(which.tolist()))[: self.cfg.query_regions]
        order = torch.tensor(first_seen, dtype=torch.long, device=codes.device)
        regions = torch.cat([codes[order], box_fourier_features(boxes[order])], dim=-1)  # [n, D + 64]
        slots = regions.new_zeros(self.cfg.query_regions, regions.shape[-1])
        slots = torch.cat([regions, slots[len(order) :]], dim=0).flatten()
        return self.query(slots)

    def _add_query(self, emb: torch.Tensor, query: torch.Tensor, position: int) -> torch.Tensor:
        """``emb`` ``[L, D]`` plus ``query`` ``[D]`` at ``position`` (``"first"``) or from it on (``"answer"``)."""
        where = torch.zeros(emb.shape[0], 1, dtype=emb.dtype, device=emb.device)
        if self.cfg.query_span == "first":
            where[position] = 1.0
        else:
            where[position:] = 1.0
        return emb + where * query
