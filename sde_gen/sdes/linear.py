"""``LinearSDE``: a linear SDE ``dx = a(t) x dt + g(t) dW`` given by its coefficients, kernel derived."""

from __future__ import annotations

import math

import torch

from .._checks import ArgumentValueError, check_int, check_positive, check_real
from .._utils import batch_broadcast
from .base import SDE, GaussianPriorMixin

__all__ = ["LinearSDE"]


class LinearSDE(GaussianPriorMixin, SDE):
    """A linear SDE ``dx = a(t) x dt + g(t) dW`` from its coefficients; the kernel is derived.

    The kernel is ``N(alpha(t) x_0, sigma(t)^2)`` with ``alpha = exp(int_0^t a)`` and
    ``sigma^2 = alpha^2 int_0^t g(s)^2 / alpha(s)^2 ds`` (Saerkkae & Solin 2019, Eq. 6.2-6.3).

    ``a`` and ``g`` are numbers (constant coefficients: closed form) or callables mapping a tensor
    ``t`` to a tensor of the same shape (integrated numerically: Gauss-Legendre on ``grid``
    intervals, then cubic Hermite interpolation with the exact derivatives, to about 1e-10
    relative for smooth coefficients). ``prior_std`` defaults to ``sqrt(sigma(T)^2 + alpha(T)^2)``,
    the std of p_T for data of unit variance (exactly 1 for a VP-like SDE).
    """

    def __init__(self, a, g, *, T: float = 1.0, prior_std: float | None = None, grid: int = 2048):
        super().__init__(T)
        self._const = not callable(a) and not callable(g)
        if self._const:
            self.a = check_real("a", a)
            self.g = check_positive("g", g)
        else:
            self.a = a if callable(a) else _constant(check_real("a", a))
            self.g = g if callable(g) else _constant(check_positive("g", g))
            self._tables = _tabulate_kernel(self.a, self.g, self.T, check_int("grid", grid, low=16))
            self._cache: dict = {}
        one = torch.tensor([self.T], dtype=torch.float64)
        log_alpha_T, var_T = self._log_alpha_var(one)
        auto = math.sqrt(float(var_T) + math.exp(2.0 * float(log_alpha_T)))
        self.prior_std = auto if prior_std is None else check_positive("prior_std", prior_std)
        if not math.isfinite(self.prior_std) or self.prior_std <= 0:
            raise ValueError(f"LinearSDE: the derived prior std is {self.prior_std!r}; pass prior_std")

    def _coef(self, fn, t):
        if callable(fn):
            out = fn(t)
            out = torch.as_tensor(out, dtype=t.dtype, device=t.device)
            return out.expand_as(t) if out.shape != t.shape else out
        return torch.full_like(t, fn)

    def drift(self, x, t):
        return batch_broadcast(self._coef(self.a, t), x) * x

    def diffusion(self, t):
        return self._coef(self.g, t)

    def _log_alpha_var(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log alpha(t) and sigma(t)^2."""
        if self._const:
            a, g2 = self.a, self.g**2
            if a == 0.0:
                return torch.zeros_like(t), g2 * t
            # sigma^2 = g^2 (exp(2 a t) - 1) / (2 a), with expm1 for accuracy near 0.
            return a * t, g2 * torch.expm1(2.0 * a * t) / (2.0 * a)
        key = (t.dtype, t.device)
        if key not in self._cache:
            self._cache[key] = tuple(v.to(dtype=t.dtype, device=t.device) for v in self._tables)
        knots, log_alpha, dlog_alpha, v, dv = self._cache[key]
        la = _hermite(knots, log_alpha, dlog_alpha, t)
        vi = _hermite(knots, v, dv, t)
        return la, torch.exp(2.0 * la) * vi

    def marginal(self, x0, t):
        la, var = self._log_alpha_var(t)
        return batch_broadcast(torch.exp(la), x0) * x0, var.clamp_min(0.0).sqrt()


def _constant(c: float):
    return lambda t: torch.full_like(t, c)


def _tabulate_kernel(a, g, T: float, grid: int):
    """Knots on [0, T] (plus a margin beyond T for adaptive ODE probes) with ``log alpha``,
    ``v = int_0^t g^2 exp(-2 log alpha)`` and their exact derivatives, in float64."""
    if grid < 16:
        raise ArgumentValueError("grid", grid, f"grid must be >= 16, got {grid!r}")
    nodes, weights = _gauss_legendre(8)
    h = T / grid
    knots = torch.arange(0, grid + grid // 8 + 1, dtype=torch.float64) * h
    left = knots[:-1, None] + 0.5 * h * (nodes[None, :] + 1.0)  # (n, 8) quadrature points
    a_left = _eval(a, left, "a")
    la_incr = 0.5 * h * (a_left * weights).sum(dim=1)
    log_alpha = torch.cat([torch.zeros(1, dtype=torch.float64), la_incr.cumsum(0)])
    # log alpha at the quadrature points, by a second quadrature from each interval's left knot.
    sub = 0.5 * (left - knots[:-1, None])[..., None] * (nodes + 1.0) + knots[:-1, None, None]
    la_pts = log_alpha[:-1, None] + 0.5 * (left - knots[:-1, None]) * (_eval(a, sub, "a") * weights).sum(-1)
    integrand = _eval(g, left, "g") ** 2 * torch.exp(-2.0 * la_pts)
    v = torch.cat([torch.zeros(1, dtype=torch.float64), (0.5 * h * (integrand * weights).sum(1)).cumsum(0)])
    dlog_alpha = _eval(a, knots, "a")
    dv = _eval(g, knots, "g") ** 2 * torch.exp(-2.0 * log_alpha)
    if not all(torch.isfinite(x).all() for x in (log_alpha, v, dlog_alpha, dv)):
        raise ValueError("LinearSDE: a(t) or g(t) is not finite somewhere on [0, T]")
    return knots, log_alpha, dlog_alpha, v, dv


def _eval(fn, t: torch.Tensor, name: str) -> torch.Tensor:
    out = torch.as_tensor(fn(t), dtype=torch.float64)
    if out.ndim != 0 and out.shape != t.shape:
        raise ValueError(
            f"{name}(t) must return a number or a tensor shaped like t; for t of shape "
            f"{tuple(t.shape)} it returned shape {tuple(out.shape)}"
        )
    return out.expand_as(t)


def _gauss_legendre(n: int):
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy(x), torch.from_numpy(w)


def _hermite(knots, y, dy, t):
    """Cubic Hermite interpolation of (y, dy) on uniform ``knots`` at ``t`` (clamped to the table)."""
    h = knots[1] - knots[0]
    tc = t.clamp(knots[0], knots[-1])
    i = torch.clamp((tc / h).floor().long(), 0, knots.numel() - 2)
    s = (tc - knots[i]) / h
    s2, s3 = s * s, s * s * s
    h00, h10, h01, h11 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s, -2 * s3 + 3 * s2, s3 - s2
    return h00 * y[i] + h10 * h * dy[i] + h01 * y[i + 1] + h11 * h * dy[i + 1]
