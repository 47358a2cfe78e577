"""The reverse-time SDE and the probability-flow ODE, derived from any SDE and score function.

Both are written in forward-time form: a solver integrates them from ``t = T`` down to
``t = eps`` with negative ``dt``. Nothing here looks at the type of the SDE.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from ._utils import batch_broadcast

__all__ = ["ReverseSDE", "ProbabilityFlowODE", "ScoreCheck", "check_score_fn", "check_score_output"]


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


class ReverseSDE:
    """``dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dW_bar``, run from T to 0 (Song et al. Eq. 6)."""

    def __init__(self, sde, score_fn: Callable):
        self.sde = sde
        self.score_fn = score_fn

    @property
    def T(self) -> float:
        return self.sde.T

    def drift(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor | None = None):
        """Drift of the reverse SDE; pass ``score`` to reuse a score already evaluated at (x, t)."""
        s = self.score_fn(x, t) if score is None else score
        g = batch_broadcast(self.sde.diffusion(t), x)
        return self.sde.drift(x, t) - g**2 * s

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self.sde.diffusion(t)


class ProbabilityFlowODE:
    """``dx/dt = f(x, t) - g(t)^2 s(x, t) / 2``, whose marginals equal the SDE's (Song et al. Eq. 13)."""

    def __init__(self, sde, score_fn: Callable):
        self.sde = sde
        self.score_fn = score_fn

    @property
    def T(self) -> float:
        return self.sde.T

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g = batch_broadcast(self.sde.diffusion(t), x)
        return self.sde.drift(x, t) - 0.5 * g**2 * self.score_fn(x, t)
