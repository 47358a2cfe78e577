"""Embeddings of the diffusion time ``t`` of shape ``(B,)`` into features of shape ``(B, dim)``."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import (
    ArgumentTypeError,
    ArgumentValueError,
    check_choice,
    check_int,
    check_positive,
    check_tensor,
)

__all__ = [
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "TIME_EMBEDDINGS",
    "make_time_embedding",
    "check_time",
    "check_input_dtype",
    "check_labels",
    "label_embedding",
]


def check_time(t, x: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor of shape ``(B,)`` in the dtype and on the device of ``x`` of shape ``(B, ...)``.

    A 0-d tensor or a Python number is broadcast to the batch; anything else must have shape ``(B,)``.
    """
    if not isinstance(t, torch.Tensor):
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise ArgumentTypeError("t", t, f"t must be a tensor of shape (B,), got {type(t).__name__}")
        t = torch.tensor(float(t))
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ArgumentValueError(
            "t", t, f"t must have shape (B,) = ({x.shape[0]},) to match x, got {tuple(t.shape)}"
        )
    return t.to(dtype=x.dtype, device=x.device)


def check_image(x, channels: int, size: int, weight: torch.Tensor) -> torch.Tensor:
    """``x`` a floating tensor ``(B, channels, size, size)`` of ``weight``'s dtype (an image
    network's input); refusals name ``x``."""
    check_tensor("x", x)
    expected = (channels, size, size)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ArgumentValueError(
            "x", x, f"x must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
        )
    check_input_dtype(x, weight)
    return x


def check_input_dtype(x: torch.Tensor, weight: torch.Tensor) -> None:
    """``x`` in the dtype of the network's parameters (``weight``), unless autocast casts for us."""
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ArgumentTypeError(
            "x",
            x,
            f"x has dtype {x.dtype} but the network's parameters are {weight.dtype}: "
            f"convert one of them (x.to({weight.dtype}) or net.to({x.dtype}))",
        )


def label_embedding(num_classes, dim: int) -> nn.Embedding | None:
    """The class embedding of a class-conditional network: ``num_classes + 1`` rows of size ``dim``,
    row ``num_classes`` the null label (classifier-free guidance, Ho & Salimans 2021); ``None`` for
    an unconditional network (``num_classes=None``)."""
    if num_classes is None:
        return None
    check_int("num_classes", num_classes, low=1)
    return nn.Embedding(num_classes + 1, dim)


def check_labels(y, x: torch.Tensor, num_classes: int | None) -> torch.Tensor | None:
    """The labels ``y`` of a batch ``x`` ``(B, ...)`` as an int64 tensor ``(B,)`` on ``x``'s device.

    ``y=None`` gives the null label ``num_classes`` for every row; entries must be in
    ``[0, num_classes]`` (one host synchronisation). An unconditional network (``num_classes=None``)
    takes no labels and returns ``None``.
    """
    if num_classes is None:
        if y is not None:
            raise ArgumentTypeError(
                "y",
                y,
                "y was given, but this network is unconditional (num_classes=None): it takes no labels",
            )
        return None
    if y is None:
        return torch.full((x.shape[0],), num_classes, dtype=torch.long, device=x.device)
    if not isinstance(y, torch.Tensor):
        raise ArgumentTypeError(
            "y", y, f"y must be a LongTensor of labels of shape (B,), got {type(y).__name__}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ArgumentTypeError("y", y, f"y must hold integer labels (e.g. torch.long), got dtype {y.dtype}")
    if tuple(y.shape) != (x.shape[0],):
        raise ArgumentValueError(
            "y", y, f"y must have shape (B,) = ({x.shape[0]},) to match x, got {tuple(y.shape)}"
        )
    bad = (y < 0) | (y > num_classes)
    if bool(bad.any()):
        raise ArgumentValueError(
            "y",
            y,
            f"y must hold labels in [0, {num_classes}] ({num_classes} is the null label; num_classes="
            f"{num_classes}), got {y[bad][:5].tolist()}",
        )
    return y.to(device=x.device, dtype=torch.long)


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features ``[sin(2 pi W t), cos(2 pi W t)]``, ``W ~ N(0, scale^2)`` fixed
    (Tancik et al. 2020; Song et al. 2021, App. H, with ``scale=16``).

    The paper feeds ``log(sigma)`` of the VE SDE; here the input is ``t`` itself, in ``[0, T]``.
    ``(B,) -> (B, dim)``; ``dim`` must be even. ``W`` is a buffer (saved, never trained).
    """

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        self.dim = check_int("dim", dim, low=2)
        if dim % 2:
            raise ArgumentValueError("dim", dim, f"dim must be even for Fourier features, got {dim}")
        self.scale = check_positive("scale", scale)
        # A fixed generator: the same architecture always gets the same frequencies.
        gen = torch.Generator().manual_seed(seed)
        W = torch.empty(dim // 2)
        if not W.is_meta:  # a meta build (a model file's checks) draws nothing: free at any size
            W = torch.randn(dim // 2, generator=gen) * self.scale
        self.register_buffer("W", W)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = 2 * math.pi * t[:, None] * self.W.to(t.dtype)[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}"


class SinusoidalEmbedding(nn.Module):
    """Transformer position encoding of ``t_scale * t`` (Vaswani et al. 2017; Ho et al. 2020 with
    ``t_scale = 1000``, the number of DDPM steps): frequencies ``max_period^(-k / (dim/2 - 1))``.

    ``(B,) -> (B, dim)``; ``dim`` must be even.
    """

    def __init__(self, dim: int, t_scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        self.dim = check_int("dim", dim, low=4)
        if dim % 2:
            raise ArgumentValueError("dim", dim, f"dim must be even for sinusoidal features, got {dim}")
        self.t_scale = check_positive("t_scale", t_scale)
        self.max_period = check_positive("max_period", max_period)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2  # frequencies computed in t's dtype, so float64 is exact
        k = torch.arange(half, dtype=t.dtype, device=t.device)
        freqs = torch.exp(-math.log(self.max_period) * k / (half - 1))
        arg = (self.t_scale * t)[:, None] * freqs[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, t_scale={self.t_scale}, max_period={self.max_period}"


TIME_EMBEDDINGS = {"fourier": GaussianFourierEmbedding, "sinusoidal": SinusoidalEmbedding}


def make_time_embedding(kind: str, dim: int) -> nn.Module:
    """The time embedding named ``kind`` (``"fourier"`` or ``"sinusoidal"``): ``(B,) -> (B, dim)``."""
    check_choice("time_embedding", kind, set(TIME_EMBEDDINGS))
    return TIME_EMBEDDINGS[kind](dim)
