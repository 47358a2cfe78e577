"""Argument checks that raise errors naming the argument, its value and what is allowed, and the
checks of what a score function returns. Every module imports its checks from here."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable

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


def check_int(
    name: str, value, *, low: int, high: int | None = None, why: str = "", low_why: str = ""
) -> int:
    """An integer ``>= low`` and, with ``high``, ``<= high`` (``low_why`` and ``why`` say why the
    lower and upper bounds; bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be >= {low}{f' ({low_why})' if low_why else ''}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}{f' ({why})' if why else ''}, got {value!r}")
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


# -- score functions -------------------------------------------------------------------------------


class ScoreCheck:
    """Wraps ``score_fn(x, t)``: checks what it returns and counts its evaluations in ``nfe``.

    Shape, dtype and device are checked at every call (no device synchronisation). Finiteness is
    checked on the first call, and always when ``check_finite=True`` (one host sync per call).
    """

    def __init__(self, score_fn: Callable, *, check_finite: bool = False):
        if isinstance(score_fn, ScoreCheck):
            score_fn = score_fn.score_fn
        self.score_fn = check_score_fn(score_fn)
        self.check_finite = check_finite
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = check_score_output(self.score_fn(x, t), x)
        if self.check_finite or self.nfe == 0:
            check_finite("score_fn output", out, t)
        self.nfe += 1
        return out


def check_score_fn(score_fn: Callable) -> Callable:
    """``score_fn`` itself: callable, and (where its signature can be read) with two positional arguments."""
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    try:
        sig = inspect.signature(score_fn)
    except (TypeError, ValueError):  # some builtins and extension types have no readable signature
        return score_fn
    try:
        sig.bind(None, None)
    except TypeError:
        name = getattr(score_fn, "__name__", type(score_fn).__name__)
        raise TypeError(
            f"score_fn must be callable as score_fn(x, t) with two positional arguments, got {name}{sig}"
        ) from None
    return score_fn


def check_score_output(out, x: torch.Tensor) -> torch.Tensor:
    """What ``score_fn(x, t)`` returned: a tensor with the shape, dtype and device of ``x``."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"score_fn must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(
            f"score_fn returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}; "
            "it must return a tensor shaped like x"
        )
    if out.dtype != x.dtype or out.device != x.device:
        raise TypeError(
            f"score_fn returned dtype {out.dtype} on {out.device} for x of dtype {x.dtype} "
            f"on {x.device}; it must follow the dtype and device of x"
        )
    return out


def check_finite(what: str, x: torch.Tensor, t: torch.Tensor | None = None) -> None:
    """Raise ``FloatingPointError`` naming the samples of ``x`` that hold NaN or infinity."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        idx = bad.nonzero().flatten().tolist()
        at = "" if t is None else f" at t={t[idx[0]].item():.6g}"
        shown = idx[:10] + (["..."] if len(idx) > 10 else [])
        raise FloatingPointError(
            f"{what} is not finite{at} for {len(idx)} of {x.shape[0]} samples (indices {shown})"
        )
