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

from ._checks import ScoreCheck, check_choice, check_eps, check_finite, check_int, check_sde, check_tensor
from ._utils import flat_dim
from .solvers.ode import ProbabilityFlow

__all__ = ["log_likelihood", "LikelihoodResult", "exact_divergence", "hutchinson_divergence"]


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
    """
    check_sde(sde)
    x = check_tensor("x", x)
    eps = check_eps(eps, sde.T)
    check_choice("divergence", divergence, {"exact", "hutchinson"})
    num_probes = check_int("num_probes", num_probes, low=1)
    check_choice("probe", probe, {"rademacher", "gaussian"})
    solver = ProbabilityFlow() if solver is None else solver
    if not isinstance(solver, ProbabilityFlow):
        raise TypeError(f"solver must be a ProbabilityFlow, got {solver!r}")
    score = ScoreCheck(score_fn)
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

    def augmented(y, tv):
        with torch.enable_grad():
            x_ = y[0].detach().requires_grad_(True)
            v = ode.drift(x_, tv)
            d = div(v, x_)
        return v.detach(), d.detach()

    y0 = (x.detach(), x.new_zeros(x.shape[0], width))
    with torch.no_grad():
        z, delta = solver.integrate(augmented, y0, eps, sde.T)
    check_finite("latent z at T", z)
    prior = sde.prior_log_prob(z)
    log_prob = prior + delta.mean(dim=1)
    check_finite("log-likelihood", log_prob[:, None])
    se = None
    if divergence == "hutchinson" and width > 1:
        se = delta.std(dim=1, unbiased=True) / math.sqrt(width)
    return LikelihoodResult(log_prob, prior, delta.mean(dim=1), z, score.nfe, se)


def __getattr__(name: str):
    # bits_per_dim moved to sde_gen.bpd, which imports this module: re-exported on first use.
    if name == "bits_per_dim":
        from .bpd import bits_per_dim

        return bits_per_dim
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
