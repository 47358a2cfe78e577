"""Every bad input gets a clear error that names the argument (and, for numbers, what is allowed).

Tiny problems throughout: a 2-D mixture, 4 samples, a couple of solver steps.
"""

from __future__ import annotations

import math

import pytest
import torch
from problems import mixture_2d

import sde_gen as sg

F64 = torch.float64
B, D = 4, 2


@pytest.fixture(scope="module")
def vp():
    return sg.VPSDE()


@pytest.fixture(scope="module")
def score(vp):
    return mixture_2d().score_fn(vp)


def x_data():
    return torch.randn(B, D, generator=torch.Generator().manual_seed(0), dtype=F64)


def run_sample(sde, score_fn, **kw):
    kw.setdefault("dtype", F64)
    kw.setdefault("generator", torch.Generator().manual_seed(0))
    shape = kw.pop("shape", (B, D))
    solver = kw.pop("solver", sg.EulerMaruyama(steps=2))
    return sg.sample(sde, score_fn, shape, solver, **kw)


def run_log_likelihood(sde, score_fn, **kw):
    x = kw.pop("x", x_data())
    kw.setdefault("solver", sg.ProbabilityFlow("rk4", steps=2))
    return sg.log_likelihood(sde, score_fn, x, **kw)


def run_encode(sde, score_fn, **kw):
    x = kw.pop("x", x_data())
    kw.setdefault("solver", sg.ProbabilityFlow("rk4", steps=2))
    return sg.encode(sde, score_fn, x, **kw)


ENTRY_POINTS = {"sample": run_sample, "log_likelihood": run_log_likelihood, "encode": run_encode}


# -- the happy path runs, so that the errors below are about the one bad argument ----------------


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_tiny_problem_runs(entry, vp, score):
    out = ENTRY_POINTS[entry](vp, score)
    x = out.log_prob if entry == "log_likelihood" else out
    assert torch.isfinite(x).all()


# -- eps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("eps", [0.0, -1.0, 1.0, 2.0, 0, math.inf, math.nan])
def test_eps_outside_open_interval(entry, eps, vp, score):
    with pytest.raises(ValueError, match=r"\beps\b"):
        ENTRY_POINTS[entry](vp, score, eps=eps)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("eps", ["0.1", None, torch.tensor(0.1)])
def test_eps_not_a_number(entry, eps, vp, score):
    with pytest.raises(TypeError, match=r"\beps\b"):
        ENTRY_POINTS[entry](vp, score, eps=eps)


def test_eps_equal_to_a_non_unit_T(score):
    ve = sg.VESDE(T=2.0)
    with pytest.raises(ValueError, match=r"eps must be in the open interval \(0, T\) = \(0, 2.0\)"):
        run_sample(ve, score, eps=2.0)


# -- solver settings ----------------------------------------------------------------------------

STEPPING = {
    "EulerMaruyama": lambda steps: sg.EulerMaruyama(steps=steps),
    "PredictorCorrector": lambda steps: sg.PredictorCorrector(steps=steps),
    "ProbabilityFlow_rk4": lambda steps: sg.ProbabilityFlow("rk4", steps=steps),
}


@pytest.mark.parametrize("solver", list(STEPPING))
@pytest.mark.parametrize("steps", [0, -3])
def test_steps_below_one(solver, steps):
    with pytest.raises(ValueError, match=r"steps must be >= 1"):
        STEPPING[solver](steps)


@pytest.mark.parametrize("solver", list(STEPPING))
@pytest.mark.parametrize("steps", [2.5, 10.0, "10", True])
def test_steps_not_an_int(solver, steps):
    with pytest.raises(TypeError, match=r"steps must be an int"):
        STEPPING[solver](steps)


@pytest.mark.parametrize("method", ["foo", "RK4", None, ["rk4"]])
def test_probability_flow_unknown_method(method):
    with pytest.raises(ValueError, match=r"method must be one of"):
        sg.ProbabilityFlow(method)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_method_without_steps(method):
    with pytest.raises(ValueError, match=r"steps is required"):
        sg.ProbabilityFlow(method)


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_adaptive_method_with_steps(method):
    with pytest.raises(ValueError, match=r"steps=10 is only for fixed-grid methods"):
        sg.ProbabilityFlow(method, steps=10)


@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize("value", [0.0, -1e-5, math.nan])
def test_tolerances_must_be_positive(name, value):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        sg.ProbabilityFlow(**{name: value})


def test_langevin_settings():
    with pytest.raises(ValueError, match=r"snr must be > 0"):
        sg.Langevin(snr=0)
    with pytest.raises(ValueError, match=r"snr must be > 0"):
        sg.Langevin(snr=-0.1)
    with pytest.raises(ValueError, match=r"n_steps must be >= 1"):
        sg.Langevin(n_steps=0)
    with pytest.raises(TypeError, match=r"n_steps must be an int"):
        sg.Langevin(n_steps=1.5)
    with pytest.raises(ValueError, match=r"step_size must be > 0"):
        sg.AnnealedLangevin(step_size=0)
    with pytest.raises(ValueError, match=r"sigma_ref must be > 0"):
        sg.AnnealedLangevin(sigma_ref=-1.0)
    with pytest.raises(ValueError, match=r"n_steps must be >= 1"):
        sg.AnnealedLangevin(n_steps=0)


def test_predictor_corrector_names_and_types():
    with pytest.raises(ValueError, match=r"predictor must be one of"):
        sg.PredictorCorrector(steps=2, predictor="foo")
    with pytest.raises(ValueError, match=r"corrector must be one of"):
        sg.PredictorCorrector(steps=2, corrector="foo")
    with pytest.raises(TypeError, match=r"predictor must be a Predictor"):
        sg.PredictorCorrector(steps=2, predictor=sg.Langevin())
    with pytest.raises(TypeError, match=r"corrector must be a Corrector"):
        sg.PredictorCorrector(steps=2, corrector=5)


# -- solver and sde of the wrong type -----------------------------------------------------------


@pytest.mark.parametrize("solver", ["euler_maruyama", sg.EulerMaruyama, None, sg.Langevin()])
def test_sample_solver_not_a_solver(solver, vp, score):
    with pytest.raises(TypeError, match=r"solver must be"):
        run_sample(vp, score, solver=solver)


@pytest.mark.parametrize("entry", ["log_likelihood", "encode"])
@pytest.mark.parametrize("solver", ["rk4", sg.EulerMaruyama(steps=2)], ids=["str", "EulerMaruyama"])
def test_ode_entry_points_need_a_probability_flow(entry, solver, vp, score):
    with pytest.raises(TypeError, match=r"solver must be a ProbabilityFlow"):
        ENTRY_POINTS[entry](vp, score, solver=solver)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("sde", ["vp", sg.VPSDE, None], ids=["str", "class", "None"])
def test_sde_not_an_sde(entry, sde, score):
    with pytest.raises(TypeError, match=r"sde must be an instance of sde_gen.SDE"):
        ENTRY_POINTS[entry](sde, score)


def test_oracle_needs_an_sde():
    mix = mixture_2d()
    with pytest.raises(TypeError, match=r"sde must be an instance"):
        mix.marginal_params("vp", torch.full((2,), 0.5, dtype=F64))


# -- score functions that misbehave -----------------------------------------------------------


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_score_wrong_shape(entry, vp):
    with pytest.raises(ValueError, match=r"score_fn returned shape \(4, 1\) for x of shape \(4, 2\)"):
        ENTRY_POINTS[entry](vp, lambda x, t: x[:, :1])


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_score_nan_names_the_samples(entry, vp):
    def score_fn(x, t):
        s = -x.clone()
        s[1, 0] = math.nan
        s[3, 1] = math.inf
        return s

    with pytest.raises(
        FloatingPointError, match=r"score_fn.*not finite.*2 of 4 samples \(indices \[1, 3\]\)"
    ):
        ENTRY_POINTS[entry](vp, score_fn)


def test_score_nan_late_in_the_solve_names_the_samples(vp):
    """Only the first score call is checked for finiteness; a NaN later on is still caught, at the
    end, with the samples named."""

    def score_fn(x, t):
        s = -x.clone()
        if t[0] < 0.9:
            s[2] = math.nan
        return s

    with pytest.raises(FloatingPointError, match=r"sample is not finite.*1 of 4 samples \(indices \[2\]\)"):
        run_sample(vp, score_fn, solver=sg.EulerMaruyama(steps=4))


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_score_wrong_dtype(entry, vp):
    with pytest.raises(TypeError, match=r"score_fn returned dtype torch.float32 .* x of dtype torch.float64"):
        ENTRY_POINTS[entry](vp, lambda x, t: -x.float())


def test_score_not_a_tensor_or_not_callable(vp):
    with pytest.raises(TypeError, match=r"score_fn must return a torch.Tensor"):
        run_sample(vp, lambda x, t: (-x).numpy())
    with pytest.raises(TypeError, match=r"score_fn must be callable"):
        run_sample(vp, "score")


# -- tensors of the wrong shape or dtype --------------------------------------------------------


def test_x_T_wrong_shape(vp, score):
    with pytest.raises(ValueError, match=r"x_T has shape \(4, 3\), but shape is \(4, 2\)"):
        run_sample(vp, score, x_T=torch.zeros(B, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"x_T has shape \(2, 2\), but shape is \(4, 2\)"):
        run_sample(vp, score, x_T=torch.zeros(2, D, dtype=F64))


def test_x_T_wrong_type(vp, score):
    with pytest.raises(TypeError, match=r"x_T must be a floating-point tensor"):
        run_sample(vp, score, x_T=torch.zeros(B, D, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x_T must be a torch.Tensor"):
        run_sample(vp, score, x_T=[[0.0, 0.0]] * B)


@pytest.mark.parametrize("entry", ["log_likelihood", "encode"])
@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool, torch.uint8])
def test_integer_x(entry, dtype, vp, score):
    with pytest.raises(TypeError, match=r"\bx must be a floating-point tensor, got dtype"):
        ENTRY_POINTS[entry](vp, score, x=torch.zeros(B, D, dtype=dtype))


@pytest.mark.parametrize("entry", ["log_likelihood", "encode"])
def test_x_without_batch(entry, vp, score):
    with pytest.raises(ValueError, match=r"\bx must have shape \(B, ...\) with B >= 1"):
        ENTRY_POINTS[entry](vp, score, x=torch.zeros(0, D, dtype=F64))
    with pytest.raises(ValueError, match=r"\bx must have shape \(B, ...\)"):
        ENTRY_POINTS[entry](vp, score, x=torch.tensor(1.0, dtype=F64))
    with pytest.raises(TypeError, match=r"\bx must be a torch.Tensor"):
        ENTRY_POINTS[entry](vp, score, x=[[0.0, 0.0]])


@pytest.mark.parametrize("shape", [(0, 2), (4, 0), (-1, 2), (), (2.0, 2), "ab"])
def test_sample_bad_shape(shape, vp, score):
    with pytest.raises(ValueError, match=r"shape must be a non-empty tuple of positive ints"):
        run_sample(vp, score, shape=shape)


def test_sample_shape_not_iterable(vp, score):
    with pytest.raises(TypeError, match=r"shape must be a tuple of ints"):
        run_sample(vp, score, shape=None)


def test_prior_sample_bad_shape(vp):
    with pytest.raises(ValueError, match=r"\bshape\b"):
        vp.prior_sample((0, 2))


def test_sample_generator_not_a_generator(vp, score):
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator"):
        run_sample(vp, score, generator="seed")


def test_sample_callback_not_callable(vp, score):
    with pytest.raises(TypeError, match=r"\bcallback\b"):
        run_sample(vp, score, callback=3)


# -- likelihood settings ----------------------------------------------------------------------


def test_divergence_unknown(vp, score):
    with pytest.raises(ValueError, match=r"divergence must be one of \['exact', 'hutchinson'\]"):
        run_log_likelihood(vp, score, divergence="foo")


@pytest.mark.parametrize("num_probes", [0, -1])
def test_num_probes_below_one(num_probes, vp, score):
    with pytest.raises(ValueError, match=r"num_probes must be >= 1"):
        run_log_likelihood(vp, score, divergence="hutchinson", num_probes=num_probes)
    with pytest.raises(TypeError, match=r"num_probes must be an int"):
        run_log_likelihood(vp, score, divergence="hutchinson", num_probes=2.0)


def test_probe_unknown(vp, score):
    with pytest.raises(ValueError, match=r"probe must be one of \['gaussian', 'rademacher'\]"):
        run_log_likelihood(vp, score, divergence="hutchinson", probe="foo")


def test_hutchinson_settings_checked_with_exact_divergence(vp, score):
    with pytest.raises(ValueError, match=r"num_probes must be >= 1"):
        run_log_likelihood(vp, score, divergence="exact", num_probes=0)
    with pytest.raises(ValueError, match=r"probe must be one of"):
        run_log_likelihood(vp, score, divergence="exact", probe="foo")


def test_bits_per_dim_settings():
    lp = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match=r"levels must be >= 2"):
        sg.bits_per_dim(lp, 4, levels=1)
    with pytest.raises(TypeError, match=r"levels must be an int"):
        sg.bits_per_dim(lp, 4, levels=255.5)
    for low, high in [(1.0, 1.0), (1.0, -1.0)]:
        with pytest.raises(ValueError, match=r"high must be > low"):
            sg.bits_per_dim(lp, 4, low=low, high=high)
    with pytest.raises(ValueError, match=r"num_dims must be >= 1"):
        sg.bits_per_dim(lp, 0)
    with pytest.raises(ValueError, match=r"low must be finite"):
        sg.bits_per_dim(lp, 4, low=math.nan)


# -- SDE parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [sg.VPSDE, sg.SubVPSDE])
def test_beta_schedule(cls):
    with pytest.raises(ValueError, match=r"beta_min must be >= 0"):
        cls(beta_min=-1.0)
    with pytest.raises(ValueError, match=r"beta_max must be >= beta_min"):
        cls(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match=r"beta_max must be > 0"):
        cls(beta_min=0.0, beta_max=0.0)
    with pytest.raises(ValueError, match=r"beta_max must be finite"):
        cls(beta_max=math.inf)
    with pytest.raises(TypeError, match=r"beta_min must be a real number"):
        cls(beta_min="0.1")
    cls(beta_min=0.0, beta_max=1.0)  # a zero beta_min is allowed


def test_ve_sigmas():
    with pytest.raises(ValueError, match=r"sigma_min must be > 0"):
        sg.VESDE(sigma_min=0.0)
    with pytest.raises(ValueError, match=r"sigma_max must be > 0"):
        sg.VESDE(sigma_max=-1.0)
    with pytest.raises(ValueError, match=r"sigma_max must be > sigma_min"):
        sg.VESDE(sigma_min=10.0, sigma_max=5.0)
    with pytest.raises(ValueError, match=r"sigma_max must be > sigma_min"):
        sg.VESDE(sigma_min=1.0, sigma_max=1.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda T: sg.VPSDE(T=T),
        lambda T: sg.SubVPSDE(T=T),
        lambda T: sg.VESDE(T=T),
        lambda T: sg.LinearSDE(-1.0, 1.0, T=T),
        lambda T: sg.LinearSDE(lambda t: -t, lambda t: 1 + t, T=T),
    ],
    ids=["vp", "subvp", "ve", "linear_const", "linear_callable"],
)
def test_T_must_be_positive_and_finite(make):
    for T in (0.0, -1.0):
        with pytest.raises(ValueError, match=r"T must be > 0"):
            make(T)
    with pytest.raises(ValueError, match=r"T must be finite"):
        make(math.inf)
    with pytest.raises(TypeError, match=r"T must be a real number"):
        make("1")


def test_linear_sde_parameters():
    with pytest.raises(ValueError, match=r"\bg must be > 0"):
        sg.LinearSDE(-1.0, 0.0)
    with pytest.raises(ValueError, match=r"\bg must be > 0"):
        sg.LinearSDE(lambda t: -t, -1.0)
    with pytest.raises(ValueError, match=r"\ba must be finite"):
        sg.LinearSDE(math.nan, 1.0)
    with pytest.raises(TypeError, match=r"\ba must be a real number"):
        sg.LinearSDE("a", 1.0)
    with pytest.raises(ValueError, match=r"grid must be >= 16"):
        sg.LinearSDE(lambda t: -t, 1.0, grid=8)
    with pytest.raises(TypeError, match=r"grid must be an int"):
        sg.LinearSDE(lambda t: -t, 1.0, grid=100.5)
    with pytest.raises(ValueError, match=r"prior_std must be > 0"):
        sg.LinearSDE(-1.0, 1.0, prior_std=0.0)
    with pytest.raises(ValueError, match=r"a\(t\) or g\(t\) is not finite"):
        sg.LinearSDE(lambda t: -1.0 / t, 1.0)
    with pytest.raises(ValueError, match=r"a\(t\) must return a number or a tensor shaped like t"):
        sg.LinearSDE(lambda t: -t[:1], 1.0)
    with pytest.raises(ValueError, match=r"g\(t\) must return a number or a tensor shaped like t"):
        sg.LinearSDE(-1.0, lambda t: torch.ones(3, dtype=t.dtype))


# -- the Gaussian-mixture oracle ----------------------------------------------------------------

EYE = [[1.0, 0.0], [0.0, 1.0]]


def test_mixture_bad_shapes():
    with pytest.raises(ValueError, match=r"means must have shape \(K, D\)"):
        sg.GaussianMixture([1.0], [0.0, 0.0], [EYE])
    with pytest.raises(ValueError, match=r"weights must be positive with shape \(2,\)"):
        sg.GaussianMixture([1.0], [[0.0, 0.0], [1.0, 1.0]], [EYE, EYE])
    with pytest.raises(ValueError, match=r"weights must be positive"):
        sg.GaussianMixture([1.0, -0.5], [[0.0, 0.0], [1.0, 1.0]], [EYE, EYE])
    with pytest.raises(ValueError, match=r"covs must have shape \(2, 2, 2\)"):
        sg.GaussianMixture([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]], [EYE])
    with pytest.raises(ValueError, match=r"covs must have shape \(1, 2, 2\)"):
        sg.GaussianMixture([1.0], [[0.0, 0.0]], [[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"event_shape \(3,\) does not hold D=2"):
        sg.GaussianMixture([1.0], [[0.0, 0.0]], [EYE], event_shape=(3,))


@pytest.mark.parametrize(
    "cov", [[[1.0, 2.0], [2.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 1.0]]]
)
def test_mixture_covs_not_positive_definite(cov):
    with pytest.raises(ValueError, match=r"covs must be symmetric positive definite; component\(s\) \[1\]"):
        sg.GaussianMixture([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]], [EYE, cov])


def test_mixture_covs_not_symmetric():
    with pytest.raises(ValueError, match=r"covs must be symmetric"):
        sg.GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 5.0], [0.0, 1.0]]])


def test_mixture_means_not_finite():
    with pytest.raises(ValueError, match=r"\bmeans\b"):
        sg.GaussianMixture([1.0], [[math.nan, 0.0]], [EYE])


def test_mixture_query_wrong_dimension():
    mix = mixture_2d()
    with pytest.raises(ValueError, match=r"x has 3 entries per sample; the mixture has D=2"):
        mix.log_prob(torch.zeros(B, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"n must be >= 1"):
        mix.sample(0)
