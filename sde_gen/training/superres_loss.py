"""The loss of a cascade's super-resolution stage: denoising score matching conditioned on the
noise-augmented low-resolution image (Ho et al. 2021, Gaussian conditioning augmentation)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import ArgumentTypeError, ArgumentValueError, check_int, check_real, check_tensor
from ..sampling.inverse.operators import SuperResolution

__all__ = ["SuperResolutionLoss"]


class SuperResolutionLoss:
    """``loss(model, x, generator=...)``: for each image of ``x`` ``(B, C, H, W)``, its average-pooled
    ``y = A x`` (``factor``), an augmentation level ``s ~ U(0, max_noise)`` and ``low = y + s e``;
    then ``loss_fn(model, x, generator=..., low=low, low_noise=s, **cond)``, e.g. a
    :class:`~sde_gen.DSMLoss`, so the model learns the score of ``p_t(x | low)`` at every level in
    the range (its network takes ``low`` and ``low_noise``: :class:`~sde_gen.SuperResolutionUNet`).
    ``s`` and ``e`` are drawn from ``generator`` before ``loss_fn``'s own draws. ``max_noise = 0``
    trains without augmentation. Single-process draws only (it has no ``draw`` for data parallelism).
    """

    def __init__(self, loss_fn: Callable, factor: int = 2, max_noise: float = 0.5):
        if not callable(loss_fn):
            raise ArgumentTypeError(
                "loss_fn", loss_fn, f"loss_fn must be callable, got {type(loss_fn).__name__}"
            )
        self.loss_fn = loss_fn
        self.factor = check_int("factor", factor, low=1)
        self.operator = SuperResolution(self.factor)  # A: average pooling
        self.max_noise = check_real("max_noise", max_noise, low=0.0)

    def __repr__(self) -> str:
        return f"SuperResolutionLoss({self.loss_fn!r}, factor={self.factor}, max_noise={self.max_noise})"

    def low(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``: ``x`` average-pooled by ``factor`` over its last two dimensions."""
        x = check_tensor("x", x)
        f, (h, w) = self.factor, x.shape[-2:]
        if h % f or w % f:
            raise ArgumentValueError("x", x, f"images of {h}x{w} cannot be pooled by factor={f}")
        return self.operator(x)

    def __call__(self, model, x: torch.Tensor, *, generator: torch.Generator | None = None, **cond):
        y = self.low(x)
        like = dict(dtype=x.dtype, device=x.device)
        s = self.max_noise * torch.rand(x.shape[0], generator=generator, **like)
        e = torch.randn(y.shape, generator=generator, **like)
        low = y + s.reshape(-1, *([1] * (y.ndim - 1))) * e
        return self.loss_fn(model, x, generator=generator, low=low, low_noise=s, **cond)
