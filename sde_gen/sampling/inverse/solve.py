"""``solve_inverse``: posterior sampling for ``y = A x + noise`` with an unconditional score model,
for every SDE with a Gaussian kernel. Methods: ``"replacement"`` and ``"repaint"`` here,
``"dps"`` in :mod:`.dps`, ``"smc"`` in :mod:`.smc`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..._checks import (
    ArgumentTypeError,
    ArgumentValueError,
    ScoreCheck,
    check_choice,
    check_eps,
    check_finite,
    check_int,
    check_real,
)
from ..._utils import batch_broadcast
from ...sdes.base import check_sde
from ..solvers.base import SteppingSolver, noise_like
from ..solvers.variables import kernel_at
from .dps import dps
from .operators import LinearOperator
from .smc import smc

__all__ = ["solve_inverse", "InverseResult", "METHODS", "repaint_schedule"]

#: each method's options and their defaults
METHODS = {
    "replacement": {},
    "repaint": {"jump_length": 10, "jump_n_sample": 10},
    "dps": {"zeta": 0.5},
    "smc": {"num_particles": 16, "resample_threshold": 0.5},
}


@dataclass
class InverseResult:
    """Samples ``x`` (B, ...), the score evaluations used (``nfe``: calls of ``score_fn``, each on a
    batch; for ``"smc"`` the batch holds ``B * num_particles`` rows); for ``"smc"``, the final
    ``particles`` (B, K, ...) with their normalised ``weights`` (B, K); for ``"replacement"`` and
    ``"repaint"``, ``x_mean``, the noise-free part of the last step with its known part ``A^+ y``."""

    x: torch.Tensor
    nfe: int
    particles: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    x_mean: torch.Tensor | None = None


@dataclass
class Problem:
    """What every method sees: the checked inputs, the score wrapped to count NFE."""

    sde: object
    score: Callable
    y: torch.Tensor  # prepared measurement (B, *y_shape)
    op: LinearOperator
    x_shape: tuple[int, ...]
    noise_std: float
    generator: torch.Generator | None
    eps: float

    @property
    def batch(self) -> int:
        return self.y.shape[0]

    def prior(self, rows: int) -> torch.Tensor:
        return self.sde.prior_sample(
            (rows, *self.x_shape), generator=self.generator, dtype=self.y.dtype, device=self.y.device
        )

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Noiseless measurements: the known part of the result is exactly ``A^+ y``."""
        if self.noise_std == 0.0:
            x = x - self.op.project(x) + self.op.pinv(self.y)
        return x


def solve_inverse(
    sde,
    score_fn: Callable,
    y: torch.Tensor,
    operator: LinearOperator,
    solver: SteppingSolver,
    method: str = "smc",
    *,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
    shape=None,
    cond: dict | None = None,
    return_result: bool = False,
    **options,
):
    """Draw ``x ~ p(x | y)`` for ``y = A x + noise_std e`` from an unconditional ``score_fn``.

    Args:
        y: measurements ``(B, *y_shape)``; one posterior sample is drawn for each row.
        operator: ``A``, a :class:`LinearOperator` (:class:`Mask`, :class:`Colorization`,
            :class:`SuperResolution` or a user's).
        solver: the unconditional sampler (its grid and, except for ``"smc"``, its step):
            ``"replacement"`` and ``"dps"``: any :class:`~sde_gen.SteppingSolver`; ``"repaint"``:
            one without a history (``solver.keeps_history`` False: ``EulerMaruyama``,
            ``PredictorCorrector``, ``DDIM``, ``Heun``, ``DPMSolverPlusPlus(order=1)``);
            ``"smc"``: ``DDIM`` with ``eta > 0`` or ``EulerMaruyama`` (a Gaussian backward kernel).
        method: ``"replacement"`` (Song et al. 2021, App. I), ``"repaint"`` (Lugmayr et al. 2022;
            options ``jump_length=10``, ``jump_n_sample=10``), ``"dps"`` (Chung et al. 2022,
            Algorithm 1; option ``zeta=0.5``) or ``"smc"`` (MCGdiff, Cardoso et al. 2023; options
            ``num_particles=16``, ``resample_threshold=0.5``), the only one exact as
            ``num_particles`` grows. ``"replacement"`` and ``"repaint"`` need ``noise_std = 0``.
        noise_std: std of the Gaussian measurement noise, ``>= 0``. With 0 the known part of the
            result is set to ``A^+ y`` at the end.
        generator: a ``torch.Generator`` for all randomness (prior, solver, resampling).
        eps: the final time, as in :func:`~sde_gen.sample`; the result is a sample at ``eps``.
        shape: one sample's shape, when the operator cannot infer it from ``y``.
        cond: conditioning passed on as ``score_fn(x, t, **cond)`` (tensors with ``B`` rows).
        return_result: return an :class:`InverseResult` (with the NFE) instead of a tensor.
    """
    check_sde(sde)
    method = check_choice("method", method, METHODS)
    unknown = sorted(set(options) - set(METHODS[method]))
    if unknown:
        allowed = sorted(METHODS[method]) or "none"
        raise ArgumentTypeError(
            unknown[0],
            options[unknown[0]],
            f"method={method!r} takes no option(s) {unknown}; its options are {allowed}",
        )
    opts = {**METHODS[method], **options}
    if not isinstance(operator, LinearOperator):
        raise ArgumentTypeError(
            "operator",
            operator,
            f"operator must be an sde_gen LinearOperator (Mask, Colorization, SuperResolution or a "
            f"subclass), got {type(operator).__name__}",
        )
    if not isinstance(solver, SteppingSolver):
        raise ArgumentTypeError(
            "solver",
            solver,
            f"solver must be a SteppingSolver (e.g. DDIM(steps=100, eta=1.0)), got {solver!r}",
        )
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.ndim < 1 or y.shape[0] == 0:
        raise ArgumentTypeError(
            "y", y, f"y must be a floating-point tensor (B, ...) with B >= 1, got {y!r:.80}"
        )
    noise_std = check_real("noise_std", noise_std, low=0.0)
    eps = check_eps(eps, sde.T)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(
            "generator",
            generator,
            f"generator must be a torch.Generator or None, got {type(generator).__name__}",
        )
    x_shape = _x_shape(operator, y, shape)
    if method in ("replacement", "repaint") and noise_std > 0:
        raise ArgumentValueError(
            "noise_std",
            noise_std,
            f"method={method!r} replaces the known part by y and needs noise_std=0, got {noise_std!r}; "
            "use 'dps' or 'smc' for noisy measurements",
        )
    score = ScoreCheck(_with_cond(score_fn, cond, y.shape[0]))
    prob = Problem(sde, score, operator.prepare_y(y), operator, x_shape, noise_std, generator, eps)
    particles = weights = x_mean = None
    if method == "replacement":
        x, x_mean = replacement(prob, solver)
    elif method == "repaint":
        x, x_mean = repaint(prob, solver, **opts)
    elif method == "dps":
        x = dps(prob, solver, **opts)
    else:
        x, particles, weights = smc(prob, solver, **opts)
    check_finite(f"solve_inverse(method={method!r}) sample", x)
    return InverseResult(x, score.nfe, particles, weights, x_mean) if return_result else x


def _x_shape(op: LinearOperator, y: torch.Tensor, shape) -> tuple[int, ...]:
    y_shape = tuple(y.shape[1:])
    if shape is None:
        x_shape = op.x_shape(y_shape)
        if x_shape is None:
            raise ArgumentValueError(
                "shape",
                shape,
                f"{op!r} cannot infer the sample shape from y of shape {tuple(y.shape)}: pass shape",
            )
    else:
        try:
            x_shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ArgumentTypeError(
                "shape", shape, f"shape must be a tuple of ints (one sample's shape), got {shape!r}"
            ) from None
    expect = tuple(op.y_shape(x_shape))
    if expect != y_shape:
        raise ArgumentValueError(
            "y",
            y,
            f"operator {op!r} maps samples of shape {x_shape} to measurements of shape {expect}, "
            f"but y has shape {tuple(y.shape)} (B, *{y_shape})",
        )
    return x_shape


def _with_cond(score_fn, cond, batch: int):
    if not cond:
        return score_fn
    if not isinstance(cond, dict):
        raise ArgumentTypeError(
            "cond", cond, f"cond must be a dict of keyword arguments for score_fn, got {type(cond).__name__}"
        )
    for k, v in cond.items():
        if not isinstance(v, torch.Tensor) or v.ndim == 0 or v.shape[0] != batch:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ArgumentValueError(
                "cond", cond, f"cond[{k!r}] must be a tensor with B={batch} rows like y, got {got}"
            )
    return _Conditioned(score_fn, cond, batch)


class _Conditioned:
    """``score_fn(x, t, **cond)`` as a function of ``(x, t)``; the rows of ``cond`` are repeated
    when ``x`` holds several particles per measurement (``"smc"``). Forwards ``network_calls``
    (guidance wrappers count their network evaluations there)."""

    def __init__(self, score_fn, cond: dict, batch: int):
        self.score_fn, self.cond, self.batch = score_fn, cond, batch

    @property
    def network_calls(self):
        return getattr(self.score_fn, "network_calls", None)

    def __call__(self, x, t):
        rep = x.shape[0] // self.batch
        return self.score_fn(x, t, **{k: v.repeat_interleave(rep, 0) for k, v in self.cond.items()})


# -- replacement and RePaint -----------------------------------------------------------------------


def noised_known(prob: Problem, x: torch.Tensor, x_mean: torch.Tensor, t: float):
    """Replace the known part of ``x`` by ``y`` noised to exactly ``t`` with the SDE's kernel,
    ``P(scale A^+ y + shift + std z)`` (``P = A^+ A``), and that of ``x_mean`` by its mean."""
    k = kernel_at(prob.sde, t, x)
    mean = k.scale * prob.op.pinv(prob.y) + k.shift
    noisy = mean + batch_broadcast(k.std, x) * noise_like(x, prob.generator)
    proj = prob.op.project
    return x + proj(noisy - x), x_mean + proj(mean - x_mean)


def replacement(prob: Problem, solver: SteppingSolver):
    """Song et al. 2021, App. I: after every step of ``solver`` to ``t_next``, the known part is
    ``y`` noised to ``t_next`` (the reference code noises it to the previous time and mixes it
    into ``x_mean`` only). Any stepping solver; a multistep one keeps the denoiser values of the
    states before replacement."""
    x = prob.prior(prob.batch)
    state = solver.init(prob.sde, x, prob.sde.T, prob.eps)
    x, x_mean = noised_known(prob, x, x, state.t)
    with torch.no_grad():
        while not state.done:
            x, state = solver.step(prob.sde, prob.score, x, state, generator=prob.generator)
            x, x_mean = noised_known(prob, x, state.x_mean, state.t)
    return prob.finish(x), prob.finish(x_mean)


def repaint_schedule(steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """The grid indices RePaint visits (0 is ``T``, ``steps`` is ``eps``): down one step at a time;
    at every index ``i = steps - m * jump_length > jump_length`` (the end included), back up
    ``jump_length`` indices, ``jump_n_sample - 1`` times (Lugmayr et al. 2022, Sec. 4.2)."""
    jumps = {steps - m * jump_length: jump_n_sample - 1 for m in range(steps // jump_length + 1)}
    jumps = {i: n for i, n in jumps.items() if i > jump_length}
    path, i = [0], 0
    while i < steps:
        i += 1
        path.append(i)
        if jumps.get(i, 0) > 0:
            jumps[i] -= 1
            i -= jump_length
            path.append(i)
    return path


def repaint(prob: Problem, solver: SteppingSolver, *, jump_length: int, jump_n_sample: int):
    """Lugmayr et al. 2022 (RePaint), Algorithm 1 with the jump schedule of their Sec. 4.2: the
    replacement method, resampled: after the schedule's down steps, the state goes back up
    ``jump_length`` grid points in one draw of the SDE's exact forward transition
    (:meth:`~sde_gen.SDE.transition`) and is denoised again."""
    if solver.keeps_history:
        raise ArgumentTypeError(
            "solver",
            solver,
            f"method='repaint' steps back up the grid and needs a solver without a history "
            f"(keeps_history False: EulerMaruyama, PredictorCorrector, DDIM, Heun, ...); got {solver!r}",
        )
    jump_length = check_int("jump_length", jump_length, low=1)
    jump_n_sample = check_int("jump_n_sample", jump_n_sample, low=1)
    x = prob.prior(prob.batch)
    states = [solver.init(prob.sde, x, prob.sde.T, prob.eps)]  # states[i]: the one at grid index i
    times = states[0].grid.tolist()
    path = repaint_schedule(len(times) - 1, jump_length, jump_n_sample)
    x, x_mean = noised_known(prob, x, x, times[0])
    with torch.no_grad():
        for i, j in zip(path[:-1], path[1:], strict=True):
            if j == i + 1:  # one solver step down, then the known part at the new time
                x, state = solver.step(prob.sde, prob.score, x, states[i], generator=prob.generator)
                del states[j:]
                states.append(state)
                x, x_mean = noised_known(prob, x, state.x_mean, times[j])
            else:  # back up: x_{t_j} ~ p(x_{t_j} | x_{t_i}), the exact forward transition; the
                # solver, which keeps no history, restarts from its state at index j
                s_t = torch.full((x.shape[0],), times[i], dtype=x.dtype, device=x.device)
                a, b, c2 = prob.sde.transition(s_t, torch.full_like(s_t, times[j]), x)
                x = a * x + b + c2.sqrt() * noise_like(x, prob.generator)
    return prob.finish(x), prob.finish(x_mean)
