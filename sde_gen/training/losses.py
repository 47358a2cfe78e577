"""Weighted denoising score matching (Vincent 2011; Song et al. 2021, Eq. 7).

    L(theta) = E_t E_{x_0} E_{x_t | x_0} [ lambda(t) || s_theta(x_t, t) - grad log p_0t(x_t | x_0) ||^2 / 2 ],

with ``t ~ U(eps, T)``, ``x_t = mean + std z`` and ``grad log p_0t = -z / std``. It is computed in
one set of units, the noise units ``w(t) || std s_theta + z ||^2 / 2`` with ``w = lambda / std^2``,
whatever the network predicts (:mod:`sde_gen.models.parameterizations`): the parameterisation
changes the network's target, never the objective. The weightings (``weightings.py``): ``std2``
(the reference default), ``likelihood`` (``lambda = g^2``, an upper bound on the KL divergence,
Song, Durkan, Murray & Ermon 2021, Thm. 1), ``min_snr``, ``edm``, ``sigmoid``, ``flow``. The times
(``noise_levels.py``): uniform, likelihood importance sampling (``importance_sampling=True``:
``p(t) ~ g^2 / std^2``, the mean unchanged, its variance far lower, their Sec. 5), EDM's
log-normal noise levels or logit-normal times. :meth:`DSMLoss.effective_weighting` gives what the
weighting and the sampler make together over the log-SNR, to compare objectives (Kingma & Gao 2023).

The loss is a small object, :class:`DSMLoss` ``(model, batch) -> per-example loss``, built from
its SDE, a weighting and a time sampler (both replaceable: any ``weighting(sde, t, std) ->
lambda(t) / std(t)^2`` and any object with ``eps`` and ``sample(n, generator, dtype, device) ->
(t, w)``); :func:`dsm_loss` is the same computation as one function call.

``coupling="ot"`` pairs each batch with its noise by minibatch optimal transport
(``couplings.py``; Tong et al. 2023) instead of independently; ``loss(model, x, noise=z)`` takes
the noise already paired with each example (reflow, ``reflow.py``; Liu et al. 2022).

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
from ..models.parameterizations import parameterization as make_parameterization
from ..sdes.base import check_sde
from .couplings import COUPLINGS, ot_permutation
from .noise_levels import ImportanceSampler, UniformTime
from .noise_levels import time_sampler as make_time_sampler
from .weightings import WEIGHTINGS, likelihood_weighting, std2_weighting
from .weightings import weighting as make_weighting

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
        weighting: a name in :data:`~sde_gen.WEIGHTINGS` (``"std2"``, ``"likelihood"``,
            ``"min_snr"``, ``"edm"``, ``"sigmoid"``, ``"flow"``, with their default settings;
            :func:`sde_gen.weighting` for others) or a callable
            ``weighting(sde, t, std) -> lambda(t) / std(t)^2`` of shape ``(B,)``.
        importance_sampling: draw ``t`` from ``p(t) ~ g^2 / std^2`` (:class:`ImportanceSampler`);
            only with ``weighting="likelihood"``, whose variance it reduces.
        time_sampler: a name in :data:`~sde_gen.TIME_SAMPLERS` (``"uniform"``, ``"importance"``,
            ``"log_normal"``, ``"logit_normal"``, built for ``sde`` and ``eps``), or any time
            distribution (an object with ``eps`` and ``sample(n, generator=, dtype=, device=) ->
            (t, w)``, ``w`` the weights relative to uniform times or ``None``; its ``eps`` is then
            the loss's).
        eps: the smallest time.
        p_uncond: the probability of replacing each label ``y`` by ``null_label`` (label dropout for
            classifier-free guidance, Ho & Salimans 2021); 0 leaves the labels alone.
        null_label: the null label, ``K`` for a network with ``K`` classes; needed when ``p_uncond > 0``.
        coupling: ``"independent"`` (each example's noise drawn on its own) or ``"ot"`` (the batch's
            noise draws paired with its examples by minibatch optimal transport,
            :func:`~sde_gen.ot_permutation`; the marginals are unchanged).

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
        coupling: str = "independent",
    ):
        self.sde = check_sde(sde)
        self.coupling = check_choice("coupling", coupling, COUPLINGS)
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
        self._weight = make_weighting(weighting)
        self.weighting = weighting
        if not isinstance(importance_sampling, bool):
            raise ArgumentTypeError(
                "importance_sampling",
                importance_sampling,
                f"importance_sampling must be a bool, got {importance_sampling!r}",
            )
        if isinstance(time_sampler, str):
            if importance_sampling:
                raise ArgumentValueError(
                    "time_sampler", time_sampler, "pass importance_sampling=True or a time_sampler, not both"
                )
            time_sampler = make_time_sampler(time_sampler, sde, check_eps(eps, sde.T))
        if time_sampler is not None:
            if importance_sampling:
                raise ArgumentValueError(
                    "time_sampler", time_sampler, "pass importance_sampling=True or a time_sampler, not both"
                )
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
            if importance_sampling and self._weight is not likelihood_weighting:
                raise ArgumentValueError(
                    "importance_sampling",
                    importance_sampling,
                    f"importance_sampling=True needs weighting='likelihood', got weighting="
                    f"{getattr(self._weight, 'name', weighting)!r}",
                )
            time_sampler = (
                ImportanceSampler(sde, self.eps) if importance_sampling else UniformTime(sde, self.eps)
            )
        self.time_sampler = time_sampler

    def __repr__(self) -> str:
        w = getattr(self._weight, "name", None) or getattr(self._weight, "__name__", "custom")
        w = w if type(self._weight) in (type(std2_weighting), type(likelihood_weighting)) else self._weight
        drop = f", p_uncond={self.p_uncond}, null_label={self.null_label}" if self.p_uncond else ""
        ot = ", coupling='ot'" if self.coupling == "ot" else ""
        return f"DSMLoss(weighting={w!r}, time_sampler={self.time_sampler!r}{drop}{ot})"

    def draw(
        self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> DSMDraws:
        """Draw ``t``, the noise ``z`` and (with ``p_uncond > 0``) the dropped labels ``u < p_uncond``,
        ``u ~ U(0, 1)``, for the batch ``x``, in that order from ``generator``; with
        ``coupling="ot"`` the noise draws are then permuted to pair with ``x`` by optimal transport.

        ``noise`` (shaped like ``x``, cast to its dtype and device) is used as ``z`` instead of a
        draw: the noise paired with each example, e.g. by :func:`~sde_gen.reflow_pairs` (reflow,
        Liu et al. 2022). The times are drawn first as without it, but no noise is drawn, so the
        draws that follow (the dropped labels) and the generator's state afterwards differ from
        those of a call without ``noise``. Not with ``coupling="ot"``, which pairs its own draws."""
        if noise is not None:
            if self.coupling == "ot":
                raise ArgumentValueError(
                    "coupling",
                    self.coupling,
                    "coupling='ot' pairs its own noise draws with the batch; it cannot take given noise "
                    "(the pairs of reflow are already coupled): use coupling='independent'",
                )
            noise = check_tensor("noise", noise)
            if noise.shape != x.shape:
                raise ArgumentValueError(
                    "noise",
                    noise,
                    f"noise must be shaped like x {tuple(x.shape)}, one row per example, got "
                    f"{tuple(noise.shape)}",
                )
        t, w = self.time_sampler.sample(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        if noise is not None:
            z = noise.to(dtype=x.dtype, device=x.device)
        else:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            if self.coupling == "ot":
                z = z[ot_permutation(x, z)]
        drop = None
        if self.p_uncond > 0:
            u = torch.rand(x.shape[0], generator=generator, dtype=torch.float32, device=x.device)
            drop = u < self.p_uncond
        return DSMDraws(t, z, w, drop)

    def draws_for(
        self,
        x: torch.Tensor,
        generator=None,
        draws: DSMDraws | None = None,
        noise: torch.Tensor | None = None,
    ) -> DSMDraws:
        """``draws`` checked against ``x``, or fresh ones from ``generator`` (with ``noise`` as
        their ``z`` where given, :meth:`draw`); ``draws`` and ``noise`` together are refused."""
        if draws is None:
            return self.draw(x, generator, noise)
        if noise is not None:
            raise ArgumentValueError(
                "noise", noise, "pass noise or draws, not both: draws already hold the noise z"
            )
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
        noise: torch.Tensor | None = None,
        **cond,
    ) -> torch.Tensor:
        """The loss of each example of ``x`` ``(B, ...)``, shape ``(B,)``, for the score function
        ``model(x_t, t, **cond)`` (``model(x_t, t)`` without conditioning; labels ``y`` dropped as
        :meth:`draw` says). ``draws`` (from :meth:`draw`) fixes the times, noise and dropped
        labels; then ``generator`` is not used. ``noise`` (shaped like ``x``; not with ``draws``)
        is the noise paired with each example, used as ``z`` (:meth:`draw`; reflow); it is not
        passed to the model. Data-parallel training draws for the whole global
        batch and gives each rank its shard, so that the ranks together compute the single-process
        estimate."""
        check_score_fn(model)
        x = check_tensor("x", x)
        draws = self.draws_for(x, generator, draws, noise)
        t, z, w, drop = draws
        if self.p_uncond > 0:
            cond = self._drop_labels(cond, drop, x.shape[0])
        mean, std = self.sde.marginal(x, t)
        std_b = batch_broadcast(std, x)
        x_t = mean + std_b * z
        score = check_score_output(model(x_t, t, **cond) if cond else model(x_t, t), x_t)
        # ||s + z / std||^2 = ||std s + z||^2 / std^2
        loss = 0.5 * batch_sum((std_b * score + z) ** 2)
        if self._weight is not std2_weighting:
            loss = self._weight(self.sde, t, std) * loss
        return loss if w is None else loss * w

    def effective_weighting(self, log_snr, parameterization=None) -> torch.Tensor:
        """``W(l)`` over the log-SNR ``l = -2 log sigma_hat``: the loss's mean is ``integral W(l)
        E[||eps_theta - z||^2 / 2 | l] dl``, so ``W`` is what an objective weighs each noise level
        by, the sampling density included (Kingma & Gao 2023's ``w(lambda)``; the ELBO's is flat).
        ``W = w(t) p(t) / (-dl/dt)`` with ``-dl/dt = g^2 / std^2``, ``p`` the sampler's density, or
        ``1 / (T - eps)`` for a sampler whose weights keep the objective of uniform times. 0 outside
        ``[eps, T]``; float64, shaped like ``log_snr``.

        With ``parameterization`` (a name or a :class:`~sde_gen.Parameterization`), the same
        objective in that network's own units: ``W(l) / unit(l)``, the weight of the squared error of
        the network's output at each level (:meth:`~sde_gen.Parameterization.unit`). The objective
        is the same for every parameterisation; how its weight falls on the network's output is
        not (EDM's weighting is flat in EDM's own units, ``1 / sigma^2`` in x_0-prediction's)."""
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        flat = lam.reshape(-1)
        lo, hi = (
            float(v) for v in self.sde.sigma_hat(torch.tensor([self.eps, self.sde.T], dtype=torch.float64))
        )
        sigma = torch.exp(-flat / 2)
        inside = (sigma >= lo * (1 - 1e-12)) & (sigma <= hi * (1 + 1e-12))
        t = self.sde.t_from_sigma_hat(sigma.clamp(lo, hi)).clamp(self.eps, self.sde.T)
        std = self.sde.marginal(torch.zeros(t.shape[0], 1, dtype=torch.float64), t)[1]
        w = self._weight(self.sde, t, std)
        sampler = self.time_sampler
        if getattr(sampler, "reweight", False):
            p = torch.full_like(t, 1.0 / (self.sde.T - self.eps))
        elif hasattr(sampler, "density"):
            p = sampler.density(t)
        else:
            raise TypeError(f"effective_weighting needs the time sampler's density(t); {sampler!r} has none")
        dl_dt = self.sde.diffusion(t) ** 2 / std**2
        W = w * p / dl_dt
        if parameterization is not None:
            unit = make_parameterization(parameterization).unit(t, self.sde, torch.zeros_like(std))
            W = W / unit.reshape(-1)
        return torch.where(inside, W, torch.zeros_like(t)).reshape(lam.shape)

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
