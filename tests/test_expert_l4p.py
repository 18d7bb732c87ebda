"""The ``l4p`` expert: real-size shapes on ``meta``, frozen differentiable heads, checkpoints, preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rgpt4d_core.experts.dpt_heads import FrozenHeads
from rgpt4d_core.experts.l4p import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    L4PExpert,
    build_frozen_heads,
    build_model,
    file_revision,
    preprocess,
    save_checkpoint,
)
from rgpt4d_core.experts.l4p_encoder import num_parameters
from rgpt4d_core.experts.registry import ExpertConfig, build_expert
from rgpt4d_core.types import Clip
from tests.expert_testkit import consecutive_clip


def test_vitg_on_meta_has_the_paper_shapes_and_parameter_count() -> None:
    model = build_model("l4p_vitg", device="meta")
    assert num_parameters(model.encoder) == pytest.approx(1.0116e9, rel=1e-3)
    assert num_parameters(model) == pytest.approx(1.337e9, rel=1e-3)  # paper: 1,337 M
    video = torch.empty(1, 3, 16, 224, 224, device="meta")
    features = model.encoder(video)
    assert len(features) == 41  # patch embedding + 40 blocks
    assert all(tuple(f.shape) == (1, 2048, 1408) for f in features)
    latents = model.encode_latents(video)
    assert tuple(latents.shape) == (1, 4, 8, 16, 16, 1408)  # 2,048 tokens x 1408 per hook
    out = model.heads(latents)
    assert tuple(out["depth"].shape) == (1, 16, 224, 224)
    assert tuple(out["flow_2d_backward"].shape) == (1, 16, 224, 224, 2)
    assert tuple(out["dyn_mask"].shape) == (1, 16, 224, 224)
    assert tuple(out["camray"].shape) == (1, 16, 16, 16, 6)


def test_vitg_spec_without_allocating_weights() -> None:
    model = build_model("l4p_vitg", device="meta")
    expert = L4PExpert(model, "l4p_vitg", "untrained", torch.device("meta"), torch.float32)
    s = expert.spec
    assert (s.num_frames, s.input_size, s.hook_layers) == (16, (224, 224), (14, 21, 28, 36))
    assert (s.latent_grid, s.latent_dim, s.dense_shape, s.camray_shape) == ((8, 16, 16), 1408, (16, 224, 224), (16, 16, 16))


def test_frozen_heads_do_not_train_yet_pass_gradients_to_their_input() -> None:
    expert = build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", device="cpu"))
    heads = expert.heads
    assert isinstance(heads, FrozenHeads)
    assert all(not p.requires_grad for p in heads.parameters())
    torch.nn.Sequential(heads).train()  # a parent switching to train mode must not unfreeze it
    assert not heads.training
    g = expert.spec.latent_grid
    latents = torch.randn(1, 4, *g, expert.spec.latent_dim, requires_grad=True)
    out = heads(latents)
    loss = sum(v.float().square().mean() for v in out.values())
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert all(p.grad is None for p in heads.parameters())
    assert tuple(out["depth"].shape) == (1, *expert.spec.dense_shape)
    assert (out["depth"] > 0).all()
    assert tuple(out["camray"].shape) == (1, *expert.spec.camray_shape, 6)


def _perturbed_tiny(seed: int) -> torch.nn.Module:
    model = build_model("l4p_tiny", seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def test_revision_names_the_weights_not_the_order_of_the_safetensors_header(tmp_path: Path) -> None:
    """safetensors writes its metadata map in an order that changes between processes; the revision must not."""
    import json

    path = tmp_path / "a.safetensors"
    save_checkpoint(build_model("l4p_tiny", seed=0), path, "l4p_tiny")  # type: ignore[arg-type]
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    text = json.dumps(header, separators=(",", ":")).encode().ljust(size)  # same length: the data stays in place
    reordered = tmp_path / "b.safetensors"
    reordered.write_bytes(raw[:8] + text + raw[8 + size :])
    assert reordered.read_bytes() != raw and file_revision(reordered) == file_revision(path)
    other = tmp_path / "c.safetensors"
    save_checkpoint(build_model("l4p_tiny", seed=1), other, "l4p_tiny")  # type: ignore[arg-type]
    assert file_revision(other) != file_revision(path)
    plain = tmp_path / "notes.txt"
    plain.write_text("not a checkpoint")
    assert len(file_revision(plain)) == 16


def test_checkpoint_round_trip_reproduces_outputs_and_sets_the_revision(tmp_path: Path) -> None:
    model = _perturbed_tiny(3)
    path = tmp_path / "tiny.safetensors"
    revision = save_checkpoint(model, path, "l4p_tiny")  # type: ignore[arg-type]
    expert = build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", checkpoint=str(path), device="cpu"))
    assert expert.spec.revision == revision == file_revision(path) != "untrained"
    clip, _ = consecutive_clip(0)
    video = preprocess([clip], 16, (64, 64))
    with torch.no_grad():
        want_latents, want = model(video)
    got = expert.encode([clip])[0]
    assert got.latents is not None and got.depth is not None
    np.testing.assert_allclose(got.latents, want_latents[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.depth, want["depth"][0].numpy(), rtol=1e-5, atol=1e-6)
    heads_only = build_frozen_heads(ExpertConfig(name="l4p", preset="l4p_tiny", checkpoint=str(path), device="cpu"))
    lat = torch.from_numpy(got.latents)[None]
    with torch.no_grad():
        np.testing.assert_allclose(heads_only(lat)["dyn_mask"].numpy(), want["dyn_mask"].numpy(), rtol=1e-4, atol=1e-5)
    other = tmp_path / "other.safetensors"
    assert save_checkpoint(_perturbed_tiny(4), other, "l4p_tiny") != revision  # type: ignore[arg-type]


def test_checkpoint_in_the_released_l4p_layout_loads(tmp_path: Path) -> None:
    """Tiny tensors named as in L4P's Lightning checkpoint (prefix, aliases, unused and extra heads) load."""
    model = _perturbed_tiny(5)
    released: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if k.startswith("encoder."):
            released["l4p_model.video_encoder." + k.removeprefix("encoder.")] = v.clone()
        else:
            task, _, rest = k.removeprefix("heads.task_heads.").partition(".")
            released[f"l4p_model.task_heads.{task}.task_head.dpt.{rest}"] = v.clone()
            if rest.startswith("scratch.layer_rn."):
                level = int(rest.split(".")[2])
                released[f"l4p_model.task_heads.{task}.task_head.dpt.scratch.layer{level + 1}_rn.weight"] = v.clone()
    released["l4p_model.task_heads.depth.task_head.dpt.scratch.refinenet4.resConfUnit1.conv1.weight"] = torch.zeros(1)
    released["l4p_model.task_heads.track_2d.sam.weight"] = torch.zeros(2)
    path = tmp_path / "released.safetensors"
    save_file(released, str(path))
    expert = build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", checkpoint=str(path), device="cpu"))
    assert isinstance(expert, L4PExpert)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(expert.model.state_dict()[k], v)


def test_checkpoint_errors_name_the_file_and_the_mismatch(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", checkpoint=str(tmp_path / "nope.safetensors")))
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(build_model("l4p_tiny"), path, "l4p_tiny")
    with pytest.raises(ValueError, match="l4p_tiny"):
        build_expert(ExpertConfig(name="l4p", preset="l4p_vitg", checkpoint=str(path), device="meta"))
    truncated = tmp_path / "part.safetensors"
    state = {k: v for k, v in build_model("l4p_tiny").state_dict().items() if not k.startswith("heads.task_heads.camray")}
    save_file(state, str(truncated), metadata={"format": "rgpt4d.l4p/1", "preset": "l4p_tiny"})
    with pytest.raises(ValueError, match="missing"):
        build_expert(ExpertConfig(name="l4p", preset="l4p_tiny", checkpoint=str(truncated), device="cpu"))


def test_preprocess_resizes_scales_and_normalises() -> None:
    frames = np.zeros((16, 48, 80, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 128, 0
    clip = Clip(frames, np.arange(16) / 8.0, np.arange(16), 8.0, 16, "const")
    x = preprocess([clip], 16, (64, 64))
    assert tuple(x.shape) == (1, 3, 16, 64, 64) and x.dtype == torch.float32
    want = [(v - m) / s for v, m, s in zip((1.0, 128 / 255, 0.0), IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    for c in range(3):
        assert x[0, c].min().item() == pytest.approx(want[c], abs=1e-4)
        assert x[0, c].max().item() == pytest.approx(want[c], abs=1e-4)
    with pytest.raises(ValueError, match="const.*16 frames, got 8"):
        preprocess([Clip(frames[:8], np.arange(8) / 8.0, np.arange(8), 8.0, 8, "const")], 16, (64, 64))
