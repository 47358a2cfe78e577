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


class ComponentW2:
    """The per-component W2 figure of a sample of ``p_eps`` and the mode-weight chi2, each against a
    large exact reference set, with their noise floors (the same figures for exact sets of ``n``).

    Each sample goes to the component of largest responsibility under ``p_eps``; the figure is
    ``sum_k w_k W2^2(Gaussian fit to the samples of k, Gaussian fit to the reference's of k)`` (the
    Fréchet distance per component), so the truncation by the assignment cancels; ``chi2 =
    sum_k (w_hat_k - w_k)^2 / w_k``. ``floor`` is ``(w2, chi2)`` averaged over ``floor_reps`` exact
    sets; benchmarks/fast_samplers.py reports a sampler as ``figure / floor``.
    """

    def __init__(self, mix, sde, eps, n, n_ref, floor_reps, seed=1234):
        g = torch.Generator().manual_seed(seed)
        self.mix, self.sde, self.eps = mix, sde, eps
        ref = mix.sample_marginal(n_ref, eps, sde, generator=g)
        lab = self.assign(ref)
        self.ref = [ref[lab == k] for k in range(len(mix.weights))]
        self.w_ref = torch.bincount(lab, minlength=len(mix.weights)).to(ref.dtype) / n_ref
        floors = [self(mix.sample_marginal(n, eps, sde, generator=g)) for _ in range(floor_reps)]
        self.floor = tuple(sum(f[i] for f in floors) / floor_reps for i in range(2))

    def assign(self, x):
        """The component of largest responsibility under p_eps for every row of ``x``."""
        means, covs = self.mix.marginal_params(self.sde, torch.full((1,), self.eps, dtype=x.dtype))
        comps = torch.distributions.MultivariateNormal(means[0], covs[0])
        return (comps.log_prob(x[:, None, :]) + self.mix.weights.log()).argmax(dim=1)

    def __call__(self, x):
        lab = self.assign(x)
        w_hat = torch.bincount(lab, minlength=len(self.ref)).to(x.dtype) / x.shape[0]
        w2 = 0.0
        for k, ref_k in enumerate(self.ref):
            xk = x[lab == k]
            w2 += float(self.mix.weights[k]) * (
                sg.frechet_distance(xk, ref_k) if xk.shape[0] > 2 else math.inf
            )
        chi2 = float(((w_hat - self.w_ref) ** 2 / self.w_ref).sum())
        return w2, chi2
