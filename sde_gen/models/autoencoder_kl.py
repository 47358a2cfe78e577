"""A small convolutional KL-regularised autoencoder (Rombach et al. 2022, the "KL-f" autoencoders of
latent diffusion, Sec. 3.1 and App. G), sized for CPU training on digits and MNIST.

The encoder maps an image ``(C, H, W)`` to the mean and log-variance of a diagonal Gaussian
``q(z | x)`` on latents ``(latent_channels, H / f, W / f)``, ``f = 2^(len(channel_mult) - 1)``; the
decoder maps a latent back to the mean of ``p(x | z) = N(decode(z), exp(2 log_sigma) I)``, with
``log_sigma`` learned with the rest (:class:`~sde_gen.AutoencoderLoss` is its negative ELBO, with
the KL term weighted).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import ArgumentValueError, check_int
from .autoencoder import Autoencoder
from .unet import Downsample, Upsample, check_channel_mult, conv_layer, group_norm

__all__ = ["AutoencoderKL"]

#: The range ``logvar`` is clamped to (as in latent diffusion's diagonal Gaussian): ``exp(-30)``
#: keeps the encoder's entropy finite, ``exp(20)`` keeps a draw from overflowing.
LOGVAR_RANGE = (-30.0, 20.0)


class _Block(nn.Module):
    """Residual block ``(B, cin, H, W) -> (B, cout, H, W)``: ``skip(x) + conv(SiLU(GN(conv(SiLU(GN(x))))))``,
    the last convolution zero-initialised (the block starts as its skip path); a 1x1 convolution on
    the skip path when ``cin != cout``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = conv_layer(cin, cout)
        self.norm2 = group_norm(cout)
        self.conv2 = conv_layer(cout, cout, zero=True)
        self.skip = conv_layer(cin, cout, kernel=1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class AutoencoderKL(Autoencoder):
    """``encode(x) -> (mean, logvar)``, each ``(B, latent_channels, image_size / f, image_size / f)``;
    ``decode(z) -> (B, in_channels, image_size, image_size)``, the decoder's mean (no squashing: the
    data are in ``[-1, 1]`` and the Gaussian decoder has its own scale ``exp(log_sigma)``).

    Encoder: a 3x3 convolution to ``channels * channel_mult[0]``; per level ``num_res_blocks``
    residual blocks (GroupNorm, SiLU, 3x3 convolution, twice) to ``channels * channel_mult[i]`` and
    a stride-2 3x3 convolution between levels; GroupNorm, SiLU and a 3x3 convolution to
    ``2 * latent_channels`` (the mean, then ``logvar`` clamped to ``[-30, 20]``). The decoder mirrors
    it: a 3x3 convolution from the latent, the levels in reverse with nearest x2 upsampling and a
    3x3 convolution between them, GroupNorm, SiLU and a 3x3 convolution to ``in_channels``.
    GroupNorm only: samples never interact. About 0.4M parameters with the defaults (28x28 -> 7x7).

    Args:
        in_channels: image channels.
        image_size: the images' side; divisible by ``f = 2^(len(channel_mult) - 1)``.
        latent_channels: channels of a latent.
        channels: the base width; level ``i`` has ``channels * channel_mult[i]`` channels.
        channel_mult: one multiplier per resolution.
        num_res_blocks: residual blocks per level, in the encoder and in the decoder.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        latent_channels: int = 4,
        channels: int = 32,
        channel_mult: Iterable[int] = (1, 2, 2),
        num_res_blocks: int = 1,
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, low=1)
        self.image_size = check_int("image_size", image_size, low=1)
        self.latent_channels = check_int("latent_channels", latent_channels, low=1)
        self.channels = check_int("channels", channels, low=1)
        self.channel_mult = mult = check_channel_mult(channel_mult, self.image_size)
        self.factor = 2 ** (len(mult) - 1)
        self.num_res_blocks = check_int("num_res_blocks", num_res_blocks, low=1)
        widths = [channels * m for m in mult]

        # Encoder: conv_in, the levels going down, the moments of q(z | x).
        self.enc_in = conv_layer(in_channels, widths[0])
        enc, ch = [], widths[0]
        for i, width in enumerate(widths):
            for _ in range(num_res_blocks):
                enc.append(_Block(ch, width))
                ch = width
            if i < len(widths) - 1:
                enc.append(Downsample(ch))
        self.encoder = nn.Sequential(*enc)
        self.enc_norm = group_norm(ch)
        self.enc_out = conv_layer(ch, 2 * latent_channels)

        # Decoder: the mirror image, from the latent to the decoder's mean.
        self.dec_in = conv_layer(latent_channels, widths[-1])
        dec, ch = [], widths[-1]
        for i in reversed(range(len(widths))):
            for _ in range(num_res_blocks):
                dec.append(_Block(ch, widths[i]))
                ch = widths[i]
            if i > 0:
                dec.append(Upsample(ch))
        self.decoder = nn.Sequential(*dec)
        self.dec_norm = group_norm(ch)
        self.dec_out = conv_layer(ch, in_channels)

        # The decoder's log std, learned. 0 (sigma = 1) is of the order of an untrained decoder's
        # error on data in [-1, 1], near where the likelihood puts it (log_sigma* = log RMS error),
        # so the first steps are not dominated by a 1/sigma^2 factor; it then follows the error down.
        self.log_sigma = nn.Parameter(torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def config(self) -> dict:
        """The constructor's arguments as JSON values (the recipe of a model file)."""
        return {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "latent_channels": self.latent_channels,
            "channels": self.channels,
            "channel_mult": list(self.channel_mult),
            "num_res_blocks": self.num_res_blocks,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"AutoencoderKL({args})"

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(latent_channels, image_size / f, image_size / f)`` for ``data_shape = (in_channels,
        image_size, image_size)``; any other shape is refused."""
        want = (self.in_channels, self.image_size, self.image_size)
        if tuple(data_shape) != want:
            raise ArgumentValueError(
                "data_shape",
                data_shape,
                f"data_shape must be {want}, the images this autoencoder takes, got {data_shape}",
            )
        side = self.image_size // self.factor
        return (self.latent_channels, side, side)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)`` of ``q(z | x)`` for images ``x``
        ``(B, in_channels, image_size, image_size)``."""
        _check_shape("x", x, (self.in_channels, self.image_size, self.image_size))
        h = self.encoder(self.enc_in(x))
        mean, logvar = self.enc_out(F.silu(self.enc_norm(h))).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean ``(B, in_channels, image_size, image_size)`` for latents ``z``."""
        side = self.image_size // self.factor
        _check_shape("z", z, (self.latent_channels, side, side))
        h = self.decoder(self.dec_in(z))
        return self.dec_out(F.silu(self.dec_norm(h)))


def _check_shape(name: str, x, shape: tuple[int, ...]) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ArgumentValueError(
            name, x, f"{name} must have shape (B, {', '.join(map(str, shape))}), got {got}"
        )
