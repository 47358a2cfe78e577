"""Noise keyed per sample: a sample's noise depends on a seed and the sample's index, not its batch.

:class:`KeyedNoise` is passed as ``generator=`` to :func:`sde_gen.sample` (and used by
``generate_samples(noise="keyed")``). Every standard normal it gives is a pure function of four
integers: the ``seed``, the sample's global index (``offset`` + its row in the batch), the draw
number within one ``sample`` call (the prior is draw 0, the solver's noise draws 1, 2, ...) and the
element's flat index within the sample. Drawing 1,000 samples in one batch or in batches of 7
(``offset=0, 7, 14, ...``) therefore gives the same samples, bit for bit, with any solver that draws
its noise through :func:`sde_gen.solvers.base.noise_like` and a score function that treats the rows
of a batch independently.

The scheme (counter-based, in the spirit of Salmon et al. 2011, "Parallel random numbers: as easy
as 1, 2, 3"), with ``h`` SplitMix64's output function (Steele, Lea & Flood 2014):

- row key ``K = h(h(h(seed) ^ index) ^ h(draw))``; element ``e`` gets the 64 bits
  ``h(K + e * gamma)``, i.e. output ``e`` of a SplitMix64 stream seeded with ``K``;
- its top 52 bits ``j`` give the uniform ``u = (2 j + 1) / 2^53`` in (0, 1), exactly symmetric
  about 1/2 (``u`` and ``1 - u`` are equally likely), and ``z = Phi^{-1}(u)`` by Wichura's
  algorithm AS 241 (1988, PPND16: rational approximations, relative error about 1e-16), the
  logarithm it needs written with ``frexp`` and an ``atanh`` series.

Everything runs on the tensor's device on int64 (multiplication wraps modulo 2^64; right shifts are
masked to be logical) and float64 with ``+ - * /`` and ``sqrt`` only, each correctly rounded by
IEEE 754, so the normals are the same bits on any device and for any batch layout; they are then
cast to the requested dtype. ``tests/test_keyed_noise.py`` checks the hash against a pure-Python
reference, the transform against ``scipy.special.ndtri``, the moments and a Kolmogorov-Smirnov test
of the normals, and their correlations across draws, indices and elements.
"""

from __future__ import annotations

import math

import torch

from .._checks import ArgumentValueError, check_int

__all__ = ["KeyedNoise"]

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_C1, _C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(v: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``v``."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _mix(z: int) -> int:
    """SplitMix64's output function on a Python int (the reference for :func:`_mix_t`)."""
    z = (z + _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _C1) & _MASK64
    z = ((z ^ (z >> 27)) * _C2) & _MASK64
    return z ^ (z >> 31)


def _lsr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic for negative values)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix_t(z: torch.Tensor) -> torch.Tensor:
    """:func:`_mix` on an int64 tensor (bits as unsigned; multiplication wraps modulo 2^64)."""
    z = z + _signed(_GAMMA)
    z = (z ^ _lsr(z, 30)) * _signed(_C1)
    z = (z ^ _lsr(z, 27)) * _signed(_C2)
    return z ^ _lsr(z, 31)


# Wichura (1988), AS 241 PPND16: numerator and denominator coefficients, highest degree first.
_CENTRAL = (
    (2.5090809287301226727e3, 3.3430575583588128105e4, 6.7265770927008700853e4, 4.5921953931549871457e4,
     1.3731693765509461125e4, 1.9715909503065514427e3, 1.3314166789178437745e2, 3.3871328727963666080e0),
    (5.2264952788528545610e3, 2.8729085735721942674e4, 3.9307895800092710610e4, 2.1213794301586595867e4,
     5.3941960214247511077e3, 6.8718700749205790830e2, 4.2313330701600911252e1, 1.0),
)  # fmt: skip
_INNER_TAIL = (
    (7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1,
     1.27045825245236838258e0, 3.64784832476320460504e0, 5.76949722146069140550e0,
     4.63033784615654529590e0, 1.42343711074968357734e0),
    (1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2,
     1.48103976427480074590e-1, 6.89767334985100004550e-1, 1.67638483018380384940e0,
     2.05319162663775882187e0, 1.0),
)  # fmt: skip
_FAR_TAIL = (
    (2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3,
     2.65321895265761230930e-2, 2.96560571828504891230e-1, 1.78482653991729133580e0,
     5.46378491116411436990e0, 6.65790464350110377720e0),
    (2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5,
     7.86869131145613259100e-4, 1.48753612908506148525e-2, 1.36929880922735805310e-1,
     5.99832206555887937690e-1, 1.0),
)  # fmt: skip
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # LN2_HI has 21 zero low bits


_TABLES: dict = {}


def _table(coeffs, dtype, device) -> torch.Tensor:
    """``coeffs`` as a tensor on ``device``, made once per device."""
    key = (id(coeffs), dtype, torch.device(device))
    if key not in _TABLES:
        _TABLES[key] = torch.tensor(coeffs, dtype=dtype, device=device)
    return _TABLES[key]


def _horner(coeffs, r: torch.Tensor) -> torch.Tensor:
    """``sum_k c_k r^k`` by Horner's rule (``coeffs`` highest degree first), one correctly rounded
    operation at a time (no fused multiply-add, so every device gives the same bits). ``coeffs``
    may be a table of several polynomials, one a row, evaluated together: the result then has a
    leading dimension, one entry per polynomial."""
    if isinstance(coeffs[0], (tuple, list)):
        table = _table(coeffs, r.dtype, r.device)  # (P, K)
        coeffs = table.T.reshape((table.shape[1], table.shape[0]) + (1,) * r.dim())
    p = r * coeffs[0]
    for c in coeffs[1:-1]:
        p.add_(c).mul_(r)
    return p.add_(coeffs[-1])


def _rational(coeffs, r: torch.Tensor) -> torch.Tensor:
    num, den = _horner(coeffs, r)
    return num.div_(den)


def _log(p: torch.Tensor) -> torch.Tensor:
    """``log p`` for positive float64 ``p``, from ``frexp`` (exact) and ``2 atanh(s)`` as a series
    in ``s = (m - 1) / (m + 1)``, ``|s| <= 0.1716`` (10 terms: truncation below 3e-17 relative)."""
    m, e = torch.frexp(p)  # p = m 2^e, m in [1/2, 1)
    low = m < math.sqrt(0.5)
    m = torch.where(low, m * 2.0, m)
    e = (e - low.to(e.dtype)).to(p.dtype)  # m now in [sqrt(1/2), sqrt(2))
    s = (m - 1.0) / (m + 1.0)
    series = _horner([1.0 / (2 * k + 1) for k in range(9, -1, -1)], s * s)
    return e * _LN2_HI + (2.0 * s * series + e * _LN2_LO)


def _tail(u: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """AS 241's tails: ``r = sqrt(-log p)``, ``p = min(u, 1 - u)`` (exact), sign from ``q = u - 1/2``."""
    p = torch.where(q < 0, u, 1.0 - u)
    r = torch.sqrt(-_log(p))
    z = torch.where(r > 5.0, _rational(_FAR_TAIL, r - 5.0), _rational(_INNER_TAIL, r - 1.6))
    return torch.where(q < 0, -z, z)


def _normal_from_bits(bits: torch.Tensor, subset: bool | None = None) -> torch.Tensor:
    """Standard normals (float64) from 64 random bits each: ``Phi^{-1}(u)``, AS 241. With
    ``subset`` (the default on CPU) the tails are computed on the ~15% of entries that need them;
    without (the default elsewhere: boolean indexing would make a GPU wait), on every entry and
    selected. Each entry goes through the same operations either way, so the bits agree."""
    j = _lsr(bits.reshape(-1), 12)  # 52 bits
    u = (2 * j + 1).to(torch.float64) * 2.0**-53  # exact: odd multiples of 2^-53 in (0, 1)
    q = u - 0.5  # exact
    z = _rational(_CENTRAL, 0.180625 - q * q).mul_(q)
    tail = q.abs() > 0.425
    if subset if subset is not None else z.device.type == "cpu":
        idx = tail.nonzero().squeeze(1)
        z.index_copy_(0, idx, _tail(u.index_select(0, idx), q.index_select(0, idx)))
    else:
        z = torch.where(tail, _tail(u, q), z)
    return z.reshape(bits.shape)


def _check_seed(seed) -> int:
    seed = check_int("seed", seed, low=0)
    if seed > _MASK64:
        raise ArgumentValueError("seed", seed, f"seed must be in [0, 2**64), got {seed!r}")
    return seed


class KeyedNoise:
    """A source of standard normal noise keyed per sample: pass it as ``generator=`` to
    :func:`sde_gen.sample`.

    Row ``r`` of a batch is sample ``offset + r``; its noise depends only on ``(seed, offset + r,
    draw, element)`` (the scheme is in the module docstring). So ``sample(..., shape=(1000, d),
    generator=KeyedNoise(seed))`` equals the concatenation of ``sample(..., shape=(7, d),
    generator=KeyedNoise(seed, offset=i))`` for ``i = 0, 7, 14, ...``. Every :func:`sample` call
    starts again at draw 0 (like reseeding a ``torch.Generator``): the same ``KeyedNoise`` gives
    the same samples each time. Used directly, :meth:`normal_like` counts its draws in ``draw``.
    """

    def __init__(self, seed: int, offset: int = 0):
        self.seed = _check_seed(seed)
        self.offset = check_int("offset", offset, low=0)
        self.draw = 0
        self._seed_key = _mix(self.seed)

    def restarted(self) -> KeyedNoise:
        """A copy at draw 0 (what :func:`sde_gen.sample` uses, leaving this one untouched)."""
        return KeyedNoise(self.seed, self.offset)

    def at(self, draw: int) -> KeyedNoise:
        """A copy whose next draw is ``draw`` (what a solver's ``step`` uses, leaving this one
        untouched)."""
        out = KeyedNoise(self.seed, self.offset)
        out.draw = check_int("draw", draw, low=0)
        return out

    def _row_keys(self, batch: int, draw: int, device) -> torch.Tensor:
        """The int64 keys ``h(h(h(seed) ^ index) ^ h(draw))`` of rows ``0..batch-1``, shape ``(batch,)``."""
        check_int("draw", draw, low=0)
        if self.offset + batch > 1 << 63:
            raise ValueError(f"offset + batch size must stay below 2**63, got {self.offset} + {batch}")
        index = torch.arange(batch, dtype=torch.int64, device=device) + self.offset
        return _mix_t(_mix_t(index ^ _signed(self._seed_key)) ^ _signed(_mix(draw)))

    def row_seed(self, row: int, draw: int) -> int:
        """The 64-bit key of sample ``offset + row`` at ``draw`` as a Python int: a seed for a
        per-sample ``torch.Generator`` where noise must come from one (e.g. a user's prior)."""
        index = self.offset + check_int("row", row, low=0)
        return _mix(_mix(self._seed_key ^ index) ^ _mix(check_int("draw", draw, low=0)))

    def normal(self, shape, *, draw: int, dtype=None, device=None) -> torch.Tensor:
        """Keyed standard normals of shape ``(B, ...)`` for draw number ``draw`` (a pure function:
        the counter ``draw`` of this object is neither read nor changed)."""
        given, shape = shape, tuple(shape)
        if len(shape) == 0:
            raise ArgumentValueError("shape", given, "shape must be (B, ...) with a batch dimension, got ()")
        probe = torch.empty(0, dtype=dtype, device=device)  # torch's default dtype and device
        batch, n = shape[0], math.prod(shape[1:])
        keys = self._row_keys(batch, draw, probe.device)
        elems = torch.arange(n, dtype=torch.int64, device=probe.device) * _signed(_GAMMA)
        z = _normal_from_bits(_mix_t(keys[:, None] + elems[None, :]))
        return z.reshape(shape).to(probe.dtype)

    def normal_like(self, x: torch.Tensor) -> torch.Tensor:
        """Keyed standard normals shaped like ``x`` (its dtype and device) for the current draw,
        then advance the draw counter."""
        z = self.normal(x.shape, draw=self.draw, dtype=x.dtype, device=x.device)
        self.draw += 1
        return z

    def __repr__(self) -> str:
        return f"KeyedNoise(seed={self.seed}, offset={self.offset}, draw={self.draw})"
