"""RectifiedFlow: the straight path of flow matching as an SDE, against its closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from problems import mixture_2d

import sde_gen as sg
from sde_gen._checks import ArgumentError
from sde_gen.sdes.base import SDE

F64 = torch.float64
T_GRID = torch.tensor([1e-4, 0.01, 0.2, 0.5, 0.8, 0.99, 0.999], dtype=F64)


def test_marginal_is_the_straight_path():
    sde = sg.RectifiedFlow()
    x0 = torch.randn(T_GRID.numel(), 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    mean, std = sde.marginal(x0, T_GRID)
    assert torch.equal(mean, (1 - T_GRID)[:, None] * x0) and torch.equal(std, T_GRID)
    k = sde.kernel(T_GRID, x0)
    assert torch.equal(k.scale, (1 - T_GRID)[:, None].expand_as(x0)) and torch.equal(k.shift, 0 * x0)


def test_noise_level_closed_forms_match_the_generic_ones():
    sde = sg.RectifiedFlow()
    sigma = sde.sigma_hat(T_GRID)
    assert torch.allclose(sigma, T_GRID / (1 - T_GRID), rtol=1e-15, atol=0)
    assert torch.allclose(sigma, SDE.sigma_hat(sde, T_GRID), rtol=1e-14, atol=0)
    assert torch.allclose(sde.t_from_sigma_hat(sigma), T_GRID, rtol=1e-15, atol=0)
    # the base class's bisection finds the same times
    assert torch.allclose(SDE.t_from_sigma_hat(sde, sigma), T_GRID, rtol=1e-13, atol=0)
    assert sde.sigma_hat(torch.tensor(sde.T, dtype=F64)) == pytest.approx(999.0, rel=1e-12)


def test_drift_and_diffusion_generate_the_kernel():
    """A linear SDE dx = a(t) x dt + g dW has d log scale / dt = a and d std^2 / dt = 2 a std^2 + g^2."""
    sde = sg.RectifiedFlow()
    t = T_GRID[1:-1].clone().requires_grad_(True)
    x = torch.ones(t.numel(), 1, dtype=F64)
    mean, std = sde.marginal(x, t)
    dlog_scale = torch.autograd.grad(torch.log(mean).sum(), t)[0]
    dvar = torch.autograd.grad((std**2).sum(), t)[0]
    with torch.no_grad():
        a = sde.drift(x, t)[:, 0]
        g2 = sde.diffusion(t) ** 2
        assert torch.allclose(a, dlog_scale, rtol=1e-13, atol=0)
        assert torch.allclose(g2, dvar - 2 * a * std**2, rtol=1e-13, atol=0)
        assert torch.allclose(g2, 2 * t / (1 - t), rtol=1e-14, atol=0)


def test_probability_flow_velocity_is_flow_matchings_target():
    """On the straight path the probability-flow velocity of the per-example score -z / t is
    z - x0 (the "flow" parameterisation's target), and a squared error in it is 1 / (1 - t)^2 times
    the same error in noise units: flow matching's loss is denoising score matching with that
    weight."""
    sde = sg.RectifiedFlow()
    g = torch.Generator().manual_seed(1)
    x0, z = torch.randn(2, T_GRID.numel(), 4, generator=g, dtype=F64)
    flow = sg.parameterization("flow")
    assert torch.allclose(flow.target(x0, z, T_GRID, sde), z - x0, rtol=0, atol=1e-12)
    unit = flow.unit(T_GRID, sde, x0)
    assert torch.allclose(unit, (1 / (1 - T_GRID) ** 2)[:, None].expand_as(x0), rtol=1e-12, atol=0)


def test_flow_matchings_loss_is_dsm_with_the_flow_weighting():
    """DSMLoss(RectifiedFlow(), "flow") of a "flow"-parameterised model is, draw for draw, flow
    matching's loss ||v_theta(x_t, t) - (z - x0)||^2 / 2 (Lipman et al. 2023), for any network."""
    sde = sg.RectifiedFlow()
    torch.manual_seed(0)
    net = sg.MLP(3, hidden=32, depth=2).to(F64)
    model = sg.ScoreModel(net, sde, "flow")
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(256, 3, generator=g, dtype=F64)
    loss = sg.DSMLoss(sde, "flow", eps=1e-3)
    draws = loss.draw(x0, generator=g)
    t, z = draws.t, draws.z
    x_t = (1 - t)[:, None] * x0 + t[:, None] * z
    with torch.no_grad():
        want = 0.5 * ((net(x_t, t) - (z - x0)) ** 2).sum(1)
        got = loss(model, x0, draws=draws)
    assert torch.allclose(got, want, rtol=1e-12, atol=0)
    # over the log-SNR l, uniform times put Kingma & Gao's e^(-l/2) / 2 on it
    lam = torch.linspace(-6.0, 6.0, 13, dtype=F64)
    w = loss.effective_weighting(lam)
    assert torch.allclose(w / w[6], torch.exp(-lam / 2), rtol=1e-9, atol=0)


def test_prior_mismatch_is_the_kl_of_p_T_to_the_prior():
    """For Gaussian data the KL of p_T to the prior is exact: checked by Monte Carlo at a T where it
    is large enough to see, and its size at the defaults (the figure the docstring states)."""
    mean = torch.tensor([0.7, -0.4], dtype=F64)
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=F64)
    sde = sg.RectifiedFlow(T=0.6)
    mix = sg.GaussianMixture(torch.ones(1, dtype=F64), mean[None], cov[None])
    x = mix.sample_marginal(200_000, sde.T, sde, generator=torch.Generator().manual_seed(2))
    log_ratio = mix.log_prob(x, sde.T, sde) - sde.prior_log_prob(x)
    mc, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(x.shape[0])
    kl = sde.prior_mismatch(mean, cov)
    assert kl > 0.05 and abs(mc - kl) < 5 * se, (mc, se, kl)
    default = sg.RectifiedFlow().prior_mismatch(torch.zeros(64), torch.eye(64))
    assert default == pytest.approx(6.4e-5, rel=0.01)


def test_the_straight_path_likelihood_pays_only_the_prior_mismatch():
    """log_likelihood on the straight path, with the exact score and the exact divergence, against
    the mixture's exact log-density at eps. The ODE part is exact; what separates the result from
    the truth is log prior(z) - log p_T(z), pointwise of order (1 - T) |mean| |z| (a few 1e-3 nats
    here), on average the KL of p_T to the prior (1e-5 nats here)."""
    sde, mix = sg.RectifiedFlow(), mixture_2d()
    x = mix.sample_marginal(16, 1e-3, sde, generator=torch.Generator().manual_seed(3))
    solver = sg.ProbabilityFlow(rtol=1e-7, atol=1e-7)
    res = sg.log_likelihood(sde, mix.score_fn(sde), x, eps=1e-3, solver=solver)
    truth = mix.log_prob(x, 1e-3, sde)
    gap = res.prior_log_prob - mix.log_prob(res.z, sde.T, sde)
    assert (res.log_prob - gap - truth).abs().max() < 2e-3
    assert gap.abs().max() < 1e-2
    z = mix.sample_marginal(100_000, sde.T, sde, generator=torch.Generator().manual_seed(4))
    kl = (mix.log_prob(z, sde.T, sde) - sde.prior_log_prob(z)).mean()
    assert abs(kl) < 1e-4


@pytest.mark.parametrize("bad", [1.0, 1.5, 0.0, -0.1, math.nan])
def test_a_time_at_or_past_the_singularity_is_refused(bad):
    with pytest.raises(ArgumentError) as err:
        sg.RectifiedFlow(T=bad)
    assert err.value.name == "T"


def test_a_bad_prior_std_is_refused():
    with pytest.raises(ArgumentError) as err:
        sg.RectifiedFlow(prior_std=0.0)
    assert err.value.name == "prior_std"
    with pytest.raises(ArgumentError) as err:
        sg.RectifiedFlow().prior_mismatch(torch.zeros(3), torch.eye(2))
    assert err.value.name == "cov"
