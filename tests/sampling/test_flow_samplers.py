"""Samplers on the straight path of flow matching (sg.RectifiedFlow), fed the exact score of a
Gaussian mixture pushed along the path: the per-component W2 figure over its noise floor
(tests/problems.ComponentW2, the figure of benchmarks/fast_samplers.py)."""

from __future__ import annotations

import functools

import pytest
import torch
from problems import ComponentW2

import sde_gen as sg

F64 = torch.float64
EPS = 1e-3
N = 4000


@functools.cache
def _setup():
    sde, mix = sg.RectifiedFlow(), sg.gmm8(dtype=F64)
    fig = ComponentW2(mix, sde, EPS, N, 40_000, 4)
    x_T = sde.prior_sample((N, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    return sde, mix, fig, x_T


def _ratio(solver) -> tuple[float, int]:
    sde, mix, fig, x_T = _setup()
    res = sg.sample(
        sde, mix.score_fn(sde), x_T.shape, solver, eps=EPS, x_T=x_T,
        generator=torch.Generator().manual_seed(1), return_result=True,
    )  # fmt: skip
    return fig(res.x)[0] / fig.floor[0], res.nfe


@pytest.mark.parametrize(
    "solver,within",
    [
        (sg.ProbabilityFlow("dopri5"), 4.0),
        (sg.DDIM(steps=200, eta=1.0), 4.0),
        # at 20 evaluations, on the grid uniform in t that the straight path is sampled on
        # (benchmarks/fast_samplers.py: 0.94x the floor; 3.84x on "edm", iPNDM's own grid until 2026-12-07)
        (sg.IPNDM(steps=20, schedule="time_uniform"), 2.0),
        (sg.UniPC(steps=20, schedule="time_quadratic"), 2.0),
    ],
    ids=repr,
)
def test_samplers_reach_the_noise_floor_on_the_straight_path(solver, within):
    ratio, nfe = _ratio(solver)
    assert ratio < within, (solver, ratio)


def test_the_default_grids_on_the_straight_path_reach_the_floor_at_20_evaluations():
    """Given no grid, a solver runs on the one RectifiedFlow recommends for it (measured,
    docs/flows.md): at 20 evaluations the best of DPM-Solver++, UniPC and iPNDM at their defaults
    is within 2x of the noise floor (iPNDM on the grid uniform in t), and each default beats the
    solver's own grid of before (iPNDM's edm, UniPC's and DPM-Solver++'s log_snr)."""
    ratios = {}
    for make, vp_grid in ((sg.DPMSolverPlusPlus, "log_snr"), (sg.UniPC, "log_snr"), (sg.IPNDM, "edm")):
        default, nfe = _ratio(make(steps=20))
        assert nfe == 20
        assert default < _ratio(make(steps=20, schedule=vp_grid))[0], make
        ratios[make.__name__] = default
    assert min(ratios.values()) < 2.0, ratios


def test_the_classic_flow_matching_sampler_converges_at_its_order():
    """Euler and midpoint in t on the velocity (flow matching's own samplers, the same grid as
    facebookresearch/flow_matching's ODESolver: benchmarks/flow_matching_reference.py) approach the
    floor as the steps grow, midpoint far faster; 10 Euler steps are far from it."""
    euler_10, _ = _ratio(sg.ProbabilityFlow("euler", steps=10))
    euler_100, _ = _ratio(sg.ProbabilityFlow("euler", steps=100))
    midpoint_50, nfe = _ratio(sg.ProbabilityFlow("midpoint", steps=50))
    assert euler_10 > 20 and euler_100 < euler_10 / 5
    assert midpoint_50 < 2.0 and nfe == 100
