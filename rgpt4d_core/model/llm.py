"""The language model: a Qwen2 causal LM from transformers, built from sizes or loaded from a local directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import Qwen2Config, Qwen2ForCausalLM


@dataclass(frozen=True)
class LLMConfig:
    """Qwen2 sizes (defaults: Qwen2-7B as in NVILA-Lite-8B, LM head over VILA's 151,651-token vocabulary).

    Attributes:
        vocab_size: rows of the input embedding and LM head (must cover every token id incl. media tokens).
        hidden_size: model width ``D_llm``.
        intermediate_size: SwiGLU MLP width.
        num_layers: decoder blocks.
        num_heads: query heads.
        num_kv_heads: key/value heads (GQA).
        max_position_embeddings: longest sequence RoPE is configured for.
        rope_theta: RoPE base.
        rms_norm_eps: RMSNorm epsilon.
        tie_word_embeddings: share input embedding and LM head (Qwen2-7B: no).
        attn_implementation: transformers attention backend (``"sdpa"``, ``"eager"``, ``"flash_attention_2"``).
        initializer_range: std of the normal init of every linear and embedding weight (Qwen2: 0.02, made for
            widths in the thousands; a pretrained checkpoint overwrites it).
    """

    vocab_size: int = 151_651
    hidden_size: int = 3584
    intermediate_size: int = 18_944
    num_layers: int = 28
    num_heads: int = 28
    num_kv_heads: int = 4
    max_position_embeddings: int = 32_768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attn_implementation: str = "sdpa"
    initializer_range: float = 0.02

    def to_hf(self) -> Qwen2Config:
        cfg = Qwen2Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings,
            initializer_range=self.initializer_range,
        )
        cfg._attn_implementation = self.attn_implementation
        return cfg

    @classmethod
    def from_hf(cls, hf: Qwen2Config, attn_implementation: str = "sdpa") -> LLMConfig:
        rope = getattr(hf, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(hf, "rope_theta", 1_000_000.0))
        return cls(
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            intermediate_size=hf.intermediate_size,
            num_layers=hf.num_hidden_layers,
            num_heads=hf.num_attention_heads,
            num_kv_heads=hf.num_key_value_heads or hf.num_attention_heads,
            max_position_embeddings=hf.max_position_embeddings,
            rope_theta=float(theta),
            rms_norm_eps=hf.rms_norm_eps,
            tie_word_embeddings=bool(hf.tie_word_embeddings),
            attn_implementation=attn_implementation,
            initializer_range=float(getattr(hf, "initializer_range", 0.02)),
        )


def build_llm(cfg: LLMConfig) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM (use under ``torch.device("meta")`` for shape-only builds)."""
    return Qwen2ForCausalLM(cfg.to_hf())


def load_llm(path: str | Path, attn_implementation: str = "sdpa") -> Qwen2ForCausalLM:
    """Load a Qwen2 causal LM saved with ``save_pretrained`` (config.json + (sharded) safetensors) from ``path``."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no LLM config.json in {path}")
    return Qwen2ForCausalLM.from_pretrained(
        str(path), local_files_only=True, use_safetensors=True, attn_implementation=attn_implementation
    )
