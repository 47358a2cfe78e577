"""The super-resolution network of a cascade (Ho et al. 2021; Saharia et al. 2021's SR3 conditioning):
a U-Net that sees the noisy image together with the low-resolution one."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .._checks import ArgumentValueError, check_int, check_tensor
from .unet import UNet

__all__ = ["SuperResolutionUNet"]


class SuperResolutionUNet(nn.Module):
    """``net(x, t, low=..., low_noise=..., y=None)``: ``x`` ``(B, C, H, W)``, ``low`` ``(B, C, H / f,
    W / f)`` (the noise-augmented low-resolution image), ``low_noise`` ``(B,)`` (its augmentation
    level ``s``); returns ``(B, C, H, W)``.

    ``low`` is upsampled to ``H x W`` (nearest, :meth:`sde_gen.inverse.SuperResolution.pinv` of
    average pooling) and concatenated to ``x`` as ``C`` channels, and ``s`` as one more constant
    channel, so a :class:`~sde_gen.UNet` with ``2 C + 1`` input channels and ``C`` outputs does the
    rest (the other arguments are the U-Net's). The augmentation level is an input, as in Ho et al.,
    so one network serves every level and the sampling level is chosen by measurement.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        factor: int = 2,
        channels: int = 32,
        channel_mult: Iterable[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Iterable[int] = (7,),
        dropout: float = 0.1,
        time_embedding: str = "fourier",
        num_classes: int | None = None,
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, low=1)
        self.factor = check_int("factor", factor, low=1)
        if image_size % self.factor:
            raise ArgumentValueError(
                "factor", factor, f"image_size={image_size} must be divisible by factor={factor}"
            )
        self.unet = UNet(
            in_channels=2 * self.in_channels + 1,
            out_channels=self.in_channels,
            image_size=image_size,
            channels=channels,
            channel_mult=channel_mult,
            num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions,
            dropout=dropout,
            time_embedding=time_embedding,
            num_classes=num_classes,
        )
        for name in ("image_size", "channels", "channel_mult", "num_res_blocks", "attn_resolutions",
                     "dropout", "time_embedding", "num_classes"):  # fmt: skip
            setattr(self, name, getattr(self.unet, name))

    def forward(self, x: torch.Tensor, t: torch.Tensor, low=None, low_noise=None, **cond) -> torch.Tensor:
        if low is None or low_noise is None:
            raise ArgumentValueError(
                "low", low, "a super-resolution network needs low= (the low-resolution image) and low_noise="
            )
        low = check_tensor("low", low).to(x.dtype)
        f = self.factor
        want = (x.shape[0], self.in_channels, x.shape[-2] // f, x.shape[-1] // f)
        if tuple(low.shape) != want:
            raise ArgumentValueError("low", low, f"low must have shape {want}, got {tuple(low.shape)}")
        s = torch.as_tensor(low_noise, dtype=x.dtype, device=x.device).expand(x.shape[0])
        up = low.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
        level = s.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[-2:])
        return self.unet(torch.cat([x, up, level], dim=1), t, **cond)
