"""The exact posterior of a Gaussian-mixture prior under a linear Gaussian measurement.

With ``x ~ sum_k w_k N(mu_k, Sigma_k)`` and ``y = A x + s e``, ``e ~ N(0, I)``, Bayes' rule
applied per component (a Kalman update) gives again a mixture:

    S_k = A Sigma_k A^T + s^2 I,      G_k = Sigma_k A^T S_k^{-1},
    mu_k' = mu_k + G_k (y - A mu_k),  Sigma_k' = Sigma_k - G_k A Sigma_k,
    w_k' ∝ w_k N(y; A mu_k, S_k)      (each component's marginal likelihood of y).

For a noiseless :class:`~sde_gen.inverse.Mask` (``s = 0``) this is Gaussian conditioning of the
unknown coordinates on the known ones, and ``Sigma_k'`` is singular (the known part is fixed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..._checks import ArgumentTypeError, ArgumentValueError, check_int, check_real
from ...data.oracle import GaussianMixture
from .operators import LinearOperator

__all__ = ["mixture_posterior", "MixturePosterior"]


@dataclass
class MixturePosterior:
    """A Gaussian mixture with possibly singular covariances: ``weights (K,)``, ``means (K, D)``,
    ``covs (K, D, D)``, samples shaped ``event_shape``."""

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor
    event_shape: tuple[int, ...]

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact draws, shape ``(n, *event_shape)`` (square roots by eigendecomposition)."""
        n = check_int("n", n, low=1)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        evals, evecs = torch.linalg.eigh(self.covs)
        root = evecs * evals.clamp_min(0.0).sqrt()[:, None, :]
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)
        x = self.means[k] + (root[k] @ z[..., None])[..., 0]
        return x.reshape((n, *self.event_shape))

    def restrict(self, index) -> GaussianMixture:
        """The marginal law of the flat coordinates ``index`` (e.g. the unknown ones) as a
        :class:`~sde_gen.GaussianMixture` (their covariances must be positive definite)."""
        index = torch.as_tensor(index, device=self.means.device).reshape(-1)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        covs = self.covs[:, index][:, :, index]
        return GaussianMixture(self.weights, self.means[:, index], 0.5 * (covs + covs.transpose(-1, -2)))


def mixture_posterior(
    mix: GaussianMixture, operator: LinearOperator, y: torch.Tensor, *, noise_std: float = 0.0
) -> MixturePosterior:
    """The exact law of ``x`` given one measurement ``y = A x + noise_std e`` (module docstring).

    Args:
        mix: the prior, a :class:`~sde_gen.GaussianMixture` (samples shaped ``mix.event_shape``).
        operator: ``A``, any :class:`LinearOperator` of full row rank when ``noise_std = 0``.
        y: one measurement, shaped ``(1, *y_shape)`` or ``y_shape``.
        noise_std: ``s >= 0``.
    """
    if not isinstance(operator, LinearOperator):
        raise ArgumentTypeError(
            "operator", operator, f"operator must be an sde_gen LinearOperator, got {type(operator).__name__}"
        )
    noise_std = check_real("noise_std", noise_std, low=0.0)
    shape = tuple(mix.event_shape)
    y_shape = tuple(operator.y_shape(shape))
    given, y = y, torch.as_tensor(y, dtype=mix.means.dtype, device=mix.means.device)
    if tuple(y.shape) == y_shape:
        y = y[None]
    if tuple(y.shape) != (1, *y_shape):
        raise ArgumentValueError(
            "y", given, f"y must be one measurement shaped {y_shape} or (1, *{y_shape}), got {tuple(y.shape)}"
        )
    yv = operator.y_vector(operator.prepare_y(y))[0]  # (m,)
    A = operator.matrix(shape, dtype=mix.means.dtype, device=mix.means.device)  # (m, D)
    m = A.shape[0]
    AS = A @ mix.covs  # (K, m, D)
    S = AS @ A.T + noise_std**2 * torch.eye(m, dtype=A.dtype, device=A.device)
    L, info = torch.linalg.cholesky_ex(S)
    if bool((info != 0).any()):
        raise ValueError(
            "A Sigma_k A^T + noise_std^2 I is singular: with noise_std=0 the operator must have full row rank"
        )
    resid = yv - mix.means @ A.T  # (K, m)
    sol = torch.cholesky_solve(resid[..., None], L)  # S^{-1} (y - A mu), (K, m, 1)
    means = mix.means + (AS.transpose(-1, -2) @ sol)[..., 0]
    covs = mix.covs - AS.transpose(-1, -2) @ torch.cholesky_solve(AS, L)
    covs = 0.5 * (covs + covs.transpose(-1, -2))
    half = torch.linalg.solve_triangular(L, resid[..., None], upper=False)[..., 0]
    logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    log_lik = -0.5 * (m * math.log(2 * math.pi) + logdet + half.pow(2).sum(-1))
    weights = torch.softmax(torch.log(mix.weights) + log_lik, dim=0)
    return MixturePosterior(weights, means, covs, shape)
