"""Every refusal of a caller's argument in sampling (the loop, guidance, inverse problems, keyed noise,
the solvers and their grids) is an :class:`sde_gen.checks.ArgumentError` carrying the argument's
name, as the caller spells it, and the value given, so that a caller such as ``experiments/run.py``
maps it to its own setting by lookup instead of parsing the message."""

from __future__ import annotations

import pytest
import torch

import sde_gen as sg

F64 = torch.float64
ArgumentError = sg.checks.ArgumentError
SDE = sg.VPSDE()
X = torch.zeros(2, 2, dtype=F64)
T = torch.full((2,), 0.5, dtype=F64)
Y = torch.zeros(1, 2, dtype=F64)  # one measurement of a 2-d sample through MASK
MASK = sg.Mask(torch.ones(2, dtype=torch.bool))
DDIM = sg.DDIM(steps=2, eta=1.0)
MIX = sg.GaussianMixture(torch.ones(1), torch.zeros(1, 2, dtype=F64), torch.eye(2, dtype=F64)[None])
EM_SHORT = sg.EulerMaruyama(schedule=[0.5, 0.1])  # does not start at T = 1
OBJ = object()


def score(x, t, **cond):
    return -x


class Dense(sg.LinearOperator):
    """A user's operator without ``gram_scale`` (``"smc"`` refuses it)."""

    def forward(self, x):
        return x

    def transpose(self, y):
        return y

    def y_shape(self, x_shape):
        return tuple(x_shape)

    def x_shape(self, y_shape):
        return tuple(y_shape)


DENSE = Dense()


def sample(**kw):
    args = dict(sde=SDE, score_fn=score, shape=(2, 2), solver=sg.EulerMaruyama(steps=2))
    return sg.sample(**{**args, **kw})


def inverse(**kw):
    args = dict(sde=SDE, score_fn=score, y=Y, operator=MASK, solver=DDIM, method="replacement")
    return sg.solve_inverse(**{**args, **kw})


Y_BAD = torch.zeros(1, 2, 2, 2, dtype=F64)  # Colorization(3) of samples (3, 2, 2) gives (1, 2, 2)
COND_BAD = {"y": torch.zeros(3)}
X_T_SHAPE = torch.zeros(3, 2, dtype=F64)
X_T_F64 = torch.zeros(2, 2, dtype=F64)
X_T_META = torch.zeros(2, 2, dtype=F64, device="meta")
MIX_Y = torch.zeros(3, dtype=F64)
NAN_TIMES = [1.0, float("nan")]
GEN = torch.Generator()  # a CPU generator; X_T_META is on the meta device
DPM2 = sg.DPMSolverPlusPlus(steps=4, order=2)  # keeps a history: RePaint refuses it
DDIM0 = sg.DDIM(steps=2, eta=0.0)  # deterministic: "smc" refuses it

# (what raises, the argument's name, the value given)
CASES = {
    # loop.py
    "loop-solver": (lambda: sample(solver=OBJ), "solver", OBJ),
    "loop-callback": (lambda: sample(callback=5), "callback", 5),
    "loop-generator-type": (lambda: sample(generator="g"), "generator", "g"),
    "loop-x_T-shape": (lambda: sample(x_T=X_T_SHAPE), "x_T", X_T_SHAPE),
    "loop-x_T-dtype": (lambda: sample(x_T=X_T_F64, dtype=torch.float32), "x_T", X_T_F64),
    "loop-x_T-device": (lambda: sample(x_T=X_T_F64, device="meta"), "x_T", X_T_F64),
    "loop-generator-device": (lambda: sample(x_T=X_T_META, generator=GEN), "generator", GEN),
    "loop-dtype": (lambda: sample(generator=sg.KeyedNoise(0), dtype=torch.int64), "dtype", torch.int64),
    "loop-encode-solver": (lambda: sg.encode(SDE, score, X, solver=DDIM), "solver", DDIM),
    # noise.py
    "noise-seed": (lambda: sg.KeyedNoise(2**64), "seed", 2**64),
    "noise-shape": (lambda: sg.KeyedNoise(0).normal([], draw=0), "shape", []),
    # guidance.py
    "cfg-null-negative": (lambda: sg.classifier_free_guidance(score, 1.0, null=-1), "null", -1),
    "cfg-null-type": (lambda: sg.classifier_free_guidance(score, 1.0, null="x"), "null", "x"),
    "cfg-null-missing": (lambda: sg.classifier_free_guidance(score, 1.0), "null", None),
    "cfg-interval-type": (
        lambda: sg.classifier_free_guidance(score, 1.0, null=3, interval=(1.0,)),
        "interval",
        (1.0,),
    ),
    "cfg-interval-order": (
        lambda: sg.classifier_free_guidance(score, 1.0, null=3, interval=(2.0, 1.0), sde=SDE),
        "interval",
        (2.0, 1.0),
    ),
    "cfg-interval-no-sde": (
        lambda: sg.classifier_free_guidance(score, 1.0, null=3, interval=(0.0, 1.0)),
        "sde",
        None,
    ),
    "cfg-call-no-cond": (lambda: sg.classifier_free_guidance(score, 1.0, null=3)(X, T), "cond", {}),
    "cg-log_prob_fn": (lambda: sg.classifier_guidance(score, "p", 1.0), "log_prob_fn", "p"),
    "cg-call-no-label": (
        lambda: sg.classifier_guidance(score, lambda x, t, y: x.sum(1), 1.0)(X, T),
        "cond",
        {},
    ),
    # inverse/solve.py
    "inverse-option": (lambda: inverse(method="dps", jump_length=3), "jump_length", 3),
    "inverse-operator": (lambda: inverse(operator="A"), "operator", "A"),
    "inverse-solver": (lambda: inverse(solver=OBJ), "solver", OBJ),
    "inverse-y": (lambda: inverse(y=[0.0, 0.0]), "y", [0.0, 0.0]),
    "inverse-generator": (lambda: inverse(generator=1), "generator", 1),
    "inverse-noise_std": (lambda: inverse(noise_std=0.1), "noise_std", 0.1),
    "inverse-shape-missing": (lambda: inverse(operator=sg.Colorization(3)), "shape", None),
    "inverse-shape-type": (lambda: inverse(shape="ab"), "shape", "ab"),
    "inverse-y-shape": (
        lambda: inverse(operator=sg.Colorization(3), y=Y_BAD, shape=(3, 2, 2)),
        "y",
        Y_BAD,
    ),
    "inverse-cond-type": (lambda: inverse(cond=[1]), "cond", [1]),
    "inverse-cond-rows": (lambda: inverse(cond=COND_BAD), "cond", COND_BAD),
    "inverse-repaint-solver": (lambda: inverse(method="repaint", solver=DPM2), "solver", DPM2),
    # inverse/dps.py, inverse/smc.py
    "dps-zeta": (lambda: inverse(method="dps", zeta=0.0), "zeta", 0.0),
    "smc-solver": (lambda: inverse(method="smc", solver=DDIM0), "solver", DDIM0),
    "smc-threshold": (lambda: inverse(method="smc", resample_threshold=1.5), "resample_threshold", 1.5),
    "smc-operator": (lambda: inverse(method="smc", operator=DENSE), "operator", DENSE),
    # inverse/exact.py
    "exact-operator": (lambda: sg.mixture_posterior(MIX, "A", Y), "operator", "A"),
    "exact-y": (lambda: sg.mixture_posterior(MIX, MASK, MIX_Y), "y", MIX_Y),
    # inverse/operators.py
    "mask-scalar": (lambda: sg.Mask(1.0), "mask", 1.0),
    "mask-values": (lambda: sg.Mask([0.5, 1.0]), "mask", [0.5, 1.0]),
    "mask-x_shape": (lambda: MASK.y_shape((3,)), "x_shape", (3,)),
    "colorization-x_shape": (lambda: sg.Colorization(3).y_shape((2, 4)), "x_shape", (2, 4)),
    "superresolution-x_shape": (lambda: sg.SuperResolution(2).y_shape((3, 3)), "x_shape", (3, 3)),
    # solvers/grids.py
    "schedule-name": (lambda: sg.DDIM(steps=2, schedule="bogus"), "schedule", "bogus"),
    "schedule-type": (lambda: sg.DDIM(steps=2, schedule=OBJ), "schedule", OBJ),
    "schedule-short": (lambda: sg.DDIM(schedule=[1.0]), "schedule", [1.0]),
    "schedule-nan": (lambda: sg.EulerMaruyama(schedule=NAN_TIMES), "schedule", NAN_TIMES),
    "schedule-increasing": (lambda: sg.EulerMaruyama(schedule=[0.5, 1.0]), "schedule", [0.5, 1.0]),
    "schedule-ends": (lambda: sample(solver=EM_SHORT), "schedule", EM_SHORT.schedule),
    # solvers/base.py
    "steps-vs-schedule": (lambda: sg.EulerMaruyama(steps=3, schedule=[1.0, 0.5, 0.1]), "steps", 3),
    "steps-missing": (lambda: sg.EulerMaruyama(), "steps", None),
    # solvers/heun.py
    "heun-steps-vs-schedule": (lambda: sg.Heun(steps=5, schedule=[80.0, 1.0, 0.1]), "steps", 5),
    "heun-steps-missing": (lambda: sg.Heun(), "steps", None),
    "heun-s_tmax-type": (lambda: sg.Heun(steps=4, s_tmax="x"), "s_tmax", "x"),
    "heun-s_tmax-value": (lambda: sg.Heun(steps=4, s_tmin=1.0, s_tmax=0.5), "s_tmax", 0.5),
    "heun-s_noise": (lambda: sg.Heun(steps=4, s_noise=0), "s_noise", 0),
    # solvers/exponential.py
    "dpm-order": (lambda: sg.DPMSolverPlusPlus(steps=4, order=4), "order", 4),
    "dpm-lower_order_final": (
        lambda: sg.DPMSolverPlusPlus(steps=4, lower_order_final=1),
        "lower_order_final",
        1,
    ),
    "dpm-stochastic": (lambda: sg.DPMSolverPlusPlus(steps=4, stochastic=1), "stochastic", 1),
    "dpm-stochastic-order": (lambda: sg.DPMSolverPlusPlus(steps=4, order=3, stochastic=True), "order", 3),
    "ddim-eta": (lambda: sg.DDIM(steps=2, eta=1.5), "eta", 1.5),
}


def _same(got, want) -> bool:
    if got is want:
        return True
    if isinstance(got, torch.Tensor) or isinstance(want, torch.Tensor):
        return False
    return bool(got == want)


@pytest.mark.parametrize("case", list(CASES))
def test_refusal_carries_the_argument_name_and_value(case):
    fn, name, want = CASES[case]
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    err = info.value
    assert isinstance(err, ArgumentError), f"{case}: {type(err).__name__}: {err}"
    assert isinstance(err, sg.checks.ArgumentValueError) == isinstance(err, ValueError)
    assert err.name == name, f"{case}: name {err.name!r}, expected {name!r}: {err}"
    assert _same(err.value, want), f"{case}: value {err.value!r}, expected {want!r}"


def test_the_error_classes_are_public():
    assert "checks" in sg.__all__ and issubclass(sg.checks.ArgumentValueError, ValueError)
    assert len(CASES) >= 25
