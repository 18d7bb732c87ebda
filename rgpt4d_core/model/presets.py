"""Named student configurations.

* ``nvila_lite_8b``: SigLIP-so400m patch14 @448 (1152 wide, 27 layers, layer −2) → 3×3 projector → Qwen2-7B
  (28 layers, 3584 wide, 28 heads / 4 KV heads, FFN 18,944, LM head over 151,651 ids). 121 tokens per frame,
  ≈8.09 B parameters (paper-spec §1.1). Token ids of the Qwen2 + VILA vocabulary.
* ``tiny``: the same architecture at toy sizes for CPU tests and the demo: 64×64 frames, patch 8 → 8×8 vision
  tokens → (pad to 9×9) 3×3 = 9 tokens per frame, LLM width 128 (2 layers), a 2,048-row vocabulary covering the
  deterministic ``tiny`` tokenizer (ids: pad 0, eos 2, ``<image>`` 3, ``<video>`` 4, ``"\n"`` 31); with the region-box
  embedding and the region tracks (``model/region_boxes.py``, ``model/region_tracks.py``), which the paper preset
  does not have.

Both presets put the ``"\n"`` embedding after each frame's tokens (VILA's video encoder), so a video of ``T``
frames takes ``T·(n+1)`` positions; the index map of :mod:`fusion` skips the separators.
"""

from __future__ import annotations

from collections.abc import Callable

from rgpt4d_core.model.fusion import FusionConfig
from rgpt4d_core.model.llm import LLMConfig
from rgpt4d_core.model.perception_decoder import DecoderConfig
from rgpt4d_core.model.region_tracks import RegionTrackConfig
from rgpt4d_core.model.student import StudentConfig, TokenConfig
from rgpt4d_core.model.vision import VisionConfig


def nvila_lite_8b() -> StudentConfig:
    """NVILA-Lite-8B + TPE (the 4D-RGPT-8B student); each frame's 121 tokens are followed by the ``"\n"``
    embedding as in VILA's default video encoder (paper-spec §1.2)."""
    return StudentConfig(
        vision=VisionConfig(),
        llm=LLMConfig(),
        fusion=FusionConfig(frame_separator=True),
        tokens=TokenConfig(),
        tokenizer="qwen2",
    )


def tiny() -> StudentConfig:
    """A ~1 M-parameter student with the real architecture; one CPU train step in milliseconds."""
    return StudentConfig(
        vision=VisionConfig(
            image_size=64, patch_size=8, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2
        ),
        llm=LLMConfig(
            vocab_size=2048,
            hidden_size=128,
            intermediate_size=256,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            max_position_embeddings=1024,
            rope_theta=10_000.0,
        ),
        tokens=TokenConfig(
            video_token_id=4, image_token_id=3, pad_token_id=0, eos_token_id=2, frame_separator_token_id=31
        ),
        fusion=FusionConfig(frame_separator=True),
        decoder=DecoderConfig(mlp_hidden=128),
        tokenizer="tiny",
        # a from-scratch 2-block LM does not learn to bind <obj_k> to its SoM mark, nor to find a region's motion
        # among the visual tokens; the region-box embedding and the region tracks hand both to the region's
        # references and the answer (docs/results.md, ninth round)
        region_boxes=True,
        region_tracks=RegionTrackConfig(enabled=True),
    )


#: preset name → config builder
PRESETS: dict[str, Callable[[], StudentConfig]] = {"tiny": tiny, "nvila_lite_8b": nvila_lite_8b}


def student_config(name: str) -> StudentConfig:
    """The preset ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown student preset {name!r}; known: {sorted(PRESETS)}") from None
