"""Solver interfaces. A solver maps x at ``t_start`` to ``t_end``; stepping solvers share one loop."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..._checks import check_int
from ..noise import KeyedNoise
from .grids import check_schedule, time_grid

__all__ = ["Solver", "SteppingSolver", "StepOutput", "StepInfo", "SolverState"]


@dataclass
class StepOutput:
    """What one step returns: the new ``x``, its noise-free part ``x_mean``, the denoised estimate
    ``E[x_0 | x_t]`` the step computed (``None`` if it computed none) and anything to carry to the
    next step (``SolverState.carry``)."""

    x: torch.Tensor
    x_mean: torch.Tensor
    state: Any = None
    denoised: torch.Tensor | None = None


@dataclass
class StepInfo:
    """What a ``callback`` receives after each step: the step index, the time reached, x there,
    and the step's denoised estimate (``None`` for solvers that compute none)."""

    step: int
    t: float
    x: torch.Tensor
    x_mean: torch.Tensor
    denoised: torch.Tensor | None = None


@dataclass
class SolverState:
    """What a stepping solver sees besides ``x``: the whole grid, the index of the step being taken
    (from ``grid[index]`` to ``grid[index + 1]``), a ``history`` that the solver owns (multistep
    methods keep their past denoiser outputs there; it lives for one ``solve``) and ``carry``, the
    ``state`` that the previous step returned."""

    grid: torch.Tensor
    index: int = 0
    history: list = field(default_factory=list)
    carry: Any = None

    @property
    def steps(self) -> int:
        return self.grid.numel() - 1

    @property
    def steps_left(self) -> int:
        """Steps after this one (0 on the last step): lets a multistep method lower its order."""
        return self.steps - self.index - 1


class Solver(abc.ABC):
    """Integrates the reverse dynamics of ``sde`` with ``score_fn`` from ``t_start`` to ``t_end``.

    ``order`` is the solver's (weak, for stochastic solvers) order of convergence; tests measure it.
    """

    order: float

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


class SteppingSolver(Solver):
    """A solver made of steps on a time grid; the time loop is written once here.

    ``schedule`` gives the grid (:func:`~sde_gen.solvers.grids.time_grid`: ``"time_uniform"``,
    ``"time_quadratic"``, ``"log_snr"``, ``"edm"`` or an explicit decreasing tensor of times, in
    which case ``steps`` is its length minus one). Subclasses implement :meth:`step`, which receives
    a :class:`SolverState`.
    """

    #: the fewest steps the method can take, and why (multistep methods may need more)
    min_steps: int = 1
    min_steps_why: str = ""

    def __init__(self, steps: int | None = None, schedule="time_uniform"):
        self.schedule = check_schedule(schedule)
        if not isinstance(self.schedule, str):
            n = self.schedule.numel() - 1
            if steps is not None and check_int("steps", steps, low=1) != n:
                raise ValueError(f"steps={steps} but the explicit schedule has {n + 1} times ({n} steps)")
            steps = n
        if steps is None:
            raise ValueError(f"{type(self).__name__} needs steps (or an explicit schedule), got None")
        self.steps = check_int("steps", steps, low=self.min_steps, low_why=self.min_steps_why)

    def grid(self, sde, t_start: float, t_end: float) -> torch.Tensor:
        """The times this solver visits from ``t_start`` to ``t_end`` (float64, ``steps + 1``)."""
        return time_grid(sde, self.schedule, self.steps, t_start, t_end)

    def time_grid(self, t_start: float, t_end: float) -> list[float]:
        """``steps + 1`` uniformly spaced times from ``t_start`` to ``t_end`` (Python floats)."""
        return time_grid(None, "time_uniform", self.steps, t_start, t_end).tolist()

    @abc.abstractmethod
    def step(
        self,
        sde,
        score_fn: Callable,
        x: torch.Tensor,
        t: float,
        t_next: float,
        *,
        generator: torch.Generator | None = None,
        state: SolverState | None = None,
    ) -> StepOutput:
        """One step from time ``t`` to ``t_next`` (``t_next < t`` when sampling)."""

    def solve(self, sde, score_fn, x, t_start, t_end, *, generator=None, callback=None):
        grid = self.grid(sde, t_start, t_end)
        times = grid.tolist()
        x_mean, state = x, SolverState(grid)
        for i, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
            state.index = i
            out = self.step(sde, score_fn, x, t, t_next, generator=generator, state=state)
            x, x_mean, state.carry = out.x, out.x_mean, out.state
            if callback is not None:
                callback(StepInfo(step=i, t=t_next, x=x, x_mean=x_mean, denoised=out.denoised))
        return x, x_mean

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def noise_like(x: torch.Tensor, generator: torch.Generator | KeyedNoise | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator``: a ``torch.Generator``
    (``None``: torch's global one) or a :class:`~sde_gen.noise.KeyedNoise`, whose noise for each
    row depends on the sample's index and the draw number, not on the batch."""
    if isinstance(generator, KeyedNoise):
        return generator.normal_like(x)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
