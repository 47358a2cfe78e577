"""Solver interfaces. A solver maps x at ``t_start`` to ``t_end``; stepping solvers share one loop."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .._checks import check_int

__all__ = ["Solver", "SteppingSolver", "StepOutput", "StepInfo"]


@dataclass
class StepOutput:
    """What one step returns: the new ``x``, its noise-free part ``x_mean`` and solver state
    carried to the next step (for multistep methods; ``None`` for one-step methods)."""

    x: torch.Tensor
    x_mean: torch.Tensor
    state: Any = None


@dataclass
class StepInfo:
    """What a ``callback`` receives after each step: the step index, the time reached, x there."""

    step: int
    t: float
    x: torch.Tensor
    x_mean: torch.Tensor


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
    """A solver made of ``steps`` steps on a uniform time grid; the time loop is written once here.

    Subclasses implement :meth:`step`; state returned by one step is passed to the next.
    """

    def __init__(self, steps: int):
        self.steps = check_int("steps", steps, low=1)

    def time_grid(self, t_start: float, t_end: float) -> list[float]:
        """``steps + 1`` uniformly spaced times from ``t_start`` to ``t_end`` (Python floats)."""
        n = self.steps
        return [t_start + (t_end - t_start) * i / n for i in range(n)] + [t_end]

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
        state: Any = None,
    ) -> StepOutput:
        """One step from time ``t`` to ``t_next`` (``t_next < t`` when sampling)."""

    def solve(self, sde, score_fn, x, t_start, t_end, *, generator=None, callback=None):
        times = self.time_grid(t_start, t_end)
        x_mean, state = x, None
        for i, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
            out = self.step(sde, score_fn, x, t, t_next, generator=generator, state=state)
            x, x_mean, state = out.x, out.x_mean, out.state
            if callback is not None:
                callback(StepInfo(step=i, t=t_next, x=x, x_mean=x_mean))
        return x, x_mean

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator``."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
