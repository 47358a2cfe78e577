"""Argument checks that raise errors naming the argument, its value and what is allowed."""

from __future__ import annotations

import math
import numbers

import torch


def check_real(name: str, value, *, low: float | None = None) -> float:
    """A finite real number, optionally ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return value


def check_positive(name: str, value) -> float:
    """A finite real number > 0."""
    value = check_real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def check_int(name: str, value, *, low: int) -> int:
    """An integer ``>= low`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(value)


def check_choice(name: str, value, allowed) -> str:
    try:
        known = value in allowed
    except TypeError:  # unhashable, e.g. a list
        known = False
    if not known:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


def check_eps(eps, T: float, name: str = "eps") -> float:
    """The smallest time of a solve: ``0 < eps < T``."""
    eps = check_real(name, eps)
    if not 0.0 < eps < T:
        raise ValueError(f"{name} must be in the open interval (0, T) = (0, {T}), got {eps!r}")
    return eps


def check_tensor(name: str, x) -> torch.Tensor:
    """A floating-point tensor with a batch dimension."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, ...) with B >= 1, got {tuple(x.shape)}")
    return x


def check_sde(sde):
    from .sde import SDE

    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an instance of sde_gen.SDE, got {type(sde).__name__}")
    return sde
