"""EDM's Heun sampler (Karras et al. 2022, Algorithms 1 and 2) for every SDE with a Gaussian kernel.

With the kernel ``x_t = scale x_0 + shift + std z``, ``xhat = (x - shift) / scale`` and
``sigma = sigma_hat(t) = std / scale``, the probability-flow ODE of any such SDE is EDM's
``d xhat / d sigma = (xhat - D(x, t)) / sigma`` with Tweedie's denoiser ``D = E[x_0 | x_t]``, and the
forward transition in ``xhat`` is ``xhat_s = xhat_t + sqrt(sigma_s^2 - sigma_t^2) z`` (docs/maths.md).
The algorithm is written once in these variables and mapped back with ``x = scale xhat + shift``.
"""

from __future__ import annotations

import math

import torch

from ..._checks import ArgumentTypeError, ArgumentValueError, check_int, check_real
from .base import StepOutput, SteppingSolver, noise_like
from .grids import check_schedule, resolve_schedule, time_grid
from .variables import GridPoint

__all__ = ["Heun"]


class Heun(SteppingSolver):
    """EDM's second-order Heun sampler: Algorithm 1 (``churn=0``, deterministic) and Algorithm 2
    (stochastic churn) of Karras et al. (2022), for any SDE with a Gaussian kernel.

    ``steps`` is the number of score evaluations. The grid has ``n = ceil(steps / 2)`` intervals
    (``schedule``, default the SDE's choice, ``sde.schedule_for``: ``"edm"`` unless the SDE
    recommends another); every interval is a Heun step (2 evaluations), except that the
    last one is an Euler step (1 evaluation) when ``steps`` is odd, as EDM's last step to
    ``sigma = 0`` is. With an explicit schedule of ``n + 1`` times, ``steps`` is ``2n`` (the
    default) or ``2n - 1``.

    Churn (Algorithm 2, lines 5-6): at a step from ``sigma_i`` in ``[s_tmin, s_tmax]`` the noise is
    first raised to ``sigma_i (1 + gamma)``, ``gamma = min(churn / n, sqrt(2) - 1)``, clipped to
    ``sigma_hat(T)``, by adding ``s_noise sqrt(sigma_up^2 - sigma_i^2) z`` to ``xhat``; the time of
    that noise level is ``sde.t_from_sigma_hat``. ``churn=0`` is Algorithm 1, of order 2.
    """

    convergence_order = 2.0
    default_schedule = "edm"

    def __init__(
        self,
        steps: int | None = None,
        churn: float = 0.0,
        schedule=None,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
    ):
        schedule = check_schedule(schedule)
        if isinstance(schedule, torch.Tensor):
            n = schedule.numel() - 1
            if steps is None:
                steps = 2 * n
            elif check_int("steps", steps, low=1) not in (2 * n - 1, 2 * n):
                raise ArgumentValueError(
                    "steps",
                    steps,
                    f"steps={steps} score evaluations do not fit the explicit schedule of {n} intervals: "
                    f"Heun takes 2 * {n} = {2 * n} (or {2 * n - 1}, the last step Euler)",
                )
        if steps is None:
            raise ArgumentValueError(
                "steps", steps, "Heun needs steps (the number of score evaluations) or an explicit schedule"
            )
        self.schedule = schedule
        self.steps = check_int("steps", steps, low=1)
        self.churn = check_real("churn", churn, low=0.0)
        self.s_tmin = check_real("s_tmin", s_tmin, low=0.0)
        if isinstance(s_tmax, bool) or not isinstance(s_tmax, (int, float)) or math.isnan(s_tmax):
            raise ArgumentTypeError(
                "s_tmax", s_tmax, f"s_tmax must be a real number (inf allowed), got {s_tmax!r}"
            )
        if s_tmax < self.s_tmin:
            raise ArgumentValueError(
                "s_tmax", s_tmax, f"s_tmax must be >= s_tmin={self.s_tmin}, got {s_tmax!r}"
            )
        self.s_tmax = float(s_tmax)
        s_noise = check_real("s_noise", s_noise)
        if s_noise <= 0:
            raise ArgumentValueError(
                "s_noise", s_noise, f"s_noise must be > 0 (the scale of the churn noise), got {s_noise!r}"
            )
        self.s_noise = s_noise

    @property
    def intervals(self) -> int:
        """``ceil(steps / 2)``: the number of intervals of the grid."""
        return (self.steps + 1) // 2

    @property
    def stochastic(self) -> bool:
        return self.churn > 0.0

    def grid(self, sde, t_start: float, t_end: float) -> torch.Tensor:
        return time_grid(sde, resolve_schedule(sde, self), self.intervals, t_start, t_end)

    def nfe(self, steps: int) -> int:
        """2 per interval, less 1 for the Euler last step when ``self.steps`` is odd."""
        return 2 * steps - self.steps % 2

    def update(self, sde, score_fn, x, state, *, generator=None):
        """One interval: 2 score evaluations (1 on an Euler last step). Reports the denoised
        estimate at the (churned) start of the step."""
        n = state.steps
        euler = state.steps_left == 0 and self.steps % 2 == 1
        cur = GridPoint.at(sde, state.t, x, state.cache)
        xhat = cur.to_hat(x)
        # Algorithm 2, lines 4-6: raise the noise from sigma_i to sigma_up by adding fresh noise.
        gamma = min(self.churn / n, math.sqrt(2.0) - 1.0) if self.s_tmin <= cur.sigma <= self.s_tmax else 0.0
        if gamma > 0:
            sigma_max = float(sde.sigma_hat(torch.tensor([sde.T], dtype=torch.float64)))
            sigma_up = min(cur.sigma * (1.0 + gamma), sigma_max)
            if sigma_up > cur.sigma:
                t_up = float(sde.t_from_sigma_hat(torch.tensor([sigma_up], dtype=torch.float64)))
                xhat = xhat + self.s_noise * math.sqrt(sigma_up**2 - cur.sigma**2) * noise_like(x, generator)
                cur = GridPoint(sde, t_up, x, sigma=sigma_up)
        nxt = GridPoint(sde, state.t_next, x)
        h = nxt.sigma - cur.sigma
        # Lines 7-8: Euler step on d xhat / d sigma = (xhat - D) / sigma.
        denoised = cur.denoise(score_fn, cur.from_hat(xhat))
        d = (xhat - denoised) / cur.sigma
        xhat_next = xhat + h * d
        if not euler:
            # Lines 9-11: the trapezoidal correction with the slope at the end of the step.
            d_next = (xhat_next - nxt.denoise(score_fn, nxt.from_hat(xhat_next))) / nxt.sigma
            xhat_next = xhat + h * 0.5 * (d + d_next)
        x_next = nxt.from_hat(xhat_next)
        return StepOutput(x_next, x_next, denoised=denoised, cache=nxt)
