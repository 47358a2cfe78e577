"""The likelihood ODE in noise-level variables, and truncated-normal dequantization, against
closed forms: the analytic log-density of Gaussian mixtures and the exact probability of a bin
(CDF differences). Everything is float64 and seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from problems import SDES, mixture_2d, mixture_16d

import sde_gen as sg
from sde_gen.evaluation.bpd import evaluate_bpd
from sde_gen.likelihood.dequantization import (
    importance_weighted_bpd_per_image,
    truncated_normal_log_prob,
    truncated_normal_sample,
)
from sde_gen.likelihood.probability_flow import noise_level_rates

F64 = torch.float64
EPS = 1e-3
PAIRS = [
    ("sigma_hat", "x"),
    ("half_log_snr", "x"),
    ("t", "xhat"),
    ("sigma_hat", "xhat"),
    ("half_log_snr", "xhat"),
]


def _ode_error(res, mix, sde, x):
    """|likelihood - truth| with the prior swapped for the exact log p_T (only the ODE's error)."""
    ode = res.log_prob - res.prior_log_prob + mix.log_prob(res.z, sde.T, sde)
    return (ode - mix.log_prob(x, EPS, sde)).abs()


# -- the change of variables -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(SDES))
def test_noise_level_rates_match_finite_differences(name):
    """d sigma_hat/dt = g^2 / (2 sigma_hat scale^2) and d lambda/dt = -g^2 / (2 std^2), against
    central differences of sde.sigma_hat and sde.half_log_snr (error O(h^2) ~ 1e-9 relative)."""
    sde = SDES[name]()
    t = torch.tensor([0.01, 0.1, 0.4, 0.8, 0.95], dtype=F64)
    h = 1e-5
    sigma, ds, dl = noise_level_rates(sde, t)
    fd_s = (sde.sigma_hat(t + h) - sde.sigma_hat(t - h)) / (2 * h)
    fd_l = (sde.half_log_snr(t + h) - sde.half_log_snr(t - h)) / (2 * h)
    assert torch.allclose(sigma, sde.sigma_hat(t), rtol=1e-12, atol=0)
    assert ((ds - fd_s) / fd_s).abs().max() < 1e-6
    assert ((dl - fd_l) / fd_l).abs().max() < 1e-6


@pytest.mark.parametrize(
    "name,variable,state",
    [(n, v, s) for n in ["vp", "subvp", "ve", "user"] for v, s in PAIRS] + [("linear", "sigma_hat", "xhat")],
)
def test_reparametrized_likelihood_2d_equals_analytic(name, variable, state):
    # Measured: at rtol = atol = 1e-6 every pair is within ~1e-5 nats (mean) of the truth.
    sde, mix = SDES[name](), mixture_2d()
    x = mix.sample_marginal(12, EPS, sde, generator=torch.Generator().manual_seed(0))
    solver = sg.ProbabilityFlow(rtol=1e-6, atol=1e-6)
    res = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=EPS, solver=solver, variable=variable, state=state)
    assert _ode_error(res, mix, sde, x).max() < 1e-3
    # x is carried to the same z at T as in t.
    ref = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=EPS, solver=solver)
    assert (res.z - ref.z).abs().max() < 1e-3


@pytest.mark.parametrize("name,variable,state", [("vp", "sigma_hat", "xhat"), ("user", "half_log_snr", "x")])
def test_reparametrized_likelihood_16d_equals_analytic(name, variable, state):
    sde, mix = SDES[name](), mixture_16d()
    x = mix.sample_marginal(4, EPS, sde, generator=torch.Generator().manual_seed(1))
    solver = sg.ProbabilityFlow(rtol=1e-7, atol=1e-7)
    res = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=EPS, solver=solver, variable=variable, state=state)
    assert _ode_error(res, mix, sde, x).max() < 1e-3


def test_xhat_log_determinant_is_needed():
    """Without the closed-form log|det| of the affine map the xhat result would be off by
    sum log scale_T - sum log scale_eps: on VP that is -d B(T)/2 ~ -10 nats, far above the error."""
    sde, mix = sg.VPSDE(), mixture_2d()
    x = mix.sample_marginal(4, EPS, sde, generator=torch.Generator().manual_seed(2))
    res = sg.log_likelihood(
        sde, mix.score_fn(sde), x, eps=EPS, solver=sg.ProbabilityFlow(rtol=1e-6, atol=1e-6), state="xhat"
    )
    scale = lambda t: float(sde.kernel(torch.tensor([t], dtype=F64), x[:1]).scale[0, 0])  # noqa: E731
    log_det = 2 * (math.log(scale(1.0)) - math.log(scale(EPS)))
    assert log_det < -9.0 and _ode_error(res, mix, sde, x).max() < 1e-3


def test_fixed_grid_in_half_log_snr_converges_at_rk4_order():
    """rk4 on the log-SNR grid, stepped in (xhat, lambda): the error falls at slope ~4."""
    sde, mix = sg.VPSDE(), mixture_2d()
    x = mix.sample_marginal(8, EPS, sde, generator=torch.Generator().manual_seed(3))
    steps, errs = [24, 48, 96], []
    for n in steps:
        solver = sg.ProbabilityFlow(method="rk4", steps=n, schedule="log_snr")
        res = sg.log_likelihood(
            sde, mix.score_fn(sde), x, eps=EPS, solver=solver, variable="half_log_snr", state="xhat"
        )
        errs.append(float(_ode_error(res, mix, sde, x).mean()))
    slope = -(math.log(errs[-1]) - math.log(errs[0])) / (math.log(steps[-1]) - math.log(steps[0]))
    assert 3.3 < slope < 5.0, (errs, slope)


def test_default_is_today_and_bad_choices_are_named():
    sde, mix = sg.VPSDE(), mixture_2d()
    x = mix.sample_marginal(3, EPS, sde, generator=torch.Generator().manual_seed(4))
    solver = sg.ProbabilityFlow(method="rk4", steps=6)
    a = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=EPS, solver=solver)
    b = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=EPS, solver=solver, variable="t", state="x")
    assert torch.equal(a.log_prob, b.log_prob) and torch.equal(a.z, b.z)
    with pytest.raises(ValueError, match="variable"):
        sg.log_likelihood(sde, mix.score_fn(sde), x, variable="lambda_")
    with pytest.raises(ValueError, match="state"):
        sg.log_likelihood(sde, mix.score_fn(sde), x, state="z")


# -- truncated-normal dequantization ----------------------------------------------------------


def _bin_log_prob(mix_means, mix_stds, weights, lo, hi):
    """Exact log P(bin) of a diagonal Gaussian mixture: sum_m w_m prod_i (Phi(b) - Phi(a))."""
    a = (lo[:, None, :] - mix_means[None]) / mix_stds[None]
    b = (hi[:, None, :] - mix_means[None]) / mix_stds[None]
    mass = (torch.special.ndtr(b) - torch.special.ndtr(a)).prod(-1)
    return torch.log((weights[None] * mass).sum(-1))


@pytest.mark.parametrize("sigma,h", [(0.05, 0.1), (0.1, 0.05), (0.01, 0.2)])
def test_truncated_normal_density_and_draws(sigma, h):
    # The density integrates to 1 over [-h, h] (Gauss-Legendre, 256 nodes) ...
    xs, ws = np.polynomial.legendre.leggauss(256)
    u = torch.tensor(xs * h, dtype=F64)[:, None]
    mass = (torch.tensor(ws * h, dtype=F64) * truncated_normal_log_prob(u, sigma, h).exp()).sum()
    assert abs(float(mass) - 1.0) < 1e-10
    # ... is -inf outside, and the draws lie inside with the truncated normal's variance
    # sigma^2 [1 - 2 a phi(a) / (2 Phi(a) - 1)], a = h / sigma (tolerance: 5 standard errors).
    assert truncated_normal_log_prob(torch.tensor([[1.01 * h]], dtype=F64), sigma, h).item() == -math.inf
    draws = truncated_normal_sample((40000,), sigma, h, generator=torch.Generator().manual_seed(5))
    assert draws.abs().max() <= h
    a = h / sigma
    var = sigma**2 * (
        1 - 2 * a * math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi) / math.erf(a / math.sqrt(2))
    )
    se = math.sqrt(2.0 / 40000) * var * 1.5
    assert abs(float(draws.pow(2).mean()) - var) < 5 * se
    assert abs(float(draws.mean())) < 5 * math.sqrt(var / 40000)


def test_importance_weighted_bound_below_exact_and_gap_shrinks_like_one_over_k():
    """1-D mixture discretised into 8 bins on [-1, 1): the K-sample bound is below the exact
    log P(k) and its gap is Var_q(p/q) / (2 K P^2) to leading order (quadrature on the bin)."""
    means, stds = torch.tensor([[-0.3], [0.4]], dtype=F64), torch.tensor([[0.15], [0.3]], dtype=F64)
    weights = torch.tensor([0.6, 0.4], dtype=F64)
    mix = sg.GaussianMixture(weights, means, stds[:, :, None] ** 2)
    tf = sg.LevelTransform(8)
    k = torch.full((30000, 1), 3, dtype=torch.int64)  # bin [-0.25, 0): between the components
    lo = tf.centers(k[:1], F64) - tf.bin_width / 2
    exact = float(_bin_log_prob(means, stds, weights, lo, lo + tf.bin_width))
    sigma, h = 0.1, tf.bin_width / 2

    xs, ws = np.polynomial.legendre.leggauss(64)
    u = torch.tensor(xs * h, dtype=F64)[:, None]
    r = (mix.log_prob(tf.centers(k[:1], F64) + u) - truncated_normal_log_prob(u, sigma, h) - exact).exp()
    var = (
        float((torch.tensor(ws * h, dtype=F64) * r * r * truncated_normal_log_prob(u, sigma, h).exp()).sum())
        - 1
    )
    gaps = {}
    for K in (1, 4, 16):
        bpd = importance_weighted_bpd_per_image(
            mix.log_prob,
            k,
            tf,
            sigma=sigma,
            num_samples=K,
            generator=torch.Generator().manual_seed(K),
            dtype=F64,
        )
        bound = -bpd * math.log(2.0)
        gap, se = exact - float(bound.mean()), float(bound.std() / math.sqrt(k.shape[0]))
        assert gap > -4 * se  # a lower bound (the mean, within its standard error)
        gaps[K] = (gap, se)
    assert gaps[1][0] > gaps[4][0] > gaps[16][0]
    for K in (4, 16):  # leading-order gap var / (2K), within 25% and the noise
        assert abs(gaps[K][0] - var / (2 * K)) < 0.25 * var / (2 * K) + 4 * gaps[K][1], (gaps, var)


def test_importance_weighted_bound_3d_approaches_exact():
    """3-D diagonal mixture: the bound rises towards log P(k) and is below it, bin by bin."""
    g = torch.Generator().manual_seed(6)
    means = 0.5 * torch.randn(3, 3, generator=g, dtype=F64)
    stds = 0.2 + 0.2 * torch.rand(3, 3, generator=g, dtype=F64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    mix = sg.GaussianMixture(weights, means, torch.diag_embed(stds**2))
    tf = sg.LevelTransform(6)
    k0 = tf.to_levels(mix.sample(5, generator=g).clamp(-0.999, 0.999))
    k = k0.repeat_interleave(4000, dim=0)
    lo = tf.centers(k0, F64) - tf.bin_width / 2
    exact = _bin_log_prob(means, stds, weights, lo, lo + tf.bin_width)
    prev = None
    for K in (1, 8):
        bpd = importance_weighted_bpd_per_image(
            mix.log_prob,
            k,
            tf,
            sigma=0.15,
            num_samples=K,
            generator=torch.Generator().manual_seed(7),
            dtype=F64,
        )
        bound = (-bpd * 3 * math.log(2.0)).reshape(5, 4000)
        gap, se = exact - bound.mean(1), bound.std(1) / math.sqrt(4000)
        assert bool((gap > -4 * se).all()), (gap, se)
        if prev is not None:
            # Measured: the gaps fall by 5.6x to 6.5x from K = 1 to 8 (8x is the large-K 1/K law).
            assert bool((gap < 0.3 * prev).all()), (prev, gap)
        prev = gap


def test_evaluate_bpd_truncated_normal_on_the_oracle():
    """Discrete data: a 2-D mixture whose components sit at bin centres with std 0.001, far below the
    diffusion's own noise sigma_hat(eps) = 0.0105 (VP, eps = 1e-3), scored by evaluate_bpd with the
    exact score. The exact bits/dim of each bin comes from CDFs of p_eps read in xhat (the mixture
    convolved with N(0, sigma_hat^2)). The truncated-normal bound is nearly tight (p/q is nearly
    constant on the bin), while uniform dequantization, whose q ignores where the mass is, is
    looser by over 10 bits/dim. (The 1/K law of the gap is tested in 1-D above.)"""
    tf = sg.LevelTransform(10)
    centres = tf.centers(torch.tensor([[2, 6], [7, 4], [5, 5]]), F64)
    stds = torch.full((3, 2), 0.001, dtype=F64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    mix = sg.GaussianMixture(weights, centres, torch.diag_embed(stds**2))
    sde, eps = sg.VPSDE(), 1e-3
    k = tf.to_levels(mix.sample(6, generator=torch.Generator().manual_seed(8)))
    s_eps = float(sde.sigma_hat(torch.tensor([eps], dtype=F64))[0])
    lo = tf.centers(k, F64) - tf.bin_width / 2
    exact = -_bin_log_prob(centres, (stds**2 + s_eps**2).sqrt(), weights, lo, lo + tf.bin_width) / (
        2 * math.log(2)
    )
    common = dict(eps=eps, solver=sg.ProbabilityFlow(rtol=1e-6, atol=1e-6), dtype=F64, seed=9, repeats=2)
    gap = {}
    for K in (1, 4):
        res = evaluate_bpd(
            sde, mix.score_fn(sde), k, tf, dequantization="truncated_normal", importance_samples=K, **common
        )
        gap[K] = res["per_point"] - exact
    uni = evaluate_bpd(sde, mix.score_fn(sde), k, tf, **common)["per_point"] - exact
    # Measured gaps (bits/dim): within +-3e-3 for K = 1 and 4 (the bound holds in expectation;
    # the draws' noise is ~2e-3 per image here), uniform 16 to 19.
    for K in (1, 4):
        assert bool((gap[K] > -7e-3).all()) and abs(float(gap[K].mean())) < 3e-3, gap
    assert float(uni.min()) > 10.0
    with pytest.raises(ValueError, match="importance_samples"):
        evaluate_bpd(sde, mix.score_fn(sde), k, tf, importance_samples=4, **common)
    with pytest.raises(ValueError, match="dequantization"):
        evaluate_bpd(sde, mix.score_fn(sde), k, tf, dequantization="normal", **common)
