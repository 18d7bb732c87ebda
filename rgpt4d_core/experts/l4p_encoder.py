"""VideoMAE(v2)-style video ViT, the encoder E_4D of L4P (paper-spec §3.1).

A clip ``[B, 3, T, H, W]`` is cut into tubelets of ``tubelet × patch × patch`` pixels by one ``Conv3d``, giving
``T' × h' × w'`` tokens (``T' = T / tubelet``, ``h' = H / patch``, ``w' = W / patch``; token order ``(t, h, w)``,
row-major). A fixed 1-D sinusoidal table over the flattened token index is added, then ``depth`` pre-LN
transformer blocks (attention with a query and a value bias but no key bias, as VideoMAEv2; GELU MLP) run.
The output of *every* block is kept: ``features[0]`` is the embedded patches, ``features[i]`` the output of
block ``i`` (1-based), and the last entry additionally goes through the final LayerNorm — exactly L4P's
41-entry list for ViT-g. Dense heads and latent distillation read ``features[h]`` for the hook layers ``h``.

Parameter names follow VideoMAEv2 / L4P (``patch_embed.proj``, ``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv``,
``blocks.{i}.attn.q_bias``, ``blocks.{i}.attn.v_bias``, ``blocks.{i}.attn.proj``, ``blocks.{i}.norm2``,
``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2``, ``norm``); the positional table is a non-persistent buffer, as
in VideoMAEv2 where it is not part of the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VideoViTConfig:
    """Shape of the video ViT.

    Attributes:
        num_frames: frames per clip ``T`` (a multiple of ``tubelet_size``).
        image_size: ``(H, W)`` pixels of the (resized) input frames (multiples of ``patch_size``).
        patch_size: spatial patch side in pixels.
        tubelet_size: frames per temporal token.
        width: token width ``C'``.
        depth: number of transformer blocks.
        num_heads: attention heads (``width`` divisible by it).
        mlp_ratio: MLP hidden width / ``width`` (ViT-g: 48/11, i.e. 6144 for 1408).
        ln_eps: LayerNorm epsilon.
    """

    num_frames: int = 16
    image_size: tuple[int, int] = (224, 224)
    patch_size: int = 14
    tubelet_size: int = 2
    width: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_ratio: float = 48 / 11
    ln_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.num_frames % self.tubelet_size:
            raise ValueError(f"num_frames={self.num_frames} is not a multiple of tubelet_size={self.tubelet_size}")
        for side in self.image_size:
            if side % self.patch_size:
                raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if self.width % self.num_heads:
            raise ValueError(f"width={self.width} is not divisible by num_heads={self.num_heads}")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid ``(T', h', w')``."""
        return (
            self.num_frames // self.tubelet_size,
            self.image_size[0] // self.patch_size,
            self.image_size[1] // self.patch_size,
        )

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def mlp_hidden(self) -> int:
        return round(self.width * self.mlp_ratio)


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal embedding, float32 ``[num_positions, dim]``: even channels sin, odd channels cos.

    Channel pair ``(2i, 2i+1)`` uses the angle ``pos / 10000^(2i/dim)``.
    """
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    pair_index = torch.arange(dim, dtype=torch.float64) // 2
    angle = pos / torch.pow(10000.0, 2.0 * pair_index / dim)[None, :]
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)


class PatchEmbed(nn.Module):
    """Tubelet embedding: ``[B, 3, T, H, W]`` -> tokens ``[B, T'·h'·w', C']`` in ``(t, h, w)`` order."""

    def __init__(self, cfg: VideoViTConfig) -> None:
        super().__init__()
        kernel = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(3, cfg.width, kernel_size=kernel, stride=kernel)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.proj(video).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a query and a value bias (no key bias), VideoMAEv2 style."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, N, C]`` -> ``[B, N, C]``."""
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, cfg: VideoViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.attn = Attention(cfg.width, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VideoViT(nn.Module):
    """The video encoder. ``forward`` returns the token maps of every layer (see module docstring)."""

    def __init__(self, cfg: VideoViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.register_buffer("pos_embed", sinusoid_table(cfg.num_tokens, cfg.width)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.reset_parameters()

    def reset_buffers(self, device: torch.device | str = "cpu") -> None:
        """(Re)create the non-persistent positional table on ``device`` (after loading a ``meta`` model)."""
        self.pos_embed = sinusoid_table(self.cfg.num_tokens, self.cfg.width)[None].to(device)

    def reset_parameters(self) -> None:
        """Xavier-uniform linear weights, zero biases, unit LayerNorms (VideoMAEv2's initialisation)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:
            assert isinstance(blk, Block)
            nn.init.zeros_(blk.attn.q_bias)
            nn.init.zeros_(blk.attn.v_bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.patch_embed.proj.bias is not None:
            nn.init.zeros_(self.patch_embed.proj.bias)

    def forward(self, video: torch.Tensor, up_to: int | None = None) -> list[torch.Tensor]:
        """Token maps of every layer.

        Args:
            video: float ``[B, 3, T, H, W]``, ImageNet-normalised RGB, ``T``/``(H, W)`` as in the config.
            up_to: stop after this block (``features`` then has ``up_to + 1`` entries); ``None`` runs all.
                Saves compute when only the hooks are needed (L4P's last hook is 36 of 40).

        Returns:
            ``depth + 1`` (or ``up_to + 1``) float tensors ``[B, T'·h'·w', C']``; the entry of the final block
            is passed through the final LayerNorm (as in L4P).
        """
        cfg = self.cfg
        expected = (3, cfg.num_frames, *cfg.image_size)
        if tuple(video.shape[1:]) != expected:
            raise ValueError(f"video must be [B, {', '.join(map(str, expected))}], got {list(video.shape)}")
        last = cfg.depth if up_to is None else up_to
        if not 0 <= last <= cfg.depth:
            raise ValueError(f"up_to={up_to} outside [0, {cfg.depth}]")
        x = self.patch_embed(video) + self.pos_embed.to(video.dtype)
        features = [x]
        for blk in self.blocks[:last]:
            x = blk(x)
            features.append(x)
        if last == cfg.depth:
            features[-1] = self.norm(features[-1])
        return features


def num_parameters(module: nn.Module) -> int:
    """Number of (unique) parameters; works on ``meta`` modules."""
    return sum(p.numel() for p in module.parameters())


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """``[B, T'·h'·w', C]`` -> ``[B, T', h', w', C]`` (token order ``(t, h, w)``)."""
    b, n, c = tokens.shape
    if n != math.prod(grid):
        raise ValueError(f"{n} tokens do not fill the grid {grid}")
    return tokens.reshape(b, *grid, c)
