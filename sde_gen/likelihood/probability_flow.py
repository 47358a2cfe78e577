"""Exact likelihoods through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

Along ``dx/dt = v(x, t)`` the log-density obeys ``d log p_t(x_t)/dt = -div v(x_t, t)``, so

    log p_eps(x) = log p_T(x_T) + int_eps^T div v(x_t, t) dt,

which is integrated jointly with ``x_t`` from ``eps`` to ``T``; ``p_T`` is replaced by the prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._checks import (
    ArgumentTypeError,
    ScoreCheck,
    check_choice,
    check_cond,
    check_eps,
    check_finite,
    check_int,
    check_tensor,
)
from .._utils import batch_broadcast, batch_sum, flat_dim
from ..sampling.solvers.ode import Dynamics, ProbabilityFlow
from ..sdes.base import check_sde

__all__ = [
    "log_likelihood",
    "LikelihoodResult",
    "exact_divergence",
    "hutchinson_divergence",
    "noise_level_rates",
    "VARIABLES",
]


@dataclass
class LikelihoodResult:
    """What :func:`log_likelihood` returns; tensors of shape ``(B,)`` unless noted.

    ``log_prob = prior_log_prob + delta_log_prob`` (nats), the model's log-density of x at eps.
    ``z`` is x carried to time T (shaped like x). ``std_error`` is the Hutchinson estimator's
    standard error over its probes (``None`` for exact divergence or a single probe).
    ``nfe`` counts score evaluations (each with its backward passes for the divergence).
    """

    log_prob: torch.Tensor
    prior_log_prob: torch.Tensor
    delta_log_prob: torch.Tensor
    z: torch.Tensor
    nfe: int
    std_error: torch.Tensor | None = None


def exact_divergence(v: torch.Tensor, x: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Trace of ``dv/dx`` per sample, shape ``(B,)``, from ``d`` vector-Jacobian products with the
    basis vectors, batched over the batch and over ``chunk_size`` basis vectors at a time.

    ``v`` must be computed from ``x`` (which requires grad) sample by sample.
    """
    B, d = x.shape[0], flat_dim(x)
    chunk = d if chunk_size is None else max(1, min(chunk_size, d))
    total = x.new_zeros(B)
    for start in range(0, d, chunk):
        idx = torch.arange(start, min(start + chunk, d), device=x.device)
        n = idx.numel()
        basis = x.new_zeros(n, B, d)
        basis[torch.arange(n, device=x.device), :, idx] = 1.0
        grads = _batched_vjp(v, x, basis.reshape((n,) + tuple(x.shape)))
        total = total + grads.reshape(n, B, d)[torch.arange(n, device=x.device), :, idx].sum(0)
    return total


def hutchinson_divergence(v: torch.Tensor, x: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """Hutchinson's estimates ``eps^T (dv/dx) eps``, one per probe: ``probes`` of shape
    ``(K, B, ...)`` give a tensor of shape ``(B, K)``. Unbiased for probes with ``E[eps eps^T] = I``."""
    grads = _batched_vjp(v, x, probes)
    return (grads * probes).reshape(probes.shape[0], x.shape[0], -1).sum(-1).T


def _batched_vjp(v, x, cotangents):
    """``cotangents[k] @ dv/dx`` for every k, vmapped; falls back to a loop where vmap fails."""
    try:
        (g,) = torch.autograd.grad(v, x, cotangents, retain_graph=True, is_grads_batched=True)
        return g
    except RuntimeError:
        return torch.stack([torch.autograd.grad(v, x, c, retain_graph=True)[0] for c in cotangents])


def log_likelihood(
    sde,
    score_fn: Callable,
    x: torch.Tensor,
    *,
    eps: float = 1e-5,
    divergence: str = "exact",
    solver: ProbabilityFlow | None = None,
    num_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    variable: str = "t",
    state: str = "x",
    cond: dict | None = None,
) -> LikelihoodResult:
    """log p_eps(x) under the probability-flow ODE of ``sde`` and ``score_fn``.

    Args:
        x: data of shape ``(B, ...)``, in the space the score model works in.
        eps: the time the density is evaluated at, in ``(0, T)``.
        divergence: ``"exact"`` (trace of the Jacobian, ``d`` backward passes per evaluation) or
            ``"hutchinson"`` (``num_probes`` Rademacher or Gaussian probes, drawn once from
            ``generator`` and fixed through the solve, so each probe gives a continuous path).
        solver: the :class:`ProbabilityFlow` settings (default dopri5, rtol = atol = 1e-5).
        chunk_size: basis vectors per batched backward pass for the exact divergence.
        variable: what the ODE is integrated in: ``"t"`` (today's default), ``"sigma_hat"`` or
            ``"half_log_snr"`` (lambda = -log sigma_hat), with ``dt/du`` from the SDE (docs/maths.md).
        state: ``"x"``, or ``"xhat"`` = ``(x - shift) / scale``, in which the flow is
            ``d xhat / d sigma_hat = (xhat - D) / sigma_hat``; the log-determinant of the affine map
            is added back in closed form. Any pair works for any Gaussian-kernel SDE; the adaptive
            solver's error control then acts on the new variables (benchmarks_likelihood.md).
        cond: conditioning, as in :func:`sde_gen.sample`: ``score_fn(x, t, **cond)`` with one row
            of each tensor per sample of ``x``; the result is then ``log p_eps(x | cond)``. Each row
            keeps its own conditioning through the divergence's batched backward passes (only
            ``x`` is differentiated).
    """
    check_sde(sde)
    x = check_tensor("x", x)
    eps = check_eps(eps, sde.T)
    check_choice("divergence", divergence, {"exact", "hutchinson"})
    num_probes = check_int("num_probes", num_probes, low=1)
    check_choice("probe", probe, {"rademacher", "gaussian"})
    check_choice("variable", variable, set(VARIABLES))
    check_choice("state", state, {"x", "xhat"})
    solver = ProbabilityFlow() if solver is None else solver
    if not isinstance(solver, ProbabilityFlow):
        raise ArgumentTypeError("solver", solver, f"solver must be a ProbabilityFlow, got {solver!r}")
    cond = {k: v.to(x.device) for k, v in check_cond(cond, x.shape[0]).items()}
    score = ScoreCheck(score_fn, cond=cond)
    ode = sde.probability_flow(score)

    if divergence == "exact":

        def div(v, x_):
            return exact_divergence(v, x_, chunk_size)[:, None]

        width = 1
    else:
        probes = torch.randn(
            (num_probes,) + tuple(x.shape), generator=generator, dtype=x.dtype, device=x.device
        )
        if probe == "rademacher":
            probes = probes.sign()

        def div(v, x_):
            return hutchinson_divergence(v, x_, probes)

        width = num_probes

    if variable != "t" or state != "x":
        z, delta = _integrate_reparametrized(sde, score, x, eps, solver, div, width, variable, state)
    else:

        def augmented(y, tv):
            with torch.enable_grad():
                x_ = y[0].detach().requires_grad_(True)
                v = ode.drift(x_, tv)
                d = div(v, x_)
            return v.detach(), d.detach()

        y0 = (x.detach(), x.new_zeros(x.shape[0], width))
        with torch.no_grad():
            z, delta = solver.integrate(augmented, y0, eps, sde.T, sde=sde)
    check_finite("latent z at T", z)
    prior = sde.prior_log_prob(z)
    log_prob = prior + delta.mean(dim=1)
    check_finite("log-likelihood", log_prob[:, None])
    se = None
    if divergence == "hutchinson" and width > 1:
        se = delta.std(dim=1, unbiased=True) / math.sqrt(width)
    return LikelihoodResult(log_prob, prior, delta.mean(dim=1), z, score.nfe, se)


VARIABLES = ("t", "sigma_hat", "half_log_snr")


def noise_level_rates(sde, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sigma_hat, d sigma_hat / dt, d lambda / dt)`` at times ``t`` ``(B,)``, from the SDE's own
    coefficients: for ``dx = (a x + b) dt + g dW`` the kernel obeys ``scale' = a scale`` and
    ``(std^2)' = 2 a std^2 + g^2``, so ``(sigma_hat^2)' = g^2 / scale^2``, i.e.

        d sigma_hat / dt = g^2 / (2 sigma_hat scale^2),   d lambda / dt = -g^2 / (2 std^2).
    """
    k = sde.kernel(t, t[:, None])
    scale, std = k.scale[:, 0], k.std
    g2 = sde.diffusion(t) ** 2
    sigma = std / scale
    return sigma, g2 / (2.0 * sigma * scale**2), -g2 / (2.0 * std**2)


def _to_u(sde, variable: str, t: torch.Tensor) -> torch.Tensor:
    """``u(t)`` in float64 for times ``t`` (float64, any shape)."""
    if variable == "t":
        return t
    return sde.sigma_hat(t) if variable == "sigma_hat" else sde.half_log_snr(t)


def _t_of_u(sde, variable: str, u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``t(u)``, computed in float64 from ``u`` clamped to ``[lo, hi]`` (so that rounding of ``u``
    in float32 never leaves the range of the inverse), returned in ``u``'s dtype."""
    if variable == "t":
        return u
    u64 = u.to(torch.float64).clamp(lo, hi)
    t = sde.t_from_sigma_hat(u64) if variable == "sigma_hat" else sde.t_from_half_log_snr(u64)
    return t.to(u.dtype)


def _integrate_reparametrized(sde, score, x, eps, solver, div, width, variable, state):
    """The likelihood ODE in ``u`` (:data:`VARIABLES`) with state ``x`` or ``xhat``.

    In ``u``: ``dy/du = (dy/dt)(dt/du)``, and the divergence scales by the same factor. In
    ``xhat = (x - shift) / scale``: ``d xhat / d sigma = F = (xhat - D) / sigma`` and, as ``x -> xhat``
    is affine with Jacobian ``diag(1 / scale)``, ``log p^x_t(x) = log p^xhat_t(xhat) - sum log|scale_t|``;
    so ``log p_eps(x) = log p_T(x_T) + sum log|scale_T| - sum log|scale_eps| + int div_xhat F d sigma``.
    Returns ``(x_T, delta)`` with ``delta`` holding every term but the prior.
    """
    u0, u1 = (float(u) for u in _to_u(sde, variable, torch.tensor([eps, sde.T], dtype=torch.float64)))
    lo, hi = min(u0, u1), max(u0, u1)

    def field(y, uv):
        t = _t_of_u(sde, variable, uv, lo, hi)
        sigma, dsigma_dt, dlam_dt = noise_level_rates(sde, t)
        with torch.enable_grad():
            y_ = y[0].detach().requires_grad_(True)
            if state == "x":
                rate = {"t": torch.ones_like(t), "sigma_hat": 1.0 / dsigma_dt, "half_log_snr": 1.0 / dlam_dt}
                v = sde.probability_flow(score).drift(y_, t) * batch_broadcast(rate[variable], y_)
            else:
                rate = {"t": dsigma_dt, "sigma_hat": torch.ones_like(t), "half_log_snr": -sigma}
                k = sde.kernel(t, y_)
                x_ = k.scale * y_ + k.shift
                denoised = sde.tweedie(x_, t, score(x_, t))
                v = (y_ - denoised) * batch_broadcast(rate[variable] / sigma, y_)
            d = div(v, y_)
        return v.detach(), d.detach()

    y = x.detach()
    if state == "xhat":
        k0 = sde.kernel(torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device), x)
        y = (y - k0.shift) / k0.scale
    y0 = (y, x.new_zeros(x.shape[0], width))
    with torch.no_grad():
        if solver.adaptive:
            yT, delta = solver.integrate(field, y0, u0, u1, sde=sde)
        else:  # the solver's own grid of times, carried to u: the same points, stepped in u
            from torchdiffeq import odeint

            u_grid = _to_u(sde, variable, solver.grid(sde, eps, sde.T).to(torch.float64))
            func = Dynamics(field, lo, hi)
            u_grid = u_grid.to(dtype=x.dtype, device=x.device)
            ys = odeint(func, y0, u_grid, method=solver.method, options=dict(solver.options))
            yT, delta = ys[0][-1], ys[1][-1]
    if state == "x":
        return yT, delta
    kT = sde.kernel(torch.full((x.shape[0],), sde.T, dtype=x.dtype, device=x.device), x)
    log_det = batch_sum(torch.log(kT.scale.abs())) - batch_sum(torch.log(k0.scale.abs()))
    return kT.scale * yT + kT.shift, delta + log_det[:, None]
