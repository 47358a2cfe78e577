"""Weightings and noise-level samplers of DSMLoss (sde_gen/training/weightings.py, noise_levels.py),
against their definitions: each weighting equals its definition in its own units for every
parameterisation (the identity that min-SNR with v-prediction is often mis-derived from); a sampler
change with its weights keeps the loss's mean, without them it does not; the effective weighting
over the log-SNR integrates to the loss."""

from __future__ import annotations

import math

import pytest
import torch
from problems import SDES

import sde_gen as sg

DT = torch.float64
PARAMS = sorted(sg.PARAMETERIZATIONS)


def _net(dim: int, seed: int = 0) -> sg.MLP:
    torch.manual_seed(seed)
    net = sg.MLP(dim, hidden=32, depth=2).to(DT)
    torch.nn.init.normal_(net.out.weight, std=0.3)
    torch.nn.init.normal_(net.out.bias, std=0.3)
    return net


def _log_snr_and_rates(sde, t: torch.Tensor, h: float = 1e-6):
    """``sigma_hat``, the log-SNR ``l`` and ``-dl/dt`` (central difference), independent of ``g``."""
    sigma = sde.sigma_hat(t)
    l_of = lambda s: -2 * torch.log(sde.sigma_hat(s))  # noqa: E731
    return sigma, l_of(t), -(l_of(t + h) - l_of(t - h)) / (2 * h)


def _noise_weight(name: str, sde, t: torch.Tensor, gamma=3.0, bias=-1.0, sd=0.6):
    """Each weighting in noise units, from its definition in its own units (module docstring of
    weightings.py): std2 and likelihood are lambda(t) on the score error (lambda / std^2 in noise
    units), min-SNR and EDM weigh the data error (sigma^2 times the noise error), sigmoid weighs the
    noise error per unit of log-SNR (-dl/dt per unit of t)."""
    sigma, log_snr, rate = _log_snr_and_rates(sde, t)
    snr = 1 / sigma**2
    std = sde.marginal(torch.zeros(t.shape[0], 1, dtype=DT), t)[1]
    if name == "std2":
        return std**2 / std**2
    if name == "likelihood":
        return sde.diffusion(t) ** 2 / std**2
    if name == "min_snr":
        return torch.minimum(snr, torch.full_like(snr, gamma)) * sigma**2
    if name == "edm":
        return (sigma**2 + sd**2) / (sigma * sd) ** 2 * sigma**2
    if name == "flow":  # weight 1 on the straight path's velocity z - x0 at the time of this noise level
        t_flow = sigma / (1 + sigma)
        return 1 / (1 - t_flow) ** 2
    return torch.sigmoid(bias - log_snr) * rate


def _unit(name: str, sde, t: torch.Tensor, sd=0.6):
    """Closed-form squared slope of each parameterisation's output per unit of noise error."""
    sigma, _, rate = _log_snr_and_rates(sde, t)
    std = sde.marginal(torch.zeros(t.shape[0], 1, dtype=DT), t)[1]
    return {
        "noise": torch.ones_like(t),
        "score": torch.ones_like(t),
        "data": sigma**2,
        "v": 1 + sigma**2,
        "edm": (sigma**2 + sd**2) / sd**2,
        "flow": (rate * std**2 / 2) ** 2 / std**2,  # F = f - g^2 s / 2 and g^2 = std^2 (-dl/dt)
    }[name]


@pytest.mark.parametrize("sde_name", ["vp", "ve", "user", "flow"])
@pytest.mark.parametrize("weighting", sorted(sg.WEIGHTINGS))
def test_each_weighting_is_its_definition_in_the_units_of_every_parameterisation(sde_name, weighting):
    sde = SDES[sde_name]()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(128, 3, generator=g, dtype=DT)
    w_fn = sg.weighting(weighting, min_snr_gamma=3.0, sigmoid_bias=-1.0, sigma_data=0.6)
    loss_fn = sg.DSMLoss(sde, w_fn, eps=1e-3)
    draws = loss_fn.draw(x0, generator=g)
    t, z = draws.t, draws.z
    want_w = _noise_weight(weighting, sde, t)
    for name in PARAMS:
        param = sg.parameterization("edm", sigma_data=0.6) if name == "edm" else sg.parameterization(name)
        model = sg.ScoreModel(_net(3), sde, param)
        k = sde.kernel(t, x0)
        x_t = k.scale * x0 + k.shift + k.std[:, None] * z
        with torch.no_grad():
            out = model.net(*param.inputs(x_t, t, k, sde))  # the network's own output
            # the loss written in the network's units: its error to its own target, weighed by
            # the weighting's noise-unit weight divided by the closed-form unit of that output
            own = 0.5 * ((out - param.target(x0, z, t, sde)) ** 2).sum(1) * want_w / _unit(name, sde, t)
            got = loss_fn(model, x0, draws=draws)
        tol = 1e-5 if name == "flow" or weighting == "sigmoid" else 1e-10  # finite differences
        assert torch.allclose(got, own, rtol=tol, atol=0), (name, float(((got - own) / own).abs().max()))


def test_min_snr_with_v_prediction_is_hang_et_al_eq_9():
    # Hang et al. 2023: min(SNR, gamma) / (SNR + 1) on the v error; not min(SNR, gamma) / SNR.
    sde = sg.VPSDE()
    t = torch.linspace(0.01, 1.0, 50, dtype=DT)
    sigma = sde.sigma_hat(t)
    snr = 1 / sigma**2
    std = sde.marginal(torch.zeros(50, 1, dtype=DT), t)[1]
    noise_w = sg.MinSNRWeighting(5.0)(sde, t, std)
    v_w = noise_w / sg.VPrediction().unit(t, sde, torch.zeros(50, 1, dtype=DT))[:, 0]
    assert torch.allclose(v_w, torch.clamp(snr, max=5.0) / (snr + 1), rtol=1e-12)


@pytest.mark.parametrize("sde_name", ["vp", "ve", "user"])
@pytest.mark.parametrize("name", ["uniform", "importance", "log_normal", "logit_normal"])
def test_each_sampler_draws_from_its_density(sde_name, name):
    sde, eps = SDES[sde_name](), 1e-3
    sampler = sg.time_sampler(name, sde, eps)
    t, _ = sampler.sample(100_000, generator=torch.Generator().manual_seed(1), dtype=DT)
    assert float(t.min()) >= eps and float(t.max()) <= sde.T
    grid = torch.cat([torch.logspace(math.log10(eps), math.log10(sde.T), 20_001, dtype=DT)])
    grid[0], grid[-1] = eps, sde.T
    dens = sampler.density(grid)
    cdf = torch.cat([torch.zeros(1, dtype=DT), torch.cumsum(0.5 * (dens[1:] + dens[:-1]) * grid.diff(), 0)])
    assert abs(float(cdf[-1]) - 1) < 1e-3
    # Kolmogorov-Smirnov distance of the draws to the density's CDF: ~ 1.36 / sqrt(n) at 5%.
    emp = torch.searchsorted(t.sort().values, grid, right=True).to(DT) / t.numel()
    assert float((emp - cdf).abs().max()) < 2.0 / math.sqrt(t.numel())


@pytest.mark.parametrize("a", [0.2, 5.76])
def test_log_normal_levels_follow_sigma_data_so_scaled_data_see_scaled_noise(a):
    """EDM's p_mean = -1.2 is for sigma_data = 0.5: with sigma_data = 0.5 a the default mean moves by
    log a, so on VE (sigma_hat = sigma) the same draws are a times the noise levels of sigma_data = 0.5
    (the range [eps, T] so wide that its truncation is below float64 roundoff); EDM's weight in noise
    units, (sigma^2 + sigma_data^2) / sigma_data^2, is then the same at every draw. A loc given is
    kept as it is."""
    sde = sg.VESDE(sigma_min=1e-12, sigma_max=1e12)
    base = sg.time_sampler("log_normal", sde, 1e-9, sigma_data=0.5)
    scaled = sg.time_sampler("log_normal", sde, 1e-9, sigma_data=0.5 * a)
    assert scaled.p_mean == pytest.approx(-1.2 + math.log(a), abs=1e-15)
    assert sg.time_sampler("log_normal", sde, 1e-9).p_mean == base.p_mean == -1.2
    t0, _ = base.sample(10_000, generator=torch.Generator().manual_seed(3), dtype=DT)
    t1, _ = scaled.sample(10_000, generator=torch.Generator().manual_seed(3), dtype=DT)
    s0, s1 = sde.sigma_hat(t0), sde.sigma_hat(t1)
    assert torch.allclose(s1, a * s0, rtol=1e-9)
    std0, std1 = s0[:, None], s1[:, None]
    w0 = sg.EDMWeighting(0.5)(sde, t0, std0)
    w1 = sg.EDMWeighting(0.5 * a)(sde, t1, std1)
    assert torch.allclose(w0, w1, rtol=1e-8)
    given = sg.time_sampler("log_normal", sde, 1e-9, loc=0.3, sigma_data=0.5 * a)
    assert given.p_mean == 0.3


def _mean_and_se(loss_fn, model, x0, n_rep: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    vals = torch.cat([loss_fn(model, x0, generator=g) for _ in range(n_rep)])
    return float(vals.mean()), float(vals.std() / math.sqrt(vals.numel()))


@pytest.mark.parametrize("name", ["log_normal", "logit_normal", "importance"])
def test_a_sampler_with_its_weights_keeps_the_objective_without_them_it_does_not(name):
    sde, eps = sg.VPSDE(), 1e-3
    model = sg.ScoreModel(_net(2, seed=3), sde, "noise")
    x0 = sg.gmm8().sample(4000, generator=torch.Generator().manual_seed(0)).to(DT)
    with torch.no_grad():
        base, se0 = _mean_and_se(sg.DSMLoss(sde, "min_snr", eps=eps), model, x0, 10, 1)
        kept = sg.DSMLoss(
            sde,
            "min_snr",
            time_sampler=sg.time_sampler(
                name, sde, eps, **({} if name == "importance" else {"reweight": True})
            ),
        )
        mean, se = _mean_and_se(kept, model, x0, 10, 2)
        assert abs(mean - base) < 4 * math.hypot(se, se0)
        if name != "importance":
            changed = sg.DSMLoss(sde, "min_snr", time_sampler=sg.time_sampler(name, sde, eps))
            mean2, se2 = _mean_and_se(changed, model, x0, 10, 3)
            assert abs(mean2 - base) > 8 * math.hypot(se2, se0)


@pytest.mark.parametrize(
    "weighting, sampler",
    [("likelihood", "uniform"), ("likelihood", "importance"), ("min_snr", "log_normal"),
     ("edm", "log_normal"), ("sigmoid", "logit_normal"), ("std2", "uniform")],
)  # fmt: skip
def test_effective_weighting_integrates_to_the_loss(weighting, sampler):
    # With a zero score, 0.5 ||std s + z||^2 has mean d / 2 at every level, so the loss's mean is
    # d / 2 times the integral of W(l) over the log-SNR.
    sde, eps, d = sg.VPSDE(), 1e-3, 2
    loss_fn = sg.DSMLoss(sde, weighting, time_sampler=sampler if sampler != "uniform" else None, eps=eps)
    lo, hi = (float(-2 * math.log(s)) for s in sde.sigma_hat(torch.tensor([sde.T, eps], dtype=DT)))
    lam = torch.linspace(lo, hi, 40_001, dtype=DT)
    W = loss_fn.effective_weighting(lam)
    integral = float(torch.trapezoid(W, lam))
    x0 = torch.zeros(20_000, d, dtype=DT)
    mean, se = _mean_and_se(loss_fn, lambda x, t: torch.zeros_like(x), x0, 5, 0)
    assert abs(mean - d / 2 * integral) < 5 * se + 1e-4 * mean
    if weighting == "likelihood":  # the ELBO: flat over the log-SNR
        assert torch.allclose(W, torch.full_like(W, 1 / (sde.T - eps)), rtol=1e-6)
    assert float(loss_fn.effective_weighting(torch.tensor([hi + 1.0, lo - 1.0]))[0]) == 0.0


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: sg.MinSNRWeighting(0.0), "min_snr_gamma"),
        (lambda: sg.weighting("min_snr", min_snr_gamma=-5), "min_snr_gamma"),
        (lambda: sg.weighting("edm", sigma_data=0.0), "sigma_data"),
        (lambda: sg.weighting("sigmoid", sigmoid_bias=float("nan")), "sigmoid_bias"),
        (lambda: sg.weighting("l2"), "weighting"),
        (lambda: sg.DSMLoss(sg.VPSDE(), "snr"), "weighting"),
        (lambda: sg.time_sampler("beta", sg.VPSDE(), 1e-3), "time_sampler"),
        (lambda: sg.DSMLoss(sg.VPSDE(), time_sampler="normal"), "time_sampler"),
        (lambda: sg.time_sampler("log_normal", sg.VPSDE(), 1e-3, scale=0.0), "p_std"),
        (lambda: sg.time_sampler("uniform", sg.VPSDE(), 1e-3, loc=1.0), "time_sampler"),
        (lambda: sg.LogNormalNoise(sg.VPSDE(), 1e-3, reweight=1), "reweight"),
        (lambda: sg.LogNormalNoise(sg.VPSDE(), 1e-3, p_mean=40.0, p_std=0.1), "p_mean"),
    ],
)
def test_bad_weightings_and_samplers_are_refused_by_name(call, name):
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    assert e.value.name == name


def test_effective_weighting_in_a_networks_units():
    # EDM's weighting is 1 / c_out^2 on the data error, so in EDM's own units every level weighs 1
    # and W is the log-normal sampler's density of l = -2 log sigma: N(-2 p_mean, (2 p_std)^2),
    # truncated (a constant factor). In x_0-prediction's units the same objective is W / sigma^2, in
    # v's W / (1 + sigma^2), in the probability-flow velocity's W 4 std^2 / g^4, in noise units W.
    sde, eps = sg.VPSDE(), 1e-3
    loss_fn = sg.DSMLoss(sde, "edm", time_sampler="log_normal", eps=eps)
    lo, hi = (float(-2 * math.log(s)) for s in sde.sigma_hat(torch.tensor([sde.T, eps], dtype=DT)))
    lam = torch.linspace(lo + 0.01, hi - 0.01, 501, dtype=DT)
    pdf = torch.exp(-0.5 * ((lam + 2 * -1.2) / (2 * 1.2)) ** 2)
    ratio = loss_fn.effective_weighting(lam, parameterization="edm") / pdf
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-9)

    W = loss_fn.effective_weighting(lam)
    sigma = torch.exp(-lam / 2)
    t = sde.t_from_sigma_hat(sigma)
    std = sde.marginal(torch.zeros(len(t), 1, dtype=DT), t)[1]
    expected = {
        "noise": W,
        "score": W,
        "data": W / sigma**2,
        "v": W / (1 + sigma**2),
        "flow": W * 4 * std**2 / sde.diffusion(t) ** 4,
    }
    for name, want in expected.items():
        got = loss_fn.effective_weighting(lam, parameterization=sg.parameterization(name))
        assert torch.allclose(got, want, rtol=1e-8), name
