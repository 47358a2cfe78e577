"""Noise levels, the schedules people train with, and time grids, against closed forms.

- ``sigma_hat = std / scale``, ``lambda = -log sigma_hat`` and their inverses match the kernel read
  off ``sde.marginal`` for every SDE (built-in, the two training schedules, ``LinearSDE`` with
  constant and callable coefficients, a user's SDE), and the closed-form inverses equal the
  generic bisection of ``sg.SDE``;
- ``CosineVPSDE`` and ``EDMSDE``: marginal against a Monte-Carlo simulation of the forward SDE,
  drift and diffusion against the moment equations of the kernel, Nichol & Dhariwal's discrete
  ``alpha_bar``, the clipped end time, model files;
- ``time_grid``: each schedule's defining property, exact end points, strict decrease, explicit
  grids, and every bad input named.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from problems import OrnsteinUhlenbeck, cosine_linear_sde
from test_sde import X0, coefficients, ddt, euler_forward, mc_moments, mc_tolerances, tvec

import sde_gen as sg
from sde_gen.sampling.solvers.grids import EDM_RHO, SCHEDULES, time_grid
from sde_gen.sdes.schedules import EDMSDE, CosineVPSDE

F64 = torch.float64

SDES = {
    "vp": lambda: sg.VPSDE(),
    "subvp": lambda: sg.SubVPSDE(),
    "ve": lambda: sg.VESDE(),
    "vp_T2": lambda: sg.VPSDE(beta_min=0.5, beta_max=8.0, T=2.0),
    "ve_T2": lambda: sg.VESDE(sigma_min=0.05, sigma_max=10.0, T=2.0),
    "cosine_vp": lambda: CosineVPSDE(),
    "cosine_vp_dpm": lambda: CosineVPSDE(T=0.9946),
    "edm": lambda: EDMSDE(),
    "linear_const": lambda: sg.LinearSDE(-2.0, 1.5),
    "linear_callable": cosine_linear_sde,
    "user": OrnsteinUhlenbeck,
}
# SDEs whose class gives t_from_sigma_hat in closed form (the others inherit the bisection).
CLOSED_FORM = ("vp", "subvp", "ve", "vp_T2", "ve_T2", "cosine_vp", "cosine_vp_dpm", "edm")


def times(sde) -> torch.Tensor:
    """Times in (0, T]: log-spaced from 1e-6 T (where sigma_hat is tiny) and uniform."""
    T = sde.T
    parts = [torch.logspace(-6, 0, 61, dtype=F64), torch.linspace(0.01, 1.0, 100, dtype=F64)]
    return torch.cat(parts).unique() * T  # sorted


def kernel_sigma_hat(sde, t: torch.Tensor) -> torch.Tensor:
    """std / scale straight from ``marginal`` at x_0 = 0 and x_0 = 1 (not through ``kernel``)."""
    zero, one = torch.zeros(t.shape[0], 1, dtype=F64), torch.ones(t.shape[0], 1, dtype=F64)
    shift, std = sde.marginal(zero, t)
    mean_one, _ = sde.marginal(one, t)
    return std / (mean_one - shift)[:, 0]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs() / b.abs()).max().item()


# -- sigma_hat, lambda and their inverses match the kernel of every SDE ---------------------------


@pytest.mark.parametrize("name", list(SDES))
def test_sigma_hat_and_half_log_snr_match_the_kernel(name):
    sde = SDES[name]()
    t = times(sde)
    want = kernel_sigma_hat(sde, t)
    got = sde.sigma_hat(t)
    assert got.shape == t.shape and got.dtype == F64
    assert rel(got, want) < 1e-12
    torch.testing.assert_close(sde.half_log_snr(t), -torch.log(want), rtol=0, atol=1e-12)
    # sigma_hat rises from 0: lambda falls, so every schedule below is well defined.
    assert (got.diff() > 0).all() and sde.sigma_hat(tvec(0.0))[0] == 0.0
    # Any shape of t: a (2, 3) batch gives the values of its entries.
    tt = t[60:66].reshape(2, 3)
    torch.testing.assert_close(sde.sigma_hat(tt), got[60:66].reshape(2, 3), rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", list(SDES))
def test_inverses_round_trip(name):
    sde = SDES[name]()
    t = times(sde)
    assert rel(sde.t_from_sigma_hat(sde.sigma_hat(t)), t) < 1e-8
    assert rel(sde.t_from_half_log_snr(sde.half_log_snr(t)), t) < 1e-8
    # The other way round, on noise levels log-spaced over the SDE's whole range.
    lo, hi = sde.sigma_hat(t[[0, -1]]).tolist()
    sigma = torch.logspace(math.log10(lo), math.log10(hi), 50, dtype=F64)
    assert rel(sde.sigma_hat(sde.t_from_sigma_hat(sigma)), sigma) < 1e-8
    lam = -torch.log(sigma)
    torch.testing.assert_close(sde.half_log_snr(sde.t_from_half_log_snr(lam)), lam, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", CLOSED_FORM)
def test_closed_form_inverse_equals_the_generic_bisection(name):
    sde = SDES[name]()
    assert type(sde).t_from_sigma_hat is not sg.SDE.t_from_sigma_hat, "this SDE has a closed form"
    sigma = sde.sigma_hat(times(sde))
    closed = sde.t_from_sigma_hat(sigma)
    generic = sg.SDE.t_from_sigma_hat(sde, sigma)
    assert rel(closed, generic) < 1e-9


def test_generic_inverse_refuses_noise_levels_outside_the_range():
    sde = OrnsteinUhlenbeck()
    top = sde.sigma_hat(tvec(sde.T))[0].item()
    for bad in (2.0 * top, -1.0, math.nan):
        with pytest.raises(ValueError, match=r"sigma_hat=.* is outside \[0, .*OrnsteinUhlenbeck"):
            sde.t_from_sigma_hat(torch.tensor([bad], dtype=F64))


# -- CosineVPSDE and EDMSDE: closed forms, moment equations, Monte Carlo ----------------------------


def test_cosine_alpha_bar_is_nichol_and_dhariwal_discrete_schedule():
    """alpha_bar_i = f(i / 1000) / f(0), f(t) = cos^2(pi/2 (t + s) / (1 + s)) (their Eq. 17)."""
    s = 0.008
    sde = CosineVPSDE(s=s)
    i = torch.arange(0, 998, dtype=F64)  # every step before T = 0.998
    f = lambda u: math.cos(math.pi / 2 * (u + s) / (1 + s)) ** 2  # noqa: E731
    want = torch.tensor([f(k / 1000) / f(0.0) for k in i.tolist()], dtype=F64)
    assert rel(sde.alpha_bar(i / 1000), want) < 1e-12
    mean, std = sde.marginal(torch.ones(i.shape[0], 1, dtype=F64), i / 1000)
    assert rel(mean[:, 0] ** 2, want) < 1e-12
    nonzero = i > 0
    assert rel(std[nonzero] ** 2, 1.0 - want[nonzero]) < 1e-9  # 1 - alpha_bar loses digits near 0
    # Accurate where 1 - alpha_bar cancels: against the series 1 - alpha_bar = beta(0) t + O(t^2).
    t = torch.tensor([1e-12, 1e-10], dtype=F64)
    beta0 = math.pi / (1 + s) * math.tan(math.pi / 2 * s / (1 + s))
    small = sde.marginal(torch.ones(2, 1, dtype=F64), t)[1]
    assert rel(small**2, beta0 * t) < 1e-8


def test_cosine_end_time_is_where_beta_reaches_beta_max():
    sde = CosineVPSDE()
    assert abs(sde.beta(tvec(sde.T))[0].item() - 999.0) < 1e-9 * 999.0
    assert abs(sde.T - 0.998) < 1e-5  # not DPM-Solver's hand-set 0.9946 (where beta = 370)
    # beta = -d log alpha_bar / dt, by fourth-order differences of alpha_bar itself.
    t = torch.linspace(0.01, 0.99, 50, dtype=F64) * sde.T
    dlog = ddt(lambda u: sde.alpha_bar(u).log(), t, 1e-5)
    torch.testing.assert_close(sde.beta(t), -dlog, rtol=1e-7, atol=0)
    # DPM-Solver's end time, and a prior N(0, I) that p_T matches: scale(T)^2 = alpha_bar(T) ~ 1e-5.
    dpm = CosineVPSDE(T=0.9946)
    assert dpm.T == 0.9946 and abs(dpm.beta(tvec(0.9946))[0].item() - 370.36) < 0.01
    assert sde.alpha_bar(tvec(sde.T))[0] < 1e-5 and sde.prior_std == 1.0


def test_edm_closed_forms():
    sde = EDMSDE(sigma_max=80.0)
    assert sde.T == 80.0 and sde.prior_std == 80.0
    t = torch.linspace(0.0, 80.0, 41, dtype=F64)
    x0 = torch.randn(41, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    mean, std = sde.marginal(x0, t)
    assert torch.equal(mean, x0) and torch.equal(std, t) and torch.equal(sde.sigma_hat(t), t)
    assert torch.equal(sde.t_from_sigma_hat(t), t)
    torch.testing.assert_close(sde.diffusion(t) ** 2, 2.0 * t, rtol=1e-15, atol=0)  # d(t^2)/dt
    assert torch.equal(sde.drift(x0, t), torch.zeros_like(x0))


@pytest.mark.parametrize("name", ["cosine_vp", "cosine_vp_dpm", "edm"])
def test_drift_and_diffusion_solve_the_moment_equations_of_the_kernel(name):
    """For dx = a(t) x dt + g dW: d log(scale)/dt = a and d var/dt = 2 a var + g^2 (fourth-order
    differences of the kernel, float64; errors relative to the size of the terms)."""
    sde = SDES[name]()
    t = torch.linspace(0.02, 0.98, 49, dtype=F64) * sde.T
    h = 1e-5 * sde.T
    like = torch.zeros(t.shape[0], 2, dtype=F64)
    k = sde.kernel(t, like)
    a, c = coefficients(sde, t)
    g2 = sde.diffusion(t) ** 2
    assert torch.equal(c, torch.zeros_like(c))
    dlog_scale = ddt(lambda u: sde.kernel(u, like).scale[:, 0].log(), t, h)
    torch.testing.assert_close(dlog_scale, a, rtol=1e-7, atol=1e-9)
    dvar = ddt(lambda u: sde.kernel(u, like).std ** 2, t, h)
    size = g2 + 2 * a.abs() * k.std**2
    assert ((dvar - (2 * a * k.std**2 + g2)).abs() <= 1e-7 * size).all()


MC_N = 20_000


@functools.cache
def simulate(name: str, marks: tuple[float, ...], steps: int):
    """Euler-Maruyama on the forward SDE from each row of X0 (tests/test_sde.py's simulation)."""
    return euler_forward(SDES[name](), marks, steps, seed=20240518, n=MC_N)


@pytest.mark.parametrize(
    "name,marks,steps",
    # The cosine schedule up to beta = 20 (Euler-Maruyama's bias ~ beta dt / 4 stays small); EDM's
    # left-point variance sum_k 2 t_k dt = t^2 - t dt has relative bias dt / t.
    [("cosine_vp", (0.05, 0.4, 0.9), 900), ("edm", (0.5, 2.0, 8.0), 1600)],
)
def test_marginal_matches_monte_carlo(name, marks, steps):
    sde = SDES[name]()
    sims, dt = simulate(name, marks, steps)
    for t in marks:
        mean, std = sde.marginal(X0, tvec(t, X0.shape[0]))
        for i in range(X0.shape[0]):
            mc_mean, mc_std = mc_moments(sims[t][i])
            tol_mean, tol_std = mc_tolerances(mean[i], std[i], MC_N, dt)
            assert ((mc_mean - mean[i]).abs() <= tol_mean).all(), (name, t, i, mc_mean, mean[i], tol_mean)
            assert abs(mc_std - std[i]) <= tol_std, (name, t, i, mc_std, std[i], tol_std)


def test_monte_carlo_check_sees_a_wrong_cosine_kernel():
    """The check has the power to see the mean coefficient written as alpha_bar instead of its
    square root (at t = 0.4, where the two differ by 20%)."""
    sde = CosineVPSDE()
    sims, dt = simulate("cosine_vp", (0.05, 0.4, 0.9), 900)
    t = 0.4
    _, std = sde.marginal(X0[1:2], tvec(t))
    wrong = sde.alpha_bar(tvec(t))[0] * X0[1]
    mc_mean, _ = mc_moments(sims[t][1])
    tol_mean, _ = mc_tolerances(wrong, std[0], MC_N, dt)
    assert ((mc_mean - wrong).abs() > 5 * tol_mean).all()


# -- model files and configs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sde", [CosineVPSDE(), CosineVPSDE(s=0.01, T=0.9946), EDMSDE(), EDMSDE(sigma_max=20.0)], ids=repr
)
def test_save_and_load_model_round_trip(tmp_path, sde):
    net = sg.MLP(2, hidden=8, depth=1, embed_dim=8).double()
    model = sg.ScoreModel(net, sde)
    loaded = sg.load_model(sg.save_model(tmp_path / "m.safetensors", model))
    assert type(loaded.sde) is type(sde) and vars(loaded.sde) == vars(sde)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    t = torch.linspace(0.1, 0.9, 5, dtype=F64) * sde.T
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model(x, t))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(s=-0.1), r"^s must be >= 0\.0, got -0\.1"),
        (dict(beta_max=0.0), r"^beta_max must be > 0, got 0\.0"),
        (dict(beta_max=0.01), r"^beta_max must be > beta\(0\) = 0\.0388563 .*got 0\.01"),
        (dict(T=1.0), r"^T must be <= 0\.9979980\d*, the time where beta\(t\) reaches beta_max=999\.0"),
        (dict(T=-0.5), r"^T must be > 0, got -0\.5"),
    ],
)
def test_cosine_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CosineVPSDE(**kwargs)


def test_edm_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"^sigma_max must be > 0, got -1\.0"):
        EDMSDE(sigma_max=-1.0)
    with pytest.raises(TypeError, match=r"^sigma_max must be a real number, got '80'"):
        EDMSDE(sigma_max="80")


# -- time grids ------------------------------------------------------------------------------------

GRID_SDES = ("vp", "subvp", "ve", "cosine_vp", "edm", "linear_callable", "user")


def expected_grid(sde, schedule: str, steps: int, T: float, eps: float) -> torch.Tensor:
    """The schedule's defining variable, uniform in i: returns that variable at i = 0..steps."""
    u = torch.linspace(0, 1, steps + 1, dtype=F64)
    v = {
        "time_uniform": lambda s: s,
        "time_quadratic": lambda s: s.sqrt(),
        "log_snr": lambda s: sde.half_log_snr(s),
        "edm": lambda s: sde.sigma_hat(s) ** (1.0 / EDM_RHO),
        # the time at which VP (beta 0.1 to 20) reaches sigma_hat: 0.1 r + 9.95 r^2 = log(1 + sigma^2)
        "vp_uniform": lambda s: (-0.1 + (0.01 + 39.8 * torch.log1p(sde.sigma_hat(s) ** 2)).sqrt()) / 19.9,
    }[schedule]
    ends = v(torch.tensor([T, eps], dtype=F64))
    return ends[0] + (ends[1] - ends[0]) * u, v


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", GRID_SDES)
def test_each_schedule_is_uniform_in_its_variable(name, schedule):
    sde = SDES[name]()
    eps = 1e-3 * sde.T
    for steps in (1, 7, 200):
        grid = time_grid(sde, schedule, steps, sde.T, eps)
        assert grid.dtype == F64 and grid.shape == (steps + 1,)
        assert grid[0].item() == sde.T and grid[-1].item() == eps  # exact end points
        assert (grid.diff() < 0).all()  # strictly decreasing
        want, v = expected_grid(sde, schedule, steps, sde.T, eps)
        span = (want[0] - want[-1]).abs()
        assert ((v(grid) - want).abs() <= 1e-9 * span).all(), (name, schedule, steps)


def test_named_schedules_differ_where_they_should():
    """On VP the grids differ (time_quadratic and log_snr denser near the data than time_uniform),
    except vp_uniform, which on VP is time_uniform, and elsewhere puts VP's noise levels: on
    sub-VP its inner times are VP's time-uniform ones moved to where sub-VP has the same
    sigma_hat; on EDM's sigma(t) = t, "edm" is the rho = 7 polynomial in t itself."""
    vp = sg.VPSDE()
    grids = {s: time_grid(vp, s, 10, 1.0, 1e-3) for s in SCHEDULES}
    for s in ("time_quadratic", "log_snr"):
        assert (grids[s][1:-1] < grids["time_uniform"][1:-1]).all(), s
    torch.testing.assert_close(grids["vp_uniform"], grids["time_uniform"], rtol=1e-12, atol=1e-15)
    for a in SCHEDULES:
        for b in SCHEDULES:
            same = {a, b} == {"time_uniform", "vp_uniform"}
            assert a == b or same or (grids[a] - grids[b]).abs().max() > 0.05, (a, b)
    sub = sg.SubVPSDE()
    g = time_grid(sub, "vp_uniform", 10, 1.0, 1e-3)
    # the same levels but for the ends' (sub-VP's last is 1e-4, VP's 1e-2): within 1% before the last
    torch.testing.assert_close(
        sub.sigma_hat(g[:-1]), vp.sigma_hat(grids["time_uniform"][:-1]), rtol=1e-2, atol=0
    )
    assert (g[3:-1] > grids["time_uniform"][3:-1]).all() and g[-2] > grids["time_uniform"][-2] + 0.05  # later
    edm = EDMSDE()
    g = time_grid(edm, "edm", 18, 80.0, 0.002)
    i = torch.arange(19, dtype=F64)
    r = 80.0 ** (1 / 7) + i / 18 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))
    torch.testing.assert_close(g, r**7, rtol=1e-13, atol=0)


def _grid(solver, sde):
    return solver.grid(sde, sde.T, 1e-3)


def test_a_solver_given_no_schedule_runs_on_the_sdes_recommendation():
    """``schedule=None`` (the default) is ``sde.schedule_for(solver)``: on an SDE that recommends
    nothing, each solver's own ``default_schedule``; an SDE's ``recommended_schedules`` entry for a
    solver class (or for its nearest named base class) otherwise; an explicit schedule wins."""

    class PlainVP(sg.VPSDE):
        recommended_schedules = {}

    vp = PlainVP()
    own = {
        sg.IPNDM(steps=10): "vp_uniform",
        sg.Heun(steps=20): "edm",
        sg.DPMSolverPlusPlus(steps=10): "log_snr",
        sg.UniPC(steps=10): "log_snr",
        sg.DDIM(steps=10): "log_snr",
        sg.EulerMaruyama(steps=10): "time_uniform",
        sg.PredictorCorrector(steps=10): "time_uniform",
    }
    for solver, name in own.items():
        assert solver.schedule is None and vp.schedule_for(solver) == name
        assert torch.equal(_grid(solver, vp), time_grid(vp, name, 10, 1.0, 1e-3)), solver

    class UsersVP(sg.VPSDE):
        recommended_schedules = {"IPNDM": "time_quadratic", "SteppingSolver": "log_snr"}

    class UsersIPNDM(sg.IPNDM):
        pass

    mine = UsersVP()
    assert torch.equal(_grid(UsersIPNDM(steps=10), mine), time_grid(mine, "time_quadratic", 10, 1.0, 1e-3))
    assert torch.equal(_grid(sg.EulerMaruyama(steps=10), mine), time_grid(mine, "log_snr", 10, 1.0, 1e-3))
    explicit = sg.IPNDM(steps=10, schedule="time_uniform")
    assert torch.equal(_grid(explicit, mine), time_grid(mine, "time_uniform", 10, 1.0, 1e-3))

    # the built-in SDEs' recommendations (measured: docs/benchmarks_schedules.md)
    assert [sg.VPSDE().schedule_for(s) for s in (sg.IPNDM(4), sg.UniPC(4), sg.DPMSolverPlusPlus(4))] == [
        "vp_uniform",
        "time_quadratic",
        "time_quadratic",
    ]
    assert sg.VPSDE().schedule_for(sg.Heun(4)) == "edm"  # not measured: the solver's own

    class Misspelt(sg.VPSDE):
        recommended_schedules = {"IPNDM": "uniform"}

    with pytest.raises(ValueError, match="schedule must be one of") as err:
        _grid(sg.IPNDM(steps=10), Misspelt())
    assert err.value.name == "schedule"


def test_explicit_grid_passes_through_to_the_solver_and_the_result():
    sde = sg.VPSDE()
    grid = torch.tensor([1.0, 0.6, 0.25, 0.05, 1e-3], dtype=F64)
    solver = sg.EulerMaruyama(schedule=grid.tolist())  # any sequence; steps = 4
    assert solver.steps == 4
    visited = []
    res = sg.sample(
        sde,
        lambda x, t: -x,
        (3, 2),
        solver,
        eps=1e-3,
        dtype=F64,
        generator=torch.Generator().manual_seed(0),
        callback=lambda info: visited.append(info.t),
        return_result=True,
    )
    assert torch.equal(res.grid, grid) and visited == grid.tolist()[1:] and res.nfe == 4
    res.grid[1] = 0.7  # the result is a copy: the solver's grid is unchanged
    assert torch.equal(solver.grid(sde, 1.0, 1e-3), grid)
    ode = sg.ProbabilityFlow("euler", schedule=grid)
    assert torch.equal(ode.grid(sde, 1.0, 1e-3), grid) and torch.equal(ode.grid(sde, 1e-3, 1.0), grid.flip(0))


@pytest.mark.parametrize(
    "schedule,error,match",
    [
        (
            "cosine",
            ValueError,
            r"^schedule must be one of \['time_uniform', 'time_quadratic', 'log_snr', "
            r"'edm'.*\] or a 1-D tensor of times, got 'cosine'",
        ),
        (
            [1.0, 0.5, 0.5, 1e-3],
            ValueError,
            r"^an explicit schedule must decrease strictly .* time 2 \(0\.5\) "
            r"is not below time 1 \(0\.5\)",
        ),
        ([1e-3, 0.5, 1.0], ValueError, r"^an explicit schedule must decrease strictly"),
        (
            torch.tensor(0.5),
            ValueError,
            r"^an explicit schedule must be a 1-D tensor of at least 2 times, "
            r"got shape \(\)",
        ),
        (torch.ones(2, 3), ValueError, r"at least 2 times, got shape \(2, 3\)"),
        ([1.0], ValueError, r"at least 2 times, got shape \(1,\)"),
        ([1.0, math.nan, 1e-3], ValueError, r"^an explicit schedule must hold finite times, got \[1\.0, nan"),
        (["a", "b"], TypeError, r"^schedule must be one of .* or a 1-D tensor of times, got list"),
        ({"time_uniform"}, TypeError, r"got set"),
    ],
    ids=["unknown-name", "repeated-time", "increasing", "0-d", "2-d", "one-time", "nan", "strings", "set"],
)
def test_bad_schedules_are_named(schedule, error, match):
    with pytest.raises(error, match=match):
        sg.EulerMaruyama(steps=3, schedule=schedule)
    with pytest.raises(error, match=match):
        sg.ProbabilityFlow("rk4", steps=3, schedule=schedule)


@pytest.mark.parametrize(
    "grid,match",
    [
        ([2.0, 0.5, 1e-3], r"t_start=1 \(T\) down to t_end=0\.001 .*got times from 2 to 0\.001"),
        ([0.5, 0.1, 1e-3], r"got times from 0\.5 to 0\.001"),  # inside [eps, T] but not from T
        ([1.0, 0.5, 1e-4], r"got times from 1 to 0\.0001"),
        ([1.0, 0.5, 1e-2], r"got times from 1 to 0\.01"),
    ],
)
def test_explicit_grid_must_run_from_T_to_eps(grid, match):
    solver = sg.EulerMaruyama(schedule=grid)
    with pytest.raises(ValueError, match=r"^an explicit schedule must run from .*" + match):
        sg.sample(sg.VPSDE(), lambda x, t: -x, (2, 2), solver, eps=1e-3)


def test_steps_and_explicit_grid_must_agree():
    grid = [1.0, 0.5, 1e-3]
    with pytest.raises(ValueError, match=r"^steps=5 but the explicit schedule has 3 times \(2 steps\)"):
        sg.EulerMaruyama(steps=5, schedule=grid)
    with pytest.raises(ValueError, match=r"^steps=5 but the explicit schedule has 3 times \(2 steps\)"):
        sg.ProbabilityFlow("rk4", steps=5, schedule=grid)
    assert sg.EulerMaruyama(steps=2, schedule=grid).steps == 2
    with pytest.raises(ValueError, match=r"EulerMaruyama needs steps \(or an explicit schedule\), got None"):
        sg.EulerMaruyama()


def test_adaptive_ode_refuses_a_schedule():
    with pytest.raises(
        ValueError, match=r"^schedule='edm' is only for fixed-grid methods \[.*\]; 'dopri5' is "
    ):
        sg.ProbabilityFlow("dopri5", schedule="edm")
    with pytest.raises(ValueError, match=r"^an explicit schedule is only for fixed-grid methods"):
        sg.ProbabilityFlow("dopri5", schedule=[1.0, 0.5, 1e-3])


def test_a_float32_grid_is_accepted_and_its_ends_set_exactly():
    """float32 rounds 1e-3 by 5e-8 relative: such a grid is the grid meant, and it steps from T
    to eps exactly."""
    grid = torch.tensor([1.0, 0.5, 0.2, 1e-3])  # float32
    res = sg.sample(sg.VPSDE(), lambda x, t: -x, (2, 2), sg.EulerMaruyama(schedule=grid), return_result=True)
    assert res.grid.dtype == torch.float64 and res.grid[0].item() == 1.0 and res.grid[-1].item() == 1e-3
    assert torch.equal(res.grid[1:-1], grid[1:-1].double())
