"""Sequential Monte Carlo posterior sampling: MCGdiff (Cardoso, Janati, Le Corff & Moulines 2023,
"Monte Carlo guided diffusion for Bayesian linear inverse problems", Algorithm 1), written for any
SDE with a Gaussian kernel in the variables ``xhat = (x - shift) / scale``, where every such SDE
is the VE process ``xhat_t = x_0 + sigma_t z`` (``sigma_t`` = :meth:`~sde_gen.SDE.sigma_hat`).

Rotate so that the measurement reads coordinate-wise: with ``A A^T = c I``, the coordinates
``u = A x / sqrt(c)`` are orthonormal and ``ybar = y / sqrt(c) = u(x_0) + sigma_y e`` with
``sigma_y = noise_std / sqrt(c)``. Along the forward process, ``u(xhat_t)`` is ``ybar`` plus noise
of variance ``|sigma_t^2 - sigma_y^2|`` (``ybar`` is a noisier version of ``u(x_0)`` when
``sigma_t < sigma_y``), so the intermediate targets are

    pi_k(xhat) ∝ p_k(xhat) g_k(u(xhat)),    g_k(u) = N(u; ybar, |sigma_k^2 - sigma_y^2| I),

with ``g = 1`` at ``T`` and, at the last time, ``g`` the likelihood itself (``sigma_y > sigma_eps``)
or a Gaussian of width ``sigma_eps`` around ``ybar`` (noiseless). The model's backward kernel is
Gaussian, ``N(m(xhat_{k+1}), v_k I)`` (DDIM with ``eta > 0``, or Euler-Maruyama), so the locally
optimal proposal ``∝ N(m, v) g_k`` is Gaussian and its normaliser is known:

    u_k ~ N((c_k u(m) + v_k ybar) / (v_k + c_k), v_k c_k / (v_k + c_k)),  the rest ~ N(m, v_k),
    weight w_k = N(u(m); ybar, (v_k + c_k) I) / g_{k+1}(u(xhat_{k+1}))    (depends on xhat_{k+1} only).

This is a fully adapted auxiliary particle filter: weight, resample when the effective sample size
drops below ``resample_threshold * K``, then propagate. The product of the weights telescopes to
``g_0`` at the end, so the weighted particles target the model's path measure tilted by ``g_0``:
as ``K`` grows the output converges to the posterior of the model (Chopin & Papaspiliopoulos
2020, Ch. 11), exact up to the solver's discretisation and ``sigma_eps``.
"""

from __future__ import annotations

import math

import torch

from ..._checks import ArgumentTypeError, ArgumentValueError, check_int, check_real
from ..._utils import time_vector
from ..solvers.base import SteppingSolver, noise_like
from ..solvers.euler_maruyama import EulerMaruyama
from ..solvers.exponential import DDIM
from ..solvers.variables import denoise, from_hat, kernel_at, to_hat

__all__ = ["smc"]


def _check_solver(solver: SteppingSolver) -> None:
    ok = isinstance(solver, EulerMaruyama) or (isinstance(solver, DDIM) and solver.eta > 0)
    if not ok:
        raise ArgumentTypeError(
            "solver",
            solver,
            "method='smc' needs a Gaussian backward kernel: DDIM with eta > 0 (eta=1.0 is ancestral "
            f"sampling) or EulerMaruyama; got {solver!r}",
        )


def backward_kernel(sde, solver, score, x, t: float, t_next: float, sig: float, sig_next: float):
    """Mean (in ``xhat`` at ``t_next``, shaped like ``x``) and variance (a float) of the solver's
    Gaussian step from ``x`` at ``t`` (one score evaluation)."""
    k, k_next = kernel_at(sde, t, x), kernel_at(sde, t_next, x)
    if isinstance(solver, DDIM):  # DDIM's step (exponential.py) in xhat
        d = denoise(score, x, t, k)
        frac = 1.0 - (sig_next / sig) ** 2
        c2 = (solver.eta * sig_next) ** 2 * frac
        return d + math.sqrt(sig_next**2 - c2) / sig * (to_hat(x, k) - d), c2
    tv, dt = time_vector(t, x), t_next - t  # Euler-Maruyama: x_mean + g sqrt(|dt|) z
    x_mean = x + sde.reverse(score).drift(x, tv) * dt
    g2 = float(sde.diffusion(tv)[0]) ** 2 * abs(dt)
    return to_hat(x_mean, k_next), g2 / float(k_next.scale.reshape(-1)[0]) ** 2


def _log_normal(r2: torch.Tensor, var: float, dim: int) -> torch.Tensor:
    """``log N(u; ybar, var I)`` in ``dim`` dimensions from ``r2 = ||u - ybar||^2``."""
    return -0.5 * (r2 / var + dim * math.log(2 * math.pi * var))


def _systematic(logw: torch.Tensor, generator) -> torch.Tensor:
    """Systematic resampling per row of ``logw`` (B, K): indices (B, K)."""
    B, K = logw.shape
    cdf = torch.softmax(logw, dim=1).cumsum(1)
    cdf[:, -1] = 1.0
    u0 = torch.rand(B, 1, generator=generator, dtype=logw.dtype, device=logw.device)
    pos = (u0 + torch.arange(K, dtype=logw.dtype, device=logw.device)) / K
    return torch.searchsorted(cdf, pos).clamp_max(K - 1)


def smc(prob, solver: SteppingSolver, *, num_particles: int, resample_threshold: float):
    """MCGdiff (module docstring): returns ``(x, particles, weights)``."""
    _check_solver(solver)
    K = check_int("num_particles", num_particles, low=1)
    thresh = check_real("resample_threshold", resample_threshold, low=0.0)
    if thresh > 1.0:
        raise ArgumentValueError(
            "resample_threshold",
            resample_threshold,
            f"resample_threshold must be in [0, 1] (a fraction of num_particles), got {thresh!r}",
        )
    op, sde = prob.op, prob.sde
    if op.gram_scale is None:
        raise ArgumentValueError(
            "operator",
            op,
            f"method='smc' needs an operator with A A^T = c I (set gram_scale = c); "
            f"{op!r} has gram_scale=None",
        )
    rc = math.sqrt(op.gram_scale)
    B, dim = prob.batch, op.obs_dim(prob.x_shape)
    ybar = prob.y.repeat_interleave(K, 0) / rc
    u_of = lambda xhat: op(xhat) / rc
    sq = lambda u: op.y_vector(u - ybar).pow(2).sum(1)
    sig_y2 = (prob.noise_std / rc) ** 2
    x = prob.prior(B * K)
    grid = solver.init(sde, x, sde.T, prob.eps).grid  # the solver's grid; its kernel, not its step
    times, sigs = grid.tolist(), sde.sigma_hat(grid).tolist()
    pot = [None] + [abs(s * s - sig_y2) for s in sigs[1:]]  # variance of g_k; None: g = 1 at T
    logw = x.new_zeros(B, K)
    rows = torch.arange(B, device=x.device)[:, None] * K
    with torch.no_grad():
        for i, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
            m, v = backward_kernel(sde, solver, prob.score, x, t, t_next, sigs[i], sigs[i + 1])
            c = pot[i + 1]
            # weight: N(u(m); ybar, v + c) / g_k(u(xhat_k)), then resample on a low ESS
            inc = _log_normal(sq(u_of(m)), v + c, dim)
            if pot[i]:  # g = 1 at T; a zero width (sigma_k = sigma_y) is the same delta for all
                inc = inc - _log_normal(sq(u_of(to_hat(x, kernel_at(sde, t, x)))), pot[i], dim)
            logw = logw + inc.reshape(B, K)
            w = torch.softmax(logw, dim=1)
            ess = 1.0 / w.pow(2).sum(1)
            redo = ess < thresh * K
            if bool(redo.any()):
                idx = torch.where(
                    redo[:, None], _systematic(logw, prob.generator), torch.arange(K, device=x.device)
                )
                flat = (rows + idx).reshape(-1)
                m = m[flat]
                logw = torch.where(redo[:, None], torch.zeros_like(logw), logw)
            # propagate with the locally optimal proposal N(m, v) g_k
            z = noise_like(m, prob.generator)
            xhat = m + math.sqrt(v) * z
            u_mean = (c * u_of(m) + v * ybar) / (v + c)
            u_new = u_mean + math.sqrt(v * c / (v + c)) * u_of(z)
            xhat = xhat - op.project(xhat) + op.T(u_new) / rc
            x = from_hat(xhat, kernel_at(sde, t_next, xhat))
    w = torch.softmax(logw, dim=1)
    pick = torch.multinomial(w, 1, generator=prob.generator)  # (B, 1)
    particles = x.reshape(B, K, *prob.x_shape)
    out = particles[torch.arange(B, device=x.device), pick[:, 0]]
    return prob.finish(out), particles, w
