"""Every solver, fed the exact score of a Gaussian mixture, reproduces p_eps for every SDE."""

from __future__ import annotations

import functools

import pytest
import torch
from problems import SDES, energy_noise_floor, mixture_2d

import sde_gen as sg

EPS = 1e-3
N = 2000

SOLVERS = {
    "em": lambda: sg.EulerMaruyama(steps=1000),
    "pc": lambda: sg.PredictorCorrector(steps=1000),  # reverse diffusion + Langevin
    "pc_ancestral": lambda: sg.PredictorCorrector(
        steps=1000, predictor="ancestral", corrector="annealed_langevin"
    ),
    "pc_em_langevin2": lambda: sg.PredictorCorrector(
        steps=600, predictor="euler_maruyama", corrector=sg.Langevin(snr=0.2, n_steps=2)
    ),
    "ode": lambda: sg.ProbabilityFlow(rtol=1e-6, atol=1e-6),
}


@functools.cache
def _reference(sde_name: str):
    sde = SDES[sde_name]()
    mix = mixture_2d()
    ref, floor = energy_noise_floor(mix, sde, N, EPS)
    return sde, mix, ref, floor


def _component_stats(mix, sde, x):
    """Hard assignment of samples to the most responsible component of p_eps; returns the
    fractions (K,), means (K, D) and per-component counts."""
    means, covs = mix.marginal_params(sde, torch.full((x.shape[0],), EPS, dtype=x.dtype))
    L = torch.linalg.cholesky(covs)
    diff = (x[:, None, :] - means)[..., None]
    maha = torch.linalg.solve_triangular(L, diff, upper=False).pow(2).sum((-2, -1))
    logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    k = (torch.log(mix.weights) - 0.5 * (logdet + maha)).argmax(1)
    K = mix.weights.numel()
    counts = torch.bincount(k, minlength=K).double()
    comp_means = torch.stack([x[k == j].mean(0) for j in range(K)])
    comp_vars = torch.stack([x[k == j].var(0) for j in range(K)])
    return counts / x.shape[0], comp_means, comp_vars, counts


@pytest.mark.parametrize("solver_name", list(SOLVERS))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_solver_reproduces_p_eps(sde_name, solver_name):
    sde, mix, ref, floor = _reference(sde_name)
    g = torch.Generator().manual_seed(7)
    x = sg.sample(
        sde, mix.score_fn(sde), (N, 2), SOLVERS[solver_name](), eps=EPS, generator=g, dtype=torch.float64
    )
    # A global two-sample figure: the unbiased energy distance to the reference, against the
    # same figure between exact sample sets of the same size.
    ed = sg.energy_distance(x, ref)
    assert ed < floor.mean() + 5 * floor.std(), (ed, floor)
    # Per-component weights and means, far more sensitive: two-sample z-scores against ref.
    w1, m1, v1, c1 = _component_stats(mix, sde, x)
    w2, m2, v2, c2 = _component_stats(mix, sde, ref)
    p = 0.5 * (w1 + w2)
    z_w = (w1 - w2) / torch.sqrt(p * (1 - p) * 2 / N)
    z_m = (m1 - m2) / torch.sqrt(v1 / c1[:, None] + v2 / c2[:, None])
    assert z_w.abs().max() < 5, z_w
    assert z_m.abs().max() < 5, z_m


def test_langevin_leaves_p_t_invariant_and_is_stable_at_modes():
    """Many corrector steps at a fixed t keep exact samples of p_t distributed as p_t, and samples
    placed exactly on a mode, where the score vanishes, stay finite and near it."""
    sde, mix = sg.VPSDE(), mixture_2d()
    t = 0.05
    g = torch.Generator().manual_seed(3)
    ref, floor = energy_noise_floor(mix, sde, N, t)
    x = mix.sample_marginal(N, t, sde, generator=g)
    score = mix.score_fn(sde)
    corrector = sg.Langevin(snr=0.16, n_steps=50)
    x, _ = corrector(sde, score, x, t, t - 1e-3, g)
    assert sg.energy_distance(x, ref) < floor.mean() + 5 * floor.std()

    means, _ = mix.marginal_params(sde, torch.full((1,), t, dtype=torch.float64))
    at_modes = means[0].repeat(100, 1)
    out, _ = corrector(sde, score, at_modes, t, t - 1e-3, g)
    assert torch.isfinite(out).all()
    assert (out - at_modes).norm(dim=1).max() < 3.0  # the components have std < 0.6


@pytest.mark.parametrize("solver_name", ["pc", "pc_ancestral", "em"])
def test_a_sample_does_not_depend_on_its_batch(solver_name):
    """Two batches that share their first half (and their noise, drawn from the same seed) give
    the same first half, whatever the second half holds."""
    sde, mix = sg.VESDE(), mixture_2d()
    g = torch.Generator().manual_seed(0)
    shared = 50.0 * torch.randn(16, 2, generator=g, dtype=torch.float64)
    a = torch.cat([shared, 50.0 * torch.randn(16, 2, generator=g, dtype=torch.float64)])
    b = torch.cat([shared, torch.zeros(16, 2, dtype=torch.float64)])
    solver = SOLVERS[solver_name]()
    solver.steps = 50
    outs = [
        sg.sample(sde, mix.score_fn(sde), (32, 2), solver, x_T=x, generator=torch.Generator().manual_seed(1))
        for x in (a, b)
    ]
    torch.testing.assert_close(outs[0][:16], outs[1][:16], rtol=0, atol=0)


@pytest.mark.parametrize("solver", [sg.EulerMaruyama(20), sg.PredictorCorrector(20)], ids=repr)
def test_same_seed_same_samples_and_callback_sees_every_step(solver):
    sde, mix = sg.SubVPSDE(), mixture_2d()
    seen = []
    run = lambda seed, cb=None: sg.sample(
        sde,
        mix.score_fn(sde),
        (8, 2),
        solver,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(seed),
        callback=cb,
    )
    x1 = run(5, cb=lambda info: seen.append(info.t))
    assert torch.equal(x1, run(5))
    assert not torch.equal(x1, run(6))
    assert len(seen) == 20 and seen[-1] == EPS
    assert all(a > b for a, b in zip(seen[:-1], seen[1:], strict=True))


def test_adaptive_ode_never_evaluates_outside_eps_T():
    """Adaptive torchdiffeq methods probe trial times beyond the interval; the score must only be
    asked for t in [eps, T] (VP's variance is negative for t < 0)."""
    sde, mix = sg.VPSDE(), mixture_2d()
    eps = 1e-5
    times = []

    def score(x, t):
        times.append(t)
        return mix.score(x, t, sde)

    for method in ["dopri5", "bosh3", "adaptive_heun", "dopri8"]:
        x = sg.sample(
            sde,
            score,
            (64, 2),
            sg.ProbabilityFlow(method=method, rtol=1e-4, atol=1e-4),
            eps=eps,
            generator=torch.Generator().manual_seed(0),
            dtype=torch.float64,
        )
        assert torch.isfinite(x).all()
    t_all = torch.cat(times)
    assert t_all.min() >= eps and t_all.max() <= sde.T


def test_float32_follows_input_dtype():
    sde, mix = sg.VPSDE(), mixture_2d(dtype=torch.float32)
    for solver in [sg.EulerMaruyama(50), sg.PredictorCorrector(50), sg.ProbabilityFlow()]:
        x = sg.sample(sde, mix.score_fn(sde), (32, 2), solver, generator=torch.Generator().manual_seed(0))
        assert x.dtype == torch.float32 and torch.isfinite(x).all()


def test_denoise_returns_tweedie_mean_with_closed_form_variance():
    """For data N(mu, s^2) the denoised output E[x_0 | x_t] has mean mu and variance
    s^4 a^2 / (a^2 s^2 + std^2) at time t (a, std: the kernel's scale and std)."""
    sde = sg.VPSDE()
    mu, s, t = 1.5, 0.7, 0.4
    mix = sg.GaussianMixture.isotropic(torch.tensor([[mu]], dtype=torch.float64), s)
    n = 200_000
    x = sg.sample(
        sde,
        mix.score_fn(sde),
        (n, 1),
        sg.ProbabilityFlow(rtol=1e-7, atol=1e-7),
        eps=t,
        denoise=True,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    k = sde.kernel(torch.tensor([t], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64))
    a, std = k.scale.item(), k.std.item()
    # The prior is N(0, 1), not exactly p_T: the ODE carries that mismatch (about exp(-10) here)
    # into x_t, far below the Monte-Carlo error checked against.
    var = s**4 * a**2 / (a**2 * s**2 + std**2)
    assert abs(x.mean().item() - mu) < 5 * (var / n) ** 0.5
    assert abs(x.var().item() / var - 1) < 5 * (2 / n) ** 0.5


def test_progress_bar_keeps_the_users_callback_and_the_result(capsys):
    sde, mix = sg.VPSDE(), mixture_2d()
    seen = []
    run = lambda **kw: sg.sample(
        sde,
        mix.score_fn(sde),
        (8, 2),
        sg.EulerMaruyama(30),
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
        **kw,
    )
    with_bar = run(progress=True, callback=lambda info: seen.append(info.step))
    assert torch.equal(with_bar, run())
    assert seen == list(range(30))
    assert "30/30" in capsys.readouterr().err
