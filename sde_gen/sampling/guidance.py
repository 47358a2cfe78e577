"""Guidance as transforms of score functions: each returns a new ``score_fn(x, t, **cond)`` that
any solver takes as it is (no solver flag), and that reports its network evaluations through
``network_calls`` so that ``nfe`` counts networks, not wrapper calls (:class:`sde_gen.ScoreCheck`).

- :func:`classifier_free_guidance`: Ho & Salimans (2021), Eq. 6, in the score:
  ``s_w = (1 + w) s(x, t, y) - w s(x, t, null)``, optionally only inside a noise-level interval
  (Kynkaanniemi et al. 2024).
- :func:`classifier_guidance`: Dhariwal & Nichol (2021), Sec. 4; Song et al. (2021), Sec. 5 and
  Eq. 14: ``s(x, t) + scale * grad_x log p(y | x_t)``; at ``scale = 1`` with an unconditional score
  this is exactly the score of ``p_t(x | y)`` (Bayes' rule).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping

import torch

from .._checks import (
    ArgumentTypeError,
    ArgumentValueError,
    accepts_keywords,
    check_real,
    check_score_fn,
    network_calls_made,
)
from ..sdes.base import check_sde

__all__ = ["classifier_free_guidance", "classifier_guidance", "ClassifierFreeGuidance", "ClassifierGuidance"]


def _check_interval(interval, sde):
    """``(sigma_lo, sigma_hi)``, ``0 <= sigma_lo < sigma_hi`` (``sigma_hi`` may be ``inf``), or ``None``."""
    if interval is None:
        return None
    try:
        lo, hi = interval
    except (TypeError, ValueError):
        raise ArgumentTypeError(
            "interval", interval, f"interval must be a pair (sigma_lo, sigma_hi) or None, got {interval!r}"
        ) from None
    lo = check_real("interval[0] (sigma_lo)", lo, low=0.0)
    if isinstance(hi, numbers.Real) and not isinstance(hi, bool) and hi == float("inf"):
        hi = float("inf")
    else:
        hi = check_real("interval[1] (sigma_hi)", hi)
    if not lo < hi:
        raise ArgumentValueError(
            "interval", interval, f"interval must have sigma_lo < sigma_hi, got {interval!r}"
        )
    if sde is None:
        raise ArgumentValueError(
            "sde", sde, "interval is in sigma_hat = std / scale of the SDE's kernel: pass sde= as well"
        )
    check_sde(sde)
    return lo, hi


def _in_interval(interval, sde, t: torch.Tensor) -> torch.Tensor | None:
    """Rows whose ``sigma_hat(t)`` lies in ``(sigma_lo, sigma_hi]`` (``None``: no interval, all rows)."""
    if interval is None:
        return None
    sigma = sde.sigma_hat(t.to(torch.float64))
    return ((sigma > interval[0]) & (sigma <= interval[1])).to(t.device)


def _select(mask, guided: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
    return (
        guided if mask is None else torch.where(mask.reshape((-1,) + (1,) * (guided.ndim - 1)), guided, plain)
    )


class ClassifierFreeGuidance:
    """The score function built by :func:`classifier_free_guidance`."""

    def __init__(self, score_fn, w, null=None, interval=None, sde=None, batch=True):
        self.score_fn = check_score_fn(score_fn)
        self.w = check_real("w", w)
        if null is None:
            null = getattr(score_fn, "null_label", getattr(score_fn, "num_classes", None))
            if null is None:
                raise ArgumentValueError(
                    "null",
                    null,
                    "null must be given: the null label (an int, K for a network with K classes) put in "
                    "place of y, or a dict of the cond values that make the model unconditional",
                )
        if isinstance(null, numbers.Integral) and not isinstance(null, bool):
            if null < 0:
                raise ArgumentValueError(
                    "null", null, f"null must be a label >= 0 (K for a network with K classes), got {null}"
                )
            null = {"y": int(null)}
        if not isinstance(null, Mapping) or not null:
            raise ArgumentTypeError(
                "null",
                null,
                f"null must be an int (the null label) or a non-empty dict of cond values, got {null!r}",
            )
        self.null = dict(null)
        self.interval = _check_interval(interval, sde)
        self.sde = sde
        self.batch = bool(batch)
        self.network_calls = 0

    def _unconditional(self, cond: dict, x: torch.Tensor) -> dict:
        out = dict(cond)
        for key, value in self.null.items():
            if value is None:  # the model is unconditional without this keyword
                out.pop(key, None)
            elif isinstance(value, torch.Tensor) and value.ndim > 0:
                out[key] = value
            elif key in cond:
                out[key] = torch.full_like(
                    cond[key], value.item() if isinstance(value, torch.Tensor) else value
                )
            else:
                out[key] = torch.full((x.shape[0],), value, device=x.device)
        return out

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        if not cond:
            raise ArgumentValueError(
                "cond",
                cond,
                "classifier-free guidance needs conditioning: pass cond={'y': labels} to sample() "
                "(or call it as score_fn(x, t, y=labels))",
            )
        mask = _in_interval(self.interval, self.sde, t)
        if mask is not None and not bool(mask.any()):  # outside the interval: the conditional model
            before = getattr(self.score_fn, "network_calls", None)
            out = self.score_fn(x, t, **cond)
            self.network_calls += network_calls_made(self.score_fn, before)
            return out
        null = self._unconditional(cond, x)
        before = getattr(self.score_fn, "network_calls", None)
        if self.batch and null.keys() == cond.keys():  # one evaluation on 2B rows: still 2 networks
            both = {k: torch.cat([cond[k], null[k].to(cond[k])]) for k in cond}
            s_cond, s_null = self.score_fn(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
            self.network_calls += 2 * network_calls_made(self.score_fn, before)
        else:
            s_cond = self.score_fn(x, t, **cond)
            self.network_calls += network_calls_made(self.score_fn, before)
            before = getattr(self.score_fn, "network_calls", None)
            s_null = self.score_fn(x, t, **null)
            self.network_calls += network_calls_made(self.score_fn, before)
        return _select(mask, (1.0 + self.w) * s_cond - self.w * s_null, s_cond)

    def __repr__(self) -> str:
        return f"ClassifierFreeGuidance(w={self.w}, null={self.null}, interval={self.interval})"


def classifier_free_guidance(
    score_fn: Callable, w: float, *, null=None, interval=None, sde=None, batch: bool = True
) -> ClassifierFreeGuidance:
    """Classifier-free guidance (Ho & Salimans 2021, Eq. 6, written in scores):

        s_w(x, t, y) = (1 + w) s(x, t, y) - w s(x, t, null),

    so ``w = 0`` is the conditional model, ``w = -1`` the unconditional one, and ``s_w`` is the
    score of ``p_t(x | y) p_t(y | x)^w`` at every t (for ``w != 0`` these tilted laws are not the
    marginals of one diffusion, so the samples only approximate the tilted law at t = 0). Other
    libraries' ``guidance_scale`` (diffusers, EDM2) is ``1 + w``: pass ``w = guidance_scale - 1``.

    Args:
        score_fn: a conditional ``score_fn(x, t, **cond)`` trained with label dropout, so that the
            null conditioning gives its unconditional score.
        w: the guidance weight, a finite real.
        null: what makes the model unconditional: an int, the null label put in place of ``y``
            (``K`` for a network with ``K`` classes); or a dict of replacement cond values (a
            tensor with one row per sample, a number filled in like the original, or ``None`` to
            drop the keyword). Default: ``score_fn.null_label`` (or ``score_fn.num_classes``)
            where the score function has one, else an error.
        interval: ``(sigma_lo, sigma_hi)`` in ``sigma_hat = std / scale`` (EDM's sigma for VP);
            guidance acts only where ``sigma_lo < sigma_hat(t) <= sigma_hi`` and the conditional
            score alone is used elsewhere (Kynkaanniemi et al. 2024, Sec. 3). Needs ``sde``.
        batch: evaluate the conditional and unconditional scores in one call on ``2B`` rows.

    Network evaluations (``network_calls``, read by ``nfe``): 2 per call where guidance acts, also
    when batched into one call on 2B rows, and 1 outside the interval.
    """
    return ClassifierFreeGuidance(score_fn, w, null, interval, sde, batch)


class ClassifierGuidance:
    """The score function built by :func:`classifier_guidance`."""

    def __init__(self, score_fn, log_prob_fn, scale, sde=None, interval=None, conditional=None, label="y"):
        self.score_fn = check_score_fn(score_fn)
        if not callable(log_prob_fn):
            raise ArgumentTypeError(
                "log_prob_fn",
                log_prob_fn,
                f"log_prob_fn must be callable as log_prob_fn(x, t, y) -> (B,), got {log_prob_fn!r}",
            )
        self.log_prob_fn = log_prob_fn
        self.scale = check_real("scale", scale)
        self.interval = _check_interval(interval, sde)
        self.sde = sde
        if conditional is None:  # a model's num_classes says; else whether it accepts the label
            classes = getattr(score_fn, "num_classes", ...)
            conditional = (
                accepts_keywords(score_fn, [label]) is not False if classes is ... else classes is not None
            )
        self.conditional = bool(conditional)
        self.label = label
        self.network_calls = 0
        self.classifier_calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        if self.label not in cond:
            raise ArgumentValueError(
                "cond",
                cond,
                f"classifier guidance needs the labels: pass cond={{{self.label!r}: labels}} to sample() "
                f"(or call it as score_fn(x, t, {self.label}=labels))",
            )
        y = cond[self.label]
        kw = cond if self.conditional else {k: v for k, v in cond.items() if k != self.label}
        before = getattr(self.score_fn, "network_calls", None)
        s = self.score_fn(x, t, **kw)
        self.network_calls += network_calls_made(self.score_fn, before)
        mask = _in_interval(self.interval, self.sde, t)
        if mask is not None and not bool(mask.any()):
            return s
        with torch.enable_grad():  # the solvers run under no_grad
            x_in = x.detach().requires_grad_(True)
            log_p = self.log_prob_fn(x_in, t, y)
            if not isinstance(log_p, torch.Tensor) or tuple(log_p.shape) != (x.shape[0],):
                raise ValueError(
                    f"log_prob_fn must return log p(y | x_t) of shape ({x.shape[0]},), "
                    f"got {getattr(log_p, 'shape', type(log_p).__name__)}"
                )
            (grad,) = torch.autograd.grad(log_p.sum(), x_in)
        self.classifier_calls += 1
        return _select(mask, s + self.scale * grad.to(s.dtype), s)

    def __repr__(self) -> str:
        extra = f"conditional={self.conditional}, interval={self.interval}"
        return f"ClassifierGuidance(scale={self.scale}, {extra})"


def classifier_guidance(
    score_fn: Callable,
    log_prob_fn: Callable,
    scale: float,
    *,
    sde=None,
    interval=None,
    conditional: bool | None = None,
    label: str = "y",
) -> ClassifierGuidance:
    """Classifier guidance (Dhariwal & Nichol 2021, Alg. 1; Song et al. 2021, Eq. 14):

        s(x, t, y) + scale * grad_x log p(y | x_t),

    with ``log_prob_fn(x, t, y) -> (B,)`` a noise-conditional classifier's log-probability of the
    labels ``y = cond["y"]`` (rows independent: the gradient of the sum is taken), differentiated
    under ``torch.enable_grad`` even inside the solvers' ``no_grad``. With an unconditional score
    and the exact classifier, ``scale = 1`` gives the exact score of ``p_t(x | y)``; larger scales
    sharpen ``p(y | x)``.

    Args:
        score_fn: unconditional ``score_fn(x, t)`` (called without ``y``) or conditional
            ``score_fn(x, t, y=...)``; ``conditional`` says which (default: from its
            ``num_classes`` attribute where it has one, as :class:`sde_gen.ScoreModel` does, not
            ``None`` meaning conditional; else a function whose signature accepts ``y`` gets it).
        scale: a finite real.
        interval, sde: guide only where ``sigma_lo < sigma_hat(t) <= sigma_hi``, as in
            :func:`classifier_free_guidance`.
        label: the cond keyword holding the labels.

    ``network_calls`` (read by ``nfe``) counts the score network only, once per call;
    ``classifier_calls`` counts the classifier's forward-and-backward passes separately.
    """
    return ClassifierGuidance(score_fn, log_prob_fn, scale, sde, interval, conditional, label)
