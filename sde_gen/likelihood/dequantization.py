"""Training-free truncated-normal dequantization with importance weighting (Zheng et al. 2023,
"Improved techniques for maximum likelihood estimation for diffusion ODEs", Sec. 4).

Discrete data ``k`` with bin centres ``c`` and bin width ``w`` (in model space) have probability
``P(k) = int_bin p(y) dy`` under a continuous density ``p``. For any density ``q(. | k)`` on the bin,
Jensen's inequality on ``P(k) = E_q[p(y) / q(y)]`` gives the variational bound

    log P(k) >= E_q[log p(y) - log q(y)],

and with ``K`` independent draws the importance-weighted bound (Burda et al. 2016)

    log P(k) >= E[log (1/K) sum_j p(y_j) / q(y_j)],

which rises with ``K`` to ``log P(k)``; its gap is ``Var_q(p/q) / (2 K P^2) + O(K^-2)``.
Uniform dequantization is ``q = 1 / w^d``. The training-free choice of Zheng et al. is the
diffusion's own noise at the start time ``eps``: ``xhat = (x_eps - shift) / scale`` given ``x_0 = c`` is
``N(c, sigma_hat(eps)^2 I)``, so ``q`` is that normal truncated to the bin (per dimension,
``u = y - c`` in ``[-w/2, w/2]``) and the model's density of ``y`` is that of ``xhat_eps``,
``p(y) = p_eps(scale y + shift) prod(scale)``. When the data are well inside their bins at that
noise level, ``p/q`` is nearly constant on the bin and the bound is nearly tight already at K = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._checks import ArgumentValueError, check_int, check_per_item, check_positive
from ..data.transforms import check_level_data

__all__ = [
    "truncated_normal_sample",
    "truncated_normal_log_prob",
    "importance_weighted_bpd_per_image",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _log_mass(sigma: float, half_width: float) -> float:
    """``log Z``, ``Z = P(|N(0, sigma^2)| <= h) = 1 - 2 Phi(-h / sigma)``, without cancellation."""
    tail = float(torch.special.ndtr(torch.tensor(-half_width / sigma, dtype=torch.float64)))
    return math.log1p(-2.0 * tail)


def truncated_normal_sample(
    shape, sigma: float, half_width: float, *, generator=None, dtype=torch.float64, device=None
) -> torch.Tensor:
    """Draws of ``N(0, sigma^2)`` truncated to ``[-h, h]`` (i.i.d. entries), by the inverse CDF.

    ``p = Phi(-h/sigma) + U (1 - 2 Phi(-h/sigma))``; for ``p > 1/2`` the upper tail ``1 - p`` is formed
    directly (from ``1 - U``), so the draws keep full precision however many sigmas ``h`` is.
    """
    sigma = check_positive("sigma", sigma)
    half_width = check_positive("half_width", half_width)
    a = torch.special.ndtr(torch.tensor(-half_width / sigma, dtype=torch.float64)).to(device)
    mass = 1.0 - 2.0 * a
    U = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
    lower = a + U * mass  # CDF value, accurate where <= 1/2
    upper = a + (1.0 - U) * mass  # 1 - CDF value, accurate where <= 1/2
    z = torch.where(lower <= 0.5, torch.special.ndtri(lower), -torch.special.ndtri(upper))
    return (sigma * z).clamp(-half_width, half_width).to(dtype)


def truncated_normal_log_prob(u: torch.Tensor, sigma: float, half_width: float) -> torch.Tensor:
    """``log q(u)`` of the truncated normal, summed over all but the batch dimension: ``(B,)``.
    ``-inf`` outside ``[-h, h]``."""
    sigma = check_positive("sigma", sigma)
    half_width = check_positive("half_width", half_width)
    d = u[0].numel()
    ud = u.reshape(u.shape[0], -1).double()
    lp = -(ud**2).sum(1) / (2.0 * sigma**2) - d * (
        math.log(sigma) + _LOG_SQRT_2PI + _log_mass(sigma, half_width)
    )
    outside = (ud.abs() > half_width).any(1)
    return torch.where(outside, torch.full_like(lp, -math.inf), lp)


def importance_weighted_bpd_per_image(
    log_density_fn: Callable[[torch.Tensor], torch.Tensor],
    k: torch.Tensor,
    transform,
    *,
    sigma: float,
    num_samples: int = 1,
    repeats: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    dtype=torch.float32,
) -> torch.Tensor:
    """Bits/dim of each image of integer data ``k`` ``(N, ...)`` from the importance-weighted bound
    with ``num_samples`` truncated-normal dequantizations of scale ``sigma`` (module docstring),
    averaged over ``repeats``: a float64 CPU tensor ``(N,)``, ``-bound / (d ln 2)``.

    ``log_density_fn`` maps dequantized data ``y`` ``(B, ...)`` in model space (``dtype``) to
    ``log p(y)`` ``(B,)`` in nats, a density on that space. Draws come from ``generator`` in the
    order rounds, batches, samples.
    """
    n = check_level_data(k, transform)
    num_samples = check_int("num_samples", num_samples, low=1)
    repeats = check_int("repeats", repeats, low=1)
    batch_size = max(n, 1) if batch_size is None else check_int("batch_size", batch_size, low=1)
    num_dims = math.prod(k.shape[1:])
    half = 0.5 * transform.bin_width
    total = torch.zeros(n, dtype=torch.float64)
    for _ in range(repeats):
        for start in range(0, n, batch_size):
            kb = k[start : start + batch_size]
            centres = transform.centers(kb, torch.float64)
            ratios = []
            for _ in range(num_samples):
                u = truncated_normal_sample(kb.shape, sigma, half, generator=generator, device=kb.device)
                lp = log_density_fn((centres + u).to(dtype))
                check_per_item("log_density_fn", log_density_fn, lp, kb.shape[0])
                if not bool(torch.isfinite(lp).all()):
                    raise ArgumentValueError(
                        "log_density_fn",
                        log_density_fn,
                        f"log_density_fn returned {int((~torch.isfinite(lp)).sum())} non-finite values",
                    )
                ratios.append(lp.detach().double().cpu() - truncated_normal_log_prob(u, sigma, half).cpu())
            bound = torch.logsumexp(torch.stack(ratios), dim=0) - math.log(num_samples)
            total[start : start + kb.shape[0]] += -bound / (num_dims * math.log(2.0))
    return total / repeats
