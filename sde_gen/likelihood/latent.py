"""An upper bound on a latent model's negative log-likelihood: the negative ELBO.

A latent model is an autoencoder (Gaussian encoder ``q(z | x)``, Gaussian decoder
``p(x | z) = N(decode(z), sigma^2 I)``) and a density ``p_u`` of the scaled latents ``u = scale z``
(the probability-flow likelihood of the score model, or a closed form). Its marginal
``p(x) = integral p(x | z) p_z(z) dz``, ``p_z(z) = p_u(scale z) scale^d``, is bounded by

    -log p(x) <= E_q [ -log p(x | z) - log p_u(scale z) - d log scale + log q(z | x) ]

(Kingma & Welling 2014; Vahdat et al. 2021 use it for score models in a latent space), with
equality where ``q(z | x)`` is the exact posterior. The expectation is estimated with ``samples``
draws of ``z``. It is a bound, not the likelihood: report it as such.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._checks import ArgumentTypeError, check_int, check_per_item, check_tensor
from ..models.autoencoder import Autoencoder

__all__ = ["LatentBound", "latent_nll_bound"]


@dataclass
class LatentBound:
    """Per-sample terms in nats, shape ``(B,)``: ``nll_bound``, the mean over the draws of
    ``-log p(x | z) - log p_z(z) + log q(z | x)``; ``reconstruction`` and ``latent_nll`` (with its
    ``-d log scale``) the means of its first two terms; ``entropy`` the encoder's, in closed form
    (the expectation of the third term is ``-entropy``); ``std_error`` the standard error of
    ``nll_bound`` over the draws (``None`` for one draw). Under the exact posterior every draw gives
    the same value, ``-log p(x)``."""

    nll_bound: torch.Tensor
    reconstruction: torch.Tensor
    latent_nll: torch.Tensor
    entropy: torch.Tensor
    std_error: torch.Tensor | None = None


def latent_nll_bound(
    autoencoder: Autoencoder,
    latent_log_prob: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    samples: int = 1,
    generator: torch.Generator | None = None,
) -> LatentBound:
    """The negative ELBO of ``x`` ``(B, ...)`` (module docstring).

    Args:
        latent_log_prob: ``u (B, *latent_shape) -> (B,)`` log-density of the scaled latents, e.g.
            ``lambda u: sg.log_likelihood(sde, score_fn, u).log_prob``.
        samples: draws of ``z ~ q(z | x)`` per sample of ``x``.
        generator: for those draws.
    For images, ``x`` is a dequantized batch in model space; :func:`sde_gen.dequantized_bpd` with
    ``log_prob_fn = lambda x: -latent_nll_bound(...).nll_bound`` turns it into a bits/dim bound.
    """
    if not isinstance(autoencoder, Autoencoder):
        raise ArgumentTypeError(
            "autoencoder",
            autoencoder,
            f"autoencoder must be an sde_gen Autoencoder, got {type(autoencoder).__name__}",
        )
    x = check_tensor("x", x)
    samples = check_int("samples", samples, low=1)
    B, D = x.shape[0], x[0].numel()
    with torch.no_grad():
        mean, logvar = autoencoder.encode(x)
    d = mean[0].numel()
    log_sigma = autoencoder.log_sigma.detach().to(x.dtype)
    scale = autoencoder.scale.to(x.dtype)
    # The Gaussian encoder's entropy is the same for every draw.
    entropy = 0.5 * (logvar.reshape(B, -1) + math.log(2 * math.pi) + 1).sum(1)
    terms = []
    for _ in range(samples):
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        z = mean + torch.exp(0.5 * logvar) * eps
        with torch.no_grad():
            recon = autoencoder.decode(z)
        rec = 0.5 * ((x - recon).reshape(B, -1) ** 2).sum(1) * torch.exp(-2 * log_sigma)
        rec = rec + D * (log_sigma + 0.5 * math.log(2 * math.pi))
        lp = check_per_item("latent_log_prob", latent_log_prob, latent_log_prob(scale * z), B)
        latent = -lp.to(x.dtype) - d * torch.log(scale)
        # log q(z | x) at the draw (not the closed-form entropy), so that the exact posterior gives
        # every draw the same value
        log_q = -0.5 * (eps.reshape(B, -1) ** 2 + logvar.reshape(B, -1) + math.log(2 * math.pi)).sum(1)
        terms.append(torch.stack([rec + latent + log_q, rec, latent]))
    t = torch.stack(terms)  # (samples, 3, B)
    se = t[:, 0].std(0) / math.sqrt(samples) if samples > 1 else None
    m = t.mean(0)
    return LatentBound(nll_bound=m[0], reconstruction=m[1], latent_nll=m[2], entropy=entropy, std_error=se)
