"""Vector data sets: Gaussian mixtures with exact densities and the usual 2-D toy sets.

Samplers take ``(n, generator=None)`` and return float tensors of shape ``(n, 2)``; the 2-D sets
follow the FFJORD toy sets (Grathwohl et al. 2019), rescaled to a standard deviation of 1 to 3.
Exact log-densities exist for :func:`gmm8`, :func:`gaussian_mixture`, :func:`checkerboard` and
:func:`rings` (see :func:`checkerboard_log_prob`, :func:`rings_log_prob`); the moons and the swiss
roll (curves blurred by 2-D Gaussian noise) have none in closed form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .._checks import ArgumentValueError, check_int, check_positive
from .oracle import GaussianMixture

__all__ = [
    "gmm8",
    "gaussian_mixture",
    "checkerboard",
    "checkerboard_log_prob",
    "moons",
    "swissroll",
    "rings",
    "rings_log_prob",
    "mixture_entropy",
    "VectorData",
    "load_vector",
    "VECTOR_DATASETS",
]


# -- Gaussian mixtures (exact density, score and marginals through sde_gen.GaussianMixture) ------


def gmm8(*, radius: float = 4.0, std: float = 0.5, dtype=torch.float64) -> GaussianMixture:
    """Eight equally weighted ``N(mu_k, std^2 I)`` in 2-D, ``mu_k = radius (cos a_k, sin a_k)``,
    ``a_k = 2 pi k / 8`` (neighbouring means ``2 radius sin(pi/8) = 3.06`` apart: 6 std)."""
    a = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = radius * torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    return GaussianMixture.isotropic(means.to(dtype), check_positive("std", std))


def gaussian_mixture(
    dim: int,
    num_components: int,
    seed: int = 0,
    *,
    mean_scale: float = 3.0,
    std_range: tuple[float, float] = (0.3, 1.0),
    dtype=torch.float64,
) -> GaussianMixture:
    """A random mixture of ``num_components`` full-covariance Gaussians in ``dim`` dimensions.

    From ``torch.Generator().manual_seed(seed)`` (float64, CPU): means ``~ N(0, mean_scale^2 I)``;
    covariances ``Q diag(s^2) Q^T`` with ``Q`` a random rotation (QR of a Gaussian matrix) and
    ``s ~ Uniform(std_range)``; weights ``~ Uniform[0.5, 1.5]``, normalised.
    """
    dim = check_int("dim", dim, low=1)
    num_components = check_int("num_components", num_components, low=1)
    seed = check_int("seed", seed, low=0)
    mean_scale = check_positive("mean_scale", mean_scale)
    lo, hi = (float(s) for s in std_range)
    if not 0 < lo <= hi:
        raise ArgumentValueError(
            "std_range", std_range, f"std_range must satisfy 0 < low <= high, got {std_range!r}"
        )
    g = torch.Generator().manual_seed(seed)
    K, D, f64 = num_components, dim, torch.float64
    means = mean_scale * torch.randn(K, D, generator=g, dtype=f64)
    q, r = torch.linalg.qr(torch.randn(K, D, D, generator=g, dtype=f64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # Haar-distributed rotation
    s = lo + (hi - lo) * torch.rand(K, D, generator=g, dtype=f64)
    covs = (q * s[:, None, :] ** 2) @ q.transpose(-1, -2)
    covs = 0.5 * (covs + covs.transpose(-1, -2))
    weights = 0.5 + torch.rand(K, generator=g, dtype=f64)
    return GaussianMixture(weights, means, covs).to(dtype=dtype)


def mixture_entropy(
    mix, n: int = 100_000, *, generator: torch.Generator | None = None, batch_size: int = 65_536
) -> tuple[float, float]:
    """Monte-Carlo differential entropy ``H = -E log p(x)`` (nats) and its standard error.

    ``mix`` is any distribution with ``sample(n, generator=)`` and ``log_prob(x) -> (n,)``, e.g.
    a :class:`~sde_gen.GaussianMixture`; ``n`` draws in batches of ``batch_size``;
    SE = ``std(log p) / sqrt(n)``. Used for KL gaps: ``KL(p || q) = -H(p) - E_p log q``.
    """
    n = check_int("n", n, low=2)
    batch_size = check_int("batch_size", batch_size, low=1)
    parts = []
    for start in range(0, n, batch_size):
        x = mix.sample(min(batch_size, n - start), generator=generator)
        parts.append(mix.log_prob(x).double())
    lp = torch.cat(parts)
    if not bool(torch.isfinite(lp).all()):
        raise ValueError(f"log_prob is not finite at {int((~torch.isfinite(lp)).sum())} of {n} samples")
    return float(-lp.mean()), float(lp.std(unbiased=True) / math.sqrt(n))


# -- 2-D toy sets ---------------------------------------------------------------------------------


def _rand(n, generator, *size):
    return torch.rand((n,) + size, generator=generator, dtype=torch.float64)


def _randn(n, generator, *size):
    return torch.randn((n,) + size, generator=generator, dtype=torch.float64)


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the 8 cells ``[2i-4, 2i-2) x [2j-4, 2j-2)``, ``i + j`` even, of a 4x4 board on
    ``[-4, 4)^2``: density ``1/32`` on them (:func:`checkerboard_log_prob`); std about 2.3."""
    n = check_int("n", n, low=1)
    cell = torch.randint(8, (n,), generator=generator)
    i = cell // 2
    j = 2 * (cell % 2) + i % 2  # i + j even
    u = _rand(n, generator, 2)
    return torch.stack([2 * i - 4 + 2 * u[:, 0], 2 * j - 4 + 2 * u[:, 1]], dim=1).float()


def checkerboard_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Exact log-density of :func:`checkerboard`, ``(n, 2) -> (n,)``: ``-log 32`` on the board's
    cells, ``-inf`` elsewhere."""
    ij = torch.floor((x + 4) / 2)
    inside = ((x >= -4) & (x < 4)).all(dim=1) & (ij.sum(dim=1) % 2 == 0)
    out = torch.full(x.shape[:1], -math.log(32.0), dtype=x.dtype, device=x.device)
    return out.masked_fill(~inside, -math.inf)


def moons(n: int, generator: torch.Generator | None = None, *, noise: float = 0.1) -> torch.Tensor:
    """Two interleaved half circles (scikit-learn's ``make_moons``: upper ``(cos t, sin t)``,
    lower ``(1 - cos t, 1/2 - sin t)``, ``t ~ U[0, pi]``) plus ``N(0, noise^2 I)``, then centred at
    ``(1/2, 1/4)`` and scaled by 2 (std about 1.7 and 1.0). No closed-form density."""
    n = check_int("n", n, low=1)
    t = math.pi * _rand(n, generator)
    lower = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
    x = torch.where(lower, 1 - torch.cos(t), torch.cos(t))
    y = torch.where(lower, 0.5 - torch.sin(t), torch.sin(t))
    xy = torch.stack([x, y], dim=1) + noise * _randn(n, generator, 2)
    return (2 * (xy - torch.tensor([0.5, 0.25], dtype=torch.float64))).float()


def swissroll(n: int, generator: torch.Generator | None = None, *, noise: float = 1.0) -> torch.Tensor:
    """2-D swiss roll as in FFJORD: ``t = 1.5 pi (1 + 2 u)``, ``(t cos t, t sin t) + N(0, noise^2 I)``,
    divided by 5 (std about 1.3 and 1.4). No closed-form density."""
    n = check_int("n", n, low=1)
    t = 1.5 * math.pi * (1 + 2 * _rand(n, generator))
    xy = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) + noise * _randn(n, generator, 2)
    return (xy / 5).float()


_RING_RADII = (1.0, 2.0, 3.0, 4.0)
_RING_STD = 0.1


def rings(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Four concentric rings of radii 1, 2, 3, 4 (std about 2.2): ring ``k`` drawn with probability
    proportional to its radius, angle ``~ U[0, 2 pi)``, signed radius ``r = R_k + 0.1 z``. The noise
    is radial, so the density is exact: :func:`rings_log_prob`."""
    n = check_int("n", n, low=1)
    radii = torch.tensor(_RING_RADII, dtype=torch.float64)
    k = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=generator)
    theta = 2 * math.pi * _rand(n, generator)
    r = radii[k] + _RING_STD * _randn(n, generator)
    return (r[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)).float()


def rings_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Exact log-density of :func:`rings`, ``(n, 2) -> (n,)``. The map ``(r, theta) -> x`` is 2-to-1
    (``(-r, theta + pi)`` lands on the same x) with Jacobian ``|r|``, so with ``rho = |x|``:
    ``p(x) = sum_k w_k [N(rho; R_k, s) + N(-rho; R_k, s)] / (2 pi rho)``."""
    xd = x.double()
    rho = xd.norm(dim=1)
    radii = torch.tensor(_RING_RADII, dtype=torch.float64, device=x.device)
    log_w = torch.log(radii / radii.sum())
    s = _RING_STD

    def log_normal(v):
        return -0.5 * ((v[:, None] - radii) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))

    lp = torch.logsumexp(torch.cat([log_w + log_normal(rho), log_w + log_normal(-rho)], dim=1), dim=1)
    return (lp - torch.log(2 * math.pi * rho)).to(x.dtype)


# -- loader ----------------------------------------------------------------------------------------


@dataclass
class VectorData:
    """A vector data set: ``train`` ``(n_train, D)`` and ``test`` ``(n_test, D)`` float tensors.

    ``log_prob``: the exact data log-density ``(B, D) -> (B,)`` when known, else ``None``;
    ``mixture``: the :class:`~sde_gen.GaussianMixture` the data come from, else ``None``.
    """

    train: torch.Tensor
    test: torch.Tensor
    name: str
    log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None
    mixture: GaussianMixture | None = None

    @property
    def dim(self) -> int:
        return self.train.shape[1]


_SAMPLERS = {
    "checkerboard": (checkerboard, checkerboard_log_prob),
    "moons": (moons, None),
    "swissroll": (swissroll, None),
    "rings": (rings, rings_log_prob),
}
VECTOR_DATASETS = ("gmm8", "checkerboard", "moons", "swissroll", "rings", "mixture{D}d", "mixture{D}d{K}k")
_MIXTURE = re.compile(r"mixture(\d+)d(?:(\d+)k)?")


def _split_generator(seed: int, split: int) -> torch.Generator:
    """An independent stream per (seed, split): ``numpy.random.SeedSequence([seed, split])``."""
    state = np.random.SeedSequence([seed, split]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def load_vector(
    name: str,
    n_train: int = 10_000,
    n_test: int = 10_000,
    seed: int = 0,
    *,
    dtype=torch.float32,
    num_components: int = 8,
    mixture_seed: int = 0,
) -> VectorData:
    """Draw a vector data set by name (see ``VECTOR_DATASETS``).

    Train and test come from two generators seeded from ``SeedSequence([seed, 0])`` and
    ``SeedSequence([seed, 1])``: reproducible, and independent draws (disjoint almost surely).
    ``"mixture{D}d"`` is :func:`gaussian_mixture` (``D``, ``num_components``, ``mixture_seed``);
    ``"mixture{D}d{K}k"`` sets ``K`` components. The mixture is fixed by its name and
    ``mixture_seed``, not by ``seed``.
    """
    n_train = check_int("n_train", n_train, low=1)
    n_test = check_int("n_test", n_test, low=1)
    seed = check_int("seed", seed, low=0)
    g_train, g_test = _split_generator(seed, 0), _split_generator(seed, 1)
    m = _MIXTURE.fullmatch(name) if isinstance(name, str) else None
    if name == "gmm8" or m is not None:
        if m is None:
            mix = gmm8()
        else:
            k = num_components if m.group(2) is None else int(m.group(2))
            mix = gaussian_mixture(int(m.group(1)), k, mixture_seed)
        train = mix.sample(n_train, generator=g_train).to(dtype)
        test = mix.sample(n_test, generator=g_test).to(dtype)
        return VectorData(train, test, name, mix.log_prob, mix)
    if name in _SAMPLERS:
        fn, log_prob = _SAMPLERS[name]
        return VectorData(fn(n_train, g_train).to(dtype), fn(n_test, g_test).to(dtype), name, log_prob)
    raise ArgumentValueError("name", name, f"name must be one of {list(VECTOR_DATASETS)}, got {name!r}")
