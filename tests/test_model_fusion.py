"""fuse(): placeholder splicing, index maps, padding sides, truncation policy and errors (pure function)."""

from __future__ import annotations

import pytest
import torch

from rgpt4d_core.model.fusion import IGNORE_INDEX, FusionConfig, FusionError, MediaTokens, fuse

TOK = MediaTokens(video_token_id=4, image_token_id=3, pad_token_id=0)
V, I = TOK.video_token_id, TOK.image_token_id  # noqa: E741


def text_embeds(ids: torch.Tensor) -> torch.Tensor:
    """D = 2 embeddings that identify the id: [id, -id]."""
    return torch.stack((ids.float(), -ids.float()), dim=1)


def media(tag: float, *shape: int) -> torch.Tensor:
    """Distinct media tokens [..., 2]: values tag + running index."""
    n = 1
    for s in shape:
        n *= s
    vals = tag + torch.arange(n, dtype=torch.float32)
    return torch.stack((vals, vals), dim=1).reshape(*shape, 2)


def run(ids_list, videos=None, images=None, labels=None, sep=None, **cfg):
    ids = [torch.tensor(x) for x in ids_list]
    lab = [torch.tensor(x) for x in labels] if labels is not None else None
    return fuse(ids, [text_embeds(i) for i in ids], TOK, videos, images, lab, sep, FusionConfig(**cfg))


def test_text_only_sample_is_unchanged() -> None:
    out = run([[10, 11, 12]], labels=[[-100, 11, 12]])
    assert torch.equal(out.inputs_embeds[0], text_embeds(torch.tensor([10, 11, 12])))
    assert out.labels.tolist() == [[-100, 11, 12]]
    assert out.attention_mask.tolist() == [[1, 1, 1]] and out.position_ids.tolist() == [[0, 1, 2]]
    assert out.video_token_index == [[]] and out.image_token_index == [[]]
    index, has = out.first_video_index()
    assert index.shape == (1, 0, 0) and has.tolist() == [False]


def test_one_video_spliced_in_place_with_index_map() -> None:
    vid = media(1000, 2, 3)  # T=2 frames, n=3 tokens
    out = run([[10, 11, V, 13]], videos=[[vid]], labels=[[-100, -100, -100, 13]])
    expected_rows = [[10, -10], [11, -11]] + vid.reshape(6, 2).tolist() + [[13, -13]]
    assert out.inputs_embeds[0].tolist() == expected_rows
    assert out.labels[0].tolist() == [-100] * 8 + [13]
    assert out.video_token_index[0][0].tolist() == [[2, 3, 4], [5, 6, 7]]
    assert out.position_ids[0].tolist() == list(range(9))


def test_image_and_many_videos_in_placeholder_order_with_separator() -> None:
    img, v1, v2 = media(500, 4), media(1000, 2, 2), media(2000, 1, 2)
    sep = torch.tensor([-7.0, -7.0])
    out = run([[I, 20, V, 21, V]], videos=[[v1, v2]], images=[[img]], sep=sep, frame_separator=True)
    rows = out.inputs_embeds[0]
    assert out.image_token_index[0][0].tolist() == [0, 1, 2, 3]
    # image(4) 20 | f0(2) sep f1(2) sep | 21 | f0(2) sep
    assert out.video_token_index[0][0].tolist() == [[5, 6], [8, 9]]
    assert out.video_token_index[0][1].tolist() == [[12, 13]]
    assert rows.shape[0] == 15
    for pos in (7, 10, 14):
        assert rows[pos].tolist() == [-7.0, -7.0]
    assert rows[4].tolist() == [20, -20] and rows[11].tolist() == [21, -21]
    assert torch.equal(rows[out.image_token_index[0][0]], img)
    assert torch.equal(rows[out.video_token_index[0][0]], v1)
    assert torch.equal(rows[out.video_token_index[0][1]], v2)
    assert (out.labels[0] == IGNORE_INDEX).all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_of_different_lengths_pads_on_the_requested_side(side: str) -> None:
    va, vb = media(1000, 2, 3), media(3000, 2, 3)
    ids = [[10, V, 11], [12, 13, 14, 15, V, 16, 17], [18]]
    labels = [[-100, -100, 11], [-100, -100, -100, -100, -100, 16, 17], [18]]
    out = run(ids, videos=[[va], [vb], []], labels=labels, padding_side=side)
    lengths = [8, 12, 1]
    assert out.inputs_embeds.shape == (3, 12, 2)
    assert out.attention_mask.sum(1).tolist() == lengths
    for b, n in enumerate(lengths):
        real = out.attention_mask[b].bool()
        pads = (~real).nonzero().flatten().tolist()
        assert pads == (list(range(12 - n)) if side == "left" else list(range(n, 12)))
        assert out.position_ids[b][real].tolist() == list(range(n))
        assert (out.labels[b][~real] == IGNORE_INDEX).all() and (out.inputs_embeds[b][~real] == 0).all()
    assert out.labels[0][out.attention_mask[0].bool()].tolist() == [-100] * 7 + [11]
    index, has = out.first_video_index()
    assert has.tolist() == [True, True, False]
    assert torch.equal(out.inputs_embeds[0][index[0].flatten()], va.reshape(6, 2))
    assert torch.equal(out.inputs_embeds[1][index[1].flatten()], vb.reshape(6, 2))
    shift = 12 - 8 if side == "left" else 0
    assert index[0].tolist() == [[1 + shift, 2 + shift, 3 + shift], [4 + shift, 5 + shift, 6 + shift]]


def test_truncation_drops_trailing_text_only() -> None:
    vid = media(1000, 2, 2)
    out = run([[10, V, 11, 12, 13]], videos=[[vid]], labels=[[-100, -100, 11, 12, 13]], max_length=6)
    assert out.inputs_embeds.shape[1] == 6 and out.labels[0].tolist() == [-100] * 5 + [11]
    assert out.video_token_index[0][0].tolist() == [[1, 2], [3, 4]]
    short = run([[10, V, 11]], videos=[[vid]], max_length=100)
    assert short.inputs_embeds.shape[1] == 6


def test_truncation_never_cuts_media_and_error_mode_raises() -> None:
    vid = media(1000, 2, 2)
    with pytest.raises(FusionError, match="sample 1.*media"):
        run([[10], [10, 11, V, 12]], videos=[[], [vid]], max_length=5)
    with pytest.raises(FusionError, match="sample 1.*media"):  # would end exactly on the media: no text after
        run([[10], [10, V, 12]], videos=[[], [vid]], max_length=5)
    with pytest.raises(FusionError, match="sample 0: fused length 6 exceeds max_length 5"):
        run([[10, V, 12]], videos=[[vid]], max_length=5, truncation="error")


def test_inconsistent_inputs_name_the_sample() -> None:
    with pytest.raises(FusionError, match="sample 1: 1 <video>"):
        run([[10], [V, 11]], videos=[[], []])
    with pytest.raises(FusionError, match="sample 0: 0 <video> / 1 <image>"):
        run([[I]], videos=[[media(0, 1, 1)]], images=[[media(0, 1)]])
    with pytest.raises(FusionError, match="sample 0: video 0 must be"):
        run([[V]], videos=[[torch.zeros(2, 3, 5)]])
    with pytest.raises(FusionError, match="separator"):
        run([[V]], videos=[[media(0, 1, 1)]], frame_separator=True)
    with pytest.raises(FusionError, match="different"):
        run([[V], [V]], videos=[[media(0, 2, 2)], [media(0, 3, 2)]]).first_video_index()
    with pytest.raises(ValueError, match="padding_side"):
        FusionConfig(padding_side="middle")


def test_gradients_flow_to_media_and_text() -> None:
    vid = media(0, 2, 2).requires_grad_(True)
    ids = torch.tensor([10, V, 11])
    txt = text_embeds(ids).requires_grad_(True)
    out = fuse([ids], [txt], TOK, [[vid]], None, None, None, FusionConfig(padding_side="left"))
    out.inputs_embeds.sum().backward()
    assert vid.grad is not None and torch.equal(vid.grad, torch.ones_like(vid))
    assert txt.grad is not None and txt.grad[:, 0].tolist() == [1.0, 0.0, 1.0]
