"""The wired student: gradient routing, latents per sample, KV-cached greedy decoding, preprocessing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.experts.l4p import build_frozen_heads
from rgpt4d_core.experts.registry import ExpertConfig
from rgpt4d_core.model.fusion import IGNORE_INDEX
from rgpt4d_core.model.perception_decoder import gather_frame_tokens
from rgpt4d_core.model.preprocess import frames_to_pixels, preprocess_clip, stack_clips
from rgpt4d_core.model.presets import student_config
from rgpt4d_core.model.student import Student
from rgpt4d_core.types import Clip

#: a tiny expert layout like the l4p_tiny preset: 16 frames → 8×8×8 tokens, 4 hooks of width 96
TINY_SPEC = ExpertSpec(
    name="l4p", revision="test", num_frames=16, input_size=(64, 64), hook_layers=(2, 3, 4, 5),
    latent_grid=(8, 8, 8), latent_dim=96, dense_shape=(16, 32, 32), targets=("latents", "depth"),
)  # fmt: skip
VID, IMG, EOS = 4, 3, 2


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """2 shared cores: thread oversubscription slows the small convolutions and matmuls down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_student(spec: ExpertSpec | None = TINY_SPEC, seed: int = 0) -> Student:
    torch.manual_seed(seed)
    return Student(student_config("tiny"), spec)


def batch(frames: int = 16, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = [torch.tensor([1, 7, VID, 30, 31, 32, 40, 41]), torch.tensor([1, IMG, VID, 33, 34, 42]),
           torch.tensor([1, 35, 36, 43])]  # fmt: skip
    labels = [torch.tensor([IGNORE_INDEX] * 6 + [40, 41]), torch.tensor([IGNORE_INDEX] * 5 + [42]),
              torch.tensor([IGNORE_INDEX] * 3 + [43])]  # fmt: skip
    return {
        "input_ids": ids,
        "labels": labels,
        "videos": torch.rand(3, frames, 3, 64, 64, generator=g) * 2 - 1,
        "timestamps_s": torch.linspace(0, 3.75, frames).expand(3, frames).clone(),
        "video_mask": torch.tensor([True, True, False]),
        "images": torch.rand(1, 3, 64, 64, generator=g) * 2 - 1,
        "image_owner": torch.tensor([1]),
    }


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )


def test_forward_shapes_and_latents_only_for_video_samples() -> None:
    student = make_student()
    out = student(**batch())
    assert out.logits.shape[:2] == out.labels.shape == out.attention_mask.shape
    # each frame: 9 tokens + the "\\n" separator; the SoM image: 9 tokens
    assert out.attention_mask.sum(1).tolist() == [8 - 1 + 16 * 10, 6 - 2 + 16 * 10 + 9, 4]
    assert out.latents is not None and out.latent_mask is not None
    assert out.latents.shape == (3, 4, 8, 8, 8, 96)
    assert out.latent_mask.tolist() == [True, True, False]
    assert torch.count_nonzero(out.latents[2]) == 0 and torch.count_nonzero(out.latents[0]) > 0
    assert (out.labels[out.attention_mask == 0] == IGNORE_INDEX).all()
    text_only = student([torch.tensor([1, 35, 36])], [torch.tensor([IGNORE_INDEX, 36, 36])])
    assert text_only.latents is None and text_only.latent_mask is None
    assert student(**batch(), compute_latents=False).latents is None


def test_decoder_reads_the_configured_llm_hidden_state() -> None:
    """``decoder.hidden_layer = 1``: D_4DP gets block 1's output (captured by a hook), not the last layer's."""
    last = make_student()
    cfg = student_config("tiny")
    torch.manual_seed(0)
    middle = Student(replace(cfg, decoder=replace(cfg.decoder, hidden_layer=1)), TINY_SPEC)
    middle.load_state_dict(last.state_dict())
    seen: list[torch.Tensor] = []
    middle.llm.model.layers[0].register_forward_hook(lambda mod, args, out: seen.append(out[0] if isinstance(out, tuple) else out))
    b = batch()
    out_mid, out_last = middle(**b), last(**b)
    assert torch.equal(out_mid.logits, out_last.logits)  # the answer path is untouched
    assert out_mid.latents is not None and out_last.latents is not None
    assert not torch.allclose(out_mid.latents, out_last.latents)
    fused, _, _ = middle._fuse(b["input_ids"], b["labels"], b["videos"], b["timestamps_s"], b["video_mask"], b["images"],
                         b["image_owner"], middle.cfg.fusion.padding_side)  # fmt: skip
    index, has_video = fused.first_video_index()
    rows = torch.nonzero(has_video).flatten()
    assert middle.decoder is not None
    expected = middle.decoder(gather_frame_tokens(seen[0][rows], index[rows]))
    torch.testing.assert_close(out_mid.latents[rows], expected)


def test_gradients_reach_llm_projector_and_decoder_through_frozen_heads_not_siglip() -> None:
    heads = build_frozen_heads(ExpertConfig(name="l4p", preset="l4p_tiny", device="cpu"))
    student = make_student()
    student.train()
    out = student(**batch())
    assert out.latents is not None and out.latent_mask is not None
    preds = heads(out.latents[out.latent_mask])
    assert set(preds) >= {"depth", "flow_2d_backward", "dyn_mask"}
    loss = lm_loss(out.logits, out.labels) + sum(p.float().square().mean() for p in preds.values())
    loss.backward()
    for name, module in (
        ("llm", student.llm),
        ("projector", student.projector),
        ("decoder", student.decoder),
    ):
        assert module is not None
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), f"{name}: a parameter got no gradient"
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0, name
    assert all(p.grad is None for p in student.vision.parameters())
    assert all(p.grad is None and not p.requires_grad for p in heads.parameters())
    assert not student.vision.training and student.llm.training


def test_tpe_changes_visual_tokens_only_through_timestamps() -> None:
    student = make_student(spec=None).eval()
    b = batch()
    with torch.no_grad():
        base = student(**b).logits
        same = student(**{**b, "timestamps_s": b["timestamps_s"].clone()}).logits
        shifted = student(**{**b, "timestamps_s": b["timestamps_s"] + 5.0}).logits
    assert torch.equal(base, same)
    assert not torch.allclose(base[0], shifted[0])
    assert torch.equal(base[2], shifted[2])  # the text-only sample is unaffected
    with pytest.raises(ValueError, match="timestamps_s"):
        student(**{**b, "timestamps_s": None})


def reference_greedy(student: Student, b: dict, steps: int) -> list[list[int]]:
    """Greedy decoding without a cache: one full teacher-forced forward (right padding) per new token."""
    ids = [x.clone() for x in b["input_ids"]]
    done = [False] * len(ids)
    result: list[list[int]] = [[] for _ in ids]
    for _ in range(steps):
        out = student(
            ids, None, b["videos"], b["timestamps_s"], b["video_mask"], b["images"], b["image_owner"]
        )
        last = out.attention_mask.sum(1) - 1
        nxt = out.logits[torch.arange(len(ids)), last].argmax(-1).tolist()
        for i, tok in enumerate(nxt):
            if not done[i]:
                if tok == EOS:
                    done[i] = True
                else:
                    result[i].append(tok)
                ids[i] = torch.cat((ids[i], torch.tensor([tok])))
    return result


def test_generate_with_kv_cache_equals_uncached_greedy() -> None:
    student = make_student(spec=None).double().eval()
    b = batch(frames=4)
    b = {
        k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in b.items()
    }
    gen_args = {k: v for k, v in b.items() if k != "labels"}
    gen = student.generate(**gen_args, max_new_tokens=6)
    assert gen.sequences.shape == (3, 6)
    assert gen.as_lists() == reference_greedy(student, b, 6)


def test_generate_stops_at_eos_and_pads() -> None:
    student = make_student(spec=None).eval()
    args = {k: v for k, v in batch(frames=4).items() if k != "labels"}
    free = student.generate(**args, max_new_tokens=5).sequences.tolist()
    eos = free[0][1]  # sample 0 stops after one token; others wherever this id first appears
    gen = student.generate(**args, max_new_tokens=5, eos_token_id=eos)
    assert int(gen.lengths[0]) <= 1  # sample 0 must stop early
    for row, ref, n in zip(gen.sequences.tolist(), free, gen.lengths.tolist(), strict=True):
        k = ref.index(eos) if eos in ref else len(ref)
        assert n == k and row[:k] == ref[:k]
        assert row[k : k + 1] == ref[k : k + 1] and all(t == 0 for t in row[k + 1 :])  # EOS, then pad id 0
    with pytest.raises(ValueError, match="max_new_tokens"):
        student.generate(args["input_ids"], max_new_tokens=0)


# --------------------------------------------------------------------------- preprocessing
def clip(frames: np.ndarray, uri: str = "mem://a") -> Clip:
    t = frames.shape[0]
    return Clip(frames=frames, timestamps_s=np.arange(t) / 4.0, frame_indices=np.arange(t), fps=4.0,
                num_source_frames=t, uri=uri)  # fmt: skip


def test_preprocess_resizes_and_normalises_to_siglip_range() -> None:
    frames = np.zeros((3, 48, 80, 3), dtype=np.uint8)
    frames[1] = 255
    frames[2, ..., 0] = 255  # pure red
    pixels, ts = preprocess_clip(clip(frames), 64)
    assert pixels.shape == (3, 3, 64, 64) and pixels.dtype == torch.float32
    assert torch.allclose(pixels[0], torch.full_like(pixels[0], -1.0))
    assert torch.allclose(pixels[1], torch.ones_like(pixels[1]))
    assert torch.allclose(pixels[2, 0], torch.ones(64, 64)) and torch.allclose(
        pixels[2, 1], -torch.ones(64, 64)
    )
    assert ts.tolist() == [0.0, 0.25, 0.5]
    assert frames_to_pixels(frames[0], 32).shape == (3, 32, 32)


def test_preprocess_errors_name_the_clip() -> None:
    with pytest.raises(ValueError, match="mem://bad"):
        preprocess_clip(clip(np.zeros((2, 8, 8, 3), dtype=np.float32), "mem://bad"), 16)
    a, b = (
        clip(np.zeros((2, 8, 8, 3), np.uint8), "mem://a"),
        clip(np.zeros((3, 8, 8, 3), np.uint8), "mem://b"),
    )
    with pytest.raises(ValueError, match="mem://b: 3"):
        stack_clips([a, b], 16)
    videos, ts = stack_clips([a, a], 16)
    assert videos.shape == (2, 2, 3, 16, 16) and ts.shape == (2, 2)
