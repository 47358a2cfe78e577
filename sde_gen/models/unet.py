"""A time-conditional U-Net for images in the DDPM++ / NCSN++ style (Song et al. 2021, App. H;
Ho et al. 2020)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import ArgumentTypeError, ArgumentValueError, check_choice, check_int, check_real
from .embeddings import (
    TIME_EMBEDDINGS,
    check_image,
    check_labels,
    check_time,
    label_embedding,
    make_time_embedding,
)

__all__ = ["UNet"]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``min(32, channels // 4)`` groups (as in NCSN++), lowered until it divides."""
    groups = min(32, max(1, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


def conv_layer(cin: int, cout: int, kernel: int = 3, stride: int = 1, zero: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
    _init(conv, zero)
    return conv


def linear_layer(cin: int, cout: int, zero: bool = False) -> nn.Linear:
    lin = nn.Linear(cin, cout)
    _init(lin, zero)
    return lin


def _init(layer: nn.Module, zero: bool) -> None:
    # DDPM's default_init: variance scaling (1, fan_avg, uniform), i.e. Glorot; zero bias.
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


def _down(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class ResBlock(nn.Module):
    """Residual block ``(B, cin, H, W), (B, E) -> (B, cout, H', W')`` (BigGAN-style, NCSN++'s
    ``ResnetBlockBigGAN``): GroupNorm, SiLU, [resample], conv, ``+ Linear(emb)``, GroupNorm, SiLU,
    dropout, zero-initialised conv; a 1x1 conv on the skip path when the shape changes; the sum is
    scaled by ``1/sqrt(2)`` when ``skip_rescale``. ``resample`` is ``None``, ``"up"`` (nearest, x2)
    or ``"down"`` (average pooling, /2). ``emb`` is the time embedding after its SiLU."""

    def __init__(self, cin, cout, emb_dim, dropout=0.0, skip_rescale=True, resample=None):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = conv_layer(cin, cout)
        self.emb = linear_layer(emb_dim, cout)
        self.norm2 = group_norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv_layer(cout, cout, zero=True)
        self.skip = conv_layer(cin, cout, kernel=1) if cin != cout or resample else nn.Identity()
        self.resample = {None: None, "up": _up, "down": _down}[resample]
        self.scale = 1 / math.sqrt(2) if skip_rescale else 1.0

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.conv1(h)
        e = self.emb(emb)  # (B, cout), broadcast over the spatial dimensions
        h = h + e.reshape(e.shape + (1,) * (h.ndim - 2))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) + h) * self.scale


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``H*W`` positions, ``(B, C, H, W) -> (B, C, H, W)``
    (Ho et al. 2020; NCSN++'s ``AttnBlockpp``): GroupNorm, 1x1 q/k/v, zero-initialised 1x1 output,
    residual, scaled by ``1/sqrt(2)`` when ``skip_rescale``."""

    def __init__(self, channels: int, skip_rescale: bool = True):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = conv_layer(channels, 3 * channels, kernel=1)
        self.out = conv_layer(channels, channels, kernel=1, zero=True)
        self.scale = 1 / math.sqrt(2) if skip_rescale else 1.0

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C), softmax(q k^T / sqrt(C)) v
        h = self.out(h.transpose(-1, -2).reshape(B, C, H, W))
        return (x + h) * self.scale


class Downsample(nn.Module):
    """Plain downsampling (DDPM): 3x3 convolution of stride 2, ``(B, C, H, W) -> (B, C, H/2, W/2)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv_layer(channels, channels, stride=2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Plain upsampling (DDPM): nearest x2 then a 3x3 convolution, ``(B, C, H, W) -> (B, C, 2H, 2W)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv_layer(channels, channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(_up(x))


class _Level(nn.Module):
    """The blocks of one resolution: residual blocks, their attention blocks (or none), a resampler."""

    def __init__(self, blocks, attns, resample):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)
        self.resample = resample


def time_mlp(kind: str, nf: int, emb_dim: int) -> nn.Sequential:
    """The time embedding of the U-Net and its encoder: ``kind`` features of size ``nf``, then
    Linear, SiLU, Linear to ``emb_dim`` (DDPM++)."""
    embedding = make_time_embedding(kind, nf)
    return nn.Sequential(embedding, linear_layer(nf, emb_dim), nn.SiLU(), linear_layer(emb_dim, emb_dim))


def check_channel_mult(channel_mult, image_size: int) -> tuple[int, ...]:
    """``channel_mult`` as a tuple of positive ints (one per resolution, each halving the side), or a
    refusal naming it; ``image_size`` must be divisible by ``2^(len(channel_mult) - 1)``."""
    mult = (
        tuple(channel_mult)
        if isinstance(channel_mult, Iterable) and not isinstance(channel_mult, str)
        else None
    )
    if not mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mult):
        raise ArgumentValueError(
            "channel_mult",
            channel_mult,
            f"channel_mult must be a non-empty sequence of positive ints, got {channel_mult!r}",
        )
    if image_size % 2 ** (len(mult) - 1):
        raise ArgumentValueError(
            "image_size",
            image_size,
            f"image_size must be divisible by 2^(len(channel_mult) - 1) = {2 ** (len(mult) - 1)} "
            f"for {len(mult)} resolutions, got image_size={image_size}",
        )
    return mult


def set_encoder_args(net, image_size, channels, channel_mult, num_res_blocks, attn_resolutions, dropout):
    """Check the settings a U-Net and its encoder half share and set them on ``net``: ``image_size``,
    ``channels``, ``channel_mult``, ``num_res_blocks``, ``attn_resolutions``, ``dropout``."""
    net.image_size = check_int("image_size", image_size, low=1)
    net.channels = check_int("channels", channels, low=4)
    if channels % 2:
        raise ArgumentValueError(
            "channels", channels, f"channels must be even (it is the time embedding's size), got {channels}"
        )
    net.channel_mult = mult = check_channel_mult(channel_mult, net.image_size)
    levels = len(mult)
    net.num_res_blocks = check_int("num_res_blocks", num_res_blocks, low=1)
    resolutions = [image_size // 2**i for i in range(levels)]
    attn = tuple(attn_resolutions) if isinstance(attn_resolutions, Iterable) else None
    if attn is None or any(r not in resolutions for r in attn):
        raise ArgumentValueError(
            "attn_resolutions",
            attn_resolutions,
            f"attn_resolutions must be a sequence of resolutions among {resolutions}, "
            f"got {attn_resolutions!r}",
        )
    net.attn_resolutions = attn
    net.dropout = check_real("dropout", dropout, low=0.0)
    if net.dropout >= 1:
        raise ArgumentValueError("dropout", dropout, f"dropout must be in [0, 1), got {dropout!r}")


class UNet(nn.Module):
    """``net(x, t, y=None)``: ``x`` of shape ``(B, in_channels, image_size, image_size)``, ``t`` of shape
    ``(B,)``; returns ``(B, out_channels, image_size, image_size)`` (``out_channels = in_channels``
    by default, so the output is shaped like ``x``).

    The DDPM++ architecture of Song et al. 2021 (App. H; ``NCSNpp`` with BigGAN residual blocks,
    no FIR, no progressive growing), itself the U-Net of Ho et al. 2020:

    - time: ``time_embedding`` of size ``channels``, ``Linear -> SiLU -> Linear`` to ``4 * channels``,
      added in every residual block through its own linear layer;
    - ``len(channel_mult)`` resolutions, ``image_size / 2^i``, with ``channels * channel_mult[i]``
      channels and ``num_res_blocks`` residual blocks going down, ``num_res_blocks + 1`` going up
      (each taking a skip connection); attention after each block going down, and once per level
      going up, at the resolutions in ``attn_resolutions``; ResBlock-Attention-ResBlock in the middle;
    - ``resblock_updown=True``: resampling inside residual blocks (BigGAN, Brock et al. 2019, with
      average pooling / nearest upsampling); ``False``: stride-2 conv / nearest + conv (DDPM);
    - ``skip_rescale``: residual sums scaled by ``1/sqrt(2)``;
    - the last convolution and the end of every residual branch are zero-initialised, so the
      initial output is exactly 0; other layers use DDPM's Glorot-uniform initialisation.

    ``image_size`` must be divisible by ``2^(len(channel_mult) - 1)`` (28 for MNIST allows three
    levels, 28 -> 14 -> 7). Normalisation is GroupNorm only, so samples never interact.

    ``num_classes=K`` makes it class-conditional (Dhariwal & Nichol 2021): an embedding of the
    label ``y`` ``(B,)`` of size ``4 * channels`` (``K + 1`` rows, row ``K`` the null label, also used
    when ``y`` is ``None``) is added to the time embedding before its SiLU. It is created last, so
    the other parameters are those of the unconditional network built from the same seed.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        channels: int = 128,
        channel_mult: Iterable[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Iterable[int] = (16,),
        dropout: float = 0.1,
        time_embedding: str = "sinusoidal",
        resblock_updown: bool = True,
        skip_rescale: bool = True,
        out_channels: int | None = None,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, low=1)
        self.out_channels = (
            self.in_channels if out_channels is None else check_int("out_channels", out_channels, low=1)
        )
        set_encoder_args(self, image_size, channels, channel_mult, num_res_blocks, attn_resolutions, dropout)
        self.time_embedding = check_choice("time_embedding", time_embedding, set(TIME_EMBEDDINGS))
        attn = self.attn_resolutions
        mult, levels = self.channel_mult, len(self.channel_mult)
        resolutions = [image_size // 2**i for i in range(levels)]
        for name, flag in (("resblock_updown", resblock_updown), ("skip_rescale", skip_rescale)):
            if not isinstance(flag, bool):
                raise ArgumentTypeError(name, flag, f"{name} must be a bool, got {flag!r}")
        self.resblock_updown, self.skip_rescale = resblock_updown, skip_rescale

        nf, emb_dim = channels, 4 * channels
        self.embed = time_mlp(time_embedding, nf, emb_dim)

        def res(cin, cout, resample=None):
            return ResBlock(cin, cout, emb_dim, self.dropout, skip_rescale, resample)

        def attn_or_none(ch, r):
            return AttnBlock(ch, skip_rescale) if r in attn else nn.Identity()

        self.conv_in = conv_layer(in_channels, nf)
        ch, skips = nf, [nf]
        self.down = nn.ModuleList()
        for i, (m, r) in enumerate(zip(mult, resolutions, strict=True)):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(res(ch, nf * m))
                ch = nf * m
                attns.append(attn_or_none(ch, r))
                skips.append(ch)
            resample = None
            if i < levels - 1:
                resample = res(ch, ch, "down") if resblock_updown else Downsample(ch)
                skips.append(ch)
            self.down.append(_Level(blocks, attns, resample))

        self.mid = nn.ModuleList([res(ch, ch), AttnBlock(ch, skip_rescale), res(ch, ch)])

        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(res(ch + skips.pop(), nf * mult[i]))
                ch = nf * mult[i]
            resample = None
            if i > 0:
                resample = res(ch, ch, "up") if resblock_updown else Upsample(ch)
            self.up.append(_Level(blocks, [attn_or_none(ch, resolutions[i])], resample))
        assert not skips

        self.norm_out = group_norm(ch)
        self.conv_out = conv_layer(ch, self.out_channels, zero=True)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes, low=1)
        self.label_embed = label_embedding(num_classes, emb_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_image(x, self.in_channels, self.image_size, self.conv_in.weight)
        y = check_labels(y, x, self.num_classes)
        emb = self.embed(check_time(t, x))
        if y is not None:
            emb = emb + self.label_embed(y).to(emb.dtype)
        emb = F.silu(emb)  # (B, 4 * channels), activated once for all blocks

        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = attn(block(h, emb))
                hs.append(h)
            if level.resample is not None:
                h = level.resample(h, emb)
                hs.append(h)

        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)

        for level in self.up:
            for block in level.blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            h = level.attns[0](h)
            if level.resample is not None:
                h = level.resample(h, emb)

        return self.conv_out(F.silu(self.norm_out(h)))

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, image_size={self.image_size}, channels={self.channels}, "
            f"channel_mult={self.channel_mult}, num_res_blocks={self.num_res_blocks}, "
            f"attn_resolutions={self.attn_resolutions}, time_embedding={self.time_embedding!r}"
            + (f", num_classes={self.num_classes}" if self.num_classes is not None else "")
        )

    # -- presets ----------------------------------------------------------------------------------

    @classmethod
    def digits(cls, **overrides) -> UNet:
        """1x8x8 digits: channels 32, channel_mult (1, 2, 2) (8 -> 4 -> 2), 1 block, attention at 4,
        Fourier time features, dropout 0.1: 1,259,393 parameters, 15 GFLOP per training step at batch
        128. (``channels=64, channel_mult=(1, 2), num_res_blocks=2`` has 4.1M parameters and 77 GFLOP:
        on CPU, channels at full resolution cost far more than parameters at 4x4 and 2x2.)"""
        kw = dict(
            in_channels=1,
            image_size=8,
            channels=32,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            attn_resolutions=(4,),
            dropout=0.1,
            time_embedding="fourier",
        )
        return cls(**{**kw, **overrides})

    @classmethod
    def mnist(cls, **overrides) -> UNet:
        """1x28x28 MNIST: channels 32, channel_mult (1, 2, 2) (28 -> 14 -> 7), 2 blocks, attention
        at 7, Fourier time features, dropout 0.1: 1,752,993 parameters (``channels=64``: 6,987,585)."""
        kw = dict(
            in_channels=1,
            image_size=28,
            channels=32,
            channel_mult=(1, 2, 2),
            num_res_blocks=2,
            attn_resolutions=(7,),
            dropout=0.1,
            time_embedding="fourier",
        )
        return cls(**{**kw, **overrides})

    @classmethod
    def ddpmpp_cifar10(cls, **overrides) -> UNet:
        """3x32x32, DDPM++ cont. (VP) of Song et al. 2021 (Table 3, App. H): nf 128, channel_mult
        (1, 2, 2, 2), 4 blocks, attention at 16, dropout 0.1, sinusoidal time features, BigGAN
        resampling, skip rescaling: 61,804,419 parameters, the paper's 62M (a rounded figure)."""
        kw = dict(
            in_channels=3,
            image_size=32,
            channels=128,
            channel_mult=(1, 2, 2, 2),
            num_res_blocks=4,
            attn_resolutions=(16,),
            dropout=0.1,
            time_embedding="sinusoidal",
        )
        return cls(**{**kw, **overrides})

    @classmethod
    def ddpmpp_deep_cifar10(cls, **overrides) -> UNet:
        """3x32x32, DDPM++ cont. (deep, VP) of Song et al. 2021: as :meth:`ddpmpp_cifar10` with 8
        blocks per resolution: 106,632,579 parameters, the paper's 107M (a rounded figure)."""
        return cls.ddpmpp_cifar10(**{"num_res_blocks": 8, **overrides})
