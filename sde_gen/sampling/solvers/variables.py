"""The variables every Gaussian-kernel SDE shares with a VE process (docs/maths.md): with the kernel
``x_t = scale x_0 + shift + std z``, ``xhat = (x - shift) / scale`` has noise level
``sigma_hat = std / scale``, and Tweedie's denoiser ``D = E[x_0 | x_t]`` drives its ODE. The fast
samplers are written once in these variables."""

from __future__ import annotations

import torch

from ..._utils import time_vector

__all__ = ["kernel_at", "to_hat", "from_hat", "denoise", "GridPoint"]


def kernel_at(sde, t: float, x: torch.Tensor):
    """The kernel coefficients at the time ``t``, shaped for ``x``."""
    return sde.kernel(time_vector(t, x), x)


def to_hat(x: torch.Tensor, k) -> torch.Tensor:
    """``xhat = (x - shift) / scale``: x in the coordinates of the VE process in sigma_hat."""
    return (x - k.shift) / k.scale


def from_hat(xhat: torch.Tensor, k) -> torch.Tensor:
    """``x = scale xhat + shift``, the inverse of :func:`to_hat` (``k`` at the same time)."""
    return k.scale * xhat + k.shift


def offers_denoise(score_fn) -> bool:
    """Whether ``score_fn`` gives ``denoise(x, t)`` itself (a :class:`~sde_gen.ScoreModel`, also
    inside a :class:`~sde_gen.ScoreCheck`)."""
    offers = getattr(score_fn, "offers_denoise", None)
    return offers if isinstance(offers, bool) else callable(getattr(score_fn, "denoise", None))


def denoise(score_fn, x: torch.Tensor, t: float, k) -> torch.Tensor:
    """``D = E[x_0 | x_t = x]`` from one evaluation: ``score_fn.denoise`` where the model offers it
    (it predicts ``D``, or something from which ``D`` is exact, with no detour through the score),
    else Tweedie's formula (:meth:`~sde_gen.sdes.base.KernelCoefficients.tweedie`, with the kernel
    ``k`` at ``t`` already at hand)."""
    tv = time_vector(t, x)
    if offers_denoise(score_fn):
        return score_fn.denoise(x, tv)
    return k.tweedie(x, score_fn(x, tv))


class GridPoint:
    """The variables at one time ``t`` of a solve: the kernel ``k`` shaped for ``x``, EDM's noise
    level ``sigma = sigma_hat(t)`` and, for the exponential integrators, ``lams``, the half log-SNR
    of the whole grid (computed once per solve and handed on). A step returns the one at its end
    as the state's ``cache``; the next step reuses it (:meth:`at`). Not changed once made."""

    def __init__(self, sde, t: float, like: torch.Tensor, *, sigma: float | None = None, lams=None):
        self.t = t
        self.k = sde.kernel(time_vector(t, like), like)
        if sigma is None:
            sigma = float(sde.sigma_hat(torch.tensor([t], dtype=torch.float64)))
        self.sigma = sigma
        self.lams = lams

    @classmethod
    def at(cls, sde, t: float, like: torch.Tensor, cache=None, lams=None) -> GridPoint:
        """The variables at ``t``: ``cache`` itself when it is a point at ``t`` for tensors like
        ``like`` (the previous step's end), else made anew (keeping ``cache.lams``)."""
        if isinstance(cache, cls):
            k = cache.k.scale
            if cache.t == t and k.shape == like.shape and k.dtype == like.dtype and k.device == like.device:
                return cache
            lams = cache.lams if lams is None else lams
        return cls(sde, t, like, lams=lams)

    def to_hat(self, x: torch.Tensor) -> torch.Tensor:
        return to_hat(x, self.k)

    def from_hat(self, xhat: torch.Tensor) -> torch.Tensor:
        return from_hat(xhat, self.k)

    def denoise(self, score_fn, x: torch.Tensor) -> torch.Tensor:
        """Tweedie's ``D(x, t) = E[x_0 | x_t = x]``: one score evaluation."""
        return denoise(score_fn, x, self.t, self.k)
