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

__all__ = ["mixture_posterior", "MixturePosterior", "CascadeOracle"]


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


class CascadeOracle:
    """Exact scores of both stages of a cascade on Gaussian-mixture data (the tests' closed form).

    With ``x ~ sum_k w_k N(mu_k, Sigma_k)`` and a linear operator ``A`` (for a cascade,
    :class:`~sde_gen.inverse.SuperResolution`: average pooling), the low-resolution law of ``y = A x``
    is the mixture ``(w_k, A mu_k, A Sigma_k A^T)`` (:attr:`low`), and ``x`` given the augmented
    ``y_s = y + s e`` is the posterior of the module docstring, per sample (each its own ``y_s`` and
    ``s``): again a mixture, whose marginals under any linear SDE are exact. :meth:`score_fn` is its
    score as a super-resolution stage takes it, ``score_fn(x, t, low=y_s, low_noise=s)``, so a
    cascade fed :attr:`low`'s score and this one must reproduce the high-resolution law.

    Args:
        mixture: the high-resolution law (``event_shape`` the image shape).
        operator: ``A``, of full row rank (``s = 0`` is then allowed).
    """

    def __init__(self, mixture: GaussianMixture, operator: LinearOperator):
        if not isinstance(operator, LinearOperator):
            raise ArgumentTypeError(
                "operator",
                operator,
                f"operator must be an sde_gen LinearOperator, got {type(operator).__name__}",
            )
        self.mixture, self.operator = mixture, operator
        self.shape = tuple(mixture.event_shape)
        self.low_shape = tuple(operator.y_shape(self.shape))
        self.A = operator.matrix(self.shape, dtype=mixture.means.dtype, device=mixture.means.device)
        self.low = mixture.linear_map(self.A, event_shape=self.low_shape)

    def posterior(self, low: torch.Tensor, low_noise) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-weights ``(B, K)``, means ``(B, K, D)`` and covariances ``(B, K, D, D)`` of ``x`` given
        ``low`` ``(B, *low_shape)`` = ``A x + s e`` with ``s`` = ``low_noise`` (a float or ``(B,)``)."""
        mix, A = self.mixture, self.A
        y = torch.as_tensor(low, dtype=A.dtype, device=A.device)
        if tuple(y.shape[1:]) != self.low_shape:
            raise ArgumentValueError("low", low, f"low must be (B, *{self.low_shape}), got {tuple(y.shape)}")
        B, m = y.shape[0], A.shape[0]
        s = torch.as_tensor(low_noise, dtype=A.dtype, device=A.device).expand(B)
        if bool((s < 0).any()):
            raise ArgumentValueError("low_noise", low_noise, "low_noise must be >= 0")
        AS = A @ mix.covs  # (K, m, D)
        eye = torch.eye(m, dtype=A.dtype, device=A.device)
        L = torch.linalg.cholesky((AS @ A.T)[None] + s[:, None, None, None] ** 2 * eye)  # (B, K, m, m)
        resid = y.reshape(B, 1, m) - mix.means @ A.T  # (B, K, m)
        ASt = AS.transpose(-1, -2)[None]  # (1, K, D, m)
        means = mix.means[None] + (ASt @ torch.cholesky_solve(resid[..., None], L))[..., 0]
        covs = mix.covs[None] - ASt @ torch.cholesky_solve(AS[None].expand(B, -1, -1, -1), L)
        half = torch.linalg.solve_triangular(L, resid[..., None], upper=False)[..., 0]
        logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        log_w = torch.log(mix.weights) - 0.5 * (m * math.log(2 * math.pi) + logdet + half.pow(2).sum(-1))
        return torch.log_softmax(log_w, dim=1), means, 0.5 * (covs + covs.transpose(-1, -2))

    def score(self, x: torch.Tensor, t, sde, low: torch.Tensor, low_noise) -> torch.Tensor:
        """Exact ``grad_x log p_t(x | low)`` under ``sde``, shaped like ``x``."""
        log_w, means, covs = self.posterior(low, low_noise)
        xf = x.reshape(x.shape[0], -1).to(means.dtype)
        t = torch.as_tensor(t, dtype=means.dtype, device=means.device).expand(x.shape[0])
        k = sde.kernel(t, xf)
        a, var = k.scale[:, None, :], (k.std**2)[:, None, None, None]  # (B, 1, D), (B, 1, 1, 1)
        m_t = a * means + k.shift[:, None, :]
        eye = torch.eye(xf.shape[1], dtype=xf.dtype, device=xf.device)
        L = torch.linalg.cholesky(a[..., :, None] * covs * a[..., None, :] + var * eye)
        diff = (xf[:, None, :] - m_t)[..., None]
        half = torch.linalg.solve_triangular(L, diff, upper=False)
        logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        r = torch.softmax(log_w - 0.5 * (logdet + half.pow(2).sum((-2, -1))), dim=1)
        s = -(r[..., None] * torch.cholesky_solve(diff, L)[..., 0]).sum(1)
        return s.reshape(x.shape).to(x.dtype)

    def score_fn(self, sde):
        """``score_fn(x, t, low=..., low_noise=...)``: :meth:`score` as a conditional score function."""

        def score_fn(x, t, low=None, low_noise=None):
            if low is None or low_noise is None:
                raise ArgumentValueError(
                    "low", low, "this score is conditional: pass cond={'low': ..., 'low_noise': ...}"
                )
            return self.score(x, t, sde, low, low_noise)

        return score_fn

    def sample(
        self, low: torch.Tensor, low_noise, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One exact draw of ``x`` given each row of ``low`` (shape ``(B, *shape)``)."""
        log_w, means, covs = self.posterior(low, low_noise)
        k = torch.multinomial(log_w.exp(), 1, generator=generator)[:, 0]
        rows = torch.arange(k.shape[0], device=k.device)
        evals, evecs = torch.linalg.eigh(covs[rows, k])
        z = torch.randn(
            means.shape[0], means.shape[2], generator=generator, dtype=means.dtype, device=means.device
        )
        x = means[rows, k] + (evecs * evals.clamp_min(0.0).sqrt()[:, None, :] @ z[..., None])[..., 0]
        return x.reshape((x.shape[0], *self.shape))
