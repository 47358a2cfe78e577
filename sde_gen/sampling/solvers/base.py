"""Solver interfaces. A solver maps x at ``t_start`` to ``t_end``; a stepping solver is a protocol
(``init``, ``step``, a frozen :class:`SolverState`) and the loop over it is written once."""

from __future__ import annotations

import abc
import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..._checks import ArgumentTypeError, ArgumentValueError, check_int
from ..noise import KeyedNoise
from .grids import check_schedule, resolve_schedule, time_grid

__all__ = ["Solver", "SteppingSolver", "StepOutput", "StepInfo", "SolverState", "noise_like"]


@dataclass(frozen=True, eq=False)
class StepOutput:
    """What :meth:`SteppingSolver.update` returns: the new ``x``, its noise-free part ``x_mean``,
    the denoised estimate ``E[x_0 | x_t]`` the step computed (``None`` if none), the solver's
    ``history`` for the next step (``None``: unchanged) and its ``cache`` (e.g. the kernel at the
    step's end, a :class:`~sde_gen.sampling.solvers.variables.GridPoint`)."""

    x: torch.Tensor
    x_mean: torch.Tensor
    denoised: torch.Tensor | None = None
    history: tuple | None = None
    cache: Any = None


@dataclass
class StepInfo:
    """What a ``callback`` receives after each step: the step index, the time reached, x there,
    and the step's denoised estimate (``None`` for solvers that compute none)."""

    step: int
    t: float
    x: torch.Tensor
    x_mean: torch.Tensor
    denoised: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class SolverState:
    """Everything a stepping solver carries between steps besides ``x``; made by
    :meth:`SteppingSolver.init` and by :meth:`SteppingSolver.step` only, never changed.

    - ``grid``: the times visited (float64, decreasing); the next step goes from ``t = grid[index]``
      to ``t_next = grid[index + 1]``; ``done`` once ``index`` reaches ``steps``;
    - ``x_mean``: the noise-free part of ``x`` after the last step (``x`` itself at ``init``): the
      reference code's sample "without the last noise";
    - ``denoised``: Tweedie's ``E[x_0 | x_t]`` that the last step computed, at that step's start
      (``None`` for solvers that compute none, and at ``init``); ``sample(denoise=True)`` instead
      evaluates it at the end time, one more score evaluation;
    - ``history``: the solver's memory (multistep methods: past denoiser values), a tuple;
    - ``cache``: what the solver keeps to save work (the kernel at ``t``); never changes a result;
    - ``draw``: the next draw number of a :class:`~sde_gen.KeyedNoise` (draw 0 is the prior's), so
      stepping twice from one state with the same ``KeyedNoise`` draws the same noise.
    """

    grid: torch.Tensor
    index: int = 0
    x_mean: torch.Tensor | None = None
    denoised: torch.Tensor | None = None
    history: tuple = ()
    cache: Any = None
    draw: int = 1

    @property
    def steps(self) -> int:
        return self.grid.numel() - 1

    @property
    def steps_left(self) -> int:
        """Steps after the next one (0 on the last step): lets a multistep method lower its order."""
        return self.steps - self.index - 1

    @property
    def done(self) -> bool:
        return self.index >= self.steps

    @property
    def t(self) -> float:
        """The time of ``x``: where the next step starts (``grid[index]``)."""
        return self.grid[self.index].item()

    @property
    def t_next(self) -> float:
        """Where the next step ends (``grid[index + 1]``)."""
        return self.grid[self.index + 1].item()


class Solver(abc.ABC):
    """Integrates the reverse dynamics of ``sde`` with ``score_fn`` from ``t_start`` to ``t_end``.

    What a solver can do is declared on its class (or instance):

    - ``convergence_order``: its (weak, for stochastic solvers) order of convergence; tests measure it;
    - ``stochastic``: whether a step draws noise (then it takes a ``generator``);
    - ``keeps_history``: whether a step depends on earlier steps (multistep methods), so that the
      states cannot be reordered (RePaint's jumps back up the grid need ``False``);
    - :meth:`nfe`: the score evaluations a solve of a given number of steps costs.
    """

    convergence_order: float
    stochastic: bool = False
    keeps_history: bool = False

    def nfe(self, steps: int) -> int | None:
        """Score evaluations of a solve over a grid of ``steps`` steps (``None``: not known ahead)."""
        return None

    @abc.abstractmethod
    def solve(
        self,
        sde,
        score_fn: Callable,
        x: torch.Tensor,
        t_start: float,
        t_end: float,
        *,
        generator: torch.Generator | None = None,
        callback: Callable[[StepInfo], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(x, x_mean)`` at ``t_end``: the state and its last noise-free part."""

    def __repr__(self) -> str:
        """The constructor call, read from the attributes named like its arguments."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in names if hasattr(self, k))
        return f"{type(self).__name__}({args})"


class SteppingSolver(Solver):
    """A solver made of steps on a time grid, with explicit state (diffrax style)::

        state = solver.init(sde, x, t_start, t_end)
        while not state.done:
            x, state = solver.step(sde, score_fn, x, state, generator=g)

    ``schedule`` gives the grid (:func:`~sde_gen.solvers.grids.time_grid`: ``"time_uniform"``,
    ``"time_quadratic"``, ``"log_snr"``, ``"edm"`` or an explicit decreasing tensor of times, in
    which case ``steps`` is its length minus one); ``None`` (the default) takes the grid the SDE
    recommends for this solver, ``sde.schedule_for(solver)``, which is the class's
    ``default_schedule`` unless the SDE names another. Subclasses implement :meth:`update`, the
    arithmetic of one step; :meth:`step` does the bookkeeping around it.
    """

    #: the fewest steps the method can take, and why (multistep methods may need more)
    min_steps: int = 1
    min_steps_why: str = ""
    #: the named grid used when neither the caller nor the SDE chooses one
    default_schedule: str = "time_uniform"

    def __init__(self, steps: int | None = None, schedule=None):
        self.schedule = check_schedule(schedule)
        if isinstance(self.schedule, torch.Tensor):
            n = self.schedule.numel() - 1
            if steps is not None and check_int("steps", steps, low=1) != n:
                raise ArgumentValueError(
                    "steps", steps, f"steps={steps} but the explicit schedule has {n + 1} times ({n} steps)"
                )
            steps = n
        if steps is None:
            raise ArgumentValueError(
                "steps", steps, f"{type(self).__name__} needs steps (or an explicit schedule), got None"
            )
        self.steps = check_int("steps", steps, low=self.min_steps, low_why=self.min_steps_why)

    def with_schedule(self, schedule) -> SteppingSolver:
        """A copy of this solver (same kind and settings) on ``schedule``: a name, an explicit grid
        with ``steps`` intervals (e.g. from :func:`~sde_gen.optimize_schedule`), or ``None``."""
        schedule = check_schedule(schedule)
        if isinstance(schedule, torch.Tensor) and schedule.numel() - 1 != self.steps:
            n = schedule.numel() - 1
            raise ArgumentValueError(
                "schedule",
                schedule,
                f"the grid has {n} steps but {type(self).__name__} takes steps={self.steps}",
            )
        new = copy.copy(self)
        new.schedule = schedule
        return new

    def grid(self, sde, t_start: float, t_end: float) -> torch.Tensor:
        """The times this solver visits from ``t_start`` to ``t_end`` (float64, ``steps + 1``)."""
        return time_grid(sde, resolve_schedule(sde, self), self.steps, t_start, t_end)

    def nfe(self, steps: int) -> int:
        """One score evaluation per step (subclasses that take more say so)."""
        return steps

    def init(self, sde, x: torch.Tensor, t_start: float, t_end: float) -> SolverState:
        """The state before the first step from ``t_start`` to ``t_end`` (the grid is made here)."""
        return SolverState(self.grid(sde, t_start, t_end), x_mean=x)

    def step(self, sde, score_fn: Callable, x: torch.Tensor, state: SolverState, *, generator=None):
        """One step from ``state.t`` to ``state.t_next``: returns ``(x, new_state)`` and leaves
        ``state`` as it was. ``generator``: a ``torch.Generator`` (advanced as it is drawn from),
        a :class:`~sde_gen.KeyedNoise` (used at ``state.draw``, itself left unchanged) or ``None``."""
        if not isinstance(state, SolverState):
            raise ArgumentTypeError(
                "state",
                state,
                f"state must be a SolverState from solver.init(...), got {type(state).__name__}",
            )
        if state.done:
            raise ArgumentValueError(
                "state", state, f"state is done: all {state.steps} steps are taken (index {state.index})"
            )
        noise = generator.at(state.draw) if isinstance(generator, KeyedNoise) else generator
        out = self.update(sde, score_fn, x, state, generator=noise)
        new = replace(
            state,
            index=state.index + 1,
            x_mean=out.x_mean,
            denoised=out.denoised,
            history=state.history if out.history is None else out.history,
            cache=out.cache,
            draw=noise.draw if isinstance(noise, KeyedNoise) else state.draw,
        )
        return out.x, new

    @abc.abstractmethod
    def update(
        self, sde, score_fn: Callable, x: torch.Tensor, state: SolverState, *, generator=None
    ) -> StepOutput:
        """The arithmetic of one step from ``state.t`` to ``state.t_next < state.t``."""

    def solve(self, sde, score_fn, x, t_start, t_end, *, generator=None, callback=None):
        state = self.init(sde, x, t_start, t_end)
        while not state.done:
            x, state = self.step(sde, score_fn, x, state, generator=generator)
            if callback is not None:
                info = StepInfo(state.index - 1, state.t, x, state.x_mean, state.denoised)
                callback(info)
        return x, state.x_mean


def noise_like(x: torch.Tensor, generator: torch.Generator | KeyedNoise | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator``: a ``torch.Generator``
    (``None``: torch's global one) or a :class:`~sde_gen.noise.KeyedNoise`, whose noise for each
    row depends on the sample's index and the draw number, not on the batch."""
    if isinstance(generator, KeyedNoise):
        return generator.normal_like(x)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
