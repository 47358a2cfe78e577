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

import torch

from .._checks import ArgumentTypeError, ArgumentValueError, check_positive, check_real
from .._utils import batch_broadcast, flat_dim
from .reverse import ProbabilityFlowODE, ReverseSDE

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "KernelCoefficients", "check_sde"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class KernelCoefficients:
    """The Gaussian transition kernel ``p_0t(x_t | x_0) = N(scale * x_0 + shift, std^2 I)``.

    ``scale`` and ``shift`` have the shape of ``x``; ``std`` has shape ``(B,)``.
    """

    scale: torch.Tensor
    shift: torch.Tensor
    std: torch.Tensor

    def tweedie(self, x: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Tweedie's formula, ``E[x_0 | x_t = x] = (x - shift + std^2 score) / scale``, with
        ``score`` the score of p_t at ``x`` (shaped like ``x``) and this kernel at ``t``. The one
        place the formula is written; :meth:`SDE.tweedie` and every sampler call it."""
        return (x - self.shift + batch_broadcast(self.std**2, x) * score) / self.scale


class SDE(abc.ABC):
    """Base class of a forward SDE ``dx = f(x, t) dt + g(t) dW`` on ``t in [0, T]``.

    Implement :meth:`drift`, :meth:`diffusion`, :meth:`marginal`, :meth:`prior_sample` and
    :meth:`prior_log_prob`; every solver, predictor, corrector and likelihood in ``sde_gen`` then
    works for the subclass. ``marginal`` must be the Gaussian kernel of the SDE with a mean affine
    in ``x_0`` (true of every SDE with a linear drift), which the derived methods rely on.

    ``recommended_schedules`` maps a solver's class name to the named time grid it should use on
    this SDE when the caller gives none (:meth:`schedule_for`); empty here, so each solver keeps
    its own ``default_schedule``. A subclass fills it from measurements (docs/samplers.md).
    """

    recommended_schedules: dict[str, str] = {}

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
        """E[x_0 | x_t = x] by Tweedie's formula (:meth:`KernelCoefficients.tweedie`)."""
        return self.kernel(t, x).tweedie(x, score)

    # -- noise levels: every Gaussian-kernel SDE is a rescaled VE process -------------------------

    def sigma_hat(self, t: torch.Tensor) -> torch.Tensor:
        """``std(t) / scale(t)``, the noise level of ``(x_t - shift) / scale = x_0 + sigma_hat z``.

        Shaped like ``t`` (any shape). It rises from 0 and is the variable in which the
        probability-flow ODE reads ``d xhat / d sigma_hat = (xhat - D) / sigma_hat`` (docs/maths.md).
        """
        t = t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64)
        flat = t.reshape(-1)
        k = self.kernel(flat, flat[:, None])
        return (k.std / k.scale[:, 0]).reshape(t.shape)

    def half_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """``lambda(t) = -log sigma_hat(t) = log(scale / std)``, decreasing in ``t``."""
        return -torch.log(self.sigma_hat(t))

    def t_from_sigma_hat(self, sigma: torch.Tensor) -> torch.Tensor:
        """The time at which :meth:`sigma_hat` equals ``sigma`` (inverse, shaped like ``sigma``).

        Here by bisection in float64 on ``[0, T]`` to the last bit of ``t`` (``sigma_hat`` must
        increase with ``t``, as it does for every SDE that adds noise); the built-in SDEs override
        it with their closed forms. Values outside ``[sigma_hat(0), sigma_hat(T)]`` raise.
        """
        sigma = sigma if isinstance(sigma, torch.Tensor) else torch.as_tensor(sigma, dtype=torch.float64)
        s = sigma.detach().to(torch.float64).reshape(-1)
        lo = torch.zeros_like(s)
        hi = torch.full_like(s, self.T)
        s_lo, s_hi = self.sigma_hat(lo[:1]), self.sigma_hat(hi[:1])
        bad = (s < s_lo) | (s > s_hi * (1 + 1e-12)) | ~torch.isfinite(s)
        if bad.any():
            raise ValueError(
                f"sigma_hat={s[bad][0].item()!r} is outside [{s_lo.item():.6g}, {s_hi.item():.6g}], the "
                f"range of {type(self).__name__}.sigma_hat on [0, T={self.T}]"
            )
        for _ in range(64):  # each halves [lo, hi]; float64 resolution is reached well before 64
            mid = 0.5 * (lo + hi)
            up = self.sigma_hat(mid) < s
            lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
        return (
            (0.5 * (lo + hi))
            .to(sigma.dtype if sigma.is_floating_point() else torch.float64)
            .reshape(sigma.shape)
        )

    def t_from_half_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        """The time at which :meth:`half_log_snr` equals ``lam``."""
        return self.t_from_sigma_hat(torch.exp(-torch.as_tensor(lam)))

    def reverse(self, score_fn: Callable) -> ReverseSDE:
        """The reverse-time SDE ``dx = [f - g^2 s] dt + g dW_bar`` (Song et al. 2021, Eq. 6)."""
        return ReverseSDE(self, score_fn)

    def probability_flow(self, score_fn: Callable) -> ProbabilityFlowODE:
        """The probability-flow ODE ``dx/dt = f - g^2 s / 2`` (Song et al. 2021, Eq. 13)."""
        return ProbabilityFlowODE(self, score_fn)

    def schedule_for(self, solver) -> str:
        """The named grid ``solver`` uses on this SDE when it is given none: the entry of
        ``recommended_schedules`` for its class or the nearest base class named there, else
        ``solver.default_schedule``."""
        for cls in type(solver).__mro__:
            if cls.__name__ in self.recommended_schedules:
                return self.recommended_schedules[cls.__name__]
        return solver.default_schedule

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def check_sde(sde) -> SDE:
    """``sde`` itself if it is an :class:`SDE`; a ``TypeError`` that names it otherwise."""
    if not isinstance(sde, SDE):
        raise ArgumentTypeError(
            "sde", sde, f"sde must be an instance of sde_gen.SDE, got {type(sde).__name__}"
        )
    return sde


def transition_between(ks: KernelCoefficients, kt: KernelCoefficients):
    """``(a, b, c2)`` of the kernel from time s to t > s, given the kernels from 0 to s and to t."""
    a = kt.scale / ks.scale
    b = kt.shift - a * ks.shift
    c2 = batch_broadcast(kt.std**2, a) - a**2 * batch_broadcast(ks.std**2, a)
    return a, b, c2.clamp_min(0.0)


def _gaussian_prior_sample(std: float, shape, generator, dtype, device) -> torch.Tensor:
    shape = check_shape(shape)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ArgumentTypeError(
            "dtype",
            dtype,
            f"dtype must be a floating-point torch.dtype (e.g. torch.float32) or None, got {dtype!r}",
        )
    return std * torch.randn(shape, generator=generator, dtype=dtype, device=device)


def _gaussian_prior_log_prob(std: float, z: torch.Tensor) -> torch.Tensor:
    d = flat_dim(z)
    sq = z.reshape(z.shape[0], -1).pow(2).sum(dim=1)
    return -0.5 * d * (_LOG_2PI + 2.0 * math.log(std)) - sq / (2.0 * std**2)


def check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise ArgumentTypeError(
            "shape", shape, f"shape must be a tuple of ints (B, ...), got {shape!r}"
        ) from None
    if len(shape) == 0 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ArgumentValueError(
            "shape", shape, f"shape must be a non-empty tuple of positive ints (B, ...), got {shape!r}"
        )
    return shape


class GaussianPriorMixin:
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
            raise ArgumentValueError(
                "beta_max",
                beta_max,
                f"beta_max must be >= beta_min, got beta_min={beta_min!r}, beta_max={beta_max!r}",
            )
        if self.beta_max <= 0.0:
            raise ArgumentValueError(
                "beta_max", beta_max, f"beta_max must be > 0 (beta = 0 is no diffusion), got {beta_max!r}"
            )

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def beta_integral(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def _t_from_beta_integral(self, b: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`beta_integral`: the positive root of ``beta_min t + (db/2) t^2 = b``."""
        d = self.beta_max - self.beta_min
        if d == 0.0:
            return b / self.beta_min
        # (-beta_min + sqrt(beta_min^2 + 2 d b)) / d, written without the cancellation
        return 2.0 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * d * b))


class VPSDE(_BetaSchedule, GaussianPriorMixin, SDE):
    """Variance-preserving SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW`` (Song et al. Eq. 11).

    Kernel: mean ``exp(-B(t)/2) x_0``, variance ``1 - exp(-B(t))`` with ``B = int_0^t beta``
    (Eq. 29). Prior N(0, I).

    Few-step solvers given no grid take the ones measured best here (docs/benchmarks_schedules.md:
    the worst over the 8 Gaussians and a 16-D mixture, exact score).
    """

    prior_std = 1.0
    recommended_schedules = {
        "UniPC": "time_quadratic",
        "DPMSolverPlusPlus": "time_quadratic",
    }

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

    def t_from_sigma_hat(self, sigma):
        # sigma_hat^2 = exp(B) - 1
        return self._t_from_beta_integral(torch.log1p(torch.as_tensor(sigma) ** 2))


class SubVPSDE(_BetaSchedule, GaussianPriorMixin, SDE):
    """Sub-VP SDE ``dx = -beta x / 2 dt + sqrt(beta (1 - exp(-2 B(t)))) dW`` (Song et al. Eq. 14).

    Kernel: mean ``exp(-B/2) x_0``, std ``1 - exp(-B)`` (Eq. 29). Prior N(0, I). Few-step solvers
    given no grid take the ones measured best here (docs/benchmarks_schedules.md).
    """

    prior_std = 1.0
    recommended_schedules = {
        "UniPC": "time_quadratic",
        "DPMSolverPlusPlus": "time_quadratic",
    }

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

    def t_from_sigma_hat(self, sigma):
        # sigma_hat = (1 - exp(-B)) exp(B/2) = 2 sinh(B/2)
        return self._t_from_beta_integral(2.0 * torch.asinh(0.5 * torch.as_tensor(sigma)))


class VESDE(GaussianPriorMixin, SDE):
    """Variance-exploding SDE ``dx = sqrt(d sigma^2(t) / dt) dW``, ``sigma(t) = sigma_min (sigma_max /
    sigma_min)^t`` (Song et al. Eq. 9).

    Kernel: mean ``x_0``, variance ``sigma(t)^2 - sigma_min^2``, the exact variance of this SDE
    started at ``x_0`` (the reference code uses ``sigma(t)^2``, which is the kernel from a ``x_0``
    already perturbed by ``sigma_min``). Prior N(0, sigma_max^2 I) as in the paper. Few-step
    solvers given no grid take the ones measured best here (docs/benchmarks_schedules.md).
    """

    recommended_schedules = {
        "UniPC": "time_uniform",
        "DPMSolverPlusPlus": "time_uniform",
    }

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        super().__init__(T)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ArgumentValueError(
                "sigma_max",
                sigma_max,
                f"sigma_max must be > sigma_min, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}",
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

    def t_from_sigma_hat(self, sigma):
        return self.T * torch.log1p((torch.as_tensor(sigma) / self.sigma_min) ** 2) / (2.0 * self._log_ratio)
