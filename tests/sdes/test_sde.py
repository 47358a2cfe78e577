"""The forward SDEs against closed forms: Monte-Carlo simulation, moment equations, exact kernels.

Everything is float64 with seeded generators; tolerances are multiples of a standard error that
is computed in the test, plus an explicit allowance for the Euler-Maruyama bias of O(dt).
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import pytest
import torch
from problems import SDES, OrnsteinUhlenbeck, cosine_linear_sde

import sde_gen as sg

F64 = torch.float64

# More SDEs for the deterministic checks: T != 1, both LinearSDE paths with constant coefficients.
EXTRA_SDES = {
    "ve_T2": lambda: sg.VESDE(sigma_min=0.05, sigma_max=10.0, T=2.0),
    "vp_T2": lambda: sg.VPSDE(beta_min=0.5, beta_max=8.0, T=2.0),
    "linear_const": lambda: sg.LinearSDE(-2.0, 1.5),
    "linear_T2": lambda: sg.LinearSDE(lambda t: -0.3 * (1 + t), lambda t: (0.5 + t).sqrt(), T=2.0),
}
ALL_SDES = {**SDES, **EXTRA_SDES}


def tvec(t: float, n: int = 1, dtype=F64) -> torch.Tensor:
    return torch.full((n,), t, dtype=dtype)


@contextmanager
def one_thread():
    """Small element-wise loops are faster on one thread, and far faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def coefficients(sde, t: torch.Tensor):
    """Linear drift f(x, t) = a(t) x + c(t), read off the SDE's own drift: (a, c) per sample."""
    like = torch.zeros(t.shape[0], 1, dtype=t.dtype)
    c = sde.drift(like, t)[:, 0]
    a = sde.drift(like + 1.0, t)[:, 0] - c
    return a, c


# -- marginal() against a Monte-Carlo simulation of the forward SDE -----------------------------

X0 = torch.tensor([[0.0, 0.0], [1.5, -2.0], [-3.0, 0.5]], dtype=F64)  # three starting points
MC_TIMES = (0.05, 0.3, 1.0)
MC_N, MC_STEPS = 20_000, 1000


@functools.cache
def simulate_forward(name: str):
    """Euler-Maruyama on dx = f dt + g dW from each row of X0 to each time of :func:`mc_times`."""
    sde = SDES[name]()
    return euler_forward(sde, mc_times(sde), MC_STEPS, seed=20240517)


def mc_times(sde):
    """MC_TIMES, the last at ``0.9 T`` for an SDE that ends before 1 (the straight path of flow
    matching, whose drift ``-x / (1 - t)`` is too stiff near its end for Euler-Maruyama)."""
    return MC_TIMES if sde.T >= 1.0 else (*MC_TIMES[:-1], 0.9 * sde.T)


def euler_forward(sde, marks, steps: int, *, seed: int, n: int = MC_N):
    """Euler-Maruyama on the forward SDE from each row of X0 to each time of ``marks``, with
    ``steps`` steps of ``max(marks) / steps``.

    ``n`` particles per starting point; the starting points share their Brownian increments
    (common random numbers), each estimate on its own is an ordinary Monte-Carlo estimate.
    Returns ``{t: [particles (n, 2) for each row of X0]}`` and ``dt``.
    """
    gen = torch.Generator().manual_seed(seed)
    dt = max(marks) / steps
    at = {round(t / dt): t for t in marks}
    xs = [row.expand(n, 2).clone() for row in X0]
    tv = torch.empty(n, dtype=F64)
    out = {}
    with one_thread():
        for k in range(steps):
            tv.fill_(k * dt)
            # Normals drawn in float32 (5x faster) and cast: their rounding is far below the MC error.
            z = torch.randn((n, 2), generator=gen, dtype=torch.float32).to(F64)
            w = (sde.diffusion(tv) * math.sqrt(dt))[:, None] * z
            xs = [sde.drift(x, tv).mul_(dt).add_(x).add_(w) for x in xs]
            if k + 1 in at:
                out[at[k + 1]] = xs
    return out, dt


def mc_tolerances(mean, std, n, dt):
    """5 standard errors plus an O(dt) Euler-Maruyama bias allowance (10 dt, relative)."""
    tol_mean = 5.0 * std / math.sqrt(n) + 10.0 * dt * (mean.abs() + std)
    tol_std = 5.0 * std / math.sqrt(2 * 2 * n) + 10.0 * dt * std  # 2 coordinates pooled
    return tol_mean, tol_std


def mc_moments(x: torch.Tensor):
    """Mean per coordinate (2,) and the std pooled over both coordinates."""
    mean = x.mean(0)
    std = (x - mean).pow(2).sum(0).div(x.shape[0] - 1).mean().sqrt()
    return mean, std


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_matches_monte_carlo(name):
    sde = SDES[name]()
    sims, dt = simulate_forward(name)
    for t in mc_times(sde):
        mean, std = sde.marginal(X0, tvec(t, X0.shape[0]))
        for i in range(X0.shape[0]):
            mc_mean, mc_std = mc_moments(sims[t][i])
            tol_mean, tol_std = mc_tolerances(mean[i], std[i], MC_N, dt)
            assert ((mc_mean - mean[i]).abs() <= tol_mean).all(), (name, t, i, mc_mean, mean[i], tol_mean)
            assert abs(mc_std - std[i]) <= tol_std, (name, t, i, mc_std, std[i], tol_std)


def test_monte_carlo_check_rejects_the_reference_ve_variance():
    """The MC check has the power to see sigma(t)^2 instead of sigma(t)^2 - sigma_min^2 at small t,
    and SubVP's std written as sqrt(1 - exp(-B)) (VP's) instead of 1 - exp(-B)."""
    sims, dt = simulate_forward("ve")
    ve = sg.VESDE()
    t = MC_TIMES[0]
    _, mc_std = mc_moments(sims[t][0])
    ref_std = ve.sigma(tvec(t))[0]
    _, tol_std = mc_tolerances(torch.zeros(()), ref_std, MC_N, dt)
    assert abs(mc_std - ref_std) > 5 * tol_std

    sims, dt = simulate_forward("subvp")
    b = sg.SubVPSDE().beta_integral(tvec(t))[0]
    wrong = (-torch.expm1(-b)).sqrt()
    _, mc_std = mc_moments(sims[t][0])
    _, tol_std = mc_tolerances(torch.zeros(()), wrong, MC_N, dt)
    assert abs(mc_std - wrong) > 5 * tol_std


# -- the kernel against the moment equations of a linear SDE ------------------------------------


def ddt(fn, t: torch.Tensor, h: float) -> torch.Tensor:
    """Fourth-order central difference of ``fn`` at ``t``."""
    return (-fn(t + 2 * h) + 8 * fn(t + h) - 8 * fn(t - h) + fn(t - 2 * h)) / (12 * h)


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_kernel_solves_the_moment_equations(name):
    """For dx = (a x + c) dt + g dW: d log(scale)/dt = a, d shift/dt = a shift + c, and
    d var/dt = 2 a var + g^2 (fourth-order differences of the kernel in t, float64). Errors are
    relative to the size of the terms, |2 a var| + g^2, as the two cancel near stationarity."""
    sde = ALL_SDES[name]()
    T = sde.T
    t = torch.linspace(0.02, 0.98, 49, dtype=F64) * T
    h = 1e-4 * T
    like = torch.zeros(t.shape[0], 3, dtype=F64)
    k = sde.kernel(t, like)
    a, c = coefficients(sde, t)
    g2 = sde.diffusion(t) ** 2
    dlog_scale = ddt(lambda s: sde.kernel(s, like).scale[:, 0].log(), t, h)
    torch.testing.assert_close(dlog_scale, a, rtol=1e-8, atol=1e-9)
    dshift = ddt(lambda s: sde.kernel(s, like).shift[:, 0], t, h)
    torch.testing.assert_close(dshift, a * k.shift[:, 0] + c, rtol=1e-8, atol=1e-9)
    dvar = ddt(lambda s: sde.kernel(s, like).std ** 2, t, h)
    size = g2 + 2 * a.abs() * k.std**2
    assert ((dvar - (2 * a * k.std**2 + g2)).abs() <= 1e-7 * size).all()
    # At t = 0 the kernel is the identity.
    k0 = sde.kernel(tvec(0.0, 2), like[:2])
    torch.testing.assert_close(k0.scale, torch.ones_like(k0.scale), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(k0.std, torch.zeros(2, dtype=F64), rtol=0, atol=1e-7)


# -- LinearSDE's numerical kernel --------------------------------------------------------------

_T_PARTS = [torch.logspace(-4, 0, 200, dtype=F64), torch.linspace(1e-4, 1.0, 201, dtype=F64)]
T_GRID = torch.cat(_T_PARTS).sort().values


def _rel(a, b):
    return ((a - b).abs() / b.abs()).max().item()


def test_linear_sde_with_vp_coefficients_equals_vpsde():
    vp = sg.VPSDE()
    lin = sg.LinearSDE(lambda t: -0.5 * vp.beta(t), lambda t: vp.beta(t).sqrt())
    like = torch.zeros(T_GRID.shape[0], 2, dtype=F64)
    kv, kl = vp.kernel(T_GRID, like), lin.kernel(T_GRID, like)
    assert _rel(kl.scale, kv.scale) < 1e-12
    # Cubic Hermite on the first knot interval, where var ~ t, limits the relative accuracy there.
    small = T_GRID < 1e-2
    assert _rel(kl.std[small], kv.std[small]) < 1e-8
    assert _rel(kl.std[~small], kv.std[~small]) < 1e-10
    assert abs(lin.prior_std - 1.0) < 1e-12
    # Same drift and diffusion as VPSDE.
    x = torch.randn(T_GRID.shape[0], 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(lin.drift(x, T_GRID), vp.drift(x, T_GRID), rtol=1e-14, atol=0)
    torch.testing.assert_close(lin.diffusion(T_GRID), vp.diffusion(T_GRID), rtol=1e-14, atol=0)


def test_linear_sde_constant_coefficients_closed_form_and_numerical():
    a, g = -2.0, 1.5
    closed = sg.LinearSDE(a, g)
    numeric = sg.LinearSDE(lambda t: torch.full_like(t, a), lambda t: torch.full_like(t, g))
    like = torch.zeros(T_GRID.shape[0], 2, dtype=F64)
    kc, kn = closed.kernel(T_GRID, like), numeric.kernel(T_GRID, like)
    # The closed form against an independent formula: scale e^{at}, var g^2 (e^{2at} - 1) / (2a).
    ts = T_GRID.tolist()
    exact_scale = torch.tensor([math.exp(a * s) for s in ts], dtype=F64)
    exact_std = torch.tensor([g * math.sqrt(math.expm1(2 * a * s) / (2 * a)) for s in ts], dtype=F64)
    assert _rel(kc.scale[:, 0], exact_scale) < 1e-14
    assert _rel(kc.std, exact_std) < 1e-13
    assert _rel(kn.scale, kc.scale) < 1e-12
    assert _rel(kn.std, kc.std) < 1e-9
    prior = math.sqrt(g**2 * math.expm1(2 * a) / (2 * a) + math.exp(2 * a))
    assert abs(closed.prior_std - prior) < 1e-14 and abs(numeric.prior_std - prior) < 1e-10


@pytest.mark.parametrize("g_arg", [1.5, lambda t: torch.full_like(t, 1.5)], ids=["const", "callable"])
def test_linear_sde_zero_drift_is_brownian_motion(g_arg):
    sde = sg.LinearSDE(0.0, g_arg) if not callable(g_arg) else sg.LinearSDE(lambda t: 0 * t, g_arg)
    like = torch.zeros(T_GRID.shape[0], 2, dtype=F64)
    k = sde.kernel(T_GRID, like)
    torch.testing.assert_close(k.scale, torch.ones_like(k.scale), rtol=1e-14, atol=1e-14)
    assert _rel(k.std, 1.5 * T_GRID.sqrt()) < 1e-12
    assert abs(sde.prior_std - math.sqrt(1.5**2 + 1.0)) < 1e-12


def test_linear_sde_accepts_scalar_returning_callables():
    sde = sg.LinearSDE(lambda t: -1.0, lambda t: torch.tensor(2.0))
    ref = sg.LinearSDE(-1.0, 2.0)
    like = torch.zeros(T_GRID.shape[0], 2, dtype=F64)
    assert _rel(sde.kernel(T_GRID, like).std, ref.kernel(T_GRID, like).std) < 1e-9


def test_vp_like_linear_sde_prior_std_is_one():
    assert abs(cosine_linear_sde().prior_std - 1.0) < 1e-12
    beta = lambda t: 0.3 + 5.0 * t**3  # noqa: E731
    sde = sg.LinearSDE(lambda t: -0.5 * beta(t), lambda t: beta(t).sqrt(), T=2.0)
    assert abs(sde.prior_std - 1.0) < 1e-12
    assert sg.LinearSDE(-1.0, math.sqrt(2.0), prior_std=3.0).prior_std == 3.0


# -- VE specifics ------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_ve_exact_variance_and_diffusion(T):
    smin, smax = 0.01, 50.0
    ve = sg.VESDE(sigma_min=smin, sigma_max=smax, T=T)
    t = torch.linspace(0.0, T, 101, dtype=F64)
    x0 = torch.randn(t.shape[0], 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    mean, std = ve.marginal(x0, t)
    exact_var = torch.tensor([smin**2 * ((smax / smin) ** (2 * s / T) - 1.0) for s in t.tolist()], dtype=F64)
    torch.testing.assert_close(mean, x0, rtol=0, atol=0)
    torch.testing.assert_close(std**2, exact_var, rtol=1e-12, atol=1e-300)
    assert abs(ve.sigma(tvec(T))[0].item() - smax) < 1e-12 * smax
    assert abs(ve.sigma(tvec(0.0))[0].item() - smin) < 1e-15
    assert ve.prior_std == smax
    torch.testing.assert_close(ve.drift(x0, t), torch.zeros_like(x0), rtol=0, atol=0)
    # g^2 = d sigma^2 / dt, by central differences of sigma(t)^2 itself.
    tt = torch.linspace(0.01, 0.99, 50, dtype=F64) * T
    h = 1e-6 * T
    dsig2 = (ve.sigma(tt + h) ** 2 - ve.sigma(tt - h) ** 2) / (2 * h)
    torch.testing.assert_close(ve.diffusion(tt) ** 2, dsig2, rtol=1e-7, atol=0)


def test_vp_and_subvp_closed_forms():
    vp, sub = sg.VPSDE(beta_min=0.1, beta_max=20.0), sg.SubVPSDE(beta_min=0.1, beta_max=20.0)
    t = torch.linspace(1e-3, 1.0, 50, dtype=F64)
    B = 0.1 * t + 0.5 * t**2 * 19.9
    x0 = torch.ones(t.shape[0], 2, dtype=F64)
    m, s = vp.marginal(x0, t)
    torch.testing.assert_close(m[:, 0], torch.exp(-0.5 * B), rtol=1e-13, atol=0)
    torch.testing.assert_close(s, torch.sqrt(1 - torch.exp(-B)), rtol=1e-12, atol=0)
    m, s = sub.marginal(x0, t)
    torch.testing.assert_close(m[:, 0], torch.exp(-0.5 * B), rtol=1e-13, atol=0)
    torch.testing.assert_close(s, 1 - torch.exp(-B), rtol=1e-12, atol=0)
    torch.testing.assert_close(vp.diffusion(t) ** 2, 0.1 + 19.9 * t, rtol=1e-14, atol=0)


# -- generic derived methods: kernel, transition, tweedie, reverse, probability flow, prior ------


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_kernel_is_read_off_the_marginal(name):
    """marginal(x0, t) = (scale * x0 + shift, std) for any x0: the kernel's coefficients."""
    sde = ALL_SDES[name]()
    gen = torch.Generator().manual_seed(2)
    t = torch.rand(8, generator=gen, dtype=F64) * sde.T
    x0 = 4.0 * torch.randn(8, 3, 2, generator=gen, dtype=F64)
    k = sde.kernel(t, x0)
    mean, std = sde.marginal(x0, t)
    torch.testing.assert_close(k.scale * x0 + k.shift, mean, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(k.std, std, rtol=0, atol=0)
    assert (k.scale > 0).all() and (k.std > 0).all()


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_transition_composes_with_the_kernel(name):
    sde = ALL_SDES[name]()
    T = sde.T
    gen = torch.Generator().manual_seed(3)
    n = 64
    like = torch.zeros(n, 2, dtype=F64)
    s = (0.02 + 0.9 * torch.rand(n, generator=gen, dtype=F64)) * T
    u = s + (0.98 * T - s) * torch.rand(n, generator=gen, dtype=F64)
    t = u + (T - u) * torch.rand(n, generator=gen, dtype=F64)
    ks, kt = sde.kernel(s, like), sde.kernel(t, like)
    a, b, c2 = sde.transition(s, t, like)
    for v in (a, b, c2):
        assert v.shape == like.shape and v.dtype == F64
    assert (c2 > 0).all()
    var = lambda k: k.std[:, None] ** 2  # noqa: E731
    # 0 -> s then s -> t equals 0 -> t.
    torch.testing.assert_close(a * ks.scale, kt.scale, rtol=1e-12, atol=0)
    torch.testing.assert_close(a * ks.shift + b, kt.shift, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a**2 * var(ks) + c2, var(kt).expand_as(c2), rtol=1e-12, atol=0)
    # Chapman-Kolmogorov: s -> u -> t equals s -> t.
    a1, b1, c1 = sde.transition(s, u, like)
    a2, b2, c2b = sde.transition(u, t, like)
    torch.testing.assert_close(a2 * a1, a, rtol=1e-12, atol=0)
    torch.testing.assert_close(a2 * b1 + b2, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a2**2 * c1 + c2b, c2, rtol=1e-9, atol=1e-12)


def test_transition_closed_forms():
    s, t = tvec(0.2, 3), tvec(0.7, 3)
    like = torch.zeros(3, 2, dtype=F64)
    vp = sg.VPSDE()
    dB = vp.beta_integral(t) - vp.beta_integral(s)
    a, b, c2 = vp.transition(s, t, like)
    torch.testing.assert_close(a[:, 0], torch.exp(-0.5 * dB), rtol=1e-13, atol=0)
    torch.testing.assert_close(b, torch.zeros_like(b), rtol=0, atol=0)
    torch.testing.assert_close(c2[:, 0], -torch.expm1(-dB), rtol=1e-12, atol=0)
    ve = sg.VESDE()
    a, b, c2 = ve.transition(s, t, like)
    torch.testing.assert_close(a, torch.ones_like(a), rtol=0, atol=0)
    torch.testing.assert_close(c2[:, 0], ve.sigma(t) ** 2 - ve.sigma(s) ** 2, rtol=1e-12, atol=0)
    ou = OrnsteinUhlenbeck()
    a, b, c2 = ou.transition(s, t, like)
    torch.testing.assert_close(a[:, 0], torch.exp(-ou.theta * (t - s)), rtol=1e-13, atol=0)
    exact = ou.s**2 * -torch.expm1(-2 * ou.theta * (t - s)) / (2 * ou.theta)
    torch.testing.assert_close(c2[:, 0], exact, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_tweedie_on_gaussian_data(name):
    """x0 ~ N(mu, s0^2 I): p_t = N(k mu + b, k^2 s0^2 + std^2) and E[x0 | x_t] is linear in x_t."""
    sde = ALL_SDES[name]()
    gen = torch.Generator().manual_seed(5)
    n = 40
    mu = torch.tensor([[0.7, -1.3, 2.0]], dtype=F64)
    s0 = 0.6
    t = (0.01 + 0.98 * torch.rand(n, generator=gen, dtype=F64)) * sde.T
    x = 3.0 * torch.randn(n, 3, generator=gen, dtype=F64)
    k = sde.kernel(t, x)
    v = k.scale**2 * s0**2 + k.std[:, None] ** 2
    resid = x - k.scale * mu - k.shift
    score = -resid / v
    posterior_mean = mu + k.scale * s0**2 / v * resid
    torch.testing.assert_close(sde.tweedie(x, t, score), posterior_mean, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(ALL_SDES))
@pytest.mark.parametrize("shape", [(5, 3), (5,), (5, 3, 4, 4)], ids=["2d", "1d", "4d"])
def test_reverse_and_probability_flow_drifts(name, shape):
    sde = ALL_SDES[name]()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=gen, dtype=F64)
    s = torch.randn(shape, generator=gen, dtype=F64)
    t = torch.rand(shape[0], generator=gen, dtype=F64) * sde.T
    calls = []

    def score_fn(x_, t_):
        calls.append((x_, t_))
        return s

    f = sde.drift(x, t)
    g2 = (sde.diffusion(t) ** 2).reshape((-1,) + (1,) * (len(shape) - 1))
    rev = sde.reverse(score_fn)
    torch.testing.assert_close(rev.drift(x, t), f - g2 * s, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(rev.drift(x, t, score=s), f - g2 * s, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(rev.diffusion(t), sde.diffusion(t), rtol=0, atol=0)
    assert rev.T == sde.T
    pf = sde.probability_flow(score_fn)
    torch.testing.assert_close(pf.drift(x, t), f - 0.5 * g2 * s, rtol=1e-14, atol=1e-14)
    assert pf.T == sde.T
    assert len(calls) == 2 and all(c[0] is x and c[1] is t for c in calls)


@pytest.mark.parametrize("name,std", [("vp", 1.0), ("subvp", 1.0), ("ve", 50.0), ("user", 1.0)])
def test_prior_log_prob_is_the_gaussian_density(name, std):
    sde = SDES[name]()
    gen = torch.Generator().manual_seed(11)
    for shape in [(6, 2), (6,), (6, 3, 4, 4)]:
        z = std * torch.randn(shape, generator=gen, dtype=F64)
        normal = torch.distributions.Normal(torch.zeros((), dtype=F64), torch.tensor(std, dtype=F64))
        ref = normal.log_prob(z).reshape(shape[0], -1).sum(1)
        lp = sde.prior_log_prob(z)
        assert lp.shape == (shape[0],) and lp.dtype == F64
        torch.testing.assert_close(lp, ref, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_prior_sample_has_the_std_of_prior_log_prob(name):
    """The prior draw has the std that prior_log_prob assumes (within 5 standard errors)."""
    sde = ALL_SDES[name]()
    gen = torch.Generator().manual_seed(13)
    n = 20_000
    z = sde.prior_sample((n, 2), generator=gen, dtype=F64)
    assert z.shape == (n, 2) and z.dtype == F64
    # prior_log_prob is maximal at 0 and its curvature gives the std: lp(0) - lp(e_1) = 1/(2 std^2).
    e = torch.zeros(2, 2, dtype=F64)
    e[1, 0] = 1.0
    lp = sde.prior_log_prob(e)
    std = (1.0 / (2.0 * (lp[0] - lp[1]))).sqrt()
    emp = z.pow(2).mean().sqrt()
    assert abs(emp - std) <= 5.0 * std / math.sqrt(2 * 2 * n)
    torch.testing.assert_close(
        lp[0], torch.tensor(-math.log(2 * math.pi * std.item() ** 2), dtype=F64), rtol=1e-12, atol=0
    )


# -- shapes, dtypes --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ALL_SDES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 3, 4, 4), (4,), (4, 7)], ids=["4d", "1d", "2d"])
def test_shapes_and_dtypes_follow_the_input(name, dtype, shape):
    sde = ALL_SDES[name]()
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    t = (0.1 + 0.8 * torch.rand(shape[0], generator=gen, dtype=dtype)) * sde.T
    B = shape[0]

    def check(v, want_shape):
        assert v.shape == want_shape and v.dtype == dtype, (v.shape, v.dtype)
        assert torch.isfinite(v).all()

    check(sde.drift(x, t), shape)
    check(sde.diffusion(t), (B,))
    mean, std = sde.marginal(x, t)
    check(mean, shape)
    check(std, (B,))
    k = sde.kernel(t, x)
    check(k.scale, shape)
    check(k.shift, shape)
    check(k.std, (B,))
    for v in sde.transition(0.5 * t, t, x):
        check(v, shape)
    check(sde.tweedie(x, t, -x), shape)
    check(sde.reverse(lambda x_, t_: -x_).drift(x, t), shape)
    check(sde.probability_flow(lambda x_, t_: -x_).drift(x, t), shape)
    check(sde.prior_sample(shape, generator=gen, dtype=dtype), shape)
    check(sde.prior_log_prob(x), (B,))
    # Per-sample results do not depend on the batch: the first sample alone gives the same.
    m1, s1 = sde.marginal(x[:1], t[:1])
    torch.testing.assert_close(m1, mean[:1], rtol=0, atol=0)
    torch.testing.assert_close(s1, std[:1], rtol=0, atol=0)
    if dtype == torch.float32:  # float32 values agree with float64 to float32 precision
        m64, s64 = sde.marginal(x.double(), t.double())
        torch.testing.assert_close(mean, m64.float(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(std, s64.float(), rtol=1e-5, atol=1e-6)


def test_repr_names_the_parameters():
    assert "beta_max=20.0" in repr(sg.VPSDE())
    assert "sigma_max=50.0" in repr(sg.VESDE())
