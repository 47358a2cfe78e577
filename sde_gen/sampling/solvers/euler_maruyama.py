"""Euler-Maruyama on the reverse-time SDE (Song et al. 2021, Eq. 6; Kloeden & Platen, weak order 1)."""

from __future__ import annotations

import math

from ..._utils import batch_broadcast, time_vector
from .base import StepOutput, SteppingSolver, noise_like

__all__ = ["EulerMaruyama", "euler_maruyama_step"]


def euler_maruyama_step(sde, score_fn, x, t: float, t_next: float, generator=None):
    """``x_mean = x + [f - g^2 s] dt``, ``x = x_mean + g sqrt(|dt|) z`` with ``dt = t_next - t``.

    Returns ``(x, x_mean)``.
    """
    tv = time_vector(t, x)
    dt = t_next - t
    x_mean = x + sde.reverse(score_fn).drift(x, tv) * dt
    g = batch_broadcast(sde.diffusion(tv), x)
    return x_mean + g * math.sqrt(abs(dt)) * noise_like(x, generator), x_mean


class EulerMaruyama(SteppingSolver):
    """Euler-Maruyama on the reverse SDE with ``steps`` steps on the grid ``schedule`` names
    (default the SDE's choice, uniform in t unless it recommends another;
    :class:`~sde_gen.SteppingSolver`): ``steps`` score evaluations.

    Weak order 1, strong order 1/2 (additive noise: strong order 1).
    """

    convergence_order = 1.0
    stochastic = True

    def update(self, sde, score_fn, x, state, *, generator=None):
        x, x_mean = euler_maruyama_step(sde, score_fn, x, state.t, state.t_next, generator)
        return StepOutput(x, x_mean)
