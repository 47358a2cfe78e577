"""The reverse-time SDE and the probability-flow ODE, derived from any SDE and score function.

Both are written in forward-time form: a solver integrates them from ``t = T`` down to
``t = eps`` with negative ``dt``. Nothing here looks at the type of the SDE.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._utils import batch_broadcast

__all__ = ["ReverseSDE", "ProbabilityFlowODE"]


class ReverseSDE:
    """``dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dW_bar``, run from T to 0 (Song et al. Eq. 6)."""

    def __init__(self, sde, score_fn: Callable):
        self.sde = sde
        self.score_fn = score_fn

    @property
    def T(self) -> float:
        return self.sde.T

    def drift(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor | None = None):
        """Drift of the reverse SDE; pass ``score`` to reuse a score already evaluated at (x, t)."""
        s = self.score_fn(x, t) if score is None else score
        g = batch_broadcast(self.sde.diffusion(t), x)
        return self.sde.drift(x, t) - g**2 * s

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self.sde.diffusion(t)


class ProbabilityFlowODE:
    """``dx/dt = f(x, t) - g(t)^2 s(x, t) / 2``, whose marginals equal the SDE's (Song et al. Eq. 13)."""

    def __init__(self, sde, score_fn: Callable):
        self.sde = sde
        self.score_fn = score_fn

    @property
    def T(self) -> float:
        return self.sde.T

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g = batch_broadcast(self.sde.diffusion(t), x)
        return self.sde.drift(x, t) - 0.5 * g**2 * self.score_fn(x, t)
