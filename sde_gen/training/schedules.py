"""Learning-rate schedules: ``schedule(step) -> factor`` multiplying each parameter group's rate."""

from __future__ import annotations

import math

from .._checks import check_int

__all__ = ["WarmupCosine"]


class WarmupCosine:
    """Linear warm-up over ``warmup`` steps, then constant, or, with ``decay_steps``, a cosine
    decay to 0 at step ``decay_steps`` (Loshchilov & Hutter 2017) and 0 after:

        factor(s) = (s + 1) / warmup                                  for s < warmup
                  = (1 + cos(pi (s - warmup) / (decay_steps - warmup))) / 2   after.

    ``cosine=False``, ``decay_steps=None`` or ``decay_steps <= warmup`` (a run too short to
    decay) keep the rate constant after the warm-up.
    """

    def __init__(self, warmup: int = 0, decay_steps: int | None = None, *, cosine: bool = True):
        self.warmup = check_int("warmup", warmup, low=0)
        self.decay_steps = None if decay_steps is None else check_int("decay_steps", decay_steps, low=1)
        if not cosine or (self.decay_steps is not None and self.decay_steps <= self.warmup):
            self.decay_steps = None

    def __repr__(self) -> str:
        return f"WarmupCosine(warmup={self.warmup}, decay_steps={self.decay_steps})"

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.decay_steps is None:
            return 1.0
        frac = min(1.0, (step - self.warmup) / (self.decay_steps - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * frac))
