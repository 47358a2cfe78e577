"""Closed-form oracle: Gaussian-mixture data under any SDE with a Gaussian transition kernel.

If ``x_0 ~ sum_k w_k N(mu_k, Sigma_k)`` and ``x_t = scale(t) x_0 + shift(t) + std(t) z``, then

    p_t = sum_k w_k N(scale mu_k + shift, diag(scale) Sigma_k diag(scale) + std^2 I),

so the density, the score and samples of every marginal are exact. Use it to validate an SDE, a
solver or a likelihood: feed ``mixture.score_fn(sde)`` to a solver and compare with
``mixture.sample_marginal``. Samples of shape ``(B, ...)`` are flattened to ``(B, D)``.

Labelled: the label ``y`` of a draw is its component ``k``, so ``p_t(x | y) = N(m_y(t), C_y(t))``
has the exact conditional score ``-C_y^{-1} (x - m_y)`` and ``p(y | x_t)`` is the responsibility
``w_y N(x; m_y, C_y) / p_t(x)``: an exact class-conditional model and an exact noisy classifier,
for conditional sampling and guidance. The label ``K`` (one past the last) is the null label:
it stands for "unconditional".
"""

from __future__ import annotations

import math

import torch

from .._checks import ArgumentTypeError, ArgumentValueError, check_int, check_tensor
from .._utils import time_vector
from ..sdes.base import check_sde

__all__ = ["GaussianMixture", "energy_distance"]


class GaussianMixture:
    """A mixture of ``K`` full-covariance Gaussians in ``D`` dimensions.

    Args:
        weights: ``(K,)`` positive, normalised here.
        means: ``(K, D)``.
        covs: ``(K, D, D)`` symmetric positive definite.
        event_shape: the shape of one sample (default ``(D,)``); e.g. ``(1, 4, 4)`` for images.
    The mixture's dtype and device are those of ``means``; inputs are cast to them.
    """

    def __init__(self, weights, means, covs, *, event_shape=None):
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        if means.ndim != 2:
            raise ArgumentValueError(
                "means", means, f"means must have shape (K, D), got {tuple(means.shape)}"
            )
        K, D = means.shape
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        covs = torch.as_tensor(covs, dtype=means.dtype, device=means.device)
        if weights.shape != (K,) or not bool((weights > 0).all()):
            raise ArgumentValueError(
                "weights", weights, f"weights must be positive with shape ({K},), got {weights.tolist()}"
            )
        if covs.shape != (K, D, D):
            raise ArgumentValueError(
                "covs", covs, f"covs must have shape ({K}, {D}, {D}), got {tuple(covs.shape)}"
            )
        if not bool(torch.isfinite(means).all() and torch.isfinite(covs).all()):
            raise ArgumentValueError("means", means, "means and covs must be finite")
        if not torch.allclose(covs, covs.transpose(-1, -2)):
            raise ArgumentValueError(
                "covs", covs, "covs must be symmetric (each covs[k] equal to its transpose)"
            )
        _, info = torch.linalg.cholesky_ex(covs)
        if bool((info != 0).any()):
            raise ArgumentValueError(
                "covs",
                covs,
                "covs must be symmetric positive definite; component(s) "
                f"{(info != 0).nonzero().flatten().tolist()} are not",
            )
        self.weights = weights / weights.sum()
        self.means, self.covs = means, covs
        self.event_shape = (D,) if event_shape is None else tuple(event_shape)
        if math.prod(self.event_shape) != D:
            raise ArgumentValueError(
                "event_shape", event_shape, f"event_shape {self.event_shape} does not hold D={D} entries"
            )

    @classmethod
    def isotropic(cls, means, std: float, weights=None, **kwargs) -> GaussianMixture:
        """Components ``N(mu_k, std^2 I)``, equal weights unless given."""
        means = torch.as_tensor(means)
        K, D = means.shape
        eye = torch.eye(D, dtype=means.dtype, device=means.device)
        w = torch.ones(K, dtype=means.dtype, device=means.device) if weights is None else weights
        return cls(w, means, (std**2) * eye.expand(K, D, D).clone(), **kwargs)

    def linear_map(self, matrix, offset=None, *, event_shape=None) -> GaussianMixture:
        """The law of ``M x + c`` for ``x`` from this mixture: means ``M mu_k + c``, covariances
        ``M Sigma_k M^T`` (``M`` ``(m, D)`` of full row rank, so that they stay positive definite;
        ``c`` ``(m,)``, default 0; samples shaped ``event_shape``, default ``(m,)``). E.g. the
        low-resolution law of a cascade (``M`` average pooling) or the latent law of a linear
        encoder."""
        M = torch.as_tensor(matrix, dtype=self.means.dtype, device=self.means.device)
        if M.ndim != 2 or M.shape[1] != self.dim:
            raise ArgumentValueError(
                "matrix", matrix, f"matrix must have shape (m, {self.dim}), got {tuple(M.shape)}"
            )
        means = self.means @ M.T
        if offset is not None:
            means = means + torch.as_tensor(offset, dtype=M.dtype, device=M.device).reshape(1, -1)
        covs = M @ self.covs @ M.T
        return GaussianMixture(
            self.weights, means, 0.5 * (covs + covs.transpose(-1, -2)), event_shape=event_shape
        )

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, dtype=None, device=None) -> GaussianMixture:
        cast = dict(dtype=dtype, device=device)
        return GaussianMixture(
            self.weights.to(**cast), self.means.to(**cast), self.covs.to(**cast), event_shape=self.event_shape
        )

    # -- data at t = 0 -----------------------------------------------------------------------

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of x_0, shape ``(n, *event_shape)``."""
        n = check_int("n", n, low=1)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self._draw(k, generator)

    def _draw(self, k: torch.Tensor, generator) -> torch.Tensor:
        L = torch.linalg.cholesky(self.covs)
        like = dict(dtype=self.means.dtype, device=self.means.device)
        z = torch.randn(k.shape[0], self.dim, generator=generator, **like)
        x = self.means[k] + (L[k] @ z[..., None])[..., 0]
        return x.reshape((k.shape[0],) + self.event_shape)

    # -- marginals at any t under an SDE ---------------------------------------------------

    def marginal_params(self, sde, t: torch.Tensor):
        """Component means ``(B, K, D)`` and covariances ``(B, K, D, D)`` of p_t at times ``t``;
        the leading dimension is 1 when all times are equal (the parameters then broadcast)."""
        check_sde(sde)
        t = t.to(self.means.dtype)
        if t.numel() > 1 and bool((t == t[0]).all()):  # one time for the whole batch: do it once
            return self.marginal_params(sde, t[:1])
        like = self.means.new_zeros(t.shape[0], self.dim)
        k = sde.kernel(t, like)
        scale, shift, var = k.scale, k.shift, k.std**2  # (B, D), (B, D), (B,)
        means = scale[:, None, :] * self.means[None] + shift[:, None, :]
        covs = scale[:, None, :, None] * self.covs[None] * scale[:, None, None, :]
        covs = covs + var[:, None, None, None] * torch.eye(self.dim, dtype=var.dtype, device=var.device)
        return means, covs

    def _components(self, x: torch.Tensor, t, sde):
        xf = x.reshape(x.shape[0], -1).to(self.means.dtype)
        if xf.shape[1] != self.dim:
            raise ArgumentValueError(
                "x", x, f"x has {xf.shape[1]} entries per sample; the mixture has D={self.dim}"
            )
        if sde is None:
            means, covs = self.means[None], self.covs[None]
        else:
            means, covs = self.marginal_params(sde, _as_time(t, x))
        L = torch.linalg.cholesky(covs)
        diff = (xf[:, None, :] - means)[..., None]  # (B, K, D, 1)
        sol = torch.linalg.solve_triangular(L, diff, upper=False)
        maha = sol.pow(2).sum(dim=(-2, -1))
        logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        log_comp = torch.log(self.weights) - 0.5 * (self.dim * math.log(2 * math.pi) + logdet + maha)
        return xf, L, diff, log_comp

    def log_prob(self, x: torch.Tensor, t=None, sde=None) -> torch.Tensor:
        """Exact ``log p_t(x)``, shape ``(B,)``; with ``sde=None``, the data density ``log p_0``."""
        _, _, _, log_comp = self._components(x, t, sde)
        return torch.logsumexp(log_comp, dim=1).to(x.dtype)

    def _precision_diffs(self, x, t, sde):
        """Log-weighted component densities ``(B, K)`` and ``C_k^{-1} (x - m_k)`` ``(B, K, D)``."""
        _, L, diff, log_comp = self._components(x, t, sde)
        return log_comp, torch.cholesky_solve(diff, L)[..., 0]

    def score(self, x: torch.Tensor, t, sde) -> torch.Tensor:
        """Exact ``grad_x log p_t(x)``, shaped like ``x``: ``-sum_k r_k C_k^{-1} (x - m_k)``."""
        log_comp, prec_diff = self._precision_diffs(x, t, sde)
        s = -(torch.softmax(log_comp, dim=1)[..., None] * prec_diff).sum(dim=1)
        return s.reshape(x.shape).to(x.dtype)

    def score_fn(self, sde):
        """The exact score of p_t under ``sde`` as a ``score_fn(x, t)``."""
        return lambda x, t: self.score(x, t, sde)

    # -- the labelled mixture: label = component ----------------------------------------------

    @property
    def num_classes(self) -> int:
        """``K``; the label ``K`` is the null (unconditional) label."""
        return self.means.shape[0]

    @property
    def null_label(self) -> int:
        return self.num_classes

    def check_labels(self, y, batch: int, *, allow_null: bool = True) -> torch.Tensor:
        """``y``: an integer tensor of shape ``(batch,)`` with entries in ``[0, K]`` (``[0, K)``
        without ``allow_null``). Returned on the mixture's device."""
        K = self.num_classes
        if not isinstance(y, torch.Tensor):
            raise ArgumentTypeError("y", y, f"y must be a LongTensor of labels, got {type(y).__name__}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ArgumentTypeError(
                "y", y, f"y must hold integer labels (e.g. torch.long), got dtype {y.dtype}"
            )
        if tuple(y.shape) != (batch,):
            got = tuple(y.shape)
            want = f"({batch},) (one label per sample of x)" if batch >= 0 else "(n,)"
            raise ArgumentValueError("y", y, f"y must have shape {want}, got {got}")
        high = K if allow_null else K - 1
        bad = (y < 0) | (y > high)
        if bool(bad.any()):
            allowed = f"0..{K - 1}, or {K} for unconditional" if allow_null else f"0..{K - 1}"
            raise ArgumentValueError(
                "y",
                y,
                f"y must hold labels in {allowed} (the mixture has K={K} components), "
                f"got {y[bad][:5].tolist()}",
            )
        return y.to(self.means.device)

    def conditional_score(self, x: torch.Tensor, t, sde, y=None) -> torch.Tensor:
        """Exact ``grad_x log p_t(x | y) = -C_y^{-1} (x - m_y)``, shaped like ``x``; rows with
        ``y = K`` (and every row when ``y`` is ``None``) get the mixture's score."""
        if y is None:
            return self.score(x, t, sde)
        y = self.check_labels(y, x.shape[0])
        log_comp, prec_diff = self._precision_diffs(x, t, sde)
        uncond = -(torch.softmax(log_comp, dim=1)[..., None] * prec_diff).sum(dim=1)
        rows = torch.arange(x.shape[0], device=y.device)
        cond = -prec_diff[rows, y.clamp(max=self.num_classes - 1)]
        s = torch.where((y < self.num_classes)[:, None], cond, uncond)
        return s.reshape(x.shape).to(x.dtype)

    def conditional_score_fn(self, sde):
        """The exact class-conditional score as ``score_fn(x, t, y=None)`` (``y`` of shape ``(B,)``;
        ``None`` or ``K`` for the unconditional score)."""

        def score_fn(x, t, y=None):
            return self.conditional_score(x, t, sde, y)

        score_fn.num_classes = score_fn.null_label = self.num_classes
        return score_fn

    def log_responsibility(self, x: torch.Tensor, t, sde, y) -> torch.Tensor:
        """Exact ``log p(y | x_t)``, shape ``(B,)``: the log-responsibility of component ``y``
        (differentiable in ``x``); ``y`` in ``[0, K)``."""
        y = self.check_labels(y, x.shape[0], allow_null=False)
        _, _, _, log_comp = self._components(x, t, sde)
        log_r = log_comp - torch.logsumexp(log_comp, dim=1, keepdim=True)
        return log_r[torch.arange(x.shape[0], device=y.device), y].to(x.dtype)

    def classifier_fn(self, sde):
        """The exact noisy classifier as ``log_prob_fn(x, t, y) -> (B,)`` = ``log p(y | x_t)``."""
        return lambda x, t, y: self.log_responsibility(x, t, sde, y)

    def sample_conditional(self, y, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws of ``x_0 | y``, one per label of ``y`` ``(n,)``: shape ``(n, *event_shape)``."""
        n = y.shape[0] if isinstance(y, torch.Tensor) and y.ndim == 1 else -1
        y = self.check_labels(y, n, allow_null=False)
        return self._draw(y, generator)

    def sample_marginal_conditional(self, y, t: float, sde, *, generator=None) -> torch.Tensor:
        """Exact draws of ``p_t(x | y)``, one per label of ``y`` ``(n,)``: ``x_0 | y``, then the kernel."""
        return self._noised(self.sample_conditional(y, generator=generator), t, sde, generator)

    def sample_marginal(self, n: int, t: float, sde, *, generator=None) -> torch.Tensor:
        """``n`` exact draws of p_t under ``sde``: x_0 from the mixture, then the kernel."""
        return self._noised(self.sample(n, generator=generator), t, sde, generator)

    @staticmethod
    def _noised(x0, t, sde, generator):
        mean, std = sde.marginal(x0, time_vector(t, x0))
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return mean + std.reshape((-1,) + (1,) * (x0.ndim - 1)) * z


def _as_time(t, x):
    if t is None:
        raise ArgumentValueError("t", t, "t is required when sde is given")
    if isinstance(t, (int, float)):
        return time_vector(float(t), x)
    return t


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased squared energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (Szekely & Rizzo 2013)
    between samples ``x`` (n, ...) and ``y`` (m, ...); zero in expectation when they share a law."""
    x = check_tensor("x", x).reshape(x.shape[0], -1).double()
    y = check_tensor("y", y).reshape(y.shape[0], -1).double()
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"energy_distance needs at least 2 samples on each side, got {n} and {m}")
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * xy - xx - yy)
