"""DPT-style dense task heads with 3-D convolutions (L4P's heads, paper-spec §3.2).

One head reads the token maps of four hook layers ``[B, C', T', h', w']`` and:

1. *reassembles* them into a multi-scale pyramid: hook ``k`` gets a 1×1×1 conv to ``layer_dims[k]`` channels
   and a resampling by ``2**resample_exponents[k]`` per axis (transposed conv up, strided conv down, identity);
   for ViT-g: (16,64,64), (16,32,32), (8,16,16), (4,8,8) at 256/512/1024/1024 channels;
2. projects every level to ``feature_dim`` (3×3×3 conv, no bias) and *fuses* coarse to fine with four
   refinement blocks (residual conv units, trilinear upsampling by ``fusion_factors``, 1×1×1 conv);
3. applies ``head1`` (3×3×3 conv to ``feature_dim/2``), upsamples trilinearly to the output size and applies
   ``head2`` (3×3×3 conv, ReLU, 1×1×1 conv to the task's channels) — L4P's order. A head configured with
   ``head2_at_output_size=False`` applies ``head2`` at the fusion path's resolution and upsamples its few output
   channels instead (the ``l4p_tiny`` head: no 3×3×3 convolution at the full output resolution).

``DenseHeads`` bundles the heads of the four L4P tasks and applies their output functions, giving the heads I/O
layout of ``base.py``: depth in metres (``exp``), backward flow in pixels, dynamic-mask *logits*, camera rays.
L4P gives every task its own head; ``DenseHeadsConfig.shared_dense`` makes depth, flow and dynamic mask the
channels of one head (one trunk computed once; ``l4p_tiny``), the camera-ray head stays separate.
``FrozenHeads`` is the same module frozen for the student's L_ED (no parameter trains, always in eval mode,
gradients still flow to its *inputs*).

Speed (L_ED runs these heads forward and backward in every P4D step): activations are kept in channels-last
memory (oneDNN's fast layout on CPU), 1×1×1 convolutions run as matrix products over the channel axis
(:func:`pointwise_conv`), and each refinement block applies its 1×1×1 ``out_conv`` before its upsampling. Same
value as L4P's order up to float rounding (``tests/test_p4d_fast_path.py`` keeps the previous computation as
the reference).

Parameter names inside one head follow L4P's ``DPTOutputAdapter_fix`` (``act_postprocess.{k}.{0,1}``,
``scratch.layer_rn.{k}``, ``scratch.refinenet{1..4}.{resConfUnit1,resConfUnit2}.{conv1,conv2}``,
``scratch.refinenet{1..4}.out_conv``, ``head1.0``, ``head2.{0,2}``); see ``l4p.py`` for the full mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]

#: channels produced by each task's head
TASK_CHANNELS: dict[str, int] = {"depth": 1, "flow_2d_backward": 2, "dyn_mask": 1, "camray": 6}


@dataclass(frozen=True)
class DPTHeadConfig:
    """Geometry of one DPT head.

    Attributes:
        token_dim: width ``C'`` of the encoder tokens.
        feature_dim: width of the fusion path (L4P: 256).
        layer_dims: widths of the four reassembled levels (L4P: 256, 512, 1024, 1024).
        last_dim: width inside ``head2`` (L4P: 128).
        resample_exponents: per hook, ``log2`` of the (T, H, W) resampling factor; all >= 0 or all <= 0.
        fusion_factors: per refinement block 1..4, the (T, H, W) trilinear upsampling factor.
        head2_at_output_size: L4P's order (``True``): ``head1`` → trilinear upsampling to the output size →
            ``head2``. ``False``: ``head1`` → ``head2`` at the fusion path's resolution → trilinear upsampling of the
            ``out_channels`` raw outputs to the output size (``head2``'s 3×3×3 conv then costs
            ``1/(f_T·f_H·f_W)`` of L4P's for an upsampling by ``f``).
    """

    token_dim: int = 1408
    feature_dim: int = 256
    layer_dims: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    last_dim: int = 128
    resample_exponents: tuple[Triple, Triple, Triple, Triple] = ((1, 2, 2), (1, 1, 1), (0, 0, 0), (-1, -1, -1))
    fusion_factors: tuple[Triple, Triple, Triple, Triple] = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))
    head2_at_output_size: bool = True


#: L4P's camera-ray head keeps the token resolution: (16, 16, 16) for ViT-g
CAMRAY_RESAMPLE: tuple[Triple, Triple, Triple, Triple] = ((1, 0, 0), (1, 0, 0), (0, 0, 0), (-1, -1, -1))
CAMRAY_FUSION: tuple[Triple, Triple, Triple, Triple] = ((1, 1, 1), (1, 1, 1), (2, 1, 1), (2, 2, 2))


def _resample(channels: int, exponents: Triple) -> nn.Module:
    if all(e == 0 for e in exponents):
        return nn.Identity()
    if all(e >= 0 for e in exponents):
        stride = tuple(2**e for e in exponents)
        return nn.ConvTranspose3d(channels, channels, kernel_size=stride, stride=stride)
    if all(e <= 0 for e in exponents):
        stride = tuple(2 ** (-e) for e in exponents)
        kernel = tuple((s // 2) * 2 + 1 for s in stride)
        return nn.Conv3d(channels, channels, kernel_size=kernel, stride=stride, padding=tuple(s // 2 for s in stride))
    raise ValueError(f"resample exponents {exponents} mix up- and down-sampling")


def pointwise_conv(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A 1×1×1 ``conv`` as a matrix product over the channel axis: float ``[B, C_in, T, H, W]`` →
    ``[B, C_out, T, H, W]``, channels-last memory when ``x`` is (PyTorch's CPU 1×1×1 path copies the input to
    channels-first and back). Same value up to float rounding."""
    if conv.kernel_size != (1, 1, 1) or conv.stride != (1, 1, 1) or conv.groups != 1 or conv.padding != (0, 0, 0):
        return conv(x)
    return F.linear(x.permute(0, 2, 3, 4, 1), conv.weight.flatten(1), conv.bias).permute(0, 4, 1, 2, 3)


class ResidualConvUnit(nn.Module):
    """``x + conv(relu(conv(relu(x))))`` with 3×3×3 convs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Adds a residual-refined skip level to the coarser path, refines, upsamples, projects.

    The coarsest block (``refinenet4``) has no skip input and therefore no ``resConfUnit1`` (L4P's checkpoint
    carries one there that its forward never uses; leaving it out gives the paper's 1,337 M parameters).
    """

    def __init__(self, channels: int, factor: Triple, has_skip: bool = True) -> None:
        super().__init__()
        self.factor = factor
        if has_skip:
            self.resConfUnit1 = ResidualConvUnit(channels)  # noqa: N815 - L4P parameter name
        self.resConfUnit2 = ResidualConvUnit(channels)  # noqa: N815 - L4P parameter name
        self.out_conv = nn.Conv3d(channels, channels, 1)

    def forward(self, path: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, F, t, h, w]`` (``skip`` the same) → ``[B, F, t·f_T, h·f_H, w·f_W]``.

        The 1×1×1 ``out_conv`` runs *before* the trilinear upsampling (L4P: after). Both are linear and act on
        different axes, and interpolation weights sum to 1 so the bias commutes too: same value up to float
        rounding, at ``1/(f_T·f_H·f_W)`` of the cost.
        """
        if skip is not None:
            if not hasattr(self, "resConfUnit1"):
                raise ValueError("this fusion block takes no skip input")
            path = path + self.resConfUnit1(skip)
        path = pointwise_conv(self.out_conv, self.resConfUnit2(path))
        if self.factor != (1, 1, 1):
            path = F.interpolate(path, scale_factor=self.factor, mode="trilinear", align_corners=True)
        return path


class _Scratch(nn.Module):
    def __init__(self, cfg: DPTHeadConfig) -> None:
        super().__init__()
        self.layer_rn = nn.ModuleList(nn.Conv3d(d, cfg.feature_dim, 3, padding=1, bias=False) for d in cfg.layer_dims)
        self.refinenet1 = FusionBlock(cfg.feature_dim, cfg.fusion_factors[0])
        self.refinenet2 = FusionBlock(cfg.feature_dim, cfg.fusion_factors[1])
        self.refinenet3 = FusionBlock(cfg.feature_dim, cfg.fusion_factors[2])
        self.refinenet4 = FusionBlock(cfg.feature_dim, cfg.fusion_factors[3], has_skip=False)


class DPTHead(nn.Module):
    """One dense head: four hook maps ``[B, C', T', h', w']`` -> raw output ``[B, out_channels, *output_size]``."""

    def __init__(self, cfg: DPTHeadConfig, out_channels: int, output_size: Triple) -> None:
        super().__init__()
        self.output_size = output_size
        self.head2_at_output_size = cfg.head2_at_output_size
        self.act_postprocess = nn.ModuleList(
            nn.Sequential(nn.Conv3d(cfg.token_dim, d, 1), _resample(d, e))
            for d, e in zip(cfg.layer_dims, cfg.resample_exponents, strict=True)
        )
        self.scratch = _Scratch(cfg)
        half = cfg.feature_dim // 2
        self.head1 = nn.Sequential(nn.Conv3d(cfg.feature_dim, half, 3, padding=1))
        self.head2 = nn.Sequential(
            nn.Conv3d(half, cfg.last_dim, 3, padding=1), nn.ReLU(True), nn.Conv3d(cfg.last_dim, out_channels, 1)
        )

    def forward(self, hooks: list[torch.Tensor]) -> torch.Tensor:
        if len(hooks) != 4:
            raise ValueError(f"a DPT head reads exactly 4 hook layers, got {len(hooks)}")
        hooks = [h.contiguous(memory_format=torch.channels_last_3d) for h in hooks]  # no-op from DenseHeads
        levels = []
        for post, rn, h in zip(self.act_postprocess, self.scratch.layer_rn, hooks, strict=True):
            assert isinstance(post, nn.Sequential) and isinstance(post[0], nn.Conv3d)
            levels.append(rn(post[1](pointwise_conv(post[0], h))))
        s = self.scratch
        t2, h2, w2 = levels[2].shape[2:]
        path = s.refinenet4(levels[3])[:, :, :t2, :h2, :w2]
        path = s.refinenet3(path, levels[2])
        path = s.refinenet2(path, levels[1])
        path = s.refinenet1(path, levels[0])
        out = self.head1(path)
        if self.head2_at_output_size:
            out = self._to_output_size(out)
        last = self.head2[2]
        assert isinstance(last, nn.Conv3d)
        out = pointwise_conv(last, self.head2[1](self.head2[0](out)))
        return out if self.head2_at_output_size else self._to_output_size(out)

    def _to_output_size(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, t, h, w]`` → ``[B, C, *output_size]`` (trilinear, corners aligned; identity at that size)."""
        if tuple(x.shape[2:]) == self.output_size:
            return x
        return F.interpolate(x, size=self.output_size, mode="trilinear", align_corners=True)


@dataclass(frozen=True)
class DenseHeadsConfig:
    """The task heads of one expert.

    Attributes:
        dense: geometry of the depth / flow / dyn_mask heads.
        camray: geometry of the camera-ray head.
        dense_size: ``(T, H, W)`` output of the depth / flow / dyn_mask heads.
        camray_size: ``(Tc, hc, wc)`` output of the camera-ray head.
        tasks: which heads exist (subset of ``TASK_CHANNELS``).
        shared_dense: ``False`` (L4P): one head per task. ``True``: the depth / flow / dyn_mask tasks present are
            the output channels of ONE head (module ``task_heads.dense``, channels in ``tasks`` order), so their
            trunk runs once instead of once per task; the camera-ray head stays its own.
    """

    dense: DPTHeadConfig = field(default_factory=DPTHeadConfig)
    camray: DPTHeadConfig = field(
        default_factory=lambda: DPTHeadConfig(resample_exponents=CAMRAY_RESAMPLE, fusion_factors=CAMRAY_FUSION)
    )
    dense_size: Triple = (16, 224, 224)
    camray_size: Triple = (16, 16, 16)
    tasks: tuple[str, ...] = ("depth", "flow_2d_backward", "dyn_mask", "camray")
    shared_dense: bool = False


#: module name of the one head of all dense tasks when ``DenseHeadsConfig.shared_dense``
SHARED_DENSE = "dense"


def head_outputs(cfg: DenseHeadsConfig) -> dict[str, tuple[str, slice]]:
    """For every configured task: the name of the head (in ``DenseHeads.task_heads``) that predicts it and the
    channels of that head's raw output ``[B, C, ...]`` that are the task's."""
    out: dict[str, tuple[str, slice]] = {}
    start = 0
    for task in cfg.tasks:
        width = TASK_CHANNELS[task]
        if cfg.shared_dense and task != "camray":
            out[task] = (SHARED_DENSE, slice(start, start + width))
            start += width
        else:
            out[task] = (task, slice(0, width))
    return out


class DenseHeads(nn.Module):
    """All task heads; ``forward`` maps hook latents to the heads I/O layout of ``base.py``.

    Input ``latents``: float ``[B, K=4, T', h', w', C']``. Output dict (keys = configured tasks):
    ``depth`` ``[B, T, H, W]`` metres (``exp`` of the raw output, > 0); ``flow_2d_backward`` ``[B, T, H, W, 2]``
    pixels at the output resolution; ``dyn_mask`` ``[B, T, H, W]`` logits; ``camray`` ``[B, Tc, hc, wc, 6]``.
    """

    def __init__(self, cfg: DenseHeadsConfig) -> None:
        super().__init__()
        unknown = set(cfg.tasks) - set(TASK_CHANNELS)
        if unknown:
            raise ValueError(f"unknown head tasks {sorted(unknown)}; known: {sorted(TASK_CHANNELS)}")
        self.cfg = cfg
        self.outputs = head_outputs(cfg)
        widths: dict[str, int] = {}
        for name, channels in self.outputs.values():
            widths[name] = max(widths.get(name, 0), channels.stop)
        self.task_heads = nn.ModuleDict(
            {
                name: DPTHead(
                    cfg.camray if name == "camray" else cfg.dense,
                    width,
                    cfg.camray_size if name == "camray" else cfg.dense_size,
                )
                for name, width in widths.items()
            }
        )

    def output_conv(self, task: str) -> tuple[nn.Conv3d, slice]:
        """The last 1×1×1 conv of the head that predicts ``task`` and the output channels that are the task's."""
        name, channels = self.outputs[task]
        head2 = self.task_heads[name].get_submodule("head2")
        assert isinstance(head2, nn.Sequential)
        last = head2[-1]
        assert isinstance(last, nn.Conv3d)
        return last, channels

    def forward(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        if latents.ndim != 6 or latents.shape[1] != 4:
            raise ValueError(f"latents must be [B, 4, T', h', w', C'], got {list(latents.shape)}")
        # 4 x [B, C', T', h', w'] in channels-last memory (oneDNN's fast layout; same values)
        hooks = [h.permute(0, 4, 1, 2, 3).contiguous(memory_format=torch.channels_last_3d) for h in latents.unbind(1)]
        raws = {name: head(hooks) for name, head in self.task_heads.items()}  # each [B, C, T, H, W]
        out: dict[str, torch.Tensor] = {}
        for task, (name, channels) in self.outputs.items():
            raw = raws[name][:, channels]
            if task == "depth":
                out[task] = torch.exp(raw[:, 0])
            elif task == "dyn_mask":
                out[task] = raw[:, 0]
            else:
                out[task] = raw.permute(0, 2, 3, 4, 1)
        return out


class FrozenHeads(nn.Module):
    """Frozen ``DenseHeads`` for the student's L_ED: differentiable w.r.t. ``latents``, never trained.

    Same I/O as :class:`DenseHeads`. All parameters have ``requires_grad=False`` and the module stays in eval
    mode even when a parent calls ``.train()``.
    """

    def __init__(self, heads: DenseHeads) -> None:
        super().__init__()
        self.inner = heads
        for p in self.inner.parameters():
            p.requires_grad_(False)
        super().train(False)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.inner.cfg.tasks)

    def train(self, mode: bool = True) -> FrozenHeads:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def forward(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.inner(latents)

    def load_heads_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load weights named as in :class:`DenseHeads` (``task_heads.<task>.…``)."""
        self.inner.load_state_dict(state)
