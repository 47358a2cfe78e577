"""Linear measurement operators ``y = A x`` for inverse problems, acting on batches ``(B, ...)``.

A user's operator subclasses :class:`LinearOperator` and implements :meth:`~LinearOperator.forward`,
:meth:`~LinearOperator.transpose` and :meth:`~LinearOperator.y_shape`; everything else (the
pseudo-inverse, the projection onto the row space of ``A``, the dense matrix) has a generic
default. Setting ``gram_scale = c`` when ``A A^T = c I`` gives closed forms and enables the
``"smc"`` method of :func:`~sde_gen.inverse.solve_inverse`.
"""

from __future__ import annotations

import abc
import math

import torch

from ..._checks import ArgumentValueError, check_int

__all__ = ["LinearOperator", "Mask", "Colorization", "SuperResolution"]


class LinearOperator(abc.ABC):
    """A linear map ``A`` from samples shaped ``x_shape`` to measurements shaped ``y_shape(x_shape)``.

    ``A(x)`` is :meth:`forward`; ``A.T(y)`` is the adjoint :meth:`transpose`, with
    ``<A x, y> = <x, A^T y>`` per sample. Both take and return batches ``(B, ...)``.
    """

    #: ``c`` with ``A A^T = c I`` on the measurements ``A`` produces (``None``: not of this form)
    gram_scale: float | None = None

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``: ``(B, *x_shape) -> (B, *y_shape)``."""

    @abc.abstractmethod
    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``: ``(B, *y_shape) -> (B, *x_shape)``."""

    @abc.abstractmethod
    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one measurement for one sample shaped ``x_shape``; raises ``ValueError``
        naming the mismatch when the operator cannot act on such samples."""

    def x_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The sample shape that measurements shaped ``y_shape`` come from, or ``None`` if it cannot
        be inferred (then :func:`~sde_gen.inverse.solve_inverse` needs ``shape``)."""
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def T(self):  # noqa: N802 (the adjoint, as in the maths)
        """The adjoint as a callable: ``A.T(y)``."""
        return self.transpose

    def prepare_y(self, y: torch.Tensor) -> torch.Tensor:
        """The measurement as the methods use it (a :class:`Mask` zeroes the ignored entries)."""
        return y

    def obs_dim(self, x_shape: tuple[int, ...]) -> int:
        """The number of scalar measurements per sample (the rank of ``A`` for the operators here)."""
        return math.prod(self.y_shape(tuple(x_shape)))

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``A^+ y = A^T (A A^T)^{-1} y``: ``y / c`` mapped back when ``A A^T = c I``, otherwise by
        conjugate gradients on ``A A^T`` (``A`` must have full row rank)."""
        if self.gram_scale is not None:
            return self.transpose(y) / self.gram_scale
        return self.transpose(_conjugate_gradient(lambda u: self.forward(self.transpose(u)), y))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``A^+ A x``: the orthogonal projection onto the row space of ``A`` (the "known part")."""
        return self.pinv(self.forward(x))

    def matrix(self, x_shape, *, dtype=torch.float64, device=None) -> torch.Tensor:
        """The dense ``(obs_dim, D)`` matrix of ``A`` acting on flattened samples (for small ``D``)."""
        d = math.prod(x_shape)
        basis = torch.eye(d, dtype=dtype, device=device).reshape((d, *x_shape))
        return self.y_vector(self.forward(basis)).T

    def y_vector(self, y: torch.Tensor) -> torch.Tensor:
        """The measurements of each sample as a vector ``(B, obs_dim)``."""
        return y.reshape(y.shape[0], -1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _conjugate_gradient(matvec, b: torch.Tensor, iters: int = 500, rtol: float = 1e-10) -> torch.Tensor:
    """Solve ``M u = b`` per sample for a symmetric positive definite ``M`` given as ``matvec``."""
    dot = lambda a, c: (a * c).reshape(a.shape[0], -1).sum(1).reshape((-1,) + (1,) * (a.ndim - 1))
    u = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr, stop = dot(r, r), dot(b, b) * rtol**2
    for _ in range(min(iters, b[0].numel() + 1)):
        if bool((rr <= stop).all()):
            break
        mp = matvec(p)
        alpha = rr / dot(p, mp).clamp_min(torch.finfo(b.dtype).tiny)
        u, r = u + alpha * p, r - alpha * mp
        rr_new = dot(r, r)
        p, rr = r + (rr_new / rr.clamp_min(torch.finfo(b.dtype).tiny)) * p, rr_new
    return u


class Mask(LinearOperator):
    """Inpainting and imputation: ``A x = mask * x`` with ``mask`` shaped like ONE sample, 1 where
    the value is known and 0 where it is to be drawn. ``y`` has the shape of ``x``; its entries
    where the mask is 0 are ignored (they may hold anything, NaN included)."""

    gram_scale = 1.0  # A A^T = I on the entries the mask keeps

    def __init__(self, mask):
        given, mask = mask, torch.as_tensor(mask)
        if mask.ndim == 0:
            raise ArgumentValueError(
                "mask", given, "mask must be shaped like one sample (e.g. (C, H, W) or (D,)), got a scalar"
            )
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ArgumentValueError(
                    "mask", given, "mask must hold only 0 and 1 (1 where the value is known)"
                )
            mask = mask != 0
        self.mask = mask

    def _m(self, like: torch.Tensor) -> torch.Tensor:
        return self.mask.to(dtype=like.dtype, device=like.device)

    def forward(self, x):
        return x * self._m(x)

    def transpose(self, y):
        return y * self._m(y)

    def pinv(self, y):
        return self.transpose(y)

    def prepare_y(self, y):
        return torch.where(self.mask.to(y.device), y, torch.zeros_like(y))

    def y_shape(self, x_shape):
        if tuple(x_shape) != tuple(self.mask.shape):
            raise ArgumentValueError(
                "x_shape",
                x_shape,
                f"mask has shape {tuple(self.mask.shape)} but one sample of x has shape {tuple(x_shape)}; "
                "the mask must be shaped like one sample",
            )
        return tuple(x_shape)

    def x_shape(self, y_shape):
        return tuple(y_shape)  # y has the shape of x

    def obs_dim(self, x_shape):
        self.y_shape(x_shape)
        return int(self.mask.sum())

    def y_vector(self, y):
        return y.reshape(y.shape[0], -1)[:, self.mask.reshape(-1).to(y.device)]

    def __repr__(self) -> str:
        return f"Mask(shape={tuple(self.mask.shape)}, known={int(self.mask.sum())})"


class Colorization(LinearOperator):
    """Colorization: ``A`` averages the ``channels`` channels (dimension 1 of ``(B, C, ...)``) into
    one, ``(B, C, ...) -> (B, 1, ...)``; ``A A^T = I / C``."""

    def __init__(self, channels: int = 3):
        self.channels = check_int("channels", channels, low=1)
        self.gram_scale = 1.0 / self.channels

    def forward(self, x):
        self.y_shape(tuple(x.shape[1:]))
        return x.mean(dim=1, keepdim=True)

    def transpose(self, y):
        return y.expand(y.shape[0], self.channels, *y.shape[2:]) / self.channels

    def y_shape(self, x_shape):
        if len(x_shape) < 2 or x_shape[0] != self.channels:
            raise ArgumentValueError(
                "x_shape",
                x_shape,
                f"Colorization(channels={self.channels}) acts on samples shaped ({self.channels}, ...), "
                f"got {tuple(x_shape)}",
            )
        return (1, *x_shape[1:])

    def x_shape(self, y_shape):
        if len(y_shape) < 2 or y_shape[0] != 1:
            return None
        return (self.channels, *y_shape[1:])

    def __repr__(self) -> str:
        return f"Colorization(channels={self.channels})"


class SuperResolution(LinearOperator):
    """Super-resolution: ``A`` average-pools the last two dimensions by ``factor``,
    ``(B, ..., H, W) -> (B, ..., H / factor, W / factor)``; ``A A^T = I / factor^2``."""

    def __init__(self, factor: int):
        self.factor = check_int("factor", factor, low=1)
        self.gram_scale = 1.0 / self.factor**2

    def forward(self, x):
        self.y_shape(tuple(x.shape[1:]))
        f, (h, w) = self.factor, x.shape[-2:]
        return x.reshape(*x.shape[:-2], h // f, f, w // f, f).mean(dim=(-3, -1))

    def transpose(self, y):
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) / f**2

    def y_shape(self, x_shape):
        f = self.factor
        if len(x_shape) < 2 or x_shape[-1] % f or x_shape[-2] % f:
            raise ArgumentValueError(
                "x_shape",
                x_shape,
                f"SuperResolution(factor={f}) needs samples (..., H, W) with H and W divisible by {f}, "
                f"got {tuple(x_shape)}",
            )
        return (*x_shape[:-2], x_shape[-2] // f, x_shape[-1] // f)

    def x_shape(self, y_shape):
        if len(y_shape) < 2:
            return None
        return (*y_shape[:-2], y_shape[-2] * self.factor, y_shape[-1] * self.factor)

    def __repr__(self) -> str:
        return f"SuperResolution(factor={self.factor})"
