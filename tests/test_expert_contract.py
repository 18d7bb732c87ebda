"""The expert contract (``base.py``) checked over EVERY registered expert on real synthetic mp4 clips.

Shapes follow the spec, arrays are float32, units hold (depth > 0 metres where valid, mask a probability, flow
of frame 0 zero, unit ray directions), results are deterministic and independent of batching, and experts with
latents ship heads that map those latents to the spec's dense shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rgpt4d_core.experts.base import DENSE_TARGETS, LATENTS, Expert, ExpertSpec, ExpertTargets
from rgpt4d_core.experts.registry import ExpertConfig, build_expert, known_experts
from rgpt4d_core.types import Clip
from tests.expert_testkit import decoded_clip, small_world, write_world

#: how the contract test builds each registered expert (a new expert must add itself here)
CONFIGS = {
    "l4p": ExpertConfig(name="l4p", preset="l4p_tiny", device="cpu", batch_size=2),
    "oracle": ExpertConfig(name="oracle", preset="res32", device="cpu"),
    "classical": ExpertConfig(name="classical", preset="res64", device="cpu"),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    root = tmp_path_factory.mktemp("world")
    return [decoded_clip(p) for p in write_world(str(root), small_world(3))]


def test_every_expert_the_package_registers_has_a_contract_config() -> None:
    # Asked of a fresh interpreter: this test session's registry may also hold experts that test plugins register
    # (tests/precompute_testkit.py), and which of those are imported first depends on collection order.
    import subprocess
    import sys

    code = "from rgpt4d_core.experts.registry import known_experts; print(','.join(known_experts()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert set(out.split(",")) == set(CONFIGS), f"registered {out}; contract configs {sorted(CONFIGS)}"
    assert set(CONFIGS) <= set(known_experts())


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def expert_and_out(request: pytest.FixtureRequest, clips: list[Clip]) -> tuple[Expert, list[ExpertTargets]]:
    name = request.param
    expert = build_expert(CONFIGS[name])
    return expert, expert.encode(clips)


def test_spec_is_consistent_and_serialisable(expert_and_out: tuple[Expert, list[ExpertTargets]]) -> None:
    spec = expert_and_out[0].spec
    assert ExpertSpec.from_dict(spec.to_dict()) == spec
    assert set(spec.targets) <= {LATENTS, *DENSE_TARGETS} and spec.targets
    assert spec.num_frames == 16
    if spec.provides(LATENTS):
        assert len(spec.hook_layers) == 4 and spec.latent_dim > 0 and min(spec.latent_grid) > 0
    else:
        assert spec.hook_layers == () and spec.latent_dim == 0


def test_targets_have_the_spec_shapes_dtypes_and_units(
    expert_and_out: tuple[Expert, list[ExpertTargets]], clips: list[Clip]
) -> None:
    expert, outs = expert_and_out
    spec = expert.spec
    assert len(outs) == len(clips)
    t, h, w = spec.dense_shape
    for out in outs:
        assert set(out.available()) == set(spec.targets)
        for name in out.available():
            arr = getattr(out, name)
            assert arr.dtype == np.float32 and np.isfinite(arr).all(), name
        if out.latents is not None:
            assert out.latents.shape == (4, *spec.latent_grid, spec.latent_dim)
        if out.depth is not None:
            assert out.depth.shape == (t, h, w)
            assert (out.depth >= 0).all() and (out.depth > 0).mean() > 0.95  # metres; 0 only where invalid
        if out.flow_2d_backward is not None:
            assert out.flow_2d_backward.shape == (t, h, w, 2)
            assert not out.flow_2d_backward[0].any()  # frame 0 has no previous frame
            assert np.abs(out.flow_2d_backward).max() < max(h, w)  # pixels at the output resolution
        if out.dyn_mask is not None:
            assert out.dyn_mask.shape == (t, h, w)
            assert out.dyn_mask.min() >= 0.0 and out.dyn_mask.max() <= 1.0
        if out.camray is not None:
            assert out.camray.shape == (*spec.camray_shape, 6)
            if spec.name == "oracle":  # learned rays need not be normalised; the exact ones are
                np.testing.assert_allclose(np.linalg.norm(out.camray[..., :3], axis=-1), 1.0, atol=1e-5)


def test_encode_is_deterministic_and_independent_of_batching(
    expert_and_out: tuple[Expert, list[ExpertTargets]], clips: list[Clip]
) -> None:
    expert, outs = expert_and_out
    again = [expert.encode([c])[0] for c in clips[:2]]
    for a, b in zip(outs[:2], again, strict=True):
        for name in a.available():
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-5, err_msg=name)


def test_heads_map_latents_to_the_dense_layout(expert_and_out: tuple[Expert, list[ExpertTargets]]) -> None:
    expert, outs = expert_and_out
    spec = expert.spec
    if not spec.provides(LATENTS):
        assert expert.heads is None
        return
    heads = expert.heads
    assert heads is not None
    lat = outs[0].latents
    assert lat is not None
    with torch.no_grad():
        pred = heads(torch.from_numpy(lat)[None])
    assert set(pred) == set(spec.targets) - {LATENTS}
    depth = outs[0].depth
    assert depth is not None
    np.testing.assert_allclose(pred["depth"][0].numpy(), depth, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(torch.sigmoid(pred["dyn_mask"][0]).numpy(), outs[0].dyn_mask, rtol=1e-4, atol=1e-5)


def test_wrong_frame_count_is_refused_naming_the_clip(
    expert_and_out: tuple[Expert, list[ExpertTargets]], clips: list[Clip]
) -> None:
    c = clips[0]
    short = Clip(c.frames[:8], c.timestamps_s[:8], c.frame_indices[:8], c.fps, c.num_source_frames, c.uri)
    with pytest.raises(ValueError, match=Path(c.uri).name):
        expert_and_out[0].encode([short])
