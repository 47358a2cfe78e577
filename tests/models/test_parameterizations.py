"""What a network predicts (sde_gen/models/parameterizations.py), against closed forms in float64:
every parameterisation's score and denoiser agree by Tweedie's formula for an arbitrary network;
fed the exact optimal output from the oracle, each gives the exact score; each target is the
quantity its paper regresses on; EDM's preconditioning is exact for Gaussian data."""

from __future__ import annotations

import math

import pytest
import torch
from problems import SDES, mixture_2d

import sde_gen as sg

DT = torch.float64
NAMES = sorted(sg.PARAMETERIZATIONS)


def _net(dim: int, seed: int = 0) -> sg.MLP:
    torch.manual_seed(seed)
    net = sg.MLP(dim, hidden=32, depth=2).to(DT)
    torch.nn.init.normal_(net.out.weight)  # the output layer starts at 0: make it arbitrary
    torch.nn.init.normal_(net.out.bias)
    return net


def _points(sde, n: int = 256, dim: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    t = 1e-3 + (sde.T - 1e-3) * torch.rand(n, generator=g, dtype=DT)
    return 2 * torch.randn(n, dim, generator=g, dtype=DT), t


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve", "linear", "user"])
@pytest.mark.parametrize("name", NAMES)
def test_score_and_denoiser_agree_by_tweedie_for_any_network(sde_name, name):
    sde = SDES[sde_name]()
    model = sg.ScoreModel(_net(2), sde, name)
    x, t = _points(sde)
    assert _rel(model.denoise(x, t), sde.tweedie(x, t, model(x, t))) < 1e-8


class OracleNet(torch.nn.Module):
    """The ideal network of a parameterisation: it reads ``(x_t, t)`` back from what the network is
    called with (EDM's ``c_in xhat`` and ``c_noise = log(sigma) / 4``) and returns the output that
    the parameterisation maps to the mixture's exact score."""

    def __init__(self, mix, sde, param):
        super().__init__()
        self.mix, self.sde, self.param = mix, sde, param

    def forward(self, x_in, t_in):
        sde, param = self.sde, self.param
        if isinstance(param, sg.EDMPreconditioning):
            sigma = torch.exp(4 * t_in)
            t = sde.t_from_sigma_hat(sigma)
            k = sde.kernel(t, x_in)
            x = k.scale * x_in * torch.sqrt(sigma**2 + param.sigma_data**2)[:, None] + k.shift
        else:
            x, t = x_in, t_in
            k = sde.kernel(t, x)
        return param.output(self.mix.score(x, t, sde), x, t, k, sde)


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve", "user"])
@pytest.mark.parametrize("name", NAMES)
def test_the_ideal_output_of_every_parameterisation_gives_the_exact_score(sde_name, name):
    sde, mix = SDES[sde_name](), mixture_2d()
    param = sg.parameterization(name)
    model = sg.ScoreModel(OracleNet(mix, sde, param), sde, param)
    x, t = _points(sde, seed=3)
    exact = mix.score(x, t, sde)
    assert _rel(model(x, t), exact) < 1e-8
    assert _rel(model.denoise(x, t), sde.tweedie(x, t, exact)) < 1e-8


def _kernel_rates(sde, t: torch.Tensor, like: torch.Tensor, h: float = 1e-6):
    """``(a, b, s)`` of the kernel and their time derivatives by central differences."""
    k, kp, km = (sde.kernel(t + d, like) for d in (0.0, h, -h))
    rate = lambda f: (f(kp) - f(km)) / (2 * h)  # noqa: E731
    s = lambda k: k.std[:, None].expand_as(like)  # noqa: E731
    return k, rate(lambda k: k.scale), rate(lambda k: k.shift), rate(s)


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve", "user"])
def test_each_target_is_what_its_paper_regresses_on(sde_name):
    sde = SDES[sde_name]()
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(64, 3, generator=g, dtype=DT)
    z = torch.randn(64, 3, generator=g, dtype=DT)
    t = 0.05 + 0.9 * torch.rand(64, generator=g, dtype=DT) * sde.T
    k, da, db, ds = _kernel_rates(sde, t, x0)
    sigma = k.std[:, None] / k.scale
    xhat = x0 + sigma * z
    sd = 0.5
    c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / torch.sqrt(sigma**2 + sd**2)
    want = {
        "noise": z,
        "score": -z,
        "data": x0,
        "v": (z - sigma * x0) / torch.sqrt(1 + sigma**2),
        # flow matching's conditional velocity d/dt (a x0 + b + s z) along a fixed (x0, z)
        "flow": da * x0 + db + ds * z,
        "edm": (x0 - c_skip * xhat) / c_out,
    }
    for name in NAMES:
        got = sg.parameterization(name).target(x0, z, t, sde)
        tol = 1e-6 if name == "flow" else 1e-10  # flow: against a finite difference
        assert _rel(got, want[name]) < tol, name
    if sde_name == "vp":  # Salimans & Ho's v = alpha z - sigma_VP x0 with alpha^2 + sigma_VP^2 = 1
        alpha, s_vp = k.scale, k.std[:, None]
        assert _rel(sg.parameterization("v").target(x0, z, t, sde), alpha * z - s_vp * x0) < 1e-10


@pytest.mark.parametrize("sde_name", ["vp", "ve", "user"])
def test_unit_is_the_squared_slope_of_each_output_in_noise_units(sde_name):
    sde = SDES[sde_name]()
    t = torch.linspace(0.05, 0.95, 7, dtype=DT) * sde.T
    like = torch.zeros(7, 2, dtype=DT)
    k, da, _, ds = _kernel_rates(sde, t, like)
    sigma = k.std[:, None] / k.scale
    g2 = 2 * (ds * k.std[:, None] - da / k.scale * k.std[:, None] ** 2)  # d(s^2)/dt - 2 (a'/a) s^2
    want = {
        "noise": torch.ones_like(sigma),
        "score": torch.ones_like(sigma),
        "data": sigma**2,
        "v": 1 + sigma**2,
        "flow": g2**2 / (4 * k.std[:, None] ** 2),
        "edm": (sigma**2 + 0.25) / 0.25,
    }
    for name in NAMES:
        assert _rel(sg.parameterization(name).unit(t, sde, like), want[name]) < 1e-6, name


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_edm_skip_connection_is_the_exact_denoiser_of_gaussian_data(sde_name):
    # For x0 ~ N(0, sigma_data^2 I), E[x0 | xhat] = c_skip xhat: the ideal network output is 0,
    # and the training target and the network input have unit variance at every noise level.
    sde, sd = SDES[sde_name](), 0.7
    gauss = sg.GaussianMixture(
        torch.ones(1, dtype=DT), torch.zeros(1, 4, dtype=DT), sd**2 * torch.eye(4, dtype=DT)[None]
    )
    param = sg.EDMPreconditioning(sigma_data=sd)
    g = torch.Generator().manual_seed(0)
    for t_val in (0.01, 0.1, 0.3, 0.7, 1.0):
        t = torch.full((200_000,), t_val * sde.T, dtype=DT)
        x0 = gauss.sample(t.shape[0], generator=g)
        z = torch.randn(x0.shape, generator=g, dtype=DT)
        k = sde.kernel(t, x0)
        x = k.scale * x0 + k.shift + k.std[:, None] * z
        ideal = param.output(gauss.score(x, t, sde), x, t, k, sde)
        assert float(ideal.abs().max()) < 1e-10 * max(1.0, float(x.abs().max()))
        target = param.target(x0, z, t, sde)
        x_in, c_noise = param.inputs(x, t, k, sde)
        # unit variance to the sample's standard error (variance of a variance ~ sqrt(2 / n))
        assert abs(float(target.var()) - 1) < 5 * math.sqrt(2 / target.numel())
        assert abs(float(x_in.var()) - 1) < 5 * math.sqrt(2 / x_in.numel())
        sigma = float(sde.sigma_hat(torch.tensor([t_val * sde.T], dtype=DT)))
        assert torch.allclose(c_noise, torch.full_like(c_noise, math.log(sigma) / 4), rtol=1e-12)


def test_fast_samplers_take_the_denoiser_from_the_model():
    sde, calls = sg.VPSDE(), []
    model = sg.ScoreModel(_net(2), sde, "data")
    inner = model.denoise

    def spy(x, t, **cond):
        calls.append(1)
        return inner(x, t, **cond)

    model.denoise = spy
    shape, g = (64, 2), lambda: torch.Generator().manual_seed(0)
    for solver in (sg.DDIM(steps=8), sg.DPMSolverPlusPlus(steps=8), sg.UniPC(steps=8), sg.Heun(steps=4)):
        calls.clear()
        direct = sg.sample(sde, model, shape, solver, generator=g(), dtype=DT, return_result=True)
        assert len(calls) == direct.nfe > 0, type(solver).__name__
        via_score = sg.sample(sde, lambda x, t: model(x, t), shape, solver, generator=g(), dtype=DT)
        assert _rel(direct.x, via_score) < 1e-9, type(solver).__name__


def test_names_objects_and_settings():
    assert sg.parameterization("edm", sigma_data=0.3) == sg.EDMPreconditioning(0.3)
    assert sg.parameterization({"name": "edm", "sigma_data": 0.3}).sigma_data == 0.3
    p = sg.VPrediction()
    assert sg.parameterization(p) is p and sg.ScoreModel(_net(2), sg.VPSDE(), p).param is p
    assert sg.ScoreModel(_net(2), sg.VPSDE(), "v").parameterization == "v"
    assert [sg.parameterization(n).config() for n in NAMES] == [
        {"name": "edm", "sigma_data": 0.5} if n == "edm" else n for n in NAMES
    ]


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: sg.parameterization("x0"), "parameterization"),
        (lambda: sg.ScoreModel(_net(2), sg.VPSDE(), "eps"), "parameterization"),
        (lambda: sg.EDMPreconditioning(sigma_data=0.0), "sigma_data"),
        (lambda: sg.parameterization("edm", sigma_data=-1.0), "sigma_data"),
        (lambda: sg.parameterization("v", sigma_data=1.0), "parameterization"),
        (lambda: sg.parameterization(3), "parameterization"),
    ],
)
def test_bad_parameterisations_are_refused_by_name(call, name):
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    assert e.value.name == name


#: What ``"auto"`` trains each parameterisation with (docs/objectives.md, the 8 Gaussians tables).
OWN_OBJECTIVES = {
    "noise": ("std2", "uniform"),
    "score": ("std2", "uniform"),
    "flow": ("std2", "uniform"),
    "data": ("edm", "uniform"),
    "v": ("edm", "log_normal"),
    "edm": ("edm", "log_normal"),
}


@pytest.mark.parametrize("name", NAMES)
def test_auto_objective_is_the_parameterisations_own_and_named_choices_keep_their_meaning(name):
    """``objective_for``: auto is the parameterisation's own pair; a named weighting other than its
    own goes with uniform times (a log-normal sampler belongs to EDM's objective); importance
    sampling means the likelihood weighting at uniform times; names are returned as given."""
    own_w, own_s = OWN_OBJECTIVES[name]
    assert sg.parameterization(name).objective == (own_w, own_s)
    assert sg.objective_for(name) == (own_w, own_s)
    assert sg.objective_for(name, own_w) == (own_w, own_s)
    assert sg.objective_for(name, "auto", "logit_normal") == (own_w, "logit_normal")
    for w in sorted(set(sg.WEIGHTINGS) - {own_w}):
        assert sg.objective_for(name, w) == (w, "uniform")
        for s in sorted(sg.TIME_SAMPLERS):
            assert sg.objective_for(sg.parameterization(name), w, s) == (w, s)
    assert sg.objective_for(name, importance_sampling=True) == ("likelihood", "uniform")
    assert sg.objective_for(name, "std2", importance_sampling=True) == ("std2", "uniform")


def test_a_users_parameterisation_declares_its_own_objective():
    class Halved(sg.NoisePrediction):
        name = "halved"
        objective = ("min_snr", "logit_normal")

    assert sg.objective_for(Halved()) == ("min_snr", "logit_normal")
    assert sg.objective_for(Halved(), "sigmoid") == ("sigmoid", "uniform")
    assert sg.objective_for(sg.Parameterization()) == ("std2", "uniform")  # the base: DSM's own


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(spec="x0"), "parameterization"),
        (dict(spec="v", weighting=None), "weighting"),
        (dict(spec="v", time_sampler=3), "time_sampler"),
    ],
)
def test_objective_for_refuses_bad_arguments_by_name(kwargs, name):
    with pytest.raises((ValueError, TypeError)) as e:
        sg.objective_for(**kwargs)
    assert e.value.name == name
