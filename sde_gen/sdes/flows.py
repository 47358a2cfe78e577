"""The straight path of flow matching and rectified flow as an SDE with a Gaussian kernel.

Flow matching (Lipman et al. 2023) and rectified flow (Liu et al. 2022) interpolate
``x_t = (1 - t) x_0 + t z`` on ``[0, 1]``. That is the kernel ``N((1 - t) x_0, t^2 I)`` of a linear
SDE, so every sampler, the exact likelihood, guidance and the inverse problems of sde_gen apply to
it unchanged, through the same ``(xhat, sigma_hat)`` variables as VP or VE (docs/maths.md).
"""

from __future__ import annotations

import math

import torch

from .._checks import ArgumentValueError, check_positive
from .._utils import batch_broadcast
from .base import SDE, GaussianPriorMixin

__all__ = ["RectifiedFlow"]


class RectifiedFlow(GaussianPriorMixin, SDE):
    """Flow matching's straight path ``x_t = (1 - t) x_0 + t z`` (Lipman et al. 2023; Liu et al.
    2022's rectified flow) as the linear SDE with that kernel.

    Kernel: mean ``(1 - t) x_0``, std ``t``; so ``sigma_hat(t) = t / (1 - t)`` and
    ``t = sigma_hat / (1 + sigma_hat)``. The SDE with these marginals is
    ``dx = -x / (1 - t) dt + sqrt(2 t / (1 - t)) dW`` (``d log(1 - t) / dt = -1 / (1 - t)`` and
    ``g^2 = d std^2 / dt - 2 f std^2 / x = 2 t + 2 t^2 / (1 - t)``); its probability-flow velocity
    at ``x_t`` is ``E[z - x_0 | x_t]``, the velocity flow matching regresses on.

    Drift and diffusion are infinite at ``t = 1``, where ``sigma_hat`` is, so the SDE ends at
    ``T < 1`` (default 0.999, ``sigma_hat(T) = 999``, log-SNR -13.8 against VP's -10.0 at
    ``t = 1``) and samplers start there from the prior N(0, prior_std^2 I). ``p_T`` is the law of
    ``(1 - T) x_0 + T z``, not the prior; :meth:`prior_mismatch` gives, for data of a given mean
    and covariance, ``KL(N(mean_T, cov_T) || prior)``, the Gaussian part of what starting from
    the prior costs: 6.4e-5 nats for 64 dimensions of zero-mean, unit-variance data at the
    defaults (tests/sdes/test_flows.py checks it against the Monte Carlo KL of a mixture).

    Solvers given no grid use the ones measured best on this path (``recommended_schedules``;
    per-component W2 over its floor at 5 / 10 / 20 evaluations, docs/benchmarks_schedules.md and
    docs/benchmarks_schedules_16d_tuned.md): iPNDM and DDIM uniform in ``t`` (iPNDM 4.6 / 0.94 at
    10 / 20 on the 8 Gaussians), and since 2026-12-06 UniPC and DPM-Solver++ too (UniPC 22.4 / 2.04
    / 1.17 on the 8 Gaussians and 2.56 / 1.23 / 1.02 on the 16-D mixture, against 63.1 / 13.9 / 1.40
    and 20.8 / 2.99 / 1.12 on ``time_quadratic``; DPM-Solver++ 2M 51.8 / 56.8 / 9.5 and 8.37 / 3.42
    / 1.26 against 671 / 104 / 12.3 and 41.1 / 8.09 / 1.93). The others keep their own defaults.
    """

    recommended_schedules = {
        "IPNDM": "time_uniform",
        "DDIM": "time_uniform",
        "UniPC": "time_uniform",
        "DPMSolverPlusPlus": "time_uniform",
    }

    def __init__(self, T: float = 0.999, prior_std: float = 1.0):
        if check_positive("T", T) >= 1.0:
            raise ArgumentValueError(
                "T",
                T,
                f"T must be < 1: the straight path's drift -x / (1 - t) and its noise level "
                f"t / (1 - t) are infinite at t = 1, got {T!r}",
            )
        super().__init__(T)
        self.prior_std = check_positive("prior_std", prior_std)

    def drift(self, x, t):
        return -x / batch_broadcast(1.0 - t, x)

    def diffusion(self, t):
        return torch.sqrt(2.0 * t / (1.0 - t))

    def marginal(self, x0, t):
        return batch_broadcast(1.0 - t, x0) * x0, t.clone()

    def sigma_hat(self, t):
        t = torch.as_tensor(t)
        return t / (1.0 - t)

    def t_from_sigma_hat(self, sigma):
        sigma = torch.as_tensor(sigma)
        return sigma / (1.0 + sigma)

    def prior_mismatch(self, mean: torch.Tensor, cov: torch.Tensor) -> float:
        """``KL(N((1 - T) mean, (1 - T)^2 cov + T^2 I) || N(0, prior_std^2 I))`` in nats, for data of
        mean ``mean`` ``(D,)`` and covariance ``cov`` ``(D, D)``: the Gaussian part of the cost of
        starting at ``T`` from the prior (the exact KL for Gaussian data)."""
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        d = mean.numel()
        if cov.shape != (d, d):
            raise ArgumentValueError(
                "cov", cov, f"cov must be (D, D) = ({d}, {d}) for mean of {d} entries, got {tuple(cov.shape)}"
            )
        a, s, p2 = 1.0 - self.T, self.T, self.prior_std**2
        cov_t = a**2 * cov + s**2 * torch.eye(d, dtype=torch.float64)
        logdet = torch.linalg.slogdet(cov_t)[1]
        kl = 0.5 * (torch.trace(cov_t) / p2 + a**2 * mean.square().sum() / p2 - d + d * math.log(p2) - logdet)
        return float(kl)
