"""Reflow (Liu, Gong & Liu 2022, "Flow Straight and Fast", Sec. 2.3 and Alg. 1).

A trained model's probability-flow ODE is a deterministic map from a prior draw ``x_T`` to a
sample ``x``; the pairs ``(x_T, x)`` it makes are a coupling of the prior and the model's law whose
straight interpolations cross less than those of independent pairs. Training a new model on those
exact pairs, ``x_t = mean(t) x + std(t) z`` with each sample's own noise ``z`` instead of a fresh
draw, "rectifies" the flow: its paths are straighter (Liu et al., Thm. 3.7), so few-step solvers lose
less, and repeating it (k-rectified flow) straightens further.

In this library the pairs are drawn by :func:`reflow_pairs` and trained on with
``Batches(x, noise=noise)`` (or ``DSMLoss(...)(model, x, noise=noise)``); the Trainer hands each
batch's noise to the loss's ``draw``. It is exact for :class:`~sde_gen.RectifiedFlow`, whose kernel
is the straight path itself; for any other SDE it trains on the kernel's path between the pair.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import (
    ArgumentTypeError,
    ArgumentValueError,
    accepts_keywords,
    check_cond,
    check_eps,
    check_int,
    check_score_fn,
)
from ..sampling.loop import sample
from ..sampling.solvers.base import Solver
from ..sampling.solvers.ode import ProbabilityFlow
from ..sdes.base import check_sde, check_shape

__all__ = ["reflow_pairs"]


def reflow_pairs(
    sde,
    score_fn: Callable,
    num: int,
    shape,
    *,
    solver: Solver | None = None,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    cond: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` pairs ``(x, noise)`` of the probability-flow ODE of ``score_fn``: the data of a
    reflow (module docstring).

    The starts ``x_T`` ``(num, *shape)`` are drawn at once from ``sde.prior_sample`` with
    ``generator``; each batch of ``batch_size`` of them is then carried from ``T`` to ``eps`` by
    :func:`~sde_gen.sample` with ``x_T=`` that start, so ``x[i]`` is the ODE's image of
    ``x_T[i]``. ``noise = x_T / std(T)``, ``std(T)`` the kernel's std at ``T``
    (``sde.marginal(0, T)``): the standard normal that ``x_T`` is under the kernel, up to the
    prior mismatch (the prior is ``N(0, std(T)^2 I)`` only approximately, e.g. VP's ``N(0, I)``
    against ``std(1)^2 = 1 - e^{-B(1)}``). Training with ``x_t = mean(t) x + std(t) noise`` then
    starts, at ``t = T``, from ``mean(T) x + x_T``.

    Args:
        sde: the SDE the model was trained for. score_fn: its score, ``score_fn(x, t, **cond)``.
        num: the number of pairs. shape: the shape of one item, e.g. ``(2,)`` or ``(1, 28, 28)``.
        solver: a deterministic solver (default ``ProbabilityFlow("dopri5")``, tolerances 1e-5);
            a stochastic one is refused, its samples being no function of ``x_T``.
        eps: the time the ODE ends at, as in :func:`~sde_gen.sample`.
        generator: a ``torch.Generator`` for the starts (on the device of the draws); the pairs
            are a function of its seed, and up to the solver's tolerance of no other setting
            (an adaptive solver's steps depend on the batch it is given).
        batch_size: samples per ODE solve (default ``num``).
        dtype, device: of the draws (torch's defaults when ``None``).
        cond: conditioning, a dict of tensors with ``num`` rows (e.g. ``{"y": labels}``), split
            with the batches as :func:`~sde_gen.sample` takes it; keep it to train on.

    Returns ``(x, noise)``, both ``(num, *shape)`` with the draws' dtype and device.
    """
    check_sde(sde)
    check_score_fn(score_fn)
    num = check_int("num", num, low=1)
    item = _item_shape(shape)
    solver = ProbabilityFlow("dopri5") if solver is None else solver
    if not isinstance(solver, Solver):
        raise ArgumentTypeError(
            "solver", solver, f"solver must be an sde_gen Solver (e.g. ProbabilityFlow()), got {solver!r}"
        )
    if getattr(solver, "stochastic", False):
        raise ArgumentValueError(
            "solver",
            solver,
            f"reflow pairs each start with its image under a deterministic map; the solver {solver!r} "
            "draws noise (use ProbabilityFlow, DDIM with eta=0, Heun, DPM-Solver++, UniPC or iPNDM)",
        )
    eps = check_eps(eps, sde.T)
    batch_size = num if batch_size is None else check_int("batch_size", batch_size, low=1)
    cond = check_cond(cond, num)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(
            "generator",
            generator,
            f"generator must be a torch.Generator or None, got {type(generator).__name__}",
        )
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ArgumentTypeError(
            "dtype",
            dtype,
            f"dtype must be a floating-point torch.dtype (e.g. torch.float64) or None, got {dtype!r}",
        )
    where = torch.empty(0, device=device).device
    if generator is not None and generator.device.type != where.type:
        raise ArgumentValueError(
            "generator", generator, f"generator is on {generator.device}, but the draws are on {where}"
        )

    x_T = sde.prior_sample((num, *item), generator=generator, dtype=dtype, device=device)
    t_end = torch.full((1,), sde.T, dtype=x_T.dtype, device=x_T.device)
    std_T = sde.marginal(x_T.new_zeros((1, *item)), t_end)[1]
    noise = x_T / std_T.reshape((1,) * x_T.ndim)
    parts = []
    for start in range(0, num, batch_size):
        rows = slice(start, min(start + batch_size, num))
        start_b = x_T[rows]
        part_cond = {k: v[rows] for k, v in cond.items()} or None
        parts.append(sample(sde, score_fn, start_b.shape, solver, eps=eps, x_T=start_b, cond=part_cond))
    return torch.cat(parts), noise


def _item_shape(shape) -> tuple[int, ...]:
    """The shape of one item: a positive int or a non-empty tuple of them."""
    try:
        return check_shape(shape)
    except (ArgumentTypeError, ArgumentValueError) as e:
        raise type(e)(
            "shape",
            shape,
            f"shape must be the shape of one item, a non-empty tuple of positive ints, got {shape!r}",
        ) from None


def check_takes_noise(loss_fn):
    """``loss_fn`` itself if it can train on paired noise, i.e. has a ``draw(batch, generator,
    noise=...)`` method (as :class:`~sde_gen.DSMLoss` has); else ``TypeError`` naming it."""
    draw = getattr(loss_fn, "draw", None)
    if draw is None or accepts_keywords(draw, ["noise"]) is False:
        raise ArgumentTypeError(
            "loss_fn",
            loss_fn,
            f"the batches carry paired noise (Batches(noise=...)), but the loss {type(loss_fn).__name__} "
            "has no draw(batch, generator, noise=...) method to use it as the noise of x_t; use sg.DSMLoss",
        )
    return loss_fn
