"""Integer levels <-> model space and uniform dequantization (Theis et al. 2016).

Data with ``levels`` values ``k`` per dimension map to ``y = low + (high - low) (k + U) / levels``,
``U ~ Uniform[0, 1)``: bin ``k`` is ``[low + k w, low + (k + 1) w)`` with ``w = (high - low) / levels``,
the convention of :func:`sde_gen.bits_per_dim`. Bits/dim itself (``dequantized_bpd`` and the rest)
lives in :mod:`sde_gen.bpd`; the old names here still import from there.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_int, check_real

__all__ = ["LevelTransform"]


class LevelTransform:
    """The affine map between ``levels`` integer values and ``[low, high)``.

    Args:
        levels: number of values per dimension (17 for digits, 256 for 8-bit images).
        low, high: the model's range (``[-1, 1)`` by default, as in Song et al. 2021).
    """

    def __init__(self, levels: int, low: float = -1.0, high: float = 1.0):
        self.levels = check_int("levels", levels, low=2)
        self.low, self.high = check_real("low", low), check_real("high", high)
        if self.high <= self.low:
            raise ValueError(f"high must be > low, got low={low!r}, high={high!r}")

    def __repr__(self) -> str:
        return f"LevelTransform(levels={self.levels}, low={self.low}, high={self.high})"

    @property
    def bin_width(self) -> float:
        """``w = (high - low) / levels``, the side of one bin in model space."""
        return (self.high - self.low) / self.levels

    def _check_levels(self, k: torch.Tensor) -> torch.Tensor:
        if not isinstance(k, torch.Tensor):
            raise TypeError(f"k must be a torch.Tensor of integer levels, got {type(k).__name__}")
        if k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
            raise TypeError(f"k must be an integer tensor (e.g. torch.uint8), got dtype {k.dtype}")
        if k.numel() and (int(k.min()) < 0 or int(k.max()) > self.levels - 1):
            raise ValueError(
                f"k must lie in [0, {self.levels - 1}] (levels={self.levels}), "
                f"got values in [{int(k.min())}, {int(k.max())}]"
            )
        return k.to(torch.int64)

    def centers(self, k: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Bin centres ``low + w (k + 1/2)``, shaped like ``k``; no noise."""
        k = self._check_levels(k).double()
        return (self.low + self.bin_width * (k + 0.5)).to(dtype)

    def dequantize(
        self, k: torch.Tensor, generator: torch.Generator | None = None, dtype=torch.float32
    ) -> torch.Tensor:
        """``y = low + (high - low) (k + U) / levels``, ``U ~ Uniform[0, 1)`` i.i.d., shaped like ``k``.

        Computed in float64, rounded to ``dtype`` and then moved by at most a few ulps where the
        rounding left bin ``k``, so that ``to_levels(y) == k`` exactly and ``low <= y < high``.
        """
        k = self._check_levels(k)
        u = torch.rand(k.shape, generator=generator, dtype=torch.float64, device=k.device)
        y = (self.low + (self.high - self.low) * (k.double() + u) / self.levels).to(dtype)
        down = torch.tensor(-math.inf, dtype=dtype, device=k.device)
        up = torch.tensor(math.inf, dtype=dtype, device=k.device)
        for _ in range(64):
            kk = self._bins(y)
            above, below = kk > k, kk < k
            if not bool((above | below).any()):
                return y
            y = torch.where(above, torch.nextafter(y, down), y)
            y = torch.where(below, torch.nextafter(y, up), y)
        raise RuntimeError(
            f"dequantize: {dtype} cannot resolve {self.levels} bins on [{self.low}, {self.high})"
        )

    def _bins(self, y: torch.Tensor) -> torch.Tensor:
        return torch.floor((y.double() - self.low) / (self.high - self.low) * self.levels).to(torch.int64)

    def to_levels(self, y: torch.Tensor) -> torch.Tensor:
        """The inverse: ``floor((y - low) / (high - low) * levels)`` clamped to ``[0, levels - 1]``,
        int64 shaped like ``y`` (computed in float64)."""
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise TypeError(f"y must be a floating-point torch.Tensor, got {getattr(y, 'dtype', type(y))}")
        return self._bins(y).clamp_(0, self.levels - 1)

    def bits_per_dim(self, log_prob: torch.Tensor, num_dims: int) -> torch.Tensor:
        """Bits/dim from ``log p_y`` (nats) of dequantized data in model space; calls
        :func:`sde_gen.bits_per_dim` with this transform's ``levels``, ``low`` and ``high``."""
        from ..bpd import bits_per_dim  # here: sde_gen.bpd imports this module

        return bits_per_dim(log_prob, num_dims, levels=self.levels, low=self.low, high=self.high)


_MOVED_TO_BPD = ("check_level_data", "dequantized_bpd", "dequantized_bpd_per_image")


def __getattr__(name: str):
    # The dequantized bits/dim moved to sde_gen.bpd, which imports this module: re-exported on first use.
    if name in _MOVED_TO_BPD:
        from .. import bpd

        return getattr(bpd, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
