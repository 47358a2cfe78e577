"""Integer levels <-> model space and uniform dequantization (Theis et al. 2016).

Data with ``levels`` values ``k`` per dimension map to ``y = low + (high - low) (k + U) / levels``,
``U ~ Uniform[0, 1)``: bin ``k`` is ``[low + k w, low + (k + 1) w)`` with ``w = (high - low) / levels``,
the convention of :func:`bits_per_dim` here, which turns a log-density into bits/dim.
"""

from __future__ import annotations

import math

import torch

from .._checks import ArgumentTypeError, ArgumentValueError, check_int, check_real

__all__ = ["LevelTransform", "bits_per_dim", "check_level_data"]


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
            raise ArgumentValueError("high", high, f"high must be > low, got low={low!r}, high={high!r}")

    def __repr__(self) -> str:
        return f"LevelTransform(levels={self.levels}, low={self.low}, high={self.high})"

    @property
    def bin_width(self) -> float:
        """``w = (high - low) / levels``, the side of one bin in model space."""
        return (self.high - self.low) / self.levels

    def _check_levels(self, k: torch.Tensor) -> torch.Tensor:
        if not isinstance(k, torch.Tensor):
            raise ArgumentTypeError(
                "k", k, f"k must be a torch.Tensor of integer levels, got {type(k).__name__}"
            )
        if k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
            raise ArgumentTypeError(
                "k", k, f"k must be an integer tensor (e.g. torch.uint8), got dtype {k.dtype}"
            )
        if k.numel() and (int(k.min()) < 0 or int(k.max()) > self.levels - 1):
            raise ArgumentValueError(
                "k",
                k,
                f"k must lie in [0, {self.levels - 1}] (levels={self.levels}), "
                f"got values in [{int(k.min())}, {int(k.max())}]",
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
            raise ArgumentTypeError(
                "y", y, f"y must be a floating-point torch.Tensor, got {getattr(y, 'dtype', type(y))}"
            )
        return self._bins(y).clamp_(0, self.levels - 1)

    def bits_per_dim(self, log_prob: torch.Tensor, num_dims: int) -> torch.Tensor:
        """Bits/dim from ``log p_y`` (nats) of dequantized data in model space; calls
        :func:`sde_gen.bits_per_dim` with this transform's ``levels``, ``low`` and ``high``."""
        return bits_per_dim(log_prob, num_dims, levels=self.levels, low=self.low, high=self.high)


def bits_per_dim(
    log_prob: torch.Tensor, num_dims: int, *, levels: int = 256, low: float = -1.0, high: float = 1.0
) -> torch.Tensor:
    """Bits per dimension of discrete data from the log-density of its dequantized form.

    Data with ``levels`` values ``k`` per dimension are dequantized, ``u = (k + U) / levels`` with
    ``U ~ Uniform[0, 1)^d``, and mapped affinely onto the model's range, ``y = low + (high - low) u``.
    One quantization bin is then a cube of side ``w = (high - low) / levels`` in y, so the discrete
    probability is bounded below by Jensen (Theis et al. 2016):

        log P(k) >= E_U[log p_y(y)] + d log w,

    and ``bpd = -(log p_y(y) + d log w) / (d ln 2) = -log p_y(y) / (d ln 2) - log2(w)``.

    For 8-bit data in [-1, 1], ``-log2(2 / 256) = 7``: the reference code's constant. Averaging the
    result over several draws of U estimates the bound's expectation.

    ``log_prob`` (nats, any shape) is ``log p_y`` of the dequantized, mapped data of ``num_dims``
    dimensions each.
    """
    num_dims = check_int("num_dims", num_dims, low=1)
    levels = check_int("levels", levels, low=2)
    low, high = check_real("low", low), check_real("high", high)
    if high <= low:
        raise ArgumentValueError("high", high, f"high must be > low, got low={low!r}, high={high!r}")
    log2_width = math.log2((high - low) / levels)
    return -log_prob / (num_dims * math.log(2.0)) - log2_width


def check_level_data(k, transform, name: str = "k", min_items: int = 0) -> int:
    """Check integer data ``k`` ``(N, ...)`` and its :class:`LevelTransform`; return ``N``.
    ``min_items=2`` for a standard error."""
    if not isinstance(transform, LevelTransform):
        raise ArgumentTypeError(
            "transform", transform, f"transform must be a LevelTransform, got {type(transform).__name__}"
        )
    if not isinstance(k, torch.Tensor) or k.ndim < 1:
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, ...), got {type(k).__name__}")
    if k.shape[0] < min_items:
        raise ValueError(
            f"{name} must hold at least {min_items} items for a standard error, got shape {tuple(k.shape)}"
        )
    return k.shape[0]
