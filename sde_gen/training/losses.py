"""Weighted denoising score matching (Vincent 2011; Song et al. 2021, Eq. 7).

    L(theta) = E_t E_{x_0} E_{x_t | x_0} [ lambda(t) || s_theta(x_t, t) - grad log p_0t(x_t | x_0) ||^2 / 2 ],

with ``t ~ U(eps, T)``, ``x_t = mean + std z`` and ``grad log p_0t = -z / std``. Two weightings:

- ``"std2"``: ``lambda = std(t)^2``, the reference default, ``|| std s + z ||^2 / 2``;
- ``"likelihood"``: ``lambda = g(t)^2``, which makes L an upper bound on the KL divergence
  (Song, Durkan, Murray & Ermon 2021, Thm. 1). With ``importance_sampling=True`` the time is
  drawn from ``p(t) ~ g(t)^2 / std(t)^2`` instead, so that ``lambda ||.||^2 / p(t)`` has far lower
  variance (their Sec. 5); the estimator's mean is unchanged.

The loss is a small object, :class:`DSMLoss` ``(model, batch) -> per-example loss``, built from
its SDE, a weighting and a time sampler (both replaceable: any ``weighting(sde, t, std) ->
lambda(t) / std(t)^2`` and any object with ``eps`` and ``sample(n, generator, dtype, device) ->
(t, w)``); :func:`dsm_loss` is the same computation as one function call.

Conditioning (``loss(model, x, y=labels)``) is passed to ``model(x_t, t, **cond)``; with
``p_uncond > 0`` each label is replaced by the null label with that probability (label dropout,
Ho & Salimans 2021, Alg. 1), so one network learns the conditional and the unconditional score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .._checks import (
    ArgumentTypeError,
    ArgumentValueError,
    check_choice,
    check_eps,
    check_int,
    check_real,
    check_score_fn,
    check_score_output,
    check_tensor,
)
from .._utils import batch_broadcast, batch_sum
from ..sdes.base import check_sde

__all__ = [
    "DSMLoss",
    "dsm_loss",
    "draw_dsm",
    "DSMDraws",
    "UniformTime",
    "ImportanceSampler",
    "std2_weighting",
    "likelihood_weighting",
    "WEIGHTINGS",
]


def std2_weighting(sde, t: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``lambda = std^2``: the factor ``lambda / std^2`` is 1 (the reference's default)."""
    return torch.ones_like(t)


def likelihood_weighting(sde, t: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``lambda = g^2`` (Song, Durkan et al. 2021): the factor is ``g(t)^2 / std(t)^2``."""
    return sde.diffusion(t) ** 2 / std**2


#: The weightings by name: ``weighting(sde, t, std) -> lambda(t) / std(t)^2``, shape ``(B,)``.
WEIGHTINGS = {"std2": std2_weighting, "likelihood": likelihood_weighting}


class UniformTime:
    """``t ~ U(eps, T)``: ``sample`` returns the times and ``None`` for the weights."""

    def __init__(self, sde, eps: float):
        check_sde(sde)
        self.T = sde.T
        self.eps = check_eps(eps, sde.T)

    def __repr__(self) -> str:
        return f"UniformTime(eps={self.eps}, T={self.T})"

    def sample(self, n: int, *, generator=None, dtype=torch.float32, device=None):
        t = self.eps + (self.T - self.eps) * torch.rand(n, generator=generator, dtype=dtype, device=device)
        return t, None


class ImportanceSampler:
    """Draws ``t`` in ``[eps, T]`` with density ``p(t) = w(t) / Z``, ``w = g^2 / std^2``, for any SDE.

    ``w`` is tabulated on a grid uniform in ``log t`` (``w ~ 1/t`` near 0 for VP and VE), integrated
    with the trapezoid rule, and inverted by linear interpolation of the cumulative integral.
    ``sample`` returns the times and their weights ``1 / (p(t) (T - eps))`` from the same
    piecewise-linear density, so that ``E_p[f(t) w(t)]`` is the mean of ``f`` over uniform times
    exactly for the tabulated density.
    """

    def __init__(self, sde, eps: float, grid: int = 4096):
        check_sde(sde)
        self.T = sde.T
        self.eps = check_eps(eps, sde.T)
        grid = check_int("grid", grid, low=16)
        t = torch.logspace(
            torch.log10(torch.tensor(self.eps)), torch.log10(torch.tensor(sde.T)), grid, dtype=torch.float64
        )
        t[0], t[-1] = self.eps, sde.T
        std = sde.marginal(torch.zeros(grid, 1, dtype=torch.float64), t)[1]
        w = sde.diffusion(t) ** 2 / std**2
        if not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
            raise ValueError("importance sampling needs g(t)^2 / std(t)^2 finite and > 0 on [eps, T]")
        cdf = torch.cat([w.new_zeros(1), torch.cumsum(0.5 * (w[1:] + w[:-1]) * t.diff(), 0)])
        self._t, self._w, self._cdf = t, w, cdf
        self.Z = float(cdf[-1])
        self._cache: dict = {}

    def _tables(self, like: torch.Tensor):
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = tuple(
                v.to(dtype=like.dtype, device=like.device) for v in (self._t, self._w, self._cdf)
            )
        return self._cache[key]

    def sample(
        self, n: int, *, generator=None, dtype=torch.float32, device=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` times and their weights ``1 / (p(t) (T - eps))``, relative to uniform times."""
        like = torch.empty(0, dtype=dtype, device=device)
        t, w, cdf = self._tables(like)
        u = torch.rand(n, generator=generator, dtype=dtype, device=device) * cdf[-1]
        i = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.numel() - 1) - 1
        # Inside cell i the density is linear, w(t) = w_i + k (t - t_i): solve the quadratic for t.
        dt = t[i + 1] - t[i]
        k = (w[i + 1] - w[i]) / dt
        r = u - cdf[i]
        disc = (w[i] ** 2 + 2 * k * r).clamp_min(0)
        step = torch.where(k.abs() * dt > 1e-12 * w[i], (disc.sqrt() - w[i]) / k, r / w[i])
        ts = t[i] + step.clamp(min=torch.zeros_like(dt), max=dt)
        dens = (w[i] + k * (ts - t[i])) / cdf[-1]
        return ts, 1.0 / dens / (self.T - self.eps)


class DSMDraws(NamedTuple):
    """The random part of one DSM estimate for a batch: times ``t`` ``(B,)``, standard normal noise
    ``z`` shaped like the batch, ``inv_p`` ``(B,)``, the importance weights ``1 / (p(t) (T - eps))``
    (``None`` for uniform times), and ``drop`` ``(B,)`` bool, the labels replaced by the null label
    (``None`` without label dropout)."""

    t: torch.Tensor
    z: torch.Tensor
    inv_p: torch.Tensor | None
    drop: torch.Tensor | None = None

    def shard(self, index: slice) -> DSMDraws:
        """The draws of the examples ``index`` of the batch (a data-parallel rank's share)."""
        return DSMDraws(*(None if v is None else v[index] for v in self))


class DSMLoss:
    """Per-example weighted denoising score-matching loss (module docstring for the formula):
    ``DSMLoss(sde, ...)(model, x) -> (B,)``.

    Args:
        sde: the forward SDE.
        weighting: ``"std2"``, ``"likelihood"`` or a callable ``weighting(sde, t, std) -> lambda(t)
            / std(t)^2`` of shape ``(B,)``.
        importance_sampling: draw ``t`` from ``p(t) ~ g^2 / std^2`` (:class:`ImportanceSampler`);
            only with ``weighting="likelihood"``, whose variance it reduces.
        time_sampler: any time distribution instead (an object with ``eps`` and ``sample(n,
            generator=, dtype=, device=) -> (t, w)``, ``w`` the weights relative to uniform times
            or ``None``); its ``eps`` is then the loss's.
        eps: the smallest time.
        p_uncond: the probability of replacing each label ``y`` by ``null_label`` (label dropout for
            classifier-free guidance, Ho & Salimans 2021); 0 leaves the labels alone.
        null_label: the null label, ``K`` for a network with ``K`` classes; needed when ``p_uncond > 0``.

    Each example's loss is summed over its dimensions; the estimate is of the integral over
    ``[eps, T]`` divided by ``T - eps`` (the mean over uniform ``t``), for every time sampler.
    """

    def __init__(
        self,
        sde,
        weighting="std2",
        *,
        importance_sampling: bool = False,
        time_sampler=None,
        eps: float = 1e-5,
        p_uncond: float = 0.0,
        null_label: int | None = None,
    ):
        self.sde = check_sde(sde)
        self.p_uncond = check_real("p_uncond", p_uncond, low=0.0)
        if self.p_uncond > 1:
            raise ArgumentValueError("p_uncond", p_uncond, f"p_uncond must be in [0, 1], got {p_uncond!r}")
        self.null_label = None if null_label is None else check_int("null_label", null_label, low=0)
        if self.p_uncond > 0 and self.null_label is None:
            raise ArgumentValueError(
                "p_uncond",
                p_uncond,
                f"p_uncond={p_uncond} > 0 needs null_label, the null label K of a network with K classes",
            )
        if isinstance(weighting, str) or not callable(weighting):
            check_choice("weighting", weighting, set(WEIGHTINGS))
        self.weighting = weighting
        self._weight = WEIGHTINGS[weighting] if isinstance(weighting, str) else weighting
        if not isinstance(importance_sampling, bool):
            raise ArgumentTypeError(
                "importance_sampling",
                importance_sampling,
                f"importance_sampling must be a bool, got {importance_sampling!r}",
            )
        if time_sampler is not None:
            if importance_sampling:
                raise ValueError("pass importance_sampling=True or a time_sampler, not both")
            if not (hasattr(time_sampler, "sample") and hasattr(time_sampler, "eps")):
                raise ArgumentTypeError(
                    "time_sampler",
                    time_sampler,
                    f"time_sampler must have eps and sample(n, generator=, dtype=, device=), got "
                    f"{type(time_sampler).__name__}",
                )
            self.eps = check_eps(time_sampler.eps, sde.T)
        else:
            self.eps = check_eps(eps, sde.T)
            if importance_sampling and weighting != "likelihood":
                raise ArgumentValueError(
                    "importance_sampling",
                    importance_sampling,
                    f"importance_sampling=True needs weighting='likelihood', got weighting={weighting!r}",
                )
            time_sampler = (
                ImportanceSampler(sde, self.eps) if importance_sampling else UniformTime(sde, self.eps)
            )
        self.time_sampler = time_sampler

    def __repr__(self) -> str:
        w = (
            self.weighting
            if isinstance(self.weighting, str)
            else getattr(self.weighting, "__name__", "custom")
        )
        drop = f", p_uncond={self.p_uncond}, null_label={self.null_label}" if self.p_uncond else ""
        return f"DSMLoss(weighting={w!r}, time_sampler={self.time_sampler!r}{drop})"

    def draw(self, x: torch.Tensor, generator: torch.Generator | None = None) -> DSMDraws:
        """Draw ``t``, the noise ``z`` and (with ``p_uncond > 0``) the dropped labels ``u < p_uncond``,
        ``u ~ U(0, 1)``, for the batch ``x``, in that order from ``generator``."""
        t, w = self.time_sampler.sample(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        drop = None
        if self.p_uncond > 0:
            u = torch.rand(x.shape[0], generator=generator, dtype=torch.float32, device=x.device)
            drop = u < self.p_uncond
        return DSMDraws(t, z, w, drop)

    def draws_for(self, x: torch.Tensor, generator=None, draws: DSMDraws | None = None) -> DSMDraws:
        """``draws`` checked against ``x``, or fresh ones from ``generator``."""
        if draws is None:
            return self.draw(x, generator)
        if draws.z.shape != x.shape or draws.t.shape != x.shape[:1]:
            raise ArgumentValueError(
                "draws",
                draws,
                f"draws do not fit x of shape {tuple(x.shape)}: "
                f"t {tuple(draws.t.shape)}, z {tuple(draws.z.shape)}",
            )
        return draws

    def __call__(
        self,
        model: Callable,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        draws: DSMDraws | None = None,
        **cond,
    ) -> torch.Tensor:
        """The loss of each example of ``x`` ``(B, ...)``, shape ``(B,)``, for the score function
        ``model(x_t, t, **cond)`` (``model(x_t, t)`` without conditioning; labels ``y`` dropped as
        :meth:`draw` says). ``draws`` (from :meth:`draw`) fixes the times, noise and dropped
        labels; then ``generator`` is not used. Data-parallel training draws for the whole global
        batch and gives each rank its shard, so that the ranks together compute the single-process
        estimate."""
        check_score_fn(model)
        x = check_tensor("x", x)
        draws = self.draws_for(x, generator, draws)
        t, z, w, drop = draws
        if self.p_uncond > 0:
            cond = self._drop_labels(cond, drop, x.shape[0])
        mean, std = self.sde.marginal(x, t)
        std_b = batch_broadcast(std, x)
        x_t = mean + std_b * z
        score = check_score_output(model(x_t, t, **cond) if cond else model(x_t, t), x_t)
        # ||s + z / std||^2 = ||std s + z||^2 / std^2
        loss = 0.5 * batch_sum((std_b * score + z) ** 2)
        if self.weighting != "std2":
            loss = self._weight(self.sde, t, std) * loss
        return loss if w is None else loss * w

    def _drop_labels(self, cond: dict, drop: torch.Tensor | None, batch: int) -> dict:
        """``cond`` with ``y`` set to ``null_label`` where ``drop``."""
        y = cond.get("y")
        if not isinstance(y, torch.Tensor) or y.shape != (batch,) or y.is_floating_point():
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(
                f"p_uncond={self.p_uncond} > 0 needs integer labels y of shape ({batch},), got {got}"
            )
        if drop is None or drop.shape != (batch,):
            raise ValueError("p_uncond > 0 needs draws with drop (from this loss's draw())")
        return {**cond, "y": torch.where(drop.to(y.device), self.null_label, y)}


def draw_dsm(
    sde,
    x: torch.Tensor,
    *,
    eps: float = 1e-5,
    importance_sampler: ImportanceSampler | None = None,
    generator: torch.Generator | None = None,
) -> DSMDraws:
    """The draws :func:`dsm_loss` makes when it is given none: ``t`` (uniform on ``[eps, T]``, or
    from ``importance_sampler``) and then the noise ``z``, in that order from ``generator``."""
    sampler = importance_sampler if importance_sampler is not None else UniformTime(sde, eps)
    weighting = "likelihood" if importance_sampler is not None else "std2"
    return DSMLoss(sde, weighting, time_sampler=sampler).draw(x, generator)


def dsm_loss(
    sde,
    score_fn: Callable,
    x: torch.Tensor,
    *,
    eps: float = 1e-5,
    weighting: str = "std2",
    importance_sampler: ImportanceSampler | None = None,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    draws: DSMDraws | None = None,
) -> torch.Tensor:
    """:class:`DSMLoss` in one call, reduced over the batch.

    Args:
        x: data ``(B, ...)``. score_fn: ``score_fn(x_t, t)``, e.g. a :class:`~sde_gen.ScoreModel`.
        weighting: ``"std2"`` or ``"likelihood"`` (or a weighting callable, see :class:`DSMLoss`).
        importance_sampler: with ``weighting="likelihood"``, draw ``t`` from it (an
            :class:`ImportanceSampler` built for the same ``sde`` and ``eps``).
        reduction: ``"none"`` (shape ``(B,)``), ``"mean"`` or ``"sum"`` over the batch.
        draws: times and noise drawn beforehand by :func:`draw_dsm` (with the same ``eps`` and
            sampler); then ``generator`` is not used.
    """
    check_sde(sde)
    check_score_fn(score_fn)
    x = check_tensor("x", x)
    eps = check_eps(eps, sde.T)
    check_choice("reduction", reduction, {"none", "mean", "sum"})
    if importance_sampler is not None:
        if weighting != "likelihood":
            raise ArgumentValueError(
                "importance_sampler",
                importance_sampler,
                f"importance_sampler goes with weighting='likelihood', got weighting={weighting!r}",
            )
        if abs(importance_sampler.eps - eps) > 1e-12 * max(eps, 1.0):
            raise ArgumentValueError(
                "importance_sampler",
                importance_sampler,
                f"importance_sampler was built for eps={importance_sampler.eps}, but eps={eps}",
            )
    loss_fn = DSMLoss(sde, weighting, time_sampler=importance_sampler, eps=eps)
    if draws is not None and (draws.inv_p is not None) != (importance_sampler is not None):
        raise ArgumentValueError(
            "draws", draws, "draws must come from draw_dsm with the same importance_sampler as dsm_loss"
        )
    loss = loss_fn(score_fn, x, generator=generator, draws=draws)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss
