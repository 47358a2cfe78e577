"""Probability-flow likelihoods against the closed-form log-densities of Gaussian mixtures.

Everything is float64 with seeded generators, so every figure here is deterministic. The prior at
T is not exactly p_T; the oracle knows p_T, so the ODE part of the likelihood is checked by
swapping the prior term for the exact ``log p_T(z)``.
"""

from __future__ import annotations

import math

import pytest
import torch
from problems import SDES, mixture_2d, mixture_16d

import sde_gen as sg

F64 = torch.float64
EPS = 1e-3


def _data(mix, sde, n, eps=EPS, seed=0):
    return mix.sample_marginal(n, eps, sde, generator=torch.Generator().manual_seed(seed))


def _ode_part(res, mix, sde):
    """The likelihood with the prior replaced by the exact log p_T: only the ODE's error is left."""
    return res.log_prob - res.prior_log_prob + mix.log_prob(res.z, sde.T, sde)


# -- exact divergence against the analytic density -----------------------------------------


@pytest.mark.parametrize("name", list(SDES))
def test_exact_likelihood_2d_equals_analytic(name):
    # Measured: solver rtol = atol = 1e-6 gives at most ~8e-5 nats here, for every SDE.
    sde, mix = SDES[name](), mixture_2d()
    x = _data(mix, sde, 32)
    solver = sg.ProbabilityFlow(rtol=1e-6, atol=1e-6)
    res = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=EPS, solver=solver)
    truth = mix.log_prob(x, EPS, sde)
    assert res.log_prob.shape == (32,) and res.z.shape == x.shape and res.std_error is None
    assert (_ode_part(res, mix, sde) - truth).abs().max() < 1e-3
    # The raw result differs from the truth by exactly the prior-versus-p_T term, and that term
    # is not negligible (so the swap above matters and is the only thing that differs).
    gap = res.prior_log_prob - mix.log_prob(res.z, sde.T, sde)
    assert (res.log_prob - truth - gap).abs().max() < 1e-3
    assert gap.abs().max() > 1e-2
    assert torch.allclose(res.log_prob, res.prior_log_prob + res.delta_log_prob, rtol=0, atol=1e-12)
    assert torch.allclose(res.prior_log_prob, sde.prior_log_prob(res.z), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["vp", "ve", "user", "flow"])
def test_exact_likelihood_16d_equals_analytic(name):
    # Measured: rtol = atol = 1e-7 gives ~5e-5 nats in 16-D (1e-6 gives ~1e-3: too close).
    sde, mix = SDES[name](), mixture_16d()
    x = _data(mix, sde, 6, seed=1)
    solver = sg.ProbabilityFlow(rtol=1e-7, atol=1e-7)
    res = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=EPS, solver=solver, chunk_size=6)
    truth = mix.log_prob(x, EPS, sde)
    assert (_ode_part(res, mix, sde) - truth).abs().max() < 1e-3


def test_exact_likelihood_default_eps_vp():
    """At the default eps = 1e-5 (the stiff end of VP)."""
    sde, mix = sg.VPSDE(), mixture_2d()
    x = _data(mix, sde, 16, eps=1e-5, seed=2)
    res = sg.log_likelihood(sde, mix.score_fn(sde), x, solver=sg.ProbabilityFlow(rtol=1e-7, atol=1e-7))
    assert (_ode_part(res, mix, sde) - mix.log_prob(x, 1e-5, sde)).abs().max() < 1e-3


def test_likelihood_image_shaped():
    """(B, 1, 4, 4) inputs with a mixture whose event_shape is (1, 4, 4)."""
    g = torch.Generator().manual_seed(3)
    D = 16
    means = 1.5 * torch.randn(2, D, generator=g, dtype=F64)
    A = 0.3 * torch.randn(2, D, D, generator=g, dtype=F64)
    covs = A @ A.transpose(-1, -2) + 0.2 * torch.eye(D, dtype=F64)
    mix = sg.GaussianMixture(torch.tensor([0.6, 0.4], dtype=F64), means, covs, event_shape=(1, 4, 4))
    sde = sg.SubVPSDE()
    x = mix.sample_marginal(4, EPS, sde, generator=g)
    assert x.shape == (4, 1, 4, 4)
    solver = sg.ProbabilityFlow(rtol=1e-7, atol=1e-7)
    res = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=EPS, solver=solver, chunk_size=5)
    assert res.z.shape == x.shape and res.log_prob.shape == (4,)
    assert (_ode_part(res, mix, sde) - mix.log_prob(x, EPS, sde)).abs().max() < 1e-3


# -- Hutchinson ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hutch_cases():
    """For 2-D and 16-D: data, the exact result and the Hutchinson results for both probes."""
    out = {}
    sde = sg.VPSDE()
    solver = sg.ProbabilityFlow(rtol=1e-6, atol=1e-6)
    for dim, mix, n in [(2, mixture_2d(), 48), (16, mixture_16d(), 12)]:
        x = _data(mix, sde, n, seed=4)
        score = mix.score_fn(sde)
        exact = sg.log_likelihood(sde, score, x, eps=EPS, solver=solver)
        hutch = {
            probe: sg.log_likelihood(
                sde,
                score,
                x,
                eps=EPS,
                solver=solver,
                divergence="hutchinson",
                num_probes=16,
                probe=probe,
                generator=torch.Generator().manual_seed(5),
            )
            for probe in ("rademacher", "gaussian")
        }
        out[dim] = (exact, hutch)
    return out


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("dim", [2, 16])
def test_hutchinson_unbiased_within_standard_error(hutch_cases, dim, probe):
    exact, hutch = hutch_cases[dim][0], hutch_cases[dim][1][probe]
    se = hutch.std_error
    assert se is not None and se.shape == exact.log_prob.shape and bool((se >= 0).all())
    diff = hutch.log_prob - exact.log_prob
    # The same x is carried to the same z whatever the divergence estimator.
    assert (hutch.z - exact.z).abs().max() < 1e-4
    assert torch.allclose(hutch.prior_log_prob, exact.prior_log_prob, rtol=0, atol=1e-3)
    # The estimator is noisy (else this test proves nothing) ...
    assert diff.abs().max() > 1e-2
    # ... but unbiased: the batch mean of the errors is within 4 of its standard errors, and
    # each sample within 6 of its own (t-distributed with 15 degrees of freedom; 2e-3 absorbs the
    # ODE tolerance and the 2-D Rademacher case where all 16 probes can give the same value).
    agg_se = se.pow(2).sum().sqrt() / se.numel()
    assert diff.mean().abs() < 4 * agg_se
    assert bool((diff.abs() <= 6 * se + 2e-3).all())
    # The standard error has the right scale: the z-scores spread like a unit-variance law.
    z = diff / se.clamp_min(1e-12)
    assert 0.3 < float(z.pow(2).mean().sqrt()) < 2.5


def test_hutchinson_same_seed_reproducible_and_seed_matters():
    sde, mix = sg.VPSDE(), mixture_2d()
    x = _data(mix, sde, 4, seed=6)
    solver = sg.ProbabilityFlow(method="rk4", steps=8)

    def run(seed):
        return sg.log_likelihood(
            sde,
            mix.score_fn(sde),
            x,
            eps=EPS,
            solver=solver,
            divergence="hutchinson",
            num_probes=3,
            probe="gaussian",
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a.log_prob, b.log_prob) and torch.equal(a.std_error, b.std_error)
    assert not torch.allclose(a.log_prob, c.log_prob)
    single = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=EPS, solver=solver, divergence="hutchinson")
    assert single.std_error is None
    exact = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=EPS, solver=solver)
    assert exact.std_error is None


# -- the divergence estimators on their own -------------------------------------------------


def _field(x):
    """A nonlinear field acting on each sample on its own, with a non-symmetric Jacobian."""
    g = torch.Generator().manual_seed(9)
    d = x[0].numel()
    W = torch.randn(d, d, generator=g, dtype=x.dtype)
    xf = x.reshape(x.shape[0], -1)
    return (torch.tanh(xf @ W) * xf + torch.sin(xf) * xf.roll(1, dims=1)).reshape(x.shape)


def _jacobian_trace(x):
    J = torch.autograd.functional.jacobian(_field, x)  # (B, ..., B, ...)
    B, d = x.shape[0], x[0].numel()
    J = J.reshape(B, d, B, d)
    cross = J.clone()
    cross[torch.arange(B), :, torch.arange(B), :] = 0
    assert cross.abs().max() == 0  # per-sample independent
    return torch.stack([torch.trace(J[i, :, i, :]) for i in range(B)])


@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 3)])
@pytest.mark.parametrize("chunk_size", [None, 3, 100])
def test_exact_divergence_is_jacobian_trace(shape, chunk_size):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(10), dtype=F64)
    ref = _jacobian_trace(x)
    xr = x.clone().requires_grad_(True)
    div = sg.exact_divergence(_field(xr), xr, chunk_size=chunk_size)
    assert div.shape == (shape[0],)
    assert torch.allclose(div, ref, rtol=0, atol=1e-12)


def test_hutchinson_divergence_basis_probes_and_many_probes():
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(11), dtype=F64)
    ref = _jacobian_trace(x)
    xr = x.clone().requires_grad_(True)
    v = _field(xr)
    # Basis vectors as probes: the estimates are the Jacobian's diagonal entries, summing to the trace.
    basis = torch.eye(4, dtype=F64)[:, None, :].expand(4, 5, 4).contiguous()
    est = sg.hutchinson_divergence(v, xr, basis)
    assert est.shape == (5, 4)
    assert torch.allclose(est.sum(1), ref, rtol=0, atol=1e-12)
    # Many random probes: the mean converges to the trace within its standard error.
    K = 4000
    g = torch.Generator().manual_seed(12)
    for probes in (
        torch.randn(K, 5, 4, generator=g, dtype=F64),
        torch.randn(K, 5, 4, generator=g, dtype=F64).sign(),
    ):
        est = sg.hutchinson_divergence(v, xr, probes)
        se = est.std(dim=1) / math.sqrt(K)
        assert bool(((est.mean(1) - ref).abs() < 4 * se).all())
        assert bool((se < 0.1 * ref.abs().clamp_min(1.0)).all())


# -- bits per dimension ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "low", "high", "d"), [(256, -1.0, 1.0, 3), (2, 0.0, 1.0, 7), (17, -3.0, 5.5, 1)]
)
def test_bits_per_dim_uniform_model_is_log2_levels(levels, low, high, d):
    """A model density uniform on [low, high)^d gives every bin probability 1 / levels^d."""
    log_prob = torch.full((4,), -d * math.log(high - low), dtype=F64)
    bpd = sg.bits_per_dim(log_prob, d, levels=levels, low=low, high=high)
    assert torch.allclose(bpd, torch.full_like(bpd, math.log2(levels)), rtol=0, atol=1e-12)


def test_bits_per_dim_8bit_offset_is_7():
    log_prob = torch.tensor([-100.0, 0.0, 37.5], dtype=F64)
    bpd = sg.bits_per_dim(log_prob, 10)
    assert torch.allclose(bpd, -log_prob / (10 * math.log(2)) + 7.0, rtol=0, atol=1e-12)


def test_bits_per_dim_is_a_tight_upper_bound_for_a_smooth_density():
    """1-D N(0.1, 0.3^2) as the model on [-1, 1] with 64 levels: E_U[bpd] >= -log2 P(k) (Jensen),
    where P(k) is the density's exact mass on bin k; to leading order the gap is the variance of
    log p over the bin, halved: (slope w)^2 / 24 nats, with slope = (y_k - mean) / std^2."""
    levels, low, high = 64, -1.0, 1.0
    mean, std = 0.1, 0.3
    w = (high - low) / levels
    k = torch.arange(10, 54, dtype=F64)
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=F64), torch.tensor(std, dtype=F64))
    P = normal.cdf(low + (k + 1) * w) - normal.cdf(low + k * w)
    u = (torch.arange(2000, dtype=F64) + 0.5) / 2000  # midpoint rule for E_U
    y = low + (high - low) * (k[:, None] + u[None, :]) / levels
    bpd = sg.bits_per_dim(normal.log_prob(y), 1, levels=levels, low=low, high=high).mean(1)
    exact = -torch.log2(P)
    gap = bpd - exact
    assert bool((gap >= 0).all())
    centre = low + (k + 0.5) * w
    predicted = ((centre - mean) / std**2 * w) ** 2 / (24 * math.log(2))
    assert bool(((gap - predicted).abs() < 0.1 * predicted + 2e-4).all())
    assert gap.max() > 1e-3  # the check above has something to measure


# -- encode / decode round trip --------------------------------------------------------------


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_encode_decode_round_trip(name):
    sde, mix = SDES[name](), mixture_2d()
    x = _data(mix, sde, 16, seed=13)
    score = mix.score_fn(sde)
    solver = sg.ProbabilityFlow(rtol=1e-8, atol=1e-8)
    z = sg.encode(sde, score, x, eps=EPS, solver=solver)
    assert z.shape == x.shape and (z - x).abs().max() > 1e-1
    back = sg.sample(sde, score, x.shape, solver, eps=EPS, x_T=z, dtype=F64)
    assert (back - x).abs().max() < 1e-5
    res = sg.log_likelihood(sde, score, x, eps=EPS, solver=sg.ProbabilityFlow(rtol=1e-8, atol=1e-8))
    assert (res.z - z).abs().max() < 1e-5 * max(1.0, float(z.abs().max()))
