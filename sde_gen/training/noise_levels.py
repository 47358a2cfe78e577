"""Noise-level samplers: where in ``[eps, T]`` denoising score matching draws its times.

Each has ``eps``, ``T``, ``sample(n, generator=, dtype=, device=) -> (t, w)`` and ``density(t)``.
``w`` is ``None``, or the weights ``1 / (p(t) (T - eps))`` that make the estimate the mean over
uniform times: then only the estimator's variance changes, never the objective. Without them
(``reweight=False``) the sampler's density becomes part of the objective, as EDM's log-normal noise
levels (Karras et al. 2022) and Esser et al.'s (2024) logit-normal times are meant to:
``DSMLoss.effective_weighting`` shows the result over the log-SNR.

- :class:`UniformTime`: ``t ~ U(eps, T)`` (Song et al. 2021).
- :class:`ImportanceSampler`: ``p(t) ~ g^2 / std^2``, always reweighted (Song, Durkan et al. 2021,
  Sec. 5: the likelihood weighting's variance falls, its objective stays).
- :class:`LogNormalNoise`: ``log sigma_hat ~ N(p_mean, p_std^2)`` (EDM: -1.2, 1.2), truncated to
  ``[sigma_hat(eps), sigma_hat(T)]``.
- :class:`LogitNormalTime`: ``(t - eps) / (T - eps) = sigmoid(u)``, ``u ~ N(loc, scale^2)`` (Esser
  et al. 2024: 0, 1).
"""

from __future__ import annotations

import math

import torch

from .._checks import (
    ArgumentTypeError,
    ArgumentValueError,
    check_choice,
    check_eps,
    check_int,
    check_positive,
    check_real,
)
from ..sdes.base import check_sde

__all__ = [
    "UniformTime",
    "ImportanceSampler",
    "LogNormalNoise",
    "LogitNormalTime",
    "TIME_SAMPLERS",
    "time_sampler",
]


def _inside(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return ((t >= lo) & (t <= hi)).to(t.dtype)


def _check_reweight(reweight) -> bool:
    if not isinstance(reweight, bool):
        raise ArgumentTypeError("reweight", reweight, f"reweight must be a bool, got {reweight!r}")
    return reweight


class UniformTime:
    """``t ~ U(eps, T)``: ``sample`` returns the times and ``None`` for the weights."""

    def __init__(self, sde, eps: float):
        check_sde(sde)
        self.T = sde.T
        self.eps = check_eps(eps, sde.T)

    def __repr__(self) -> str:
        return f"UniformTime(eps={self.eps}, T={self.T})"

    def sample(self, n: int, *, generator=None, dtype=torch.float32, device=None):
        t = self.eps + (self.T - self.eps) * torch.rand(n, generator=generator, dtype=dtype, device=device)
        return t, None

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """``1 / (T - eps)`` on ``[eps, T]``."""
        return _inside(t, self.eps, self.T) / (self.T - self.eps)


class ImportanceSampler:
    """Draws ``t`` in ``[eps, T]`` with density ``p(t) = w(t) / Z``, ``w = g^2 / std^2``, for any SDE.

    ``w`` is tabulated on a grid uniform in ``log t`` (``w ~ 1/t`` near 0 for VP and VE), integrated
    with the trapezoid rule, and inverted by linear interpolation of the cumulative integral.
    ``sample`` returns the times and their weights ``1 / (p(t) (T - eps))`` from the same
    piecewise-linear density, so that ``E_p[f(t) w(t)]`` is the mean of ``f`` over uniform times
    exactly for the tabulated density.
    """

    reweight = True  # the weights keep the objective of uniform times

    def __init__(self, sde, eps: float, grid: int = 4096):
        check_sde(sde)
        self.T = sde.T
        self.eps = check_eps(eps, sde.T)
        grid = check_int("grid", grid, low=16)
        t = torch.logspace(
            torch.log10(torch.tensor(self.eps)), torch.log10(torch.tensor(sde.T)), grid, dtype=torch.float64
        )
        t[0], t[-1] = self.eps, sde.T
        std = sde.marginal(torch.zeros(grid, 1, dtype=torch.float64), t)[1]
        w = sde.diffusion(t) ** 2 / std**2
        if not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
            raise ValueError("importance sampling needs g(t)^2 / std(t)^2 finite and > 0 on [eps, T]")
        cdf = torch.cat([w.new_zeros(1), torch.cumsum(0.5 * (w[1:] + w[:-1]) * t.diff(), 0)])
        self._t, self._w, self._cdf = t, w, cdf
        self.Z = float(cdf[-1])
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"ImportanceSampler(eps={self.eps}, T={self.T})"

    def _tables(self, like: torch.Tensor):
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = tuple(
                v.to(dtype=like.dtype, device=like.device) for v in (self._t, self._w, self._cdf)
            )
        return self._cache[key]

    def sample(
        self, n: int, *, generator=None, dtype=torch.float32, device=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` times and their weights ``1 / (p(t) (T - eps))``, relative to uniform times."""
        like = torch.empty(0, dtype=dtype, device=device)
        t, w, cdf = self._tables(like)
        u = torch.rand(n, generator=generator, dtype=dtype, device=device) * cdf[-1]
        i = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.numel() - 1) - 1
        # Inside cell i the density is linear, w(t) = w_i + k (t - t_i): solve the quadratic for t.
        dt = t[i + 1] - t[i]
        k = (w[i + 1] - w[i]) / dt
        r = u - cdf[i]
        disc = (w[i] ** 2 + 2 * k * r).clamp_min(0)
        step = torch.where(k.abs() * dt > 1e-12 * w[i], (disc.sqrt() - w[i]) / k, r / w[i])
        ts = t[i] + step.clamp(min=torch.zeros_like(dt), max=dt)
        dens = (w[i] + k * (ts - t[i])) / cdf[-1]
        return ts, 1.0 / dens / (self.T - self.eps)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """The tabulated density ``p(t)`` (piecewise linear in ``t``, 0 outside ``[eps, T]``)."""
        tt, w, cdf = self._tables(t)
        i = torch.searchsorted(tt, t.contiguous(), right=True).clamp(1, tt.numel() - 1) - 1
        k = (w[i + 1] - w[i]) / (tt[i + 1] - tt[i])
        return _inside(t, self.eps, self.T) * (w[i] + k * (t - tt[i])) / cdf[-1]


class LogNormalNoise:
    """``log sigma_hat ~ N(p_mean, p_std^2)`` truncated to ``[sigma_hat(eps), sigma_hat(T)]``, mapped to
    ``t`` by ``sde.t_from_sigma_hat`` (EDM's noise levels, Karras et al. 2022: ``p_mean = -1.2``,
    ``p_std = 1.2``, for data scaled to ``[-1, 1]``). ``reweight=False`` (EDM's use: the density
    shapes the objective) or ``True`` (only the variance changes)."""

    def __init__(self, sde, eps: float, p_mean: float = -1.2, p_std: float = 1.2, *, reweight: bool = False):
        self.sde = check_sde(sde)
        self.T = sde.T
        self.eps = check_eps(eps, sde.T)
        self.p_mean = check_real("p_mean", p_mean)
        self.p_std = check_positive("p_std", p_std)
        self.reweight = _check_reweight(reweight)
        ends = torch.log(sde.sigma_hat(torch.tensor([self.eps, self.T], dtype=torch.float64)))
        self._u = torch.special.ndtr((ends - self.p_mean) / self.p_std)
        if not bool(self._u[1] > self._u[0]):
            raise ArgumentValueError(
                "p_mean",
                p_mean,
                f"N({p_mean}, {p_std}^2) puts no mass on log sigma_hat in "
                f"[{ends[0].item():.4g}, {ends[1].item():.4g}], the range of [eps, T]",
            )

    def __repr__(self) -> str:
        return f"LogNormalNoise(p_mean={self.p_mean}, p_std={self.p_std}, reweight={self.reweight})"

    def sample(self, n: int, *, generator=None, dtype=torch.float32, device=None):
        lo, hi = self._u.tolist()
        u = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        sigma = torch.exp(self.p_mean + self.p_std * torch.special.ndtri(u))
        t = self.sde.t_from_sigma_hat(sigma.cpu()).clamp(self.eps, self.T).to(device)
        w = 1.0 / (self.density(t) * (self.T - self.eps)) if self.reweight else None
        return t.to(dtype), None if w is None else w.to(dtype)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """``N(log sigma_hat(t)) / Z * d log sigma_hat / dt``, ``d log sigma_hat / dt = g^2 / (2 std^2)``."""
        t64 = t.to(torch.float64)
        std = self.sde.marginal(torch.zeros(t64.shape[0], 1, dtype=torch.float64, device=t.device), t64)[1]
        log_sigma = torch.log(self.sde.sigma_hat(t64))
        normal = torch.exp(-0.5 * ((log_sigma - self.p_mean) / self.p_std) ** 2) / (
            self.p_std * math.sqrt(2 * math.pi)
        )
        z = float(self._u[1] - self._u[0])
        dens = normal / z * self.sde.diffusion(t64) ** 2 / (2 * std**2)
        return (_inside(t64, self.eps, self.T) * dens).to(t.dtype)


class LogitNormalTime:
    """``(t - eps) / (T - eps) = sigmoid(u)``, ``u ~ N(loc, scale^2)`` (Esser et al. 2024's
    logit-normal times, ``loc = 0``, ``scale = 1``, for rectified flow). ``reweight`` as in
    :class:`LogNormalNoise`."""

    def __init__(self, sde, eps: float, loc: float = 0.0, scale: float = 1.0, *, reweight: bool = False):
        check_sde(sde)
        self.T = sde.T
        self.eps = check_eps(eps, sde.T)
        self.loc = check_real("loc", loc)
        self.scale = check_positive("scale", scale)
        self.reweight = _check_reweight(reweight)

    def __repr__(self) -> str:
        return f"LogitNormalTime(loc={self.loc}, scale={self.scale}, reweight={self.reweight})"

    def sample(self, n: int, *, generator=None, dtype=torch.float32, device=None):
        u = self.loc + self.scale * torch.randn(n, generator=generator, dtype=torch.float64, device=device)
        t = (self.eps + (self.T - self.eps) * torch.sigmoid(u)).clamp(self.eps, self.T)
        w = 1.0 / (self.density(t) * (self.T - self.eps)) if self.reweight else None
        return t.to(dtype), None if w is None else w.to(dtype)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """``N(logit r; loc, scale^2) / (r (1 - r) (T - eps))`` with ``r = (t - eps) / (T - eps)``."""
        r = ((t.to(torch.float64) - self.eps) / (self.T - self.eps)).clamp(1e-300, 1 - 1e-16)
        u = torch.log(r) - torch.log1p(-r)
        normal = torch.exp(-0.5 * ((u - self.loc) / self.scale) ** 2) / (self.scale * math.sqrt(2 * math.pi))
        return (_inside(t, self.eps, self.T) * normal / (r * (1 - r) * (self.T - self.eps))).to(t.dtype)


#: The noise-level samplers by name.
TIME_SAMPLERS = {
    "uniform": UniformTime,
    "importance": ImportanceSampler,
    "log_normal": LogNormalNoise,
    "logit_normal": LogitNormalTime,
}


def time_sampler(
    name: str,
    sde,
    eps: float,
    *,
    loc: float | None = None,
    scale: float | None = None,
    reweight: bool | None = None,
    sigma_data: float | None = None,
):
    """The sampler ``name`` (a key of :data:`TIME_SAMPLERS`) for ``sde`` on ``[eps, T]``: ``loc`` and
    ``scale`` are ``p_mean``, ``p_std`` of ``"log_normal"`` and ``loc``, ``scale`` of
    ``"logit_normal"`` (``None``: the paper's); ``reweight`` as in :class:`LogNormalNoise` (``None``:
    the sampler's default).

    ``sigma_data``: the data's std, which only ``"log_normal"``'s default ``p_mean`` reads: EDM's
    ``-1.2`` was chosen for ``sigma_data = 0.5``, and data scaled by ``a`` need noise levels scaled by
    ``a``, so the default is ``-1.2 + log(sigma_data / 0.5)`` (``-1.2`` when ``None`` or 0.5); with
    EDM's preconditioning and weighting at the same ``sigma_data``, training is then the same for
    data at any scale. A ``loc`` given is used as it is."""
    check_choice("time_sampler", name, set(TIME_SAMPLERS))
    given = {k: v for k, v in (("loc", loc), ("scale", scale)) if v is not None}
    if name in ("uniform", "importance"):
        if given or reweight is not None:
            raise ArgumentTypeError(
                "time_sampler", name, f"time_sampler={name!r} takes no loc, scale or reweight"
            )
        return TIME_SAMPLERS[name](sde, eps)
    extra = {} if reweight is None else {"reweight": reweight}
    if name == "log_normal":
        shift = 0.0 if sigma_data is None else math.log(check_positive("sigma_data", sigma_data) / 0.5)
        return LogNormalNoise(sde, eps, given.get("loc", -1.2 + shift), given.get("scale", 1.2), **extra)
    return LogitNormalTime(sde, eps, given.get("loc", 0.0), given.get("scale", 1.0), **extra)
