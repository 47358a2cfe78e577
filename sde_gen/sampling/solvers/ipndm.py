"""iPNDM: Adams-Bashforth on EDM's ODE with a lower-order warm start (Zhang & Chen 2022, "Fast
sampling of diffusion models with exponential integrator", Sec. 5 and App.; Zhou et al. 2023), for
every SDE with a Gaussian kernel.

In EDM's variables ``xhat = (x - shift) / scale``, ``sigma = sigma_hat(t)`` (see :mod:`.heun`) the
probability-flow ODE is ``d xhat / d sigma = eps(xhat, sigma) = (xhat - D) / sigma``; iPNDM steps it
with the k-step Adams-Bashforth formula ``xhat_{i+1} = xhat_i + h_i sum_j b_j eps_{i-j}``.
"""

from __future__ import annotations

import numpy as np

from ..._checks import check_choice
from .base import StepOutput, SteppingSolver
from .variables import GridPoint

__all__ = ["IPNDM", "IPNDM_COEFFICIENTS"]

#: fixed Adams-Bashforth coefficients of orders 1-4, newest slope first (iPNDM's, for equal steps)
IPNDM_COEFFICIENTS = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)

_GAUSS_X, _GAUSS_W = np.polynomial.legendre.leggauss(3)  # exact for polynomials of degree <= 5


def adams_bashforth_weights(nodes, s0: float, s1: float) -> list[float]:
    """``b_j`` with ``int_{s0}^{s1} p(s) ds = (s1 - s0) sum_j b_j p(nodes[j])`` for every polynomial
    ``p`` of degree ``< len(nodes)``: the integrals of the Lagrange basis over the step, divided by
    its length (variable-step Adams-Bashforth; on equal steps, the fixed coefficients)."""
    h = s1 - s0
    u = [(s - s0) / h for s in nodes]  # in units of the step: 0, -r1, -r2, ...
    q = 0.5 * (_GAUSS_X + 1.0)  # quadrature points on [0, 1]
    weights = []
    for j, uj in enumerate(u):
        basis = np.ones_like(q)
        for m, um in enumerate(u):
            if m != j:
                basis = basis * (q - um) / (uj - um)
        weights.append(float(0.5 * np.dot(_GAUSS_W, basis)))
    return weights


class IPNDM(SteppingSolver):
    """iPNDM (Zhang & Chen 2022): Adams-Bashforth on ``d xhat / d sigma = (xhat - D) / sigma``, with
    orders 1, 2, 3 on the first three steps and 4 from then on, ``steps`` steps on the grid
    ``schedule`` (default: the SDE's choice, ``sde.schedule_for``; ``"edm"`` unless the SDE
    recommends another): ``steps`` score evaluations, one per step.

    ``coefficients="fixed"`` uses iPNDM's constant coefficients (1), (3, -1)/2, (23, -16, 5)/12,
    (55, -59, 37, -9)/24, which are exact for equal steps only; ``"variable"`` integrates the
    interpolating polynomial of the past slopes over the actual, unequal steps in sigma.

    Order 2 for both. Fixed coefficients on a smoothly varying grid make a local error
    ``O(h (h_i - h_{i-1})) = O(h^3)``; with variable ones the warm start's Euler step is the
    ``O(h^2)`` term, but at ``sigma_hat(T)`` the slope hardly changes, so the measured slope is
    3.6-3.7 over 64-512 steps (tests/test_heun_ipndm.py). At 5-20 evaluations the fixed
    coefficients are the more accurate (2-3x on the edm grid), hence the default.
    """

    convergence_order = 2.0
    #: the Adams-Bashforth slopes of the last steps
    keeps_history = True

    #: the reference VP SDE's noise levels at uniform times (grids.py): measured within 1.5x of the
    #: noise floor at 10 evaluations on VP, sub-VP, VE, EDM's and a user's SDE (docs/samplers.md)
    default_schedule = "vp_uniform"

    def __init__(self, steps: int | None = None, schedule=None, coefficients: str = "fixed"):
        super().__init__(steps, schedule)
        self.coefficients = check_choice("coefficients", coefficients, ("fixed", "variable"))

    def update(self, sde, score_fn, x, state, *, generator=None):
        """One step: one score evaluation; the slopes live in ``state.history``."""
        cur, nxt = GridPoint.at(sde, state.t, x, state.cache), GridPoint(sde, state.t_next, x)
        xhat = cur.to_hat(x)
        denoised = cur.denoise(score_fn, x)
        history = (state.history + ((cur.sigma, (xhat - denoised) / cur.sigma),))[-4:]
        past = history[::-1]  # newest first
        if self.coefficients == "fixed":
            b = IPNDM_COEFFICIENTS[len(past) - 1]
        else:
            b = adams_bashforth_weights([s for s, _ in past], cur.sigma, nxt.sigma)
        slope = sum(bj * e for bj, (_, e) in zip(b, past, strict=True))
        x_next = nxt.from_hat(xhat + (nxt.sigma - cur.sigma) * slope)
        return StepOutput(x_next, x_next, denoised=denoised, history=history, cache=nxt)
