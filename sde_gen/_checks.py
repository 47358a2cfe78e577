"""Argument checks that raise errors naming the argument, its value and what is allowed, and the
checks of what a score function returns. Every module imports its checks from here."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping

import torch


class ArgumentError(Exception):
    """A refused argument. ``name`` is the argument (as the caller spells it), ``value`` what was
    given; the message says what is allowed. Raised as :class:`ArgumentValueError` or
    :class:`ArgumentTypeError`, so ``except ValueError`` / ``except TypeError`` still catch it, and a
    caller that maps arguments to its own settings (``experiments/run.py``) reads ``name``."""

    def __init__(self, name: str, value, message: str):
        super().__init__(message)
        self.name = name
        self.value = value

    def __reduce__(self):  # pickles (multiprocessing, torch.distributed) with name and value
        return type(self), (self.name, self.value, str(self))


class ArgumentValueError(ArgumentError, ValueError):
    """An argument of the right type with a value outside what is allowed."""


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of the wrong type."""


def check_real(name: str, value, *, low: float | None = None) -> float:
    """A finite real number, optionally ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(
            name, value, f"{name} must be a real number, got {value!r} ({type(value).__name__})"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ArgumentValueError(name, value, f"{name} must be finite, got {value!r}")
    if low is not None and value < low:
        raise ArgumentValueError(name, value, f"{name} must be >= {low}, got {value!r}")
    return value


def check_positive(name: str, value) -> float:
    """A finite real number > 0."""
    value = check_real(name, value)
    if value <= 0:
        raise ArgumentValueError(name, value, f"{name} must be > 0, got {value!r}")
    return value


def check_int(
    name: str, value, *, low: int, high: int | None = None, why: str = "", low_why: str = ""
) -> int:
    """An integer ``>= low`` and, with ``high``, ``<= high`` (``low_why`` and ``why`` say why the
    lower and upper bounds; bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(name, value, f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ArgumentValueError(
            name, value, f"{name} must be >= {low}{f' ({low_why})' if low_why else ''}, got {value!r}"
        )
    if high is not None and value > high:
        raise ArgumentValueError(
            name, value, f"{name} must be <= {high}{f' ({why})' if why else ''}, got {value!r}"
        )
    return int(value)


def check_callable(name: str, value, usage: str):
    """A callable, used as ``usage`` says (e.g. ``"loss_fn(model, batch)"``)."""
    if not callable(value):
        message = f"{name} must be callable as {usage}, got {type(value).__name__}"
        raise ArgumentTypeError(name, value, message)
    return value


def check_choice(name: str, value, allowed) -> str:
    try:
        known = value in allowed
    except TypeError:  # unhashable, e.g. a list
        known = False
    if not known:
        raise ArgumentValueError(name, value, f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


def check_eps(eps, T: float, name: str = "eps") -> float:
    """The smallest time of a solve: ``0 < eps < T``."""
    eps = check_real(name, eps)
    if not 0.0 < eps < T:
        raise ArgumentValueError(
            name, eps, f"{name} must be in the open interval (0, T) = (0, {T}), got {eps!r}"
        )
    return eps


def check_tensor(name: str, x) -> torch.Tensor:
    """A floating-point tensor with a batch dimension."""
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(name, x, f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ArgumentTypeError(name, x, f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ArgumentValueError(
            name, x, f"{name} must have shape (B, ...) with B >= 1, got {tuple(x.shape)}"
        )
    return x


# -- score functions -------------------------------------------------------------------------------


class ScoreCheck:
    """Wraps ``score_fn(x, t, **cond)``: checks what it returns and counts network evaluations in ``nfe``.

    ``cond`` (a dict checked by :func:`check_cond`) is passed to every call, merged with the keywords
    of the call itself. A score function that evaluates a network several times per call (guidance,
    :mod:`sde_gen.guidance`) reports it through an integer attribute ``network_calls`` that it
    increments; ``nfe`` then adds the increment of each call (:func:`network_calls_made`), and 1
    per call for any other function. Shape, dtype and device are checked at every call (no device
    synchronisation). Finiteness is checked on the first call, and always when
    ``check_finite=True`` (one host sync per call).
    """

    def __init__(self, score_fn: Callable, *, check_finite: bool = False, cond: dict | None = None):
        if isinstance(score_fn, ScoreCheck):
            cond = {**score_fn.cond, **(cond or {})}
            score_fn = score_fn.score_fn
        self.score_fn = check_score_fn(score_fn)
        self.cond = dict(cond or {})
        if self.cond:
            check_accepts_cond(score_fn, self.cond)
        self.check_finite = check_finite
        self.nfe = 0
        self._calls = 0

    @property
    def network_calls(self) -> int:
        """The same count as ``nfe``, under the name guidance wrappers read."""
        return self.nfe

    @property
    def offers_denoise(self) -> bool:
        """Whether the wrapped function has ``denoise(x, t, **cond)`` (a :class:`~sde_gen.ScoreModel`
        does): the samplers then take ``E[x_0 | x_t]`` from it directly."""
        return callable(getattr(self.score_fn, "denoise", None))

    def denoise(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        """The wrapped function's ``denoise``, checked and counted like a call."""
        return self._checked(self.score_fn.denoise, x, t, cond)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        return self._checked(self.score_fn, x, t, cond)

    def _checked(self, fn, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        before = getattr(self.score_fn, "network_calls", None)
        out = fn(x, t, **({**self.cond, **cond} if cond else self.cond))
        out = check_score_output(out, x)
        if self.check_finite or self._calls == 0:
            check_finite("score_fn output", out, t)
        self._calls += 1
        self.nfe += network_calls_made(self.score_fn, before)
        return out


def network_calls_made(fn: Callable, before: int | None) -> int:
    """Network evaluations made by one call of ``fn``: the increment of its ``network_calls``
    attribute (``before`` read just before the call), or 1 where it has none."""
    after = getattr(fn, "network_calls", None)
    if before is None or after is None:
        return 1
    return int(after) - int(before)


LABEL_KEYS = ("y",)


def check_cond(cond, batch: int, name: str = "cond") -> dict:
    """Conditioning for a batch of ``batch`` samples: ``None`` (none) or a dict of tensors, keyed
    by the score function's keyword names, each with first dimension ``batch``. Class labels
    (key ``"y"``) must be integer tensors. Returns a new dict."""
    if cond is None:
        return {}
    if not isinstance(cond, Mapping):
        raise ArgumentTypeError(
            name,
            cond,
            f"{name} must be a dict of tensors such as {{'y': labels}}, or None, got {type(cond).__name__}",
        )
    out = {}
    for key, value in cond.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ArgumentTypeError(
                name, cond, f"{name} keys must be keyword names of the score function (str), got {key!r}"
            )
        if not isinstance(value, torch.Tensor):
            raise ArgumentTypeError(
                name,
                cond,
                f"{name}[{key!r}] must be a torch.Tensor with one row per sample, got {type(value).__name__}",
            )
        if value.ndim < 1 or value.shape[0] != batch:
            rows = "a 0-d tensor" if value.ndim == 0 else f"{value.shape[0]} rows"
            raise ArgumentValueError(
                name,
                cond,
                f"{name}[{key!r}] has {rows}, but the batch has {batch} samples; it needs one row per sample",
            )
        if key in LABEL_KEYS and (
            value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
        ):
            raise ArgumentTypeError(
                name,
                cond,
                f"{name}[{key!r}] holds class labels and must be an integer tensor (torch.long), "
                f"got {value.dtype}",
            )
        out[key] = value
    return out


def accepts_keywords(fn: Callable, keys) -> bool | None:
    """Whether ``fn(x, t, **{k: ...})`` binds for the keywords ``keys`` (``None``: unreadable signature)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(None, None, **dict.fromkeys(keys))
    except TypeError:
        return False
    return True


def check_accepts_cond(score_fn: Callable, cond) -> None:
    """A ``TypeError`` where ``score_fn`` cannot take the conditioning keywords of ``cond``."""
    if accepts_keywords(score_fn, cond) is False:
        name = getattr(score_fn, "__name__", type(score_fn).__name__)
        raise ArgumentTypeError(
            "cond",
            cond,
            f"score_fn {name}{inspect.signature(score_fn)} does not accept the conditioning keyword(s) "
            f"{sorted(cond)}; a conditional score function takes them as score_fn(x, t, y=None, ...), "
            "an unconditional one is called without cond",
        )


def check_score_fn(score_fn: Callable) -> Callable:
    """``score_fn`` itself: callable, and (where its signature can be read) with two positional arguments."""
    if not callable(score_fn):
        raise ArgumentTypeError(
            "score_fn",
            score_fn,
            f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}",
        )
    try:
        sig = inspect.signature(score_fn)
    except (TypeError, ValueError):  # some builtins and extension types have no readable signature
        return score_fn
    try:
        sig.bind(None, None)
    except TypeError:
        name = getattr(score_fn, "__name__", type(score_fn).__name__)
        raise ArgumentTypeError(
            "score_fn",
            score_fn,
            f"score_fn must be callable as score_fn(x, t) with two positional arguments, got {name}{sig}",
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


def check_per_item(name: str, fn, out, batch: int) -> torch.Tensor:
    """``out``, what the callable ``fn`` (the argument ``name``) returned for a batch of ``batch``
    items: a tensor of shape ``(batch,)``, one value per item; else a refusal naming ``name``."""
    if not isinstance(out, torch.Tensor) or out.shape != (batch,):
        got = getattr(out, "shape", type(out).__name__)
        raise ArgumentValueError(name, fn, f"{name} must return a tensor of shape ({batch},), got {got}")
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
