"""Autoencoders for latent score models (Rombach et al. 2022): the interface, and the linear one.

An :class:`Autoencoder` has a Gaussian encoder ``q(z | x) = N(mean(x), diag exp(logvar(x)))``, a
Gaussian decoder ``p(x | z) = N(decode(z), exp(2 log_sigma) I)`` and a latent scale factor
``scale``: the score model works on ``u = scale z`` (Rombach et al. scale the latents to unit
variance, :meth:`Autoencoder.fit_scale`). With these three parts the negative ELBO
(:func:`sde_gen.latent_nll_bound`) bounds a latent model's negative log-likelihood of ``x``.

:class:`LinearAutoencoder` (an affine encoder and decoder, e.g. principal components,
:meth:`LinearAutoencoder.pca`) pushes a Gaussian mixture to a Gaussian mixture, which makes latent
models checkable against closed forms; the convolutional one is :class:`sde_gen.AutoencoderKL`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import ArgumentValueError, check_int, check_real, check_tensor

__all__ = ["Autoencoder", "LinearAutoencoder"]


class Autoencoder(nn.Module):
    """The interface of an autoencoder for latents. Subclasses implement :meth:`encode`,
    :meth:`decode` and :meth:`latent_shape`; the buffers ``scale`` (the latent scale factor, 1 until
    :meth:`fit_scale`) and the decoder's ``log_sigma`` (a parameter or a buffer) are read by the rest
    of the library."""

    scale: torch.Tensor
    log_sigma: torch.Tensor

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)`` of ``q(z | x)``, each ``(B, *latent_shape)``."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean ``(B, *data_shape)`` for latents ``z`` ``(B, *latent_shape)``."""
        raise NotImplementedError

    def latent_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one latent for one sample of shape ``data_shape``."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ):
        """``(reconstruction, mean, logvar)``: ``x`` encoded, one latent drawn from ``q(z | x)``
        (reparameterised, so gradients flow), decoded. ``noise`` ``(B, *latent_shape)``, standard
        normal, is the draw's noise instead of one from ``generator``."""
        mean, logvar = self.encode(x)
        if noise is not None and noise.shape != mean.shape:
            raise ArgumentValueError(
                "noise",
                noise,
                f"noise must be shaped like the latents {tuple(mean.shape)}, got {tuple(noise.shape)}",
            )
        z = mean + torch.exp(0.5 * logvar) * (_normal_like(mean, generator) if noise is None else noise)
        return self.decode(z), mean, logvar

    def to_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``u = scale z`` for the score model: ``z`` the encoder's mean, or a draw of ``q(z | x)``
        with ``generator``."""
        mean, logvar = self.encode(x)
        z = mean if generator is None else mean + torch.exp(0.5 * logvar) * _normal_like(mean, generator)
        return self.scale.to(z.dtype) * z

    def from_latent(self, u: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at ``z = u / scale``: a latent model's samples in data space."""
        return self.decode(u / self.scale.to(u.dtype))

    @torch.no_grad()
    def fit_scale(self, x: torch.Tensor, batch_size: int = 500) -> float:
        """Set ``scale = 1 / std`` of the encoder's means over ``x`` (all entries; Rombach et al.'s
        factor, so that the score model sees latents of unit variance) and return it. Call it on the
        model itself, not inside ``ema.applied(model)``, which restores every buffer on exit."""
        x = check_tensor("x", x)
        batch_size = check_int("batch_size", batch_size, low=1)
        means = torch.cat([self.encode(x[i : i + batch_size])[0] for i in range(0, x.shape[0], batch_size)])
        std = float(means.double().std())
        if not std > 0:
            raise ArgumentValueError("x", x, "the encoder maps every sample of x to the same latent")
        self.scale.fill_(1.0 / std)
        return 1.0 / std


def _normal_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


class LinearAutoencoder(Autoencoder):
    """``mean(x) = E (x - m)``, constant ``logvar``, ``decode(z) = m + W z`` on flattened samples.

    Args:
        encoder: ``E``, ``(k, D)``.
        decoder: ``W``, ``(D, k)``.
        offset: ``m``, ``(D,)``.
        data_shape: one sample's shape (``prod == D``).
        logvar: the encoder's log-variance, a float or ``(k,)`` (``-inf`` is not allowed: the bound
            needs the encoder's entropy).
        log_sigma: the decoder's log standard deviation.
    With ``W`` orthonormal columns, ``E = W^T`` and ``m`` the data mean this is principal component
    analysis (:meth:`pca`); with ``E``, ``logvar`` the exact posterior of a probabilistic PCA
    (:meth:`ppca`) the ELBO is the exact log-likelihood.
    """

    def __init__(self, encoder, decoder, offset, data_shape, *, logvar=0.0, log_sigma: float = 0.0):
        super().__init__()
        encoder, decoder, offset = (torch.as_tensor(a) for a in (encoder, decoder, offset))
        k, D = encoder.shape
        if decoder.shape != (D, k) or offset.shape != (D,) or math.prod(data_shape) != D:
            raise ArgumentValueError(
                "decoder",
                decoder,
                f"encoder (k, D) = {tuple(encoder.shape)} needs decoder ({D}, {k}), offset ({D},) and a "
                f"data_shape of {D} entries; got {tuple(decoder.shape)}, {tuple(offset.shape)}, {data_shape}",
            )
        like = dict(dtype=encoder.dtype)
        self.register_buffer("encoder", encoder)
        self.register_buffer("decoder", decoder.to(**like))
        self.register_buffer("offset", offset.to(**like))
        self.register_buffer("logvar", torch.as_tensor(logvar, **like).expand(k).clone())
        self.register_buffer("log_sigma", torch.tensor(check_real("log_sigma", log_sigma), **like))
        self.register_buffer("scale", torch.ones((), **like))
        self.data_shape = tuple(data_shape)

    @classmethod
    def pca(cls, x: torch.Tensor, k: int, *, logvar: float = 0.0, log_sigma: float | None = None):
        """The top ``k`` principal components of ``x`` ``(N, ...)``: ``E = W^T``, ``m`` the mean.
        ``log_sigma`` ``None``: the maximum-likelihood decoder std, the RMS of what is left over
        per dimension (at least 1e-6)."""
        x = check_tensor("x", x)
        flat = x.reshape(x.shape[0], -1)
        k = check_int("k", k, low=1, high=flat.shape[1])
        mean = flat.mean(0)
        evals, evecs = torch.linalg.eigh(torch.cov(flat.T))
        W = evecs[:, -k:].flip(-1)
        if log_sigma is None:
            rest = flat - mean - (flat - mean) @ W @ W.T
            log_sigma = 0.5 * math.log(max(float(rest.pow(2).mean()), 1e-12))
        return cls(W.T, W, mean, tuple(x.shape[1:]), logvar=logvar, log_sigma=log_sigma)

    @classmethod
    def ppca(cls, decoder, offset, data_shape, *, log_sigma: float):
        """The exact posterior of probabilistic PCA (Tipping & Bishop 1999): ``x = m + W z + sigma e``,
        ``z ~ N(0, I)``, has ``q(z | x) = N(M^-1 W^T (x - m), sigma^2 M^-1)``, ``M = W^T W + sigma^2 I``.
        ``W`` must have orthogonal columns, so that ``M`` is diagonal (the encoder's variance is)."""
        W = torch.as_tensor(decoder)
        gram = W.T @ W
        off = gram - torch.diag(gram.diagonal())
        if float(off.abs().max()) > 1e-10 * float(gram.diagonal().max()):
            raise ArgumentValueError("decoder", decoder, "ppca needs a decoder W with orthogonal columns")
        var = math.exp(2 * check_real("log_sigma", log_sigma))
        m = gram.diagonal() + var
        return cls(W.T / m[:, None], W, offset, data_shape, logvar=torch.log(var / m), log_sigma=log_sigma)

    def encode(self, x):
        flat = x.reshape(x.shape[0], -1).to(self.encoder.dtype)
        mean = (flat - self.offset) @ self.encoder.T
        return mean.to(x.dtype), self.logvar.expand_as(mean).to(x.dtype)

    def decode(self, z):
        x = self.offset + z.to(self.decoder.dtype) @ self.decoder.T
        return x.reshape((z.shape[0], *self.data_shape)).to(z.dtype)

    def latent_shape(self, data_shape):
        if tuple(data_shape) != self.data_shape:
            raise ArgumentValueError(
                "data_shape", data_shape, f"data_shape must be {self.data_shape}, got {tuple(data_shape)}"
            )
        return (self.encoder.shape[0],)
