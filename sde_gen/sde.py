"""Forward SDEs dx = f(x, t) dt + g(t) dW (Song et al. 2021, Sec. 3) and their transition kernels.

An :class:`SDE` is pure mathematics: it knows nothing about solving. Subclasses implement five
methods (``drift``, ``diffusion``, ``marginal``, ``prior_sample``, ``prior_log_prob``); everything
the solvers need beyond that (the reverse SDE, the probability-flow ODE, the exact transition
between two times, Tweedie's denoiser) is derived here from those five, for any subclass.

Conventions: ``t`` is a tensor of shape ``(B,)``; ``x`` has any shape ``(B, ...)``; dtype and
device follow the inputs.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ._checks import check_int, check_positive, check_real
from ._utils import batch_broadcast, flat_dim

if TYPE_CHECKING:
    from .reverse import ProbabilityFlowODE, ReverseSDE

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "LinearSDE", "KernelCoefficients"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class KernelCoefficients:
    """The Gaussian transition kernel ``p_0t(x_t | x_0) = N(scale * x_0 + shift, std^2 I)``.

    ``scale`` and ``shift`` have the shape of ``x``; ``std`` has shape ``(B,)``.
    """

    scale: torch.Tensor
    shift: torch.Tensor
    std: torch.Tensor


class SDE(abc.ABC):
    """Base class of a forward SDE ``dx = f(x, t) dt + g(t) dW`` on ``t in [0, T]``.

    Implement :meth:`drift`, :meth:`diffusion`, :meth:`marginal`, :meth:`prior_sample` and
    :meth:`prior_log_prob`; every solver, predictor, corrector and likelihood in ``sde_gen`` then
    works for the subclass. ``marginal`` must be the Gaussian kernel of the SDE with a mean affine
    in ``x_0`` (true of every SDE with a linear drift), which the derived methods rely on.
    """

    def __init__(self, T: float = 1.0):
        self.T = check_positive("T", T)

    # -- the five methods a subclass implements ------------------------------------------------

    @abc.abstractmethod
    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f(x, t): a tensor shaped like ``x``."""

    @abc.abstractmethod
    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t): a tensor of shape ``(B,)``."""

    @abc.abstractmethod
    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (shaped like ``x0``) and std (shape ``(B,)``) of ``p_0t(x_t | x_0)``."""

    @abc.abstractmethod
    def prior_sample(self, shape, *, generator=None, dtype=None, device=None) -> torch.Tensor:
        """A draw from the prior p_T that sampling starts from."""

    @abc.abstractmethod
    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p_T(z) of the prior, summed over all but the batch dimension: shape ``(B,)``."""

    # -- derived, generic for every subclass ---------------------------------------------------

    def kernel(self, t: torch.Tensor, like: torch.Tensor) -> KernelCoefficients:
        """Coefficients of the transition kernel at ``t``, shaped for tensors like ``like``.

        Read off :meth:`marginal` at ``x_0 = 0`` and ``x_0 = 1``: the mean is affine in ``x_0``.
        """
        shift, std = self.marginal(torch.zeros_like(like), t)
        mean_one, _ = self.marginal(torch.ones_like(like), t)
        return KernelCoefficients(scale=mean_one - shift, shift=shift, std=std)

    def transition(self, s: torch.Tensor, t: torch.Tensor, like: torch.Tensor):
        """Exact kernel from time ``s`` to a later time ``t``: ``x_t = a x_s + b + c z``.

        From the two kernels from 0: ``a = scale_t / scale_s``, ``b = shift_t - a shift_s`` and
        ``c^2 = std_t^2 - a^2 std_s^2`` (per element). Returns ``(a, b, c2)`` shaped like ``like``.
        """
        return transition_between(self.kernel(s, like), self.kernel(t, like))

    def tweedie(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_t = x] by Tweedie's formula: ``(x - shift + std^2 score) / scale``."""
        k = self.kernel(t, x)
        return (x - k.shift + batch_broadcast(k.std**2, x) * score) / k.scale

    def reverse(self, score_fn: Callable) -> ReverseSDE:
        """The reverse-time SDE ``dx = [f - g^2 s] dt + g dW_bar`` (Song et al. 2021, Eq. 6)."""
        from .reverse import ReverseSDE

        return ReverseSDE(self, score_fn)

    def probability_flow(self, score_fn: Callable) -> ProbabilityFlowODE:
        """The probability-flow ODE ``dx/dt = f - g^2 s / 2`` (Song et al. 2021, Eq. 13)."""
        from .reverse import ProbabilityFlowODE

        return ProbabilityFlowODE(self, score_fn)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def transition_between(ks: KernelCoefficients, kt: KernelCoefficients):
    """``(a, b, c2)`` of the kernel from time s to t > s, given the kernels from 0 to s and to t."""
    a = kt.scale / ks.scale
    b = kt.shift - a * ks.shift
    c2 = batch_broadcast(kt.std**2, a) - a**2 * batch_broadcast(ks.std**2, a)
    return a, b, c2.clamp_min(0.0)


def _gaussian_prior_sample(std: float, shape, generator, dtype, device) -> torch.Tensor:
    shape = _check_shape(shape)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(
            f"dtype must be a floating-point torch.dtype (e.g. torch.float32) or None, got {dtype!r}"
        )
    return std * torch.randn(shape, generator=generator, dtype=dtype, device=device)


def _gaussian_prior_log_prob(std: float, z: torch.Tensor) -> torch.Tensor:
    d = flat_dim(z)
    sq = z.reshape(z.shape[0], -1).pow(2).sum(dim=1)
    return -0.5 * d * (_LOG_2PI + 2.0 * math.log(std)) - sq / (2.0 * std**2)


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints (B, ...), got {shape!r}") from None
    if len(shape) == 0 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints (B, ...), got {shape!r}")
    return shape


class _GaussianPriorMixin:
    """Prior N(0, prior_std^2 I), the subclass setting ``self.prior_std``."""

    prior_std: float

    def prior_sample(self, shape, *, generator=None, dtype=None, device=None):
        return _gaussian_prior_sample(self.prior_std, shape, generator, dtype, device)

    def prior_log_prob(self, z):
        return _gaussian_prior_log_prob(self.prior_std, z)


class _BetaSchedule:
    """Linear beta(t) = beta_min + t (beta_max - beta_min) and its integral from 0."""

    def _init_beta(self, beta_min: float, beta_max: float) -> None:
        self.beta_min = check_real("beta_min", beta_min, low=0.0)
        self.beta_max = check_real("beta_max", beta_max, low=0.0)
        if self.beta_max < self.beta_min:
            raise ValueError(
                f"beta_max must be >= beta_min, got beta_min={beta_min!r}, beta_max={beta_max!r}"
            )
        if self.beta_max <= 0.0:
            raise ValueError(f"beta_max must be > 0 (beta = 0 is no diffusion), got {beta_max!r}")

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def beta_integral(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)


class VPSDE(_BetaSchedule, _GaussianPriorMixin, SDE):
    """Variance-preserving SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW`` (Song et al. Eq. 11).

    Kernel: mean ``exp(-B(t)/2) x_0``, variance ``1 - exp(-B(t))`` with ``B = int_0^t beta``
    (Eq. 29). Prior N(0, I).
    """

    prior_std = 1.0

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        super().__init__(T)
        self._init_beta(beta_min, beta_max)

    def drift(self, x, t):
        return -0.5 * batch_broadcast(self.beta(t), x) * x

    def diffusion(self, t):
        return self.beta(t).sqrt()

    def marginal(self, x0, t):
        b = self.beta_integral(t)
        return batch_broadcast(torch.exp(-0.5 * b), x0) * x0, torch.sqrt(-torch.expm1(-b))


class SubVPSDE(_BetaSchedule, _GaussianPriorMixin, SDE):
    """Sub-VP SDE ``dx = -beta x / 2 dt + sqrt(beta (1 - exp(-2 B(t)))) dW`` (Song et al. Eq. 14).

    Kernel: mean ``exp(-B/2) x_0``, std ``1 - exp(-B)`` (Eq. 29). Prior N(0, I).
    """

    prior_std = 1.0

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        super().__init__(T)
        self._init_beta(beta_min, beta_max)

    def drift(self, x, t):
        return -0.5 * batch_broadcast(self.beta(t), x) * x

    def diffusion(self, t):
        return torch.sqrt(-self.beta(t) * torch.expm1(-2.0 * self.beta_integral(t)))

    def marginal(self, x0, t):
        b = self.beta_integral(t)
        return batch_broadcast(torch.exp(-0.5 * b), x0) * x0, -torch.expm1(-b)


class VESDE(_GaussianPriorMixin, SDE):
    """Variance-exploding SDE ``dx = sqrt(d sigma^2(t) / dt) dW``, ``sigma(t) = sigma_min (sigma_max /
    sigma_min)^t`` (Song et al. Eq. 9).

    Kernel: mean ``x_0``, variance ``sigma(t)^2 - sigma_min^2``, the exact variance of this SDE
    started at ``x_0`` (the reference code uses ``sigma(t)^2``, which is the kernel from a ``x_0``
    already perturbed by ``sigma_min``). Prior N(0, sigma_max^2 I) as in the paper.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        super().__init__(T)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
            )
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * torch.exp(t / self.T * self._log_ratio)

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2.0 * self._log_ratio / self.T)

    def marginal(self, x0, t):
        # sigma(t)^2 - sigma_min^2 = sigma_min^2 expm1(2 t log(ratio) / T), accurate near t = 0.
        var = self.sigma_min**2 * torch.expm1(2.0 * t / self.T * self._log_ratio)
        return x0, var.sqrt()


class LinearSDE(_GaussianPriorMixin, SDE):
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
        raise ValueError(f"grid must be >= 16, got {grid!r}")
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
