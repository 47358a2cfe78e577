"""Diffusion posterior sampling (Chung et al. 2022, "Diffusion Posterior Sampling for General Noisy
Inverse Problems", Algorithm 1), with any stepping solver for the unconditional step.

At each step from ``t_i`` to ``t_{i-1}``, with Tweedie's denoiser ``D(x_i) = E[x_0 | x_i]``:

    x'_{i-1} = solver step from x_i                        (Algorithm 1, lines 4-6: ancestral)
    x_{i-1}  = x'_{i-1} - zeta_i grad_{x_i} ||y - A D(x_i)||^2,   zeta_i = zeta / ||y - A D(x_i)||

(lines 7 and the step size of their Sec. 4 / App. C: ``zeta_i = zeta' / ||y - A x0_hat||``,
per sample). The update therefore equals ``2 zeta grad ||y - A D||``: the authors' code
(DPS2022/diffusion-posterior-sampling) subtracts ``scale * grad ||y - A D||``, so its ``scale``
is ``2 zeta`` here. The gradient goes through the score network (one backward pass per step);
the score at ``x_i`` is reused by the solver's own step, so a one-evaluation solver costs one
NFE per step.
"""

from __future__ import annotations

import torch

from ..._checks import ArgumentValueError, check_real
from ..._utils import time_vector
from ..solvers.base import SteppingSolver
from ..solvers.variables import kernel_at

__all__ = ["dps"]


class _Reuse:
    """The score function, returning the score already computed at ``(x, t)`` when asked again."""

    def __init__(self, score):
        self.score, self.key = score, None

    def __call__(self, x, t):
        if self.key is not None and x is self.key[0] and torch.equal(t, self.key[1]):
            return self.key[2]
        return self.score(x, t)


def dps(prob, solver: SteppingSolver, *, zeta: float) -> torch.Tensor:
    """Chung et al. 2022, Algorithm 1 (module docstring); ``zeta > 0``."""
    zeta = check_real("zeta", zeta, low=0.0)
    if zeta == 0.0:
        raise ArgumentValueError("zeta", zeta, "zeta must be > 0 (zeta = 0 is unconditional sampling)")
    sde, op = prob.sde, prob.op
    x = prob.prior(prob.batch)
    state, reuse = solver.init(sde, x, sde.T, prob.eps), _Reuse(prob.score)
    tiny = torch.finfo(x.dtype).tiny
    while not state.done:
        t = state.t
        tv = time_vector(t, x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            score = prob.score(xg, tv)
            d = kernel_at(sde, t, xg).tweedie(xg, score)
            sq = op.y_vector(op(d) - prob.y).pow(2).sum(1)  # ||y - A D(x_i)||^2 per sample
            loss = (sq / sq.detach().sqrt().clamp_min(tiny)).sum()  # zeta_i = zeta / ||y - A D||
            grad = torch.autograd.grad(loss, xg)[0]
        reuse.key = (x, tv, score.detach())
        with torch.no_grad():
            x_step, state = solver.step(sde, reuse, x, state, generator=prob.generator)
        x = (x_step - zeta * grad).detach()
    return prob.finish(x)
