"""The noise schedules people train with, as SDEs with closed-form kernels.

- :class:`CosineVPSDE`: Nichol & Dhariwal 2021's cosine schedule in continuous time (the VP SDE
  with ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2(pi/2 (t + s) / (1 + s))``).
- :class:`EDMSDE`: Karras et al. 2022's ``sigma(t) = t``, the VE SDE ``dx = sqrt(2 t) dW``.

Both implement the closed-form noise level ``sigma_hat`` and its inverse (``SDE.sigma_hat``,
``SDE.t_from_sigma_hat``), so the time grids and the few-step samplers need no bisection.
"""

from __future__ import annotations

import math

import torch

from .._checks import ArgumentValueError, check_positive, check_real
from .._utils import batch_broadcast
from .base import SDE, GaussianPriorMixin

__all__ = ["CosineVPSDE", "EDMSDE"]

_HALF_PI = 0.5 * math.pi


class CosineVPSDE(GaussianPriorMixin, SDE):
    """Nichol & Dhariwal 2021's cosine schedule (their Eq. 17) as a VP SDE in continuous time.

    ``alpha_bar(t) = f(t) / f(0)`` with ``f(t) = cos^2(phi(t))``, ``phi(t) = pi/2 (t + s) / (1 + s)``;
    the SDE is ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW`` with ``beta = -d log alpha_bar / dt =
    pi / (1 + s) tan(phi(t))`` (Song et al. 2021, Eq. 11), and its kernel is
    ``N(sqrt(alpha_bar) x_0, (1 - alpha_bar) I)``. Prior N(0, I).

    ``beta`` blows up at ``t = 1``, so the SDE ends at ``T < 1``: by default where ``beta(T) =
    beta_max``, i.e. ``T = 2 (1 + s) / pi * atan(beta_max (1 + s) / pi) - s``. With ``beta_max =
    999`` (the discrete schedule's clip of beta_i at 0.999 over 1,000 steps, Nichol & Dhariwal
    Sec. 3.2, read in continuous time) ``T = 0.99800``. DPM-Solver's ``NoiseScheduleVP("cosine")``
    (Lu et al. 2022, github.com/LuChengTHU/dpm-solver, ``dpm_solver_pytorch.py``) computes this
    same time as ``cosine_t_max`` but integrates from a hand-set ``T = 0.9946`` (where ``beta =
    370``); pass ``T=0.9946`` to match it. ``T`` may be any time in ``(0, T(beta_max)]``.

    ``1 - alpha_bar`` is written as ``sin(phi - phi_0) sin(phi + phi_0) / cos^2(phi_0)`` and
    ``cos(phi)`` as ``sin(pi/2 (1 - t) / (1 + s))``, so the kernel is accurate to a few ulps at
    both ends of ``[0, T]``.
    """

    #: measured best for few steps (docs/benchmarks_schedules.md)
    recommended_schedules = {"UniPC": "time_uniform", "DPMSolverPlusPlus": "time_uniform"}

    prior_std = 1.0

    def __init__(self, s: float = 0.008, beta_max: float = 999.0, T: float | None = None):
        self.s = check_real("s", s, low=0.0)
        self.beta_max = check_positive("beta_max", beta_max)
        self._phi0 = _HALF_PI * self.s / (1.0 + self.s)
        self._c0 = math.cos(self._phi0)
        beta0 = math.pi / (1.0 + self.s) * math.tan(self._phi0)
        if self.beta_max <= beta0:
            raise ArgumentValueError(
                "beta_max",
                beta_max,
                f"beta_max must be > beta(0) = {beta0:.6g} (the cosine schedule's beta at t = 0 for "
                f"s={self.s!r}), got {beta_max!r}",
            )
        t_max = (1.0 + self.s) / _HALF_PI * math.atan(self.beta_max * (1.0 + self.s) / math.pi) - self.s
        if T is None:
            T = t_max
        elif check_positive("T", T) > t_max * (1.0 + 1e-12):
            raise ArgumentValueError(
                "T",
                T,
                f"T must be <= {t_max!r}, the time where beta(t) reaches beta_max={self.beta_max!r} "
                f"(beta is infinite at t = 1), got {T!r}",
            )
        super().__init__(min(float(T), t_max))

    def _cos_phi(self, t: torch.Tensor) -> torch.Tensor:
        """``cos(phi(t))``, as ``sin(pi/2 (1 - t) / (1 + s))``: accurate up to ``t = 1``."""
        return torch.sin(_HALF_PI * (1.0 - t) / (1.0 + self.s))

    def _var_times_c0sq(self, t: torch.Tensor) -> torch.Tensor:
        """``(1 - alpha_bar) cos^2(phi_0) = sin(phi - phi_0) sin(phi + phi_0)``, no cancellation."""
        k = _HALF_PI / (1.0 + self.s)
        return torch.sin(k * t) * torch.sin(k * (t + 2.0 * self.s))

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """``alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0))``, the kernel's mean coefficient squared."""
        return (self._cos_phi(t) / self._c0) ** 2

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """``beta(t) = -d log alpha_bar / dt = pi / (1 + s) tan(phi(t))``."""
        phi = _HALF_PI * (t + self.s) / (1.0 + self.s)
        return math.pi / (1.0 + self.s) * torch.sin(phi) / self._cos_phi(t)

    def drift(self, x, t):
        return -0.5 * batch_broadcast(self.beta(t), x) * x

    def diffusion(self, t):
        return self.beta(t).sqrt()

    def marginal(self, x0, t):
        scale = self._cos_phi(t) / self._c0
        return batch_broadcast(scale, x0) * x0, self._var_times_c0sq(t).sqrt() / self._c0

    def sigma_hat(self, t):
        """``sqrt((1 - alpha_bar) / alpha_bar) = sqrt(sin(phi - phi_0) sin(phi + phi_0)) / cos(phi)``."""
        t = torch.as_tensor(t)
        return self._var_times_c0sq(t).sqrt() / self._cos_phi(t)

    def t_from_sigma_hat(self, sigma):
        """Closed form: ``sigma_hat^2 = cos^2(phi_0) / cos^2(phi) - 1`` gives ``tan(phi) =
        sqrt(sin^2(phi_0) + sigma^2) / cos(phi_0)``, and ``phi - phi_0`` is read off
        ``tan(phi - phi_0)`` written without cancellation (exact near ``sigma = 0``)."""
        sigma = torch.as_tensor(sigma)
        s0, c0 = math.sin(self._phi0), self._c0
        r = torch.sqrt(s0**2 + sigma**2)
        tan_phi = r / c0
        # tan(phi) - tan(phi_0) = (r - s0) / c0 = sigma^2 / (c0 (r + s0))
        num = sigma**2 / (c0 * (r + s0))
        dphi = torch.atan2(num, 1.0 + tan_phi * (s0 / c0))
        return dphi * (1.0 + self.s) / _HALF_PI


class EDMSDE(GaussianPriorMixin, SDE):
    """EDM's variance-exploding SDE with ``sigma(t) = t`` (Karras et al. 2022, Sec. 2 and Table 1):
    ``dx = sqrt(2 t) dW`` on ``[0, sigma_max]``.

    Kernel: mean ``x_0``, std ``t`` (``int_0^t 2 u du = t^2``), so ``sigma_hat(t) = t`` and time is
    the noise level. ``T = sigma_max``; prior N(0, sigma_max^2 I). EDM stops sampling at
    ``sigma_min = 0.002``; ``sg.sample``'s default ``eps = 1e-3`` stops at ``sigma = 0.001``
    (pass ``eps=0.002`` to match EDM exactly).
    """

    def __init__(self, sigma_max: float = 80.0):
        self.sigma_max = check_positive("sigma_max", sigma_max)
        super().__init__(self.sigma_max)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """``sigma(t) = t``: the kernel's std."""
        return torch.as_tensor(t).clone()

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        return torch.sqrt(2.0 * t)

    def marginal(self, x0, t):
        return x0, t.clone()

    def sigma_hat(self, t):
        return torch.as_tensor(t).clone()

    def t_from_sigma_hat(self, sigma):
        return torch.as_tensor(sigma).clone()
