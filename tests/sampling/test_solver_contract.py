"""The contract every stepping solver keeps, checked for each case of tests/solver_registry.py:

- the score evaluations it declares (``solver.nfe(steps)``) are those it makes;
- the protocol: a lone ``step`` works from ``init``; ``step`` returns a new state and leaves the one
  it was given unchanged, so stepping twice from one state gives the same result; a user's loop
  over ``init``/``step`` equals ``sample`` bit for bit, on VP and on a user's SDE, with a
  ``torch.Generator`` and with ``KeyedNoise``;
- with ``KeyedNoise`` a sample does not depend on its batch;
- a deterministic solver carries a point mass's exact flow exactly (float64, any grid);
- the declared capabilities (``stochastic``, ``convergence_order``, ``keeps_history``) hold;
- its Hydra config (conf/solver/*.yaml) builds it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from problems import SDES as ALL_SDES
from problems import OrnsteinUhlenbeck, mixture_2d
from solver_registry import CASES, DETERMINISTIC

import sde_gen as sg
from sde_gen._checks import ArgumentValueError

F64, EPS, STEPS = torch.float64, 1e-3, 4
CONF = Path(__file__).resolve().parents[2] / "conf" / "solver"
SDES = {"vp": sg.VPSDE, "user": OrnsteinUhlenbeck}
ids = [c.name for c in CASES]


def _problem(sde_name: str, batch: int = 3, seed: int = 0):
    sde = SDES[sde_name]()
    x_T = sde.prior_sample((batch, 2), generator=torch.Generator().manual_seed(seed), dtype=F64)
    return sde, mixture_2d().score_fn(sde), x_T


def _user_loop(solver, sde, score, x, generator):
    state = solver.init(sde, x, t_start=sde.T, t_end=EPS)
    while not state.done:
        x, state = solver.step(sde, score, x, state, generator=generator)
    return x, state


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_declared_score_evaluations_are_made(case):
    sde, score, x_T = _problem("vp")
    calls = []

    def counted(x, t):
        calls.append(1)
        return score(x, t)

    solver = case.make(STEPS)
    res = sg.sample(sde, counted, x_T.shape, solver, x_T=x_T, eps=EPS, generator=torch.Generator(),
                    return_result=True)  # fmt: skip
    assert len(calls) == res.nfe == solver.nfe(res.grid.numel() - 1)


#: Runge-Kutta stages of torchdiffeq's fixed-grid methods (Euler 1, midpoint and Heun 2, Heun's
#: third-order method 3, the 3/8-rule RK4 4): one score evaluation each
STAGES = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}


@pytest.mark.parametrize("method", sorted(STAGES))
def test_the_fixed_grid_ode_declares_its_score_evaluations(method):
    """ProbabilityFlow on a fixed grid makes steps x stages evaluations, as ``nfe`` declares; an
    adaptive method declares none ahead (``None``) and the result counts what it made."""
    sde, score, x_T = _problem("vp")
    calls = []

    def counted(x, t):
        calls.append(1)
        return score(x, t)

    solver = sg.ProbabilityFlow(method, steps=STEPS)
    res = sg.sample(sde, counted, x_T.shape, solver, x_T=x_T, eps=EPS, return_result=True)
    assert len(calls) == res.nfe == solver.nfe(STEPS) == STEPS * STAGES[method]
    calls.clear()
    adaptive = sg.ProbabilityFlow("dopri5")
    res = sg.sample(sde, counted, x_T.shape, adaptive, x_T=x_T, eps=EPS, return_result=True)
    assert adaptive.nfe(STEPS) is None and len(calls) == res.nfe > 0


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_capabilities_are_declared(case):
    solver = case.make(STEPS)
    assert solver.stochastic is case.stochastic
    assert solver.convergence_order == case.order
    sde, score, x_T = _problem("vp")
    state = solver.init(sde, x_T, sde.T, EPS)
    assert state.index == 0 and state.steps == len(solver.grid(sde, sde.T, EPS)) - 1 and not state.done
    x, state = solver.step(sde, score, x_T, state, generator=torch.Generator().manual_seed(0))
    assert isinstance(state.history, tuple)
    if not solver.keeps_history:
        assert state.history == ()
    # the constructor's arguments are the attributes they set: the repr rebuilds the solver
    assert repr(eval(repr(solver), {**vars(sg), "tensor": torch.tensor, "inf": float("inf")})) == repr(solver)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_a_lone_step_and_a_step_taken_twice(case):
    sde, score, x_T = _problem("vp")
    solver = case.make(STEPS)
    x0, s0 = x_T, solver.init(sde, x_T, sde.T, EPS)
    x1, s1 = solver.step(sde, score, x0, s0, generator=torch.Generator().manual_seed(1))
    assert s0.index == 0 and s1.index == 1 and s1.t == s0.t_next and torch.isfinite(x1).all()
    assert s1.x_mean.shape == x1.shape and s0.x_mean is x_T  # the first state untouched
    fields = lambda s: [getattr(s, f.name) for f in dataclasses.fields(s)]
    before, history = fields(s1), [d for _, d in s1.history]
    for noise in (lambda: torch.Generator().manual_seed(2), lambda: sg.KeyedNoise(5)):
        xa, sa = solver.step(sde, score, x1, s1, generator=noise())
        xb, sb = solver.step(sde, score, x1, s1, generator=noise())
        assert torch.equal(xa, xb) and torch.equal(sa.x_mean, sb.x_mean) and sa.index == 2
        assert len(sa.history) == len(sb.history)
        for (_, da), (_, db) in zip(sa.history, sb.history, strict=True):
            assert torch.equal(da, db)
    # nothing in s1 was replaced, grown or written to
    assert all(a is b for a, b in zip(before, fields(s1), strict=True))
    assert all(a is b for a, (_, b) in zip(history, s1.history, strict=True))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s1.index = 0


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_a_user_loop_equals_sample_to_the_bit(case, sde_name):
    sde, score, x_T = _problem(sde_name)
    for noise in (lambda: torch.Generator().manual_seed(3), lambda: sg.KeyedNoise(7)):
        solver = case.make(STEPS)
        x, state = _user_loop(solver, sde, score, x_T, noise())
        ref = sg.sample(sde, score, x_T.shape, solver, x_T=x_T, eps=EPS, generator=noise())
        assert torch.equal(x, ref)
        seen = []
        sg.sample(sde, score, x_T.shape, solver, x_T=x_T, eps=EPS, generator=noise(), callback=seen.append)
        assert len(seen) == state.steps and torch.equal(seen[-1].x_mean, state.x_mean)
        assert seen[-1].t == EPS == state.t and state.done
    with pytest.raises(ArgumentValueError, match="state is done"):
        solver.step(sde, score, x, state)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_keyed_noise_makes_samples_independent_of_the_batch(case):
    sde = OrnsteinUhlenbeck()
    score = mixture_2d().score_fn(sde)
    draw = lambda n: sg.sample(sde, score, (n, 2), case.make(STEPS), eps=EPS, generator=sg.KeyedNoise(11),
                               dtype=F64)  # fmt: skip
    assert torch.equal(draw(5)[:2], draw(2))


@pytest.mark.parametrize("sde_name", list(ALL_SDES))
@pytest.mark.parametrize("case", DETERMINISTIC, ids=[c.name for c in DETERMINISTIC])
def test_a_point_mass_is_carried_exactly(case, sde_name):
    """Data at m: D = m, so xhat(sigma) = m + (xhat_T - m) sigma / sigma_T is linear in sigma and
    d xhat / d sigma is constant along it (and D - xhat in lambda is integrated exactly by the
    exponential integrators): every deterministic solver is exact, for any number of steps."""
    sde, m = ALL_SDES[sde_name](), torch.tensor([1.5, -0.7], dtype=F64)

    def score(x, t):  # the exact score of the point mass pushed through the kernel
        k = sde.kernel(t, x)
        return -(x - k.scale * m - k.shift) / (k.std**2)[:, None]

    x_T = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    ends = torch.tensor([sde.T, EPS], dtype=F64)
    k_T, k_e = (sde.kernel(torch.full((4,), t, dtype=F64), x_T) for t in (sde.T, EPS))
    sig_T, sig_e = sde.sigma_hat(ends).tolist()
    exact = k_e.scale * (m + ((x_T - k_T.shift) / k_T.scale - m) * sig_e / sig_T) + k_e.shift
    for n in (3, 4, 7):
        x = sg.sample(sde, score, x_T.shape, case.make(n), eps=EPS, x_T=x_T)
        err = float((x - exact).abs().max())
        assert err < 1e-12 * (1 + float(exact.abs().max())), (n, err)


@pytest.mark.parametrize("case", [c for c in CASES if c.config], ids=[c.name for c in CASES if c.config])
def test_the_hydra_config_builds_the_solver(case):
    cfg = OmegaConf.load(CONF / f"{case.config}.yaml")
    solver = instantiate(cfg)
    assert type(solver) is type(case.make(STEPS))
    for key, value in cfg.items():
        if key != "_target_" and isinstance(value, (int, float, bool)) and value is not None:
            assert getattr(solver, key) == value, key
