"""EDM's Heun (Karras et al. 2022, Algorithms 1-2) and iPNDM (Zhang & Chen 2022) for every SDE, fed
exact scores: convergence orders from log-log slopes, exactness for a point mass, churn reproduces
p_eps, and the errors bad arguments get."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from problems import SDES, energy_noise_floor, mixture_2d

import sde_gen as sg
from sde_gen.sampling.solvers.heun import Heun
from sde_gen.sampling.solvers.ipndm import IPNDM, IPNDM_COEFFICIENTS, adams_bashforth_weights

F64 = torch.float64
EPS = 1e-3
ORDER_SDES = ["vp", "subvp", "ve", "user"]


def slope(steps, errors) -> float:
    """Order p of error ~ C steps^-p, fitted by least squares on the log-log points."""
    return -float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


@functools.cache
def _flow_problem(sde_name: str):
    """16 paths from x_T ~ prior and their end points by dopri5 at tolerance 1e-11 (accurate to about
    1e-9, far below the errors measured here)."""
    sde, mix = SDES[sde_name](), mixture_2d()
    x_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = sg.sample(
        sde, mix.score_fn(sde), x_T.shape, sg.ProbabilityFlow(rtol=1e-11, atol=1e-11), eps=EPS, x_T=x_T
    )
    return sde, mix, x_T, ref


def _pathwise_errors(sde_name, make, steps):
    """RMS over the paths of |x - x_ref| at eps, for each solver ``make(k)``; checks the NFE too."""
    sde, mix, x_T, ref = _flow_problem(sde_name)
    errors = []
    for k in steps:
        solver = make(k)
        res = sg.sample(sde, mix.score_fn(sde), x_T.shape, solver, eps=EPS, x_T=x_T, return_result=True)
        assert res.nfe == solver.steps
        errors.append(float((res.x - ref).pow(2).sum(1).mean().sqrt()))
    return errors


# -- convergence orders -----------------------------------------------------------------------------


@pytest.mark.parametrize("sde_name", ORDER_SDES)
def test_heun_pathwise_error_falls_at_order_two(sde_name):
    # Measured (VP, sub-VP, VE, OU), 16..128 intervals = 32..256 evaluations: errors 1.0e-1 .. 3.8e-4,
    # fitted slopes 2.09-2.12 (over 8..64 intervals 2.14-2.30: not yet asymptotic).
    intervals = [16, 32, 64, 128]
    errors = _pathwise_errors(sde_name, lambda n: Heun(2 * n), intervals)
    assert abs(slope(intervals, errors) - Heun.convergence_order) < 0.3, (errors, slope(intervals, errors))
    assert min(errors) > 1e-6  # far above the reference's error


@pytest.mark.parametrize("sde_name", ORDER_SDES)
def test_ipndm_pathwise_error_falls_at_order_two(sde_name):
    # The fixed coefficients are those of equal steps; on the edm grid (unequal in sigma) their local
    # error is O(h^2 (h_i - h_{i-1})) = O(h^3): order 2, whatever the order of the formula.
    # Measured 32..512 steps: errors 1.0e-2 .. 1.0e-5, fitted slopes 1.90-1.98.
    steps = [32, 64, 128, 256, 512]
    errors = _pathwise_errors(sde_name, lambda k: IPNDM(k, schedule="edm"), steps)
    assert abs(slope(steps, errors) - IPNDM.convergence_order) < 0.3, (errors, slope(steps, errors))
    assert min(errors) > 1e-7


@pytest.mark.parametrize("sde_name", ORDER_SDES)
def test_variable_step_ipndm_is_higher_order_in_practice(sde_name):
    # Variable-step Adams-Bashforth 4 after the warm start: local error O(h^5). The warm start's Euler
    # step keeps the guaranteed global order at 2, but at sigma_hat(T) the slope varies as sigma^-3
    # and its share is far below these errors. Measured 64..512 steps: 4.4e-3 .. 3.4e-7, slopes 3.58-3.71.
    steps = [64, 128, 256, 512]
    errors = _pathwise_errors(sde_name, lambda k: IPNDM(k, coefficients="variable", schedule="edm"), steps)
    assert slope(steps, errors) > 3.3, (errors, slope(steps, errors))
    assert min(errors) > 1e-8


def test_variable_step_weights_integrate_cubics_exactly_and_match_ipndm_on_equal_steps():
    for k, fixed in enumerate(IPNDM_COEFFICIENTS, start=1):
        nodes = [-float(j) for j in range(k)]  # equal steps of length 1: the step is [0, 1]
        assert np.allclose(adams_bashforth_weights(nodes, 0.0, 1.0), fixed, rtol=0, atol=1e-14)
    nodes, s0, s1 = [3.0, 3.7, 5.1, 9.0], 3.0, 1.2  # decreasing sigmas, unequal steps
    w = adams_bashforth_weights(nodes, s0, s1)
    for p in range(4):  # int_{s0}^{s1} s^p ds
        exact = (s1 ** (p + 1) - s0 ** (p + 1)) / (p + 1)
        assert math.isclose(
            (s1 - s0) * sum(wj * s**p for wj, s in zip(w, nodes, strict=True)), exact, rel_tol=1e-13
        )


# -- exactness for a point mass ---------------------------------------------------------------------


SOLVERS = {
    "heun5": lambda: Heun(5),
    "heun6_log_snr": lambda: Heun(6, schedule="log_snr"),
    "ipndm5": lambda: IPNDM(5),
    "ipndm7_time_uniform": lambda: IPNDM(7, schedule="time_uniform"),
    "ipndm6_variable": lambda: IPNDM(6, coefficients="variable"),
}


@pytest.mark.parametrize("solver_name", list(SOLVERS))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_exact_for_a_point_mass(sde_name, solver_name):
    """Data at m: D = m, so xhat(sigma) = m + (xhat_T - m) sigma / sigma_T is linear in sigma and
    d xhat / d sigma is constant along it; Euler, Heun and Adams-Bashforth are exact for that.
    Measured: at most 1e-13 over 5 SDEs x 5 solvers."""
    sde = SDES[sde_name]()
    m = torch.tensor([[1.5, -0.5]], dtype=F64)

    def score(x, t):
        k = sde.kernel(t, x)
        return -(x - k.scale * m - k.shift) / (k.std**2)[:, None]

    x_T = 3.0 * torch.randn(8, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    x = sg.sample(sde, score, x_T.shape, SOLVERS[solver_name](), eps=EPS, x_T=x_T)
    ends = torch.tensor([sde.T, EPS], dtype=F64)
    k_T, k_eps = sde.kernel(ends[:1], x_T[:1]), sde.kernel(ends[1:], x_T[:1])
    sigma_T, sigma_eps = sde.sigma_hat(ends).tolist()
    xhat_T = (x_T - k_T.shift) / k_T.scale
    exact = k_eps.scale * (m + (xhat_T - m) * sigma_eps / sigma_T) + k_eps.shift
    assert (x - exact).abs().max() < 1e-12, (x - exact).abs().max()


# -- stochastic churn ---------------------------------------------------------------------------------


@functools.cache
def _p_eps_reference(sde_name: str, n: int):
    sde, mix = SDES[sde_name](), mixture_2d()
    ref, floor = energy_noise_floor(mix, sde, n, EPS)
    return sde, mix, ref, floor


@pytest.mark.parametrize("sde_name", ["vp", "ve", "user"])
def test_heun_with_churn_reproduces_p_eps(sde_name):
    # Each churn step maps p_t to p_t_up exactly (fresh noise in xhat), each Heun step p_t_up to p_t_next
    # up to its discretisation error: with enough steps the samples are exact in distribution.
    # Measured (energy distance minus the floor's mean, in floor SDs): 128 evaluations 2.5, 0.7, 0.2
    # (VP, VE, OU; other seeds on VP -0.6, -0.2); 4 evaluations over 2000.
    n = 2000
    sde, mix, ref, floor = _p_eps_reference(sde_name, n)
    g = torch.Generator().manual_seed(11)
    x = sg.sample(sde, mix.score_fn(sde), (n, 2), Heun(128, churn=20.0), eps=EPS, generator=g, dtype=F64)
    ed = sg.energy_distance(x, ref)
    assert ed < floor.mean() + 5 * floor.std(), (ed, floor)
    # The figure sees what it should: 4 evaluations (two Heun steps) are far off.
    g = torch.Generator().manual_seed(11)
    x4 = sg.sample(sde, mix.score_fn(sde), (n, 2), Heun(4, churn=20.0), eps=EPS, generator=g, dtype=F64)
    assert sg.energy_distance(x4, ref) > floor.mean() + 20 * floor.std()


def test_churn_is_seeded_and_confined_to_its_window():
    sde, mix, x_T, _ = _flow_problem("user")
    score = mix.score_fn(sde)

    def run(solver, seed=5):
        return sg.sample(
            sde, score, x_T.shape, solver, eps=EPS, x_T=x_T, generator=torch.Generator().manual_seed(seed)
        )

    plain, churned = run(Heun(20)), run(Heun(20, churn=10.0))
    assert torch.equal(churned, run(Heun(20, churn=10.0)))  # same seed, same samples
    assert not torch.equal(churned, run(Heun(20, churn=10.0), seed=6))
    assert (churned - plain).abs().max() > 1e-2
    # No noise level of the grid lies in [s_tmin, s_tmax] = [1e6, inf]: Algorithm 1 bit for bit.
    assert torch.equal(run(Heun(20, churn=10.0, s_tmin=1e6)), plain)


# -- evaluation counts, grids, bad inputs -------------------------------------------------------------


@pytest.mark.parametrize(("steps", "intervals"), [(1, 1), (5, 3), (6, 3), (10, 5)])
def test_heun_steps_count_score_evaluations(steps, intervals):
    sde, mix, x_T, _ = _flow_problem("vp")
    seen = []
    res = sg.sample(
        sde,
        mix.score_fn(sde),
        x_T.shape,
        Heun(steps),
        eps=EPS,
        x_T=x_T,
        return_result=True,
        callback=seen.append,
    )
    assert res.nfe == steps and res.grid.numel() == intervals + 1 and len(seen) == intervals
    assert all(info.denoised is not None and info.denoised.shape == x_T.shape for info in seen)


def test_explicit_schedule():
    sde, mix, x_T, _ = _flow_problem("ve")
    grid = torch.tensor([1.0, 0.6, 0.3, 0.1, EPS], dtype=F64)
    for solver, nfe in [(Heun(schedule=grid), 8), (Heun(7, schedule=grid), 7), (IPNDM(schedule=grid), 4)]:
        res = sg.sample(sde, mix.score_fn(sde), x_T.shape, solver, eps=EPS, x_T=x_T, return_result=True)
        assert res.nfe == nfe and torch.equal(res.grid, grid)
    with pytest.raises(ValueError, match=r"steps=9 .* 4 intervals"):
        Heun(9, schedule=grid)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Heun(10, churn=-1.0), ValueError, r"churn must be >= 0.0, got -1.0"),
        (lambda: Heun(10, churn="a lot"), TypeError, r"churn must be a real number"),
        (lambda: Heun(10, s_noise=0.0), ValueError, r"s_noise must be > 0"),
        (lambda: Heun(10, s_tmin=2.0, s_tmax=1.0), ValueError, r"s_tmax must be >= s_tmin=2.0, got 1.0"),
        (lambda: Heun(0), ValueError, r"steps must be >= 1, got 0"),
        (lambda: Heun(), ValueError, r"Heun needs steps"),
        (lambda: Heun(10, schedule="cosine"), ValueError, r"schedule must be one of"),
        (lambda: IPNDM(0), ValueError, r"steps must be >= 1, got 0"),
        (lambda: IPNDM(2.5), TypeError, r"steps must be an int"),
        (
            lambda: IPNDM(10, coefficients="adaptive"),
            ValueError,
            r"coefficients must be one of \['fixed', 'variable'\]",
        ),
    ],
)
def test_bad_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_churned_samples_do_not_depend_on_their_batch():
    from sde_gen.sampling.noise import KeyedNoise

    sde, mix = SDES["vp"](), mixture_2d()

    def run(n, offset):
        solver = Heun(9, churn=10.0)
        return sg.sample(
            sde, mix.score_fn(sde), (n, 2), solver, generator=KeyedNoise(4, offset=offset), dtype=F64
        )

    assert torch.equal(run(12, 0), torch.cat([run(5, 0), run(7, 5)]))
