"""The probability-flow ODE solved with torchdiffeq (Song et al. 2021, Sec. 4.3)."""

from __future__ import annotations

import torch
from torch import nn

from ..._checks import ArgumentValueError, check_choice, check_int, check_positive
from ..._utils import time_vector
from .base import Solver, StepInfo
from .grids import check_schedule, resolve_schedule, time_grid

__all__ = ["ProbabilityFlow", "ADAPTIVE_METHODS", "FIXED_METHODS"]

# torchdiffeq's methods and their orders (torchdiffeq README; Hairer, Norsett & Wanner).
ADAPTIVE_METHODS = {"dopri8": 8, "dopri5": 5, "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 2}
FIXED_METHODS = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}
#: score evaluations per step of each fixed-grid method (its Runge-Kutta stages)
FIXED_STAGES = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}


class Dynamics(nn.Module):
    """``fn(x, t_vec)`` as torchdiffeq's ``func(t, y)``, with ``t`` clamped to ``[lo, hi]``.

    Adaptive solvers evaluate at trial times outside the interval (the initial step selection
    probes ``t0 + h0``); the SDE or score may be undefined there (VP's variance is negative for
    ``t < 0``), so the field is continued by its value at the nearest end.

    With a ``callback``, torchdiffeq's step hook (``callback_step`` for fixed-grid methods,
    ``callback_accept_step`` for adaptive ones; only the one the method supports is defined)
    reports ``(t0, y0)`` at the *start* of each step, i.e. the end of the previous one, so each
    step is reported when the next begins, and the last by :meth:`finish`.
    """

    def __init__(self, fn, lo: float, hi: float, callback=None, fixed_grid: bool = False):
        super().__init__()
        self.fn, self.lo, self.hi, self.callback = fn, lo, hi, callback
        self.accepted = 0
        if callback is not None:
            setattr(self, "callback_step" if fixed_grid else "callback_accept_step", self._step_started)

    def forward(self, t, y):
        x = y[0] if isinstance(y, tuple) else y
        tv = time_vector(0.0, x) + t.clamp(self.lo, self.hi).to(x.dtype)
        return self.fn(y, tv)

    def _report(self, t: float, y) -> None:
        x = y[0] if isinstance(y, tuple) else y
        self.callback(StepInfo(step=self.accepted - 1, t=t, x=x, x_mean=x))

    def _step_started(self, t0, y0, dt):
        if self.accepted > 0:
            self._report(float(t0), y0)
        self.accepted += 1

    def finish(self, t_end: float, y) -> None:
        if self.callback is not None and self.accepted > 0:
            self._report(t_end, y)


class ProbabilityFlow(Solver):
    """Solves the probability-flow ODE ``dx/dt = f - g^2 s / 2`` with ``torchdiffeq.odeint``.

    ``method`` is any torchdiffeq method: adaptive (``ADAPTIVE_METHODS``, steered by ``rtol`` and
    ``atol``) or fixed-grid (``FIXED_METHODS``, taking ``steps`` steps on the grid that
    ``schedule`` names, as the stepping solvers do, by default the SDE's choice, uniform in ``t``
    unless it recommends another; an explicit decreasing grid of sampling times is run backwards
    for the likelihood). Adaptive steps are clipped so that no step passes the end time.
    ``convergence_order`` is the method's order.
    """

    default_schedule = "time_uniform"

    def __init__(
        self,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        steps: int | None = None,
        options: dict | None = None,
        schedule=None,
    ):
        self.method = check_choice("method", method, {**ADAPTIVE_METHODS, **FIXED_METHODS})
        self.schedule = check_schedule(schedule)
        if isinstance(self.schedule, torch.Tensor):
            if method not in FIXED_METHODS:
                raise ArgumentValueError(
                    "schedule",
                    schedule,
                    f"an explicit schedule is only for fixed-grid methods {sorted(FIXED_METHODS)}",
                )
            n = self.schedule.numel() - 1
            if steps is not None and steps != n:
                raise ArgumentValueError(
                    "steps", steps, f"steps={steps} but the explicit schedule has {n + 1} times ({n} steps)"
                )
            steps = n
        elif schedule not in (None, "time_uniform") and method not in FIXED_METHODS:
            raise ArgumentValueError(
                "schedule",
                schedule,
                f"schedule={schedule!r} is only for fixed-grid methods {sorted(FIXED_METHODS)}; "
                f"{method!r} is adaptive and chooses its own steps",
            )
        self.rtol = check_positive("rtol", rtol)
        self.atol = check_positive("atol", atol)
        if method in FIXED_METHODS:
            if steps is None:
                raise ArgumentValueError(
                    "steps", steps, f"steps is required for the fixed-grid method {method!r}, got None"
                )
            steps = check_int("steps", steps, low=1)
        elif steps is not None:
            raise ArgumentValueError(
                "steps",
                steps,
                f"steps={steps!r} is only for fixed-grid methods {sorted(FIXED_METHODS)}; "
                f"{method!r} is adaptive and is steered by rtol and atol",
            )
        self.steps = steps
        self.options = dict(options or {})
        self.convergence_order = float({**ADAPTIVE_METHODS, **FIXED_METHODS}[method])

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS

    def nfe(self, steps: int) -> int | None:
        """``steps`` times the stages of a fixed-grid method; ``None`` for an adaptive one, whose
        evaluations depend on the field (``sg.sample(..., return_result=True).nfe`` counts them)."""
        return None if self.adaptive else steps * FIXED_STAGES[self.method]

    def grid(self, sde, t_start: float, t_end: float) -> torch.Tensor | None:
        """The fixed grid from ``t_start`` to ``t_end`` (float64), or ``None`` for adaptive methods."""
        if self.adaptive:
            return None
        if not isinstance(self.schedule, torch.Tensor):
            return time_grid(sde, resolve_schedule(sde, self), self.steps, t_start, t_end)
        grid = time_grid(sde, self.schedule, self.steps, max(t_start, t_end), min(t_start, t_end))
        return grid if t_start >= t_end else grid.flip(0)

    def integrate(self, fn, y0, t_start: float, t_end: float, callback=None, sde=None):
        """Integrate ``dy/dt = fn(y, t_vec)`` from ``t_start`` to ``t_end``; ``y0`` a tensor or a
        tuple of tensors. Returns ``y`` at ``t_end``. ``sde`` is needed by the schedules defined
        through its noise level (``"log_snr"``, ``"edm"``)."""
        from torchdiffeq import odeint

        x = y0[0] if isinstance(y0, tuple) else y0
        lo, hi = min(t_start, t_end), max(t_start, t_end)
        func = Dynamics(fn, lo, hi, callback, fixed_grid=not self.adaptive)
        options = dict(self.options)
        if self.adaptive:
            t = torch.tensor([t_start, t_end], dtype=x.dtype, device=x.device)
            options.setdefault("step_t", torch.tensor([t_end], dtype=x.dtype, device=x.device))
        else:
            t = self.grid(sde, t_start, t_end).to(dtype=x.dtype, device=x.device)
        ys = odeint(func, y0, t, rtol=self.rtol, atol=self.atol, method=self.method, options=options)
        out = tuple(y[-1] for y in ys) if isinstance(ys, tuple) else ys[-1]
        func.finish(t_end, out)
        return out

    def solve(self, sde, score_fn, x, t_start, t_end, *, generator=None, callback=None):
        ode = sde.probability_flow(score_fn)
        with torch.no_grad():
            x = self.integrate(lambda y, tv: ode.drift(y, tv), x, t_start, t_end, callback, sde=sde)
        return x, x

    def __repr__(self) -> str:
        extra = f", steps={self.steps}" if self.steps is not None else ""
        if self.schedule is not None:
            extra += f", schedule={self.schedule!r}"
        return f"ProbabilityFlow(method={self.method!r}, rtol={self.rtol}, atol={self.atol}{extra})"
