"""Convergence orders measured from log-log slopes, on Gaussian data where everything is exact.

Data N(mu, s^2) pushed through VP stays Gaussian: p_t = N(m_t, v_t) with m_t = scale_t mu + shift_t
and v_t = scale_t^2 s^2 + std_t^2, the score is -(x - m_t) / v_t, and the probability-flow ODE maps
x_T to m_eps + sqrt(v_eps / v_T) (x_T - m_T). Sampling starts from the exact p_T (the prior of a VP
subclass below), so the only error left is the solver's discretisation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sde_gen as sg

F64 = torch.float64


class ExactPriorVP(sg.VPSDE):
    """VP whose prior is the exact p_T of data N(mu, s^2): sampling error is discretisation only."""

    def __init__(self, mu: float, s: float, **kwargs):
        super().__init__(**kwargs)
        self.mu, self.s = mu, s

    def moments(self, t: float) -> tuple[float, float]:
        """Mean and variance of p_t."""
        k = self.kernel(torch.tensor([t], dtype=F64), torch.zeros(1, 1, dtype=F64))
        return float(k.scale * self.mu + k.shift), float(k.scale**2 * self.s**2 + k.std**2)

    def prior_sample(self, shape, *, generator=None, dtype=None, device=None):
        m, v = self.moments(self.T)
        return m + math.sqrt(v) * torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, z):
        m, v = self.moments(self.T)
        d = z[0].numel()
        return -0.5 * d * math.log(2 * math.pi * v) - (z - m).reshape(z.shape[0], -1).pow(2).sum(1) / (2 * v)

    def score_fn(self):
        """The exact score of p_t, from the oracle's marginal (a one-component mixture)."""
        mix = sg.GaussianMixture(
            torch.ones(1, dtype=F64),
            torch.tensor([[self.mu]], dtype=F64),
            torch.tensor([[[self.s**2]]], dtype=F64),
        )

        def score(x, t):
            m, c = mix.marginal_params(self, t[:1])
            return -(x - m.reshape(1, 1)) / c.reshape(1, 1)

        return score


def slope(steps, errors) -> float:
    """Order p of error ~ C steps^-p, fitted by least squares on the log-log points."""
    return -float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


# -- stochastic samplers: weak order from the error in E[x] -----------------------------------


@pytest.mark.parametrize(
    ("make", "steps"),
    [
        (lambda n: sg.EulerMaruyama(n), [8, 16, 32, 64]),
        (lambda n: sg.PredictorCorrector(n, "reverse_diffusion", None), [16, 32, 64, 128]),
    ],
    ids=["euler_maruyama", "reverse_diffusion"],
)
def test_weak_order_of_stochastic_samplers(make, steps):
    # The error in E[x] is proportional to mu (the mean follows an affine recursion), the Monte-Carlo
    # error is not: a large mu puts the discretisation error far above the noise floor.
    mu, s, eps, n = 10.0, 0.5, 1e-3, 20_000
    sde = ExactPriorVP(mu, s)
    m_eps, v_eps = sde.moments(eps)
    se = math.sqrt(v_eps / n)
    errors = []
    for k in steps:
        x = sg.sample(
            sde,
            sde.score_fn(),
            (n, 1),
            make(k),
            eps=eps,
            generator=torch.Generator().manual_seed(k),
            dtype=F64,
        )
        errors.append(abs(float(x.mean()) - m_eps))
    # Measured: EM 0.76, 0.37, 0.18 and 0.089 for 8 to 64 steps (slope 1.03); reverse diffusion
    # 0.43, 0.19, 0.090 and 0.041 for 16 to 128 steps (slope 1.13); se = 3.5e-3.
    assert min(errors) > 10 * se, (errors, se)
    order = make(1).convergence_order
    assert abs(slope(steps, errors) - order) < 0.25, (errors, slope(steps, errors))


def test_ancestral_sampling_keeps_the_mean_exactly():
    """With the exact score, ancestral sampling's E[x] is exact at any step count (Tweedie's x0_hat
    is E[x_0 | x_t], and the posterior's weights sum to one): only the variance has a weak error."""
    mu, s, eps, n = 10.0, 0.5, 1e-3, 20_000
    sde = ExactPriorVP(mu, s)
    m_eps, v_eps = sde.moments(eps)
    se = math.sqrt(v_eps / n)
    x = sg.sample(
        sde,
        sde.score_fn(),
        (n, 1),
        sg.PredictorCorrector(8, "ancestral", None),
        eps=eps,
        generator=torch.Generator().manual_seed(0),
        dtype=F64,
    )
    assert abs(float(x.mean()) - m_eps) < 4 * se
    assert abs(float(x.var()) - v_eps) > 20 * v_eps * math.sqrt(2 / n)  # 8 steps: the variance is off


# -- probability flow: deterministic orders against the closed-form flow map ------------------


def _flow_map(sde, x_T, t):
    """The exact probability-flow map from T to t."""
    m_T, v_T = sde.moments(sde.T)
    m_t, v_t = sde.moments(t)
    return m_t + math.sqrt(v_t / v_T) * (x_T - m_T)


def _flow_problem(eps):
    sde = ExactPriorVP(1.0, 0.5)
    x_T = torch.linspace(-3.0, 3.0, 33, dtype=F64)[:, None]
    return sde, x_T, _flow_map(sde, x_T, eps)


@pytest.mark.parametrize(
    ("method", "steps"),
    [("euler", [64, 128, 256, 512]), ("midpoint", [16, 32, 64, 128]), ("rk4", [8, 16, 32, 64])],
)
def test_fixed_grid_probability_flow_order(method, steps):
    # Measured at eps = 1e-2: euler 1.1e-2 .. 1.4e-3 (slope 0.96), midpoint 6.7e-3 .. 8.6e-5
    # (slope 2.1), rk4 7.2e-4 .. 2.4e-7 (slope 3.85): above roundoff, in the asymptotic regime.
    eps = 1e-2
    sde, x_T, exact = _flow_problem(eps)
    errors = []
    for k in steps:
        solver = sg.ProbabilityFlow(method=method, steps=k)
        res = sg.sample(sde, sde.score_fn(), x_T.shape, solver, eps=eps, x_T=x_T, return_result=True)
        errors.append(float((res.x - exact).abs().max()))
        assert res.nfe == k * {"euler": 1, "midpoint": 2, "rk4": 4}[method]
    order = sg.ProbabilityFlow(method=method, steps=1).convergence_order
    assert abs(slope(steps, errors) - order) < 0.3, (errors, slope(steps, errors))
    assert min(errors) > 1e-12  # not at roundoff


def test_adaptive_dopri5_error_falls_with_tolerance():
    eps = 1e-2
    sde, x_T, exact = _flow_problem(eps)
    errors, nfes = [], []
    for tol in (1e-3, 1e-5, 1e-7, 1e-9):
        solver = sg.ProbabilityFlow(rtol=tol, atol=tol)
        res = sg.sample(sde, sde.score_fn(), x_T.shape, solver, eps=eps, x_T=x_T, return_result=True)
        errors.append(float((res.x - exact).abs().max()))
        nfes.append(res.nfe)
    # Measured: 2.7e-3, 1.7e-6, 4.7e-8, 7.0e-10 with 38, 62, 128 and 230 evaluations.
    assert all(a > b for a, b in zip(errors[:-1], errors[1:], strict=True)), errors
    assert all(a < b for a, b in zip(nfes[:-1], nfes[1:], strict=True)), nfes
    assert errors[-1] < 1e-8
    assert errors[0] > 1e-5  # the loosest tolerance is visibly worse: the test measures something


@pytest.mark.parametrize(
    ("solver", "tol"),
    [(sg.ProbabilityFlow(rtol=1e-8, atol=1e-8), 1e-6), (sg.ProbabilityFlow(method="rk4", steps=40), 1e-5)],
    ids=["dopri5", "rk4"],
)
def test_probability_flow_callback_reports_each_step_where_it_ends(solver, tol):
    """Every step is reported once, with the time it reached and x there (the exact flow map)."""
    eps = 1e-2
    sde, x_T, exact = _flow_problem(eps)
    seen = []
    x = sg.sample(sde, sde.score_fn(), x_T.shape, solver, eps=eps, x_T=x_T, callback=seen.append)
    if not solver.adaptive:
        assert len(seen) == solver.steps
    assert [info.step for info in seen] == list(range(len(seen)))
    times = [info.t for info in seen]
    assert all(a > b for a, b in zip(times[:-1], times[1:], strict=True)) and times[0] < sde.T
    assert times[-1] == eps and torch.equal(seen[-1].x, x)
    for info in seen:
        assert (info.x - _flow_map(sde, x_T, info.t)).abs().max() < tol, info.t
