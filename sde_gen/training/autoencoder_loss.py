"""The loss of a Gaussian autoencoder (Kingma & Welling 2014; Rombach et al. 2022, Sec. 3.1):
the decoder's negative log-likelihood of ``x`` at one reparameterised draw ``z ~ q(z | x)``, plus
the weighted KL divergence of ``q(z | x)`` from the prior ``N(0, I)``, in closed form,

    L(x) = -log N(x; decode(z), sigma^2 I) + kl_weight * KL(q(z | x) || N(0, I)).

With ``kl_weight = 1`` it is the negative ELBO, an upper bound on ``-log p(x)`` in its expectation
over ``z``; latent diffusion uses a small weight (1e-6), which keeps the latents close to the data.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .._checks import ArgumentTypeError, ArgumentValueError, check_real, check_tensor
from ..models.autoencoder import Autoencoder

__all__ = ["AutoencoderLoss", "AutoencoderDraws", "gaussian_nll", "kl_divergence"]


def gaussian_nll(x: torch.Tensor, recon: torch.Tensor, log_sigma: torch.Tensor | float) -> torch.Tensor:
    """``-log N(x; recon, sigma^2 I)`` per sample, ``(B,)``, in nats:
    ``0.5 ||x - recon||^2 / sigma^2 + D log sigma + 0.5 D log(2 pi)``, ``D`` the entries of one
    sample, ``sigma = exp(log_sigma)`` (a scalar)."""
    log_sigma = torch.as_tensor(log_sigma, dtype=x.dtype, device=x.device)
    D = x[0].numel()
    sq = (x - recon).pow(2).reshape(x.shape[0], -1).sum(1)
    return 0.5 * sq * torch.exp(-2.0 * log_sigma) + D * log_sigma + 0.5 * D * math.log(2.0 * math.pi)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, diag exp(logvar)) || N(0, I))`` per sample, ``(B,)``:
    ``0.5 sum(mean^2 + exp(logvar) - 1 - logvar)`` over the entries of one latent."""
    kl = mean.pow(2) + torch.exp(logvar) - 1.0 - logvar
    return 0.5 * kl.reshape(mean.shape[0], -1).sum(1)


class AutoencoderDraws(NamedTuple):
    """The random part of one autoencoder-loss estimate for a batch of ``batch`` examples: the noise
    of the posterior draws of the whole batch comes from a generator seeded with ``seed``
    (``randn((batch, *latent_shape))`` on the latents' device, :meth:`noise`), and ``index`` is the
    examples kept (a data-parallel rank's share). The seed, not the noise, is drawn ahead because
    the latents' shape is the autoencoder's to say, and the loss only sees the batch then."""

    seed: int
    batch: int
    index: slice = slice(None)

    def shard(self, index: slice) -> AutoencoderDraws:
        """The draws of the examples ``index`` of those kept."""
        kept = range(self.batch)[self.index][index]
        return self._replace(index=slice(kept.start, kept.stop, kept.step))

    def noise(self, latent_shape: tuple[int, ...], *, dtype, device) -> torch.Tensor:
        """The standard normal noise of the kept examples, ``(len(kept), *latent_shape)``."""
        gen = torch.Generator(device=device).manual_seed(self.seed)
        return torch.randn((self.batch, *latent_shape), generator=gen, dtype=dtype, device=device)[self.index]


class AutoencoderLoss:
    """Per-example loss of an :class:`~sde_gen.Autoencoder`: ``AutoencoderLoss()(model, x) -> (B,)``,
    ``gaussian_nll(x, recon, model.log_sigma) + kl_weight * kl_divergence(mean, logvar)`` with
    ``(recon, mean, logvar) = model(x, noise=...)`` (one reparameterised draw of ``q(z | x)``, its
    noise from :meth:`draw`).

    With ``kl_weight = 1`` this is the negative ELBO, ``E_q[-log p(x | z)] + KL(q(z | x) || p(z))``
    (one draw for the expectation), whose expectation bounds ``-log p(x)`` from above, with equality
    when ``q(z | x)`` is the exact posterior. A :class:`~sde_gen.Trainer` trains it as ``loss_fn``
    (``loss(model, batch, generator=...)``); it takes no conditioning. Data-parallel training works
    as for :class:`~sde_gen.DSMLoss`: :meth:`draw` draws for the global batch and each process
    computes its share (``loss(model, shard, draws=draws.shard(index))``), with the same per-example
    losses as one process.

    Args:
        kl_weight: the weight of the KL term, ``>= 0`` (latent diffusion's KL-f autoencoders: 1e-6).
    """

    def __init__(self, kl_weight: float = 1e-6):
        self.kl_weight = check_real("kl_weight", kl_weight, low=0.0)

    def __repr__(self) -> str:
        return f"AutoencoderLoss(kl_weight={self.kl_weight!r})"

    def draw(self, x: torch.Tensor, generator: torch.Generator | None = None) -> AutoencoderDraws:
        """The draws for the batch ``x``: one seed from ``generator`` (:class:`AutoencoderDraws`)."""
        x = check_tensor("x", x)
        seed = torch.randint(2**62, (), generator=generator, device=getattr(generator, "device", None))
        return AutoencoderDraws(int(seed), x.shape[0])

    def __call__(
        self,
        model: Autoencoder,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        draws: AutoencoderDraws | None = None,
        **cond,
    ) -> torch.Tensor:
        """The loss ``(B,)`` of the batch ``x`` ``(B, ...)``; ``draws`` (else :meth:`draw` from
        ``generator``) give the posterior draws' noise. ``model`` may be wrapped in
        ``DistributedDataParallel``."""
        if cond:
            raise ArgumentValueError(
                "cond",
                cond,
                f"AutoencoderLoss takes no conditioning, got {sorted(cond)} (train it on Batches "
                "without labels=)",
            )
        ae = getattr(model, "module", model)  # the autoencoder inside a DistributedDataParallel
        if not isinstance(ae, Autoencoder):
            raise ArgumentTypeError(
                "model", model, f"model must be a sde_gen.Autoencoder, got {type(model).__name__}"
            )
        x = check_tensor("x", x)
        draws = self.draw(x, generator) if draws is None else draws
        if not isinstance(draws, AutoencoderDraws) or len(range(draws.batch)[draws.index]) != x.shape[0]:
            raise ArgumentValueError(
                "draws", draws, f"draws must be AutoencoderDraws for the {x.shape[0]} examples of x"
            )
        latent = tuple(ae.latent_shape(tuple(x.shape[1:])))
        noise = draws.noise(latent, dtype=x.dtype, device=x.device)
        recon, mean, logvar = model(x, noise=noise)
        loss = gaussian_nll(x, recon, ae.log_sigma)
        if self.kl_weight:
            loss = loss + self.kl_weight * kl_divergence(mean, logvar)
        return loss
