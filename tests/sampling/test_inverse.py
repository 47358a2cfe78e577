"""Linear inverse problems (issue 13, test 3 and the inverse part of test 5): operators, the exact
posterior of a Gaussian mixture, and the posterior samplers against it.

The sequential Monte Carlo method's error falls to the noise floor as the number of particles
grows; the errors of the approximate methods are measured, printed and asserted only to be what
they are (finite, and above the floor)."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from problems import OrnsteinUhlenbeck, mixture_2d, mixture_16d

import sde_gen as sg
from sde_gen.sampling.inverse import (
    Colorization,
    LinearOperator,
    Mask,
    SuperResolution,
    mixture_posterior,
    repaint_schedule,
    solve_inverse,
)

N = 1000  # posterior samples per figure
STEPS = 100
Y0 = 0.7  # observed coordinate 0: the posterior of coordinate 1 is bimodal (weights 0.21, 0.79)
SDES = {"vp": sg.VPSDE, "ve": sg.VESDE, "user": OrnsteinUhlenbeck}
EPS = {"vp": 1e-3, "ve": 1e-3, "user": 1e-5}  # sigma_hat(eps)^2 <= 1e-4 for each


class Dense(LinearOperator):
    """A user's operator: a dense matrix acting on flattened samples."""

    def __init__(self, M, x_shape):
        self.M, self.shape = M, tuple(x_shape)

    def forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.M.T

    def transpose(self, y):
        return (y @ self.M).reshape((y.shape[0], *self.shape))

    def y_shape(self, x_shape):
        if tuple(x_shape) != self.shape:
            raise ValueError(f"Dense operator acts on samples of shape {self.shape}, got {tuple(x_shape)}")
        return (self.M.shape[0],)


def _dot(a, b):
    return (a * b).reshape(a.shape[0], -1).sum(1)


def _operators(g):
    return [
        (Mask(torch.rand(3, 4, 4, generator=g) < 0.5), (3, 4, 4), (3, 4, 4)),
        (Colorization(3), (3, 4, 4), (1, 4, 4)),
        (SuperResolution(2), (3, 4, 4), (3, 2, 2)),
        (Dense(torch.randn(5, 12, generator=g, dtype=torch.float64), (3, 4)), (3, 4), (5,)),
    ]


def test_operators_adjoint_pinv_and_shapes():
    g = torch.Generator().manual_seed(0)
    for op, xs, ys in _operators(g):
        assert op.y_shape(xs) == ys
        x = torch.randn((6, *xs), generator=g, dtype=torch.float64)
        y = torch.randn((6, *ys), generator=g, dtype=torch.float64)
        assert op(x).shape == (6, *ys) and op.T(y).shape == (6, *xs)
        # <A x, y> = <x, A^T y>
        torch.testing.assert_close(_dot(op(x), y), _dot(x, op.T(y)), rtol=1e-12, atol=1e-12)
        # A^+ is a right inverse on the measurements A produces; A^+ A is an orthogonal projection
        torch.testing.assert_close(op(op.pinv(op(x))), op(x), rtol=1e-9, atol=1e-9)
        p = op.project(x)
        torch.testing.assert_close(op.project(p), p, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(_dot(p, x - p), torch.zeros(6, dtype=x.dtype), rtol=0, atol=1e-9)
        if op.gram_scale is not None:  # A A^T = c I where declared
            torch.testing.assert_close(op(op.T(op(x))), op.gram_scale * op(x), rtol=1e-12, atol=1e-12)
        assert op.matrix(xs).shape == (op.obs_dim(xs), math.prod(xs))
        if op.x_shape(ys) is not None:
            assert op.x_shape(ys) == xs


def _check_mixture_posterior(mix, op, y, noise_std, x):
    """``log post(x) - log prior(x) - log p(y | x)`` is the same constant for every ``x``."""
    post = mixture_posterior(mix, op, y, noise_std=noise_std)
    pm = sg.GaussianMixture(post.weights, post.means, post.covs)
    r = op.y_vector(op(x.reshape((-1, *mix.event_shape))) - op.prepare_y(y))
    log_lik = -0.5 * r.pow(2).sum(1) / noise_std**2
    diff = pm.log_prob(x) - mix.log_prob(x) - log_lik
    torch.testing.assert_close(diff, diff[:1].expand_as(diff), rtol=0, atol=1e-9)


def test_mixture_posterior_is_bayes_rule():
    g = torch.Generator().manual_seed(1)
    mix = mixture_2d()
    x = torch.randn(20, 2, generator=g, dtype=torch.float64)
    _check_mixture_posterior(mix, Mask(torch.tensor([1.0, 0.0])), torch.tensor([[Y0, 0.0]]), 0.3, x)
    m16 = mixture_16d()
    img = sg.GaussianMixture(m16.weights, m16.means, m16.covs, event_shape=(1, 4, 4))
    y = torch.randn(1, 1, 2, 2, generator=g, dtype=torch.float64)
    _check_mixture_posterior(img, SuperResolution(2), y, 0.5, 2 * torch.randn(20, 16, generator=g).double())
    # noiseless Mask: Gaussian conditioning, weights by each component's marginal of coordinate 0
    post = mixture_posterior(mix, Mask(torch.tensor([1.0, 0.0])), torch.tensor([[Y0, float("nan")]]))
    s00, s10 = mix.covs[:, 0, 0], mix.covs[:, 1, 0]
    logw = torch.log(mix.weights) - 0.5 * (Y0 - mix.means[:, 0]) ** 2 / s00 - 0.5 * torch.log(s00)
    torch.testing.assert_close(post.weights, torch.softmax(logw, 0))
    torch.testing.assert_close(post.means[:, 1], mix.means[:, 1] + s10 / s00 * (Y0 - mix.means[:, 0]))
    torch.testing.assert_close(post.covs[:, 1, 1], mix.covs[:, 1, 1] - s10**2 / s00)
    torch.testing.assert_close(post.means[:, 0], torch.full((3,), Y0, dtype=torch.float64))


@functools.cache
def _imputation_reference():
    """Exact draws of coordinate 1 given coordinate 0 = Y0, and the energy-distance floor."""
    mix = mixture_2d()
    post = mixture_posterior(mix, Mask(torch.tensor([1.0, 0.0])), torch.tensor([[Y0, 0.0]]))
    g = torch.Generator().manual_seed(1234)
    ref = post.sample(N, generator=g)[:, 1:]
    floor = torch.tensor([sg.energy_distance(post.sample(N, generator=g)[:, 1:], ref) for _ in range(6)])
    return mix, ref, floor


def _impute(sde_name, method, solver, **options):
    mix, ref, floor = _imputation_reference()
    sde = SDES[sde_name]()
    y = torch.tensor([[Y0, float("nan")]], dtype=torch.float64).repeat(N, 1)
    g = torch.Generator().manual_seed(7)
    res = solve_inverse(
        sde, mix.score_fn(sde), y, Mask(torch.tensor([1.0, 0.0])), solver, method,
        generator=g, eps=EPS[sde_name], return_result=True, **options,
    )  # fmt: skip
    assert torch.isfinite(res.x).all()
    assert bool((res.x[:, 0] == Y0).all())  # noiseless: the known part is y exactly
    if res.x_mean is not None:
        assert bool((res.x_mean[:, 0] == Y0).all())
    return sg.energy_distance(res.x[:, 1:], ref), floor, res


@pytest.mark.parametrize("sde_name", list(SDES))
def test_smc_error_falls_to_the_noise_floor(sde_name):
    errors = {}
    for K in (1, 4, 16, 64):
        errors[K], floor, res = _impute(sde_name, "smc", sg.DDIM(STEPS, eta=1.0), num_particles=K)
        assert res.nfe == STEPS and res.particles.shape == (N, K, 2)
    top = floor.mean() + 5 * floor.std()
    slope = math.log(errors[16] / errors[1]) / math.log(16)
    print(f"\n{sde_name}: smc energy distance by K {errors}, floor {floor.mean():.2g} +- {floor.std():.2g}")
    print(f"{sde_name}: log-log slope over K = 1..16: {slope:.2f}")
    assert errors[1] > 50 * top  # one particle is guided, not exact: far off
    assert errors[1] > errors[4] > errors[16]
    assert errors[64] < top, (errors, floor)
    assert slope < -0.9  # error ~ 1/K before the floor


def _down_steps(path):
    return sum(b == a + 1 for a, b in zip(path[:-1], path[1:], strict=True))


@pytest.mark.parametrize("sde_name", list(SDES))
def test_approximate_methods_are_measured(sde_name):
    """Replacement, RePaint and DPS: their error is reported, and it is above the floor."""
    cases = {
        "replacement": ({}, STEPS),
        "repaint": ({"jump_length": 10, "jump_n_sample": 5}, _down_steps(repaint_schedule(STEPS, 10, 5))),
        "dps": ({"zeta": 0.5}, STEPS),
    }
    found = {}
    for method, (options, down_steps) in cases.items():
        err, floor, res = _impute(sde_name, method, sg.DDIM(STEPS, eta=1.0), **options)
        found[method] = err
        top = floor.mean() + 5 * floor.std()
        assert math.isfinite(err) and err > top, (method, err, floor)
        if method == "repaint":
            assert res.nfe == STEPS + 9 * 4 * 10  # 9 jump points (100, ..., 20), 4 passes of 10 steps
        assert res.nfe == down_steps
    print(f"\n{sde_name}: energy distances {found}")


@pytest.mark.parametrize("case", ["half observed", "noisy super-resolution"])
def test_smc_16d(case):
    """A 16-D mixture shaped (1, 4, 4): half the coordinates observed without noise, or a noisy 2x
    super-resolution. The exact posterior is a Kalman update per component; SMC with 32 particles
    reaches its floor, one particle does not; DPS's error is measured."""
    m16 = mixture_16d()
    img = sg.GaussianMixture(m16.weights, m16.means, m16.covs, event_shape=(1, 4, 4))
    g = torch.Generator().manual_seed(5)
    if case == "half observed":
        op, noise_std = Mask((torch.arange(16) % 2).reshape(1, 4, 4)), 0.0
    else:
        op, noise_std = SuperResolution(2), 0.1
    n = 300
    x0 = img.sample(1, generator=g)
    y = op(x0) + noise_std * torch.randn(op(x0).shape, generator=g, dtype=torch.float64)
    post = mixture_posterior(img, op, y, noise_std=noise_std)
    ref = post.sample(n, generator=g)
    floor = torch.tensor([sg.energy_distance(post.sample(n, generator=g), ref) for _ in range(6)])
    top = floor.mean() + 5 * floor.std()
    sde = sg.VPSDE()
    # the exact posterior mean and variance per coordinate, for z-scores of the sample means
    mean = (post.weights[:, None] * post.means).sum(0)
    second = (post.weights[:, None] * (torch.diagonal(post.covs, dim1=-2, dim2=-1) + post.means**2)).sum(0)
    drawn = (second - mean**2) > 1e-12  # the coordinates that are not fixed by y
    errors, zmax = {}, {}
    for method, K in (("smc", 1), ("smc", 32), ("dps", None)):
        opts = {"num_particles": K} if K else {}
        x = solve_inverse(
            sde, img.score_fn(sde), y.repeat(n, 1, 1, 1), op, sg.DDIM(60, eta=1.0), method,
            noise_std=noise_std, generator=torch.Generator().manual_seed(3), **opts,
        )  # fmt: skip
        name = f"{method}{K or ''}"
        errors[name] = sg.energy_distance(x, ref)
        z = (x.reshape(n, -1).mean(0) - mean) / ((second - mean**2).clamp_min(1e-30) / n).sqrt()
        zmax[name] = float(z[drawn].abs().max())
    print(f"\n16-D {case}: energy distances {errors}, floor {floor.mean():.2g} +- {floor.std():.2g}")
    print(f"16-D {case}: largest |z| of the posterior mean per coordinate {zmax}")
    assert errors["smc1"] > 20 * top and errors["smc32"] < top, (errors, floor)
    assert zmax["smc1"] > 10 and zmax["smc32"] < 5 and zmax["dps"] > 5, zmax


def test_replacement_noises_the_known_part_to_the_landing_time():
    """After a step to t_next, the known coordinate has exactly the law of y pushed to t_next."""
    from sde_gen.sampling.inverse.solve import Problem, noised_known

    sde, t = sg.VPSDE(), 0.3
    mask, y = Mask(torch.tensor([1.0, 0.0])), torch.tensor([[2.0, 0.0]], dtype=torch.float64).repeat(20000, 1)
    prob = Problem(sde, None, y, mask, (2,), 0.0, torch.Generator().manual_seed(0), 1e-3)
    x = torch.randn(20000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x2, x_mean = noised_known(prob, x, x.clone(), t)
    mean, std = sde.marginal(torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([t]))
    assert abs(x2[:, 0].mean() - mean.item()) < 4 * std.item() / math.sqrt(20000)
    assert abs(x2[:, 0].std() / std.item() - 1) < 0.03
    torch.testing.assert_close(x_mean[:, 0], mean.expand(20000, 1)[:, 0])  # x_mean: the mean
    torch.testing.assert_close(x2[:, 1], x[:, 1])  # the unknown part is untouched


def test_dps_step_size_is_the_papers():
    """One DDIM step (eta = 0) then ``- zeta / ||y - A D|| * grad ||y - A D||^2`` (Chung et al. 2022)."""
    sde, mix = sg.VPSDE(), mixture_2d()
    score, op, zeta = mix.score_fn(sde), Mask(torch.tensor([1.0, 0.0])), 0.7
    y = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    x_T = sde.prior_sample((2, 2), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got = solve_inverse(
        sde,
        score,
        y,
        op,
        sg.DDIM(1),
        "dps",
        noise_std=0.1,
        zeta=zeta,
        generator=torch.Generator().manual_seed(4),
    )
    x = x_T.clone().requires_grad_(True)
    tv = torch.full((2,), sde.T, dtype=torch.float64)
    d = sde.tweedie(x, tv, score(x, tv))
    r = (op(d) - op(y)).pow(2).sum(1)
    grad = torch.autograd.grad((r / r.detach().sqrt()).sum(), x)[0]
    step = sg.sample(sde, score, (2, 2), sg.DDIM(1), x_T=x_T.detach())
    torch.testing.assert_close(got, step - zeta * grad)


def test_repaint_schedule():
    assert repaint_schedule(5, 10, 10) == [0, 1, 2, 3, 4, 5]  # no jump point above jump_length
    assert repaint_schedule(6, 2, 1) == list(range(7))  # jump_n_sample = 1: no resampling
    path = repaint_schedule(6, 2, 2)  # jump points 6 and 4, once each
    assert path == [0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 4, 5, 6]


def test_bad_inputs_name_themselves():
    mix, sde = mixture_2d(), sg.VPSDE()
    score, solver = mix.score_fn(sde), sg.DDIM(10, eta=1.0)
    y, mask = torch.zeros(4, 2, dtype=torch.float64), Mask(torch.tensor([1.0, 0.0]))
    cases = [
        (dict(operator=Mask(torch.ones(3))), ValueError, "mask has shape"),
        (dict(operator=SuperResolution(2), shape=(3,)), ValueError, "SuperResolution"),
        (dict(operator=Colorization(3), shape=(2,)), ValueError, "Colorization"),
        (
            dict(operator=Dense(torch.ones(3, 2, dtype=torch.float64), (2,)), shape=(2,)),
            ValueError,
            "operator",
        ),
        (dict(operator="mask"), TypeError, "operator"),
        (dict(method="magic"), ValueError, "method"),
        (dict(num_particles=0), ValueError, "num_particles"),
        (dict(num_particles=2.5), TypeError, "num_particles"),
        (dict(noise_std=-0.1), ValueError, "noise_std"),
        (dict(noise_std=float("nan")), ValueError, "noise_std"),
        (dict(method="dps", num_particles=4), TypeError, "num_particles"),
        (dict(method="replacement", noise_std=0.1), ValueError, "noise_std"),
        (dict(method="dps", zeta=0.0), ValueError, "zeta"),
        (dict(method="repaint", jump_length=0), ValueError, "jump_length"),
        (dict(solver=sg.PredictorCorrector(10)), TypeError, "smc"),
        (dict(solver=sg.DDIM(10)), TypeError, "eta"),
        (dict(method="repaint", solver=sg.DPMSolverPlusPlus(10)), TypeError, "repaint"),
        (dict(solver=sg.ProbabilityFlow()), TypeError, "SteppingSolver"),
        (dict(resample_threshold=2.0), ValueError, "resample_threshold"),
        (dict(eps=0.0), ValueError, "eps"),
        (dict(y=torch.zeros(4, 3, dtype=torch.float64)), ValueError, "mask has shape"),
    ]
    for kwargs, err, word in cases:
        args = dict(y=y, operator=mask, solver=solver, method="smc") | kwargs
        with pytest.raises(err, match=word):
            solve_inverse(sde, score, args.pop("y"), args.pop("operator"), args.pop("solver"), **args)
    with pytest.raises(ValueError, match="0 and 1"):
        Mask(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="factor"):
        SuperResolution(2).forward(torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="factor"):
        SuperResolution(0)


def test_cond_reaches_the_score_with_the_rows_of_its_sample():
    """``cond`` tensors have one row per measurement; the smc method repeats them per particle."""
    mix, sde = mixture_2d(), sg.VPSDE()
    y = torch.tensor([[0.5, 0.0], [-1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([10, 20, 30])
    seen = []

    def score_fn(x, t, label):
        assert label.shape[0] == x.shape[0]
        seen.append(label)
        return mix.score(x, t, sde)

    mask = Mask(torch.tensor([1.0, 0.0]))
    for method, opts in (("smc", {"num_particles": 4}), ("dps", {}), ("replacement", {})):
        seen.clear()
        solve_inverse(sde, score_fn, y, mask, sg.DDIM(5, eta=1.0), method, cond={"label": labels}, **opts)
        rep = 4 if method == "smc" else 1
        assert torch.equal(seen[-1], labels.repeat_interleave(rep))
    with pytest.raises(ValueError, match="cond"):
        solve_inverse(sde, score_fn, y, mask, sg.DDIM(5, eta=1.0), cond={"label": labels[:2]})
