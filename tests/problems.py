"""Closed-form problems shared by the tests and benchmarks: mixtures, SDEs, two-sample figures."""

from __future__ import annotations

import math

import torch

import sde_gen as sg


class OrnsteinUhlenbeck(sg.SDE):
    """A user's SDE written from scratch: ``dx = -theta x dt + s dW`` with the five methods only.

    Kernel: mean ``exp(-theta t) x0``, variance ``s^2 (1 - exp(-2 theta t)) / (2 theta)``;
    prior: the stationary law N(0, s^2 / (2 theta)).
    """

    def __init__(self, theta: float = 4.0, s: float = math.sqrt(8.0)):
        super().__init__(T=1.0)
        self.theta, self.s = theta, s

    def drift(self, x, t):
        return -self.theta * x

    def diffusion(self, t):
        return torch.full_like(t, self.s)

    def marginal(self, x0, t):
        mean = torch.exp(-self.theta * t).reshape(-1, *([1] * (x0.ndim - 1))) * x0
        var = self.s**2 * -torch.expm1(-2 * self.theta * t) / (2 * self.theta)
        return mean, var.sqrt()

    def prior_sample(self, shape, *, generator=None, dtype=None, device=None):
        std = self.s / math.sqrt(2 * self.theta)
        return std * torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, z):
        var = self.s**2 / (2 * self.theta)
        d = z[0].numel()
        return -0.5 * d * math.log(2 * math.pi * var) - z.reshape(z.shape[0], -1).pow(2).sum(1) / (2 * var)


def cosine_linear_sde() -> sg.LinearSDE:
    """A LinearSDE given only callables a(t), g(t): VP form with a non-linear beta(t)."""
    beta = lambda t: 0.1 + 19.9 * t**2 + 2.0 * torch.sin(3.0 * t) ** 2
    return sg.LinearSDE(lambda t: -0.5 * beta(t), lambda t: beta(t).sqrt())


SDES = {
    "vp": lambda: sg.VPSDE(),
    "subvp": lambda: sg.SubVPSDE(),
    "ve": lambda: sg.VESDE(),
    "linear": cosine_linear_sde,
    "user": OrnsteinUhlenbeck,
    "flow": lambda: sg.RectifiedFlow(),
}


def mixture_2d(dtype=torch.float64) -> sg.GaussianMixture:
    """Three well-separated 2-D components with different weights and full covariances."""
    means = torch.tensor([[2.0, 0.0], [-2.0, 0.5], [0.0, 2.5]], dtype=dtype)
    covs = torch.tensor(
        [[[0.25, 0.05], [0.05, 0.16]], [[0.16, -0.04], [-0.04, 0.25]], [[0.2, 0.0], [0.0, 0.2]]],
        dtype=dtype,
    )
    return sg.GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=dtype), means, covs)


def mixture_16d(dtype=torch.float64, seed: int = 0) -> sg.GaussianMixture:
    """Four 16-D components with random means (scale 2) and random full covariances."""
    g = torch.Generator().manual_seed(seed)
    K, D = 4, 16
    means = 2.0 * torch.randn(K, D, generator=g, dtype=dtype)
    A = 0.3 * torch.randn(K, D, D, generator=g, dtype=dtype)
    covs = A @ A.transpose(-1, -2) + 0.1 * torch.eye(D, dtype=dtype)
    return sg.GaussianMixture(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=dtype), means, covs)


def energy_noise_floor(mix, sde, n: int, t: float, *, reps: int = 6, seed: int = 1234):
    """Reference sample ``ref`` of p_t and the energy distances between ``reps`` further exact
    sample sets of size ``n`` and ``ref``: the figure's spread when nothing is wrong."""
    g = torch.Generator().manual_seed(seed)
    ref = mix.sample_marginal(n, t, sde, generator=g)
    floor = torch.tensor(
        [sg.energy_distance(mix.sample_marginal(n, t, sde, generator=g), ref) for _ in range(reps)]
    )
    return ref, floor
