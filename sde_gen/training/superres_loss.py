"""The loss of a cascade's super-resolution stage: denoising score matching conditioned on the
noise-augmented low-resolution image (Ho et al. 2021, Gaussian conditioning augmentation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from .._checks import ArgumentTypeError, ArgumentValueError, check_int, check_real, check_tensor
from ..sampling.inverse.operators import SuperResolution

__all__ = ["SuperResolutionLoss", "SuperResolutionDraws"]


class SuperResolutionDraws(NamedTuple):
    """The random part of one super-resolution loss estimate: the augmentation levels ``s`` ``(B,)``,
    the standard normal ``e`` shaped like the low-resolution batch, and ``inner``, the draws of the
    wrapped loss (e.g. :class:`~sde_gen.DSMDraws`)."""

    s: torch.Tensor
    e: torch.Tensor
    inner: Any

    def shard(self, index: slice) -> SuperResolutionDraws:
        """The draws of the examples ``index`` of the batch (a data-parallel rank's share)."""
        return SuperResolutionDraws(self.s[index], self.e[index], self.inner.shard(index))


class SuperResolutionLoss:
    """``loss(model, x, generator=...)``: for each image of ``x`` ``(B, C, H, W)``, its average-pooled
    ``y = A x`` (``factor``), an augmentation level ``s ~ U(0, max_noise)`` and ``low = y + s e``;
    then ``loss_fn(model, x, generator=..., low=low, low_noise=s, **cond)``, e.g. a
    :class:`~sde_gen.DSMLoss`, so the model learns the score of ``p_t(x | low)`` at every level in
    the range (its network takes ``low`` and ``low_noise``: :class:`~sde_gen.SuperResolutionUNet`).
    ``s`` and ``e`` are drawn from ``generator`` before ``loss_fn``'s own draws. ``max_noise = 0``
    trains without augmentation.

    Where ``loss_fn`` has a ``draw`` (as ``DSMLoss`` has), so has this loss: :meth:`draw` draws
    ``s``, ``e`` and then ``loss_fn``'s draws, in the order above, for the global batch, and a
    data-parallel process computes its share with ``loss(model, shard, draws=draws.shard(index))``
    (:class:`~sde_gen.Trainer` does). Without one, ``draw`` is ``None``: single-process only.
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
        self._low_shape(x)
        return self.operator(x)

    def _low_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The shape of ``A x``, without pooling; refuses images that ``factor`` does not divide."""
        x = check_tensor("x", x)
        f, (h, w) = self.factor, x.shape[-2:]
        if h % f or w % f:
            raise ArgumentValueError("x", x, f"images of {h}x{w} cannot be pooled by factor={f}")
        return (*x.shape[:-2], h // f, w // f)

    @property
    def draw(self) -> Callable | None:
        """``draw(x, generator=None, noise=None) -> SuperResolutionDraws`` where the wrapped loss
        has a ``draw``, else ``None``; ``noise`` (paired noise) goes to the wrapped loss."""
        return self._draw if getattr(self.loss_fn, "draw", None) is not None else None

    def _draw(self, x: torch.Tensor, generator: torch.Generator | None = None, **paired):
        levels = self._levels(x, self._low_shape(x), generator)
        return SuperResolutionDraws(*levels, self.loss_fn.draw(x, generator, **paired))

    def _levels(self, x: torch.Tensor, low_shape, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``s`` ``(B,)`` and ``e`` (shaped ``low_shape``, that of ``A x``) for the batch ``x``, in
        that order."""
        like = dict(dtype=x.dtype, device=x.device)
        s = self.max_noise * torch.rand(x.shape[0], generator=generator, **like)
        return s, torch.randn(low_shape, generator=generator, **like)

    def __call__(
        self,
        model,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        draws: SuperResolutionDraws | None = None,
        **cond,
    ):
        """The wrapped loss of ``x`` given its noise-augmented low-resolution images; ``draws``
        (from :meth:`draw`) or ``generator`` give ``s``, ``e`` and the wrapped loss's draws."""
        y = self.low(x)
        if draws is None:
            (s, e), inner = self._levels(x, y.shape, generator), dict(generator=generator)
        elif not isinstance(draws, SuperResolutionDraws) or draws.e.shape != y.shape:
            raise ArgumentValueError(
                "draws",
                draws,
                f"draws must be SuperResolutionDraws for the low-resolution batch {tuple(y.shape)}",
            )
        else:
            s, e, inner = draws.s, draws.e, dict(draws=draws.inner)
        low = y + s.reshape(-1, *([1] * (y.ndim - 1))) * e
        return self.loss_fn(model, x, low=low, low_noise=s, **inner, **cond)
