"""Student parts: TPE formula, projector token merge and NVILA layer layout, SigLIP features, real-preset sizes."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from transformers import SiglipVisionModel

from rgpt4d_core.experts.base import ExpertSpec
from rgpt4d_core.model.perception_decoder import (
    DecoderConfig,
    LatentLayout,
    PerceptionDecoder,
    frame_subsample_indices,
)
from rgpt4d_core.model.presets import PRESETS, student_config
from rgpt4d_core.model.projector import PROJECTORS, ProjectorConfig, build_projector, merge_neighbourhoods
from rgpt4d_core.model.student import Student
from rgpt4d_core.model.tpe import TPEConfig, add_timestamp_encoding, timestamp_encoding
from rgpt4d_core.model.vision import VisionConfig, VisionTower
from rgpt4d_core.text.tokenizer import TextTokenizer, qwen2_tokenizer, tiny_tokenizer

L4P_SPEC = ExpertSpec(
    name="l4p",
    revision="test",
    num_frames=16,
    input_size=(224, 224),
    hook_layers=(14, 21, 28, 36),
    latent_grid=(8, 16, 16),
    latent_dim=1408,
    dense_shape=(16, 224, 224),
    targets=("latents", "depth"),
)


# --------------------------------------------------------------------------- TPE
@pytest.mark.parametrize("dim", [2, 8, 1152])
def test_tpe_matches_eq5_elementwise(dim: int) -> None:
    times = [0.0, 0.5, 3.25, 17.0, 600.0]
    enc = timestamp_encoding(torch.tensor(times), dim)
    assert enc.shape == (len(times), dim) and enc.dtype == torch.float32
    for row, t in enumerate(times):
        for i in range(dim // 2):
            angle = t / 10_000.0 ** (2 * i / dim)
            assert enc[row, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert enc[row, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_tpe_is_added_to_every_token_of_its_frame_only() -> None:
    feats = torch.randn(3, 5, 16)
    times = torch.tensor([0.0, 1.0, 2.5])
    out = add_timestamp_encoding(feats, times)
    delta = out - feats
    for f in range(3):
        expected = timestamp_encoding(times[f : f + 1], 16)[0]
        assert torch.allclose(delta[f], expected.expand(5, 16), atol=1e-6)
    assert not torch.allclose(delta[0], delta[1])


def test_tpe_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="even"):
        timestamp_encoding(torch.zeros(2), 7)
    with pytest.raises(ValueError, match="placement"):
        TPEConfig(placement="before")
    with pytest.raises(ValueError, match="timestamps"):
        add_timestamp_encoding(torch.zeros(2, 3, 4), torch.zeros(3))


# --------------------------------------------------------------------------- projector
@pytest.mark.parametrize(("side", "k"), [(8, 3), (9, 3), (4, 3), (5, 2), (6, 2)])
def test_merge_neighbourhoods_matches_explicit_loop(side: int, k: int) -> None:
    c = 3
    tokens = torch.randn(2, side * side, c)
    out = merge_neighbourhoods(tokens, k)
    m = -(-side // k)
    assert out.shape == (2, m * m, k * k * c)
    grid = tokens.reshape(2, side, side, c)
    for f in range(2):
        for r in range(m):
            for col in range(m):
                parts = []
                for dr in range(k):
                    for dc in range(k):
                        y, x = r * k + dr, col * k + dc
                        parts.append(grid[f, y, x] if y < side and x < side else torch.zeros(c))
                assert torch.equal(out[f, r * m + col], torch.cat(parts))


def test_projectors_have_nvila_checkpoint_keys_and_shapes() -> None:
    p3 = build_projector(ProjectorConfig("mlp_downsample_3x3_fix"), 8, 16)
    assert {k: tuple(v.shape) for k, v in p3.state_dict().items()} == {
        "layers.1.weight": (72,),
        "layers.1.bias": (72,),
        "layers.2.weight": (24, 72),
        "layers.2.bias": (24,),
        "layers.4.weight": (24,),
        "layers.4.bias": (24,),
        "layers.5.weight": (16, 24),
        "layers.5.bias": (16,),
        "layers.7.weight": (16, 16),
        "layers.7.bias": (16,),
    }
    assert p3(torch.randn(2, 64, 8)).shape == (2, 9, 16)
    p2 = build_projector(ProjectorConfig("mlp_downsample_2x2_fix"), 8, 16)
    assert sorted(p2.state_dict()) == [
        "layers.1.bias",
        "layers.1.weight",
        "layers.2.bias",
        "layers.2.weight",
        "layers.4.bias",
        "layers.4.weight",
    ]
    assert p2(torch.randn(2, 49, 8)).shape == (2, 16, 16)
    assert set(PROJECTORS) == {"mlp_downsample_3x3_fix", "mlp_downsample_2x2_fix"}
    with pytest.raises(ValueError, match="projector.kind"):
        ProjectorConfig("mlp2x_gelu")


# --------------------------------------------------------------------------- vision
def test_vision_tower_selects_layer_and_is_frozen() -> None:
    torch.manual_seed(0)
    cfg = VisionConfig(
        image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_layers=3, num_heads=2
    )
    tower = VisionTower(cfg)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = tower(pixels)
    ref = SiglipVisionModel.forward(tower.model, pixel_values=pixels, output_hidden_states=True).hidden_states
    assert feats.shape == (2, 16, 16)
    assert torch.equal(feats, ref[-2]) and not torch.equal(feats, ref[-1])
    assert not feats.requires_grad and all(not p.requires_grad for p in tower.parameters())
    tower.train()
    assert not tower.training and not tower.model.training
    with pytest.raises(ValueError, match="pixels"):
        tower(torch.zeros(1, 3, 16, 16))
    trainable = VisionTower(VisionConfig(**{**cfg.__dict__, "frozen": False}))
    assert trainable(pixels).requires_grad


@pytest.mark.parametrize("select_layer", [-2, -1, 1])
def test_a_trained_tower_trains_exactly_what_reaches_the_selected_layer(select_layer: int) -> None:
    """DDP refuses parameters that get no gradient: layers after the selected one and the post-layernorm."""
    torch.manual_seed(0)
    cfg = VisionConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_layers=3, num_heads=2,
                       select_layer=select_layer, frozen=False)  # fmt: skip
    tower = VisionTower(cfg)
    tower.requires_grad_(False).requires_grad_(True)  # as the training setup switches parts on (set_trainable)
    tower(torch.rand(2, 3, 32, 32) * 2 - 1).square().sum().backward()
    trained = {n for n, p in tower.model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in tower.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained == with_grad and trained
    used_layers = select_layer % 4
    assert {int(n.split(".")[2]) for n in trained if ".layers." in f".{n}"} == set(range(used_layers))


# --------------------------------------------------------------------------- decoder
def test_frame_subsampling_indices() -> None:
    assert frame_subsample_indices(16, 8) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert frame_subsample_indices(8, 8) == list(range(8))
    assert frame_subsample_indices(10, 4) == [0, 3, 6, 9]
    with pytest.raises(ValueError):
        frame_subsample_indices(4, 8)


def test_decoder_rearrange_subsamples_and_resizes() -> None:
    dec = PerceptionDecoder(DecoderConfig(variant="linear"), 1, LatentLayout(2, 2, 4, 4, 3))
    # 4 frames of a 2x2 grid, one channel: frame f holds [[a, b], [c, d]] + 100 f
    base = torch.tensor([0.0, 4.0, 8.0, 12.0])
    tokens = torch.stack([base + 100 * f for f in range(4)]).reshape(1, 4, 4, 1)
    grid = dec.rearrange(tokens)
    assert grid.shape == (1, 2, 4, 4, 1)
    # frames 0 and 2 kept (::2); half-pixel bilinear 2 -> 4 along a row [a, b] gives [a, .75a+.25b, .25a+.75b, b]
    for i, f in enumerate((0, 2)):
        top = grid[0, i, 0, :, 0]
        a, b = 100.0 * f, 100.0 * f + 4
        assert torch.allclose(top, torch.tensor([a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b]))
        assert float(grid[0, i, 3, 3, 0]) == pytest.approx(100 * f + 12)
    # same-size grid: no resize, values kept exactly
    same = PerceptionDecoder(DecoderConfig(variant="linear"), 4, LatentLayout(1, 4, 4, 4, 3))
    x = torch.randn(1, 4, 16, 4)
    assert torch.equal(same.rearrange(x), x.reshape(1, 4, 4, 4, 4))
    with pytest.raises(ValueError, match="square"):
        same.rearrange(torch.randn(1, 4, 15, 4))


def test_decoder_inits() -> None:
    torch.manual_seed(0)
    mlp = PerceptionDecoder(DecoderConfig(variant="mlp", mlp_hidden=256), 512, LatentLayout(2, 1, 2, 2, 64))
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 6 and all(torch.count_nonzero(m.bias) == 0 for m in linears)
    bound = math.sqrt(6 / (512 + 256))  # Xavier-uniform bound of the first layer
    peak = float(linears[0].weight.detach().abs().max())
    assert 0.9 * bound < peak <= bound
    lin = PerceptionDecoder(DecoderConfig(variant="linear"), 512, LatentLayout(2, 1, 2, 2, 256))
    first = lin.hooks[0]
    assert isinstance(first, torch.nn.Linear) and len(lin.hooks) == 2
    assert abs(float(first.weight.detach().std()) - 0.1) < 0.01 and torch.count_nonzero(first.bias) == 0


# --------------------------------------------------------------------------- real preset on meta
def test_nvila_lite_8b_on_meta_has_paper_shapes_and_size() -> None:
    with torch.device("meta"):
        student = Student(student_config("nvila_lite_8b"), L4P_SPEC)
        frames = torch.empty(16, 3, 448, 448)
        feats = student.vision(frames)
        tokens = student.projector(feats)
        assert student.decoder is not None
        latents = student.decoder(torch.empty(2, 16, 121, 3584))
    base = sum(p.numel() for n, p in student.named_parameters() if not n.startswith("decoder."))
    assert abs(base / 8.0e9 - 1) < 0.02, base
    assert student.tokens_per_frame == 121
    assert feats.shape == (16, 1024, 1152) and tokens.shape == (16, 121, 3584)
    assert latents.shape == (2, 4, 8, 16, 16, 1408)
    projector = sum(p.numel() for p in student.projector.parameters())
    assert abs(projector / 61.1e6 - 1) < 0.01
    assert student.llm.config.vocab_size == 151_651 and student.llm.config.num_key_value_heads == 4


def test_presets_registry_and_tiny_size() -> None:
    assert set(PRESETS) == {"tiny", "nvila_lite_8b"}
    with pytest.raises(KeyError, match="known"):
        student_config("huge")
    student = Student(student_config("tiny"))
    n = sum(p.numel() for p in student.parameters())
    assert 2e5 < n < 5e6 and student.tokens_per_frame == 9 and student.decoder is None


@pytest.mark.parametrize(
    ("preset", "builder"), [("tiny", tiny_tokenizer), ("nvila_lite_8b", qwen2_tokenizer)]
)
def test_preset_token_ids_match_the_tokenizer(preset: str, builder: Callable[[], TextTokenizer]) -> None:
    cfg = student_config(preset)
    tok = builder()
    assert cfg.tokenizer == tok.kind and tok.vocab_size <= cfg.llm.vocab_size
    ids = cfg.tokens
    assert (ids.video_token_id, ids.image_token_id, ids.pad_token_id, ids.eos_token_id) == (
        tok.video_id, tok.image_id, tok.pad_id, tok.eos_id,
    )  # fmt: skip
    assert tok.encode("\n") == [ids.frame_separator_token_id]
