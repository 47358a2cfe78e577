"""The variables every Gaussian-kernel SDE shares with a VE process (docs/maths.md): with the kernel
``x_t = scale x_0 + shift + std z``, ``xhat = (x - shift) / scale`` has noise level
``sigma_hat = std / scale``, and Tweedie's denoiser ``D = E[x_0 | x_t]`` drives its ODE. The fast
samplers are written once in these variables."""

from __future__ import annotations

import torch

from ..._utils import batch_broadcast, time_vector

__all__ = ["kernel_at", "to_hat", "from_hat", "denoise", "EDMVariables"]


def kernel_at(sde, t: float, x: torch.Tensor):
    """The kernel coefficients at the time ``t``, shaped for ``x``."""
    return sde.kernel(time_vector(t, x), x)


def to_hat(x: torch.Tensor, k) -> torch.Tensor:
    """``xhat = (x - shift) / scale``: x in the coordinates of the VE process in sigma_hat."""
    return (x - k.shift) / k.scale


def from_hat(xhat: torch.Tensor, k) -> torch.Tensor:
    """``x = scale xhat + shift``, the inverse of :func:`to_hat` (``k`` at the same time)."""
    return k.scale * xhat + k.shift


def denoise(score_fn, x: torch.Tensor, t: float, k) -> torch.Tensor:
    """Tweedie's ``D = E[x_0 | x_t = x] = (x - shift + std^2 score) / scale`` (``SDE.tweedie`` with
    the kernel ``k`` at ``t`` already at hand), from one evaluation of ``score_fn``."""
    score = score_fn(x, time_vector(t, x))
    return (x - k.shift + batch_broadcast(k.std**2, x) * score) / k.scale


class EDMVariables:
    """The map between ``x`` at time ``t`` and EDM's ``(xhat, sigma)`` for one SDE and one time."""

    def __init__(self, sde, t: float, like: torch.Tensor):
        self.t = t
        self.tv = time_vector(t, like)
        self.k = sde.kernel(self.tv, like)
        self.scale = self.k.scale
        self.sigma = float(sde.sigma_hat(torch.tensor([t], dtype=torch.float64)))

    @classmethod
    def at(cls, sde, t: float, like: torch.Tensor, state=None) -> EDMVariables:
        """The variables at ``t``, reused from ``state.carry`` when the previous step ended at ``t``."""
        carry = None if state is None else state.carry
        if (
            isinstance(carry, cls)
            and carry.t == t
            and carry.scale.shape == like.shape
            and carry.scale.dtype == like.dtype
        ):
            return carry
        return cls(sde, t, like)

    def to_hat(self, x: torch.Tensor) -> torch.Tensor:
        return to_hat(x, self.k)

    def from_hat(self, xhat: torch.Tensor) -> torch.Tensor:
        return from_hat(xhat, self.k)

    def denoise(self, sde, score_fn, x: torch.Tensor) -> torch.Tensor:
        """Tweedie's ``D(x, t) = E[x_0 | x_t = x]``: one score evaluation."""
        return denoise(score_fn, x, self.t, self.k)
