"""Region-box embedding (``StudentConfig.region_boxes``): which tokens get a box, what the model adds, and that the
training collate and the serving engine hand the same boxes to the model."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rgpt4d_core.model.presets import tiny
from rgpt4d_core.model.region_boxes import RegionBoxEmbedding, box_fourier_features, grid_cell_boxes
from rgpt4d_core.model.region_tracks import RegionTrackConfig
from rgpt4d_core.model.student import Student
from rgpt4d_core.text.prompts import build_inference_ids, r4d_user_text
from rgpt4d_core.text.region_refs import token_region_boxes
from rgpt4d_core.text.tokenizer import tiny_tokenizer
from rgpt4d_core.types import Region

REGIONS = (Region(2, (0.1, 0.2, 0.3, 0.4)), Region(5, (0.6, 0.5, 0.9, 0.8)), Region(7, (0.0, 0.0, 1.0, 1.0)))


def test_token_region_boxes_marks_every_reference_and_nothing_else() -> None:
    tok = tiny_tokenizer()
    text = "where is <obj_2> relative to <obj_5>? to the left of <obj_5>"
    ids = tok.encode(text)
    boxes = token_region_boxes(tok, ids, REGIONS)
    assert boxes.shape == (len(ids), 4)
    named = torch.isfinite(boxes).all(dim=1)
    obj2, obj5 = tok.encode("<obj_2>"), tok.encode("<obj_5>")
    assert len(obj2) == len(obj5) == 1  # the tiny tokenizer keeps a reference whole
    assert [ids[i] for i in torch.nonzero(named).flatten().tolist()] == [obj2[0], obj5[0], obj5[0]]
    assert torch.equal(boxes[ids.index(obj2[0])], torch.tensor(REGIONS[0].box))
    assert all(torch.equal(boxes[i], torch.tensor(REGIONS[1].box)) for i, t in enumerate(ids) if t == obj5[0])
    assert torch.isnan(boxes[~named]).all()  # <obj_7> is a region but not referenced: no token gets its box


def test_box_features_separate_left_from_right_linearly() -> None:
    left = box_fourier_features(torch.tensor([[0.1, 0.4, 0.2, 0.6]]))
    right = box_fourier_features(torch.tensor([[0.7, 0.4, 0.8, 0.6]]))
    assert left.shape == (1, 64)
    assert not torch.allclose(left, right)
    # the lowest octave's sin(pi * x) of the centre is monotone in x over [0, 0.5] and symmetric about 0.5, its cos
    # is monotone over [0, 1]: the cos feature of the centre x orders the two boxes
    cos_centre_x = 32 + 4 * 4  # cos block, value 4 (centre x), octave 0
    assert left[0, cos_centre_x] > right[0, cos_centre_x]


def test_embedding_adds_only_at_named_tokens_and_checks_shapes() -> None:
    torch.manual_seed(0)
    emb = RegionBoxEmbedding(16)
    text = [torch.randn(5, 16), torch.randn(3, 16)]
    nan = float("nan")
    boxes = [torch.tensor([[nan] * 4, [0.1, 0.2, 0.3, 0.4], [nan] * 4, [nan] * 4, [0.5, 0.5, 0.6, 0.6]]),
             torch.full((3, 4), nan)]  # fmt: skip
    out = emb(text, boxes)
    changed = (out[0] != text[0]).any(dim=1).tolist()
    assert changed == [False, True, False, False, True]
    assert torch.equal(out[1], text[1])
    with pytest.raises(ValueError, match=r"\[L_b=5, 4\]"):
        emb(text, [boxes[0][:4], boxes[1]])
    with pytest.raises(ValueError, match="1 samples for a batch of 2"):
        emb(text, boxes[:1])


def test_a_batch_naming_no_region_still_gives_the_projection_a_gradient() -> None:
    """DDP (find_unused_parameters=False) needs every parameter's gradient in every step: a micro-batch whose
    questions name no region (micro_batch_size=1 makes that common) must not drop the projection from the graph."""
    torch.manual_seed(0)
    emb = RegionBoxEmbedding(8)
    text = [torch.randn(4, 8, requires_grad=True)]
    out = emb(text, [torch.full((4, 4), float("nan"))])
    assert torch.equal(out[0].detach(), text[0].detach())  # the values are untouched
    out[0].sum().backward()
    grads = [p.grad for p in emb.parameters()]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads), grads


def _sample(tok):  # one prompt naming two regions, and its boxes
    text = r4d_user_text(tok, "where is <obj_2> relative to <obj_5>?", ["left", "right"], 2.0, with_som_image=False,
                         with_video=False)  # fmt: skip
    ids = build_inference_ids(tok, text)
    return torch.tensor(ids), token_region_boxes(tok, ids, REGIONS)


def test_student_reads_the_boxes_and_trains_the_projection() -> None:
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = Student(dataclasses.replace(tiny(), region_boxes=True))
    assert model.region_box_embedding is not None
    ids, boxes = _sample(tok)
    moved = boxes.clone()
    moved[torch.isfinite(moved)] = 1.0 - moved[torch.isfinite(moved)]  # mirror both regions
    logits = model([ids], token_boxes=[boxes], compute_latents=False).logits
    mirrored = model([ids], token_boxes=[moved], compute_latents=False).logits
    first_ref = int(torch.isfinite(boxes).all(dim=1).nonzero()[0])
    assert torch.allclose(
        logits[0, :first_ref], mirrored[0, :first_ref]
    )  # causal: before the reference, equal
    assert not torch.allclose(logits[0, -1], mirrored[0, -1])  # after it, the boxes matter
    logits[0, -1].logsumexp(-1).backward()
    grad = model.region_box_embedding.proj.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_grid_cells_tile_the_frame_row_major_and_clip_a_padded_last_cell() -> None:
    boxes = grid_cell_boxes(3, 3 / 8)  # 8 patches padded to 9, 3 per token: the last cells reach 9/8, clipped
    assert boxes.shape == (9, 4)
    assert torch.allclose(boxes[0], torch.tensor([0.0, 0.0, 0.375, 0.375]))
    assert torch.allclose(boxes[1], torch.tensor([0.375, 0.0, 0.75, 0.375]))  # row-major: next column first
    assert torch.allclose(boxes[8], torch.tensor([0.75, 0.75, 1.0, 1.0]))


def test_visual_positions_share_the_box_code_with_region_references() -> None:
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="region_boxes"):
        dataclasses.replace(tiny(), region_boxes=False, visual_positions=True)
    plain = Student(dataclasses.replace(tiny(), region_boxes=True))
    coded = Student(dataclasses.replace(tiny(), region_boxes=True, visual_positions=True))
    coded.load_state_dict(plain.state_dict())  # no new parameters: the region-box projection is shared
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    grid, patches = coded.projector.output_grid(coded.vision.grid), coded.vision.grid
    assert coded.region_box_embedding is not None
    expected = coded.region_box_embedding.cell_codes(grid, -(-patches // grid) / patches, torch.float32)
    with torch.no_grad():
        diff = coded.encode_frames(pixels, None) - plain.encode_frames(pixels, None)
    assert torch.allclose(diff, expected.expand_as(diff), atol=1e-5)  # the same cell code in every frame
    assert not torch.allclose(expected[0], expected[-1])  # and a different one per place


def test_paper_preset_has_no_region_embedding_and_ignores_boxes() -> None:
    torch.manual_seed(0)
    cfg = tiny()
    model = Student(dataclasses.replace(cfg, region_boxes=False, region_tracks=RegionTrackConfig()))
    assert model.region_box_embedding is None
    ids, boxes = _sample(tiny_tokenizer())
    a = model([ids], token_boxes=[boxes], compute_latents=False).logits
    b = model([ids], compute_latents=False).logits
    assert torch.equal(a, b)
    assert not math.isnan(float(a.detach().sum()))


@pytest.mark.parametrize("answer_style", ["letter", "option"])
def test_training_and_serving_give_the_model_the_same_inputs(tmp_path, answer_style: str) -> None:
    """One sample-preparation path (``rgpt4d_core.sample_prep``): for the same clip and question the training collate
    and the serving engine give the student the same prompt ids, token boxes, pixels, timestamps and SoM image."""
    import numpy as np

    from rgpt4d_core.sample_prep import SampleFormat
    from rgpt4d_core.serve.checkpoints import write_random_checkpoint
    from rgpt4d_core.serve.engine import VQAEngine
    from rgpt4d_core.serve.engine_config import EngineConfig
    from rgpt4d_core.serve.vqa_types import PreparedRequest, VQARequest, VQAResult
    from rgpt4d_core.shards.batch import TrainingBatch
    from rgpt4d_core.train.collate import Collator
    from rgpt4d_core.video.decode import decode_clip
    from rgpt4d_core.video.encode import encode_video

    video = np.zeros((8, 48, 56, 3), np.uint8)  # not the vision tower's 64 x 64: the pixels are resized
    video[:, 20:30, 10:20] = 200
    encode_video(video, 4.0, tmp_path / "clip.mp4")
    question, options, answer = "Where is <obj_2> relative to <obj_5>?", ("left", "right"), "left"
    ckpt = write_random_checkpoint(tmp_path / "ckpt", preset="tiny", seed=0, answer_style=answer_style)
    engine = VQAEngine(EngineConfig(checkpoint=str(ckpt), max_new_tokens=2, decode_threads=1, num_frames=8))
    assert engine.model.cfg.region_boxes  # the tiny recipe embeds region boxes
    prepared = engine.prepare(VQARequest(str(tmp_path / "clip.mp4"), question, options, REGIONS[:2]))
    assert isinstance(prepared, PreparedRequest)
    served = prepared.inputs
    # the training side: the same decoded clip as a shard batch, the format the distill job builds for this student
    clip = decode_clip(str(tmp_path / "clip.mp4"), engine.input.decode_config())
    batch = TrainingBatch(["s"], clip.frames[None], clip.timestamps_s[None].astype(np.float32),
                          np.array([clip.duration_s], np.float32), [REGIONS[:2]], ["SR"], [question], [options],
                          [answer], {})  # fmt: skip
    fmt = SampleFormat.for_student(engine.tokenizer, engine.model.cfg, som_image=True, duration_sentence=True)
    assert fmt == engine.format
    trained = Collator(fmt, engine.model.tokens_per_frame)(batch)
    prompt_len = len(served.input_ids)  # the training ids continue with the supervised answer
    assert torch.equal(trained.input_ids[0][:prompt_len], served.input_ids)
    assert (trained.labels[0][:prompt_len] == -100).all() and (trained.labels[0][prompt_len:] != -100).all()
    assert trained.token_boxes is not None and served.token_boxes is not None
    assert torch.equal(trained.token_boxes[0][:prompt_len].nan_to_num(-1), served.token_boxes.nan_to_num(-1))
    assert int(torch.isfinite(served.token_boxes).all(dim=1).sum()) == 2
    assert trained.videos.shape == (1, 8, 3, 64, 64) and torch.equal(trained.videos[0], served.video)
    assert torch.equal(trained.timestamps_s[0], served.timestamps_s)
    assert trained.images is not None and served.som_image is not None
    assert torch.equal(trained.images[0], served.som_image)
    assert not torch.equal(served.som_image, served.video[0])  # the marks are drawn
    assert isinstance(engine.run([prepared])[0], VQAResult)  # and the engine answers with them
