"""Bits per dimension, all of it: the conversion from a log-density (:func:`bits_per_dim`),
uniform dequantization of integer data averaged over repeats (:func:`dequantized_bpd`) and the
chunked, rank-spread evaluation of a score model on integer images (:func:`evaluate_bpd`).

Data with ``levels`` values per dimension are mapped into the model's range by a
:class:`sde_gen.LevelTransform`; the bound is Theis et al. (2016)'s, derived in docs/maths.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from ._checks import check_choice, check_cond, check_int, check_real
from ._utils import batch_sum
from .data.transforms import LevelTransform
from .dequantization import importance_weighted_bpd_per_image
from .evaluation.chunks import _gather_chunks, _my_chunks, _nfe_stats, _num_chunks, _progress
from .evaluation.drivers import _sde_first
from .evaluation.seeds import _noise_seed, chunk_generator
from .likelihood import log_likelihood
from .solvers.ode import ProbabilityFlow

__all__ = ["bits_per_dim", "check_level_data", "dequantized_bpd", "dequantized_bpd_per_image", "evaluate_bpd"]


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
        raise ValueError(f"high must be > low, got low={low!r}, high={high!r}")
    log2_width = math.log2((high - low) / levels)
    return -log_prob / (num_dims * math.log(2.0)) - log2_width


def check_level_data(k, transform, name: str = "k", min_items: int = 0) -> int:
    """Check integer data ``k`` ``(N, ...)`` and its :class:`LevelTransform`; return ``N``.
    ``min_items=2`` for a standard error."""
    if not isinstance(transform, LevelTransform):
        raise TypeError(f"transform must be a LevelTransform, got {type(transform).__name__}")
    if not isinstance(k, torch.Tensor) or k.ndim < 1:
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, ...), got {type(k).__name__}")
    if k.shape[0] < min_items:
        raise ValueError(
            f"{name} must hold at least {min_items} items for a standard error, got shape {tuple(k.shape)}"
        )
    return k.shape[0]


def dequantized_bpd_per_image(
    log_prob_fn: Callable[[torch.Tensor], torch.Tensor],
    k: torch.Tensor,
    transform: LevelTransform,
    *,
    repeats: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    dtype=torch.float32,
) -> torch.Tensor:
    """Bits/dim of each image of integer data ``k`` ``(N, ...)``, averaged over ``repeats``
    dequantizations: a float64 CPU tensor of shape ``(N,)``.

    For each of the ``repeats`` rounds, every image is dequantized afresh
    (``transform.dequantize(..., generator)``) and ``log_prob_fn`` (a float batch ``(B, ...) -> (B,)``
    log-densities in nats, in model space) is evaluated in batches of ``batch_size`` (default:
    all): rounds outer, batches inner, so the draws from ``generator`` come in that order.
    """
    n = check_level_data(k, transform)
    repeats = check_int("repeats", repeats, low=1)
    batch_size = max(n, 1) if batch_size is None else check_int("batch_size", batch_size, low=1)
    num_dims = math.prod(k.shape[1:])
    total = torch.zeros(n, dtype=torch.float64)
    for _ in range(repeats):
        for start in range(0, n, batch_size):
            kb = k[start : start + batch_size]
            lp = log_prob_fn(transform.dequantize(kb, generator, dtype))
            if not isinstance(lp, torch.Tensor) or lp.shape != (kb.shape[0],):
                raise ValueError(
                    f"log_prob_fn must return a tensor of shape ({kb.shape[0]},), "
                    f"got {getattr(lp, 'shape', type(lp).__name__)}"
                )
            bad = ~torch.isfinite(lp)
            if bool(bad.any()):
                raise ValueError(f"log_prob_fn returned {int(bad.sum())} non-finite log-densities")
            total[start : start + kb.shape[0]] += transform.bits_per_dim(lp.detach().double(), num_dims).cpu()
    return total / repeats


def dequantized_bpd(
    log_prob_fn: Callable[[torch.Tensor], torch.Tensor],
    k: torch.Tensor,
    transform: LevelTransform,
    *,
    repeats: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    dtype=torch.float32,
) -> tuple[float, float]:
    """Mean bits/dim of integer data ``k`` ``(N, ...)`` under a model density, and its standard error.

    For each of ``repeats`` rounds, every image is dequantized afresh (``transform.dequantize``)
    and ``log_prob_fn`` (a float batch ``(B, ...) -> (B,)`` log-densities in nats, in model space)
    is evaluated in batches of ``batch_size`` (default: all). Each image's bits/dim is averaged
    over the rounds (:func:`dequantized_bpd_per_image`); the result is the mean of these per-image
    averages, and the standard error is their sample standard deviation over ``sqrt(N)`` (it covers
    both the image-to-image spread and the dequantization noise). Needs ``N >= 2``.
    """
    n = check_level_data(k, transform, min_items=2)
    per_image = dequantized_bpd_per_image(
        log_prob_fn, k, transform, repeats=repeats, generator=generator, batch_size=batch_size, dtype=dtype
    )
    return float(per_image.mean()), float(per_image.std(unbiased=True) / math.sqrt(n))


def evaluate_bpd(
    sde,
    score_fn: Callable,
    levels: torch.Tensor,
    transform: LevelTransform,
    *,
    repeats: int = 1,
    eps: float = 1e-5,
    solver: ProbabilityFlow | None = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    divergence: str = "exact",
    num_probes: int = 1,
    dtype=torch.float32,
    device=None,
    progress: bool = False,
    dequantization: str = "uniform",
    importance_samples: int = 1,
    variable: str = "t",
    state: str = "x",
    cond: dict | None = None,
) -> dict:
    """Bits/dim of integer images ``levels`` ``(N, C, H, W)`` under the probability-flow model, each
    dequantized ``repeats`` times (:func:`dequantized_bpd`), in chunks of
    ``batch_size`` images moved to ``device`` one at a time, spread over the ranks under
    ``torch.distributed`` (every rank passes the same ``levels``).

    Returns the same dict on every rank: ``{"bpd": mean, "bpd_se": standard error over images,
    "per_point": each image's bits/dim averaged over the repeats (float64, CPU, in order), and the
    NFE keys of :func:`sde_gen.evaluate_nll`}``.

    With ``seed``, chunk ``i`` dequantizes its images (all repeats, in turn) from
    ``chunk_generator(seed, i, "dequantization", levels.device)`` and draws Hutchinson probes from
    ``chunk_generator(seed, i, "probes", device)``. With ``generator`` (single process only), all
    repeats of the dequantization and all probes come from that one stream, repeats outer, chunks
    inner. With ``divergence="hutchinson"`` the log-densities are unbiased estimates, so the mean
    stays unbiased and the standard error, taken over images, includes the probes' noise.

    ``dequantization="truncated_normal"`` replaces the uniform bound by Zheng et al. (2023)'s
    training-free one (:mod:`sde_gen.dequantization`): ``importance_samples`` = K draws per image
    and repeat from a normal of scale ``sigma_hat(eps)`` truncated to the bin, the model density
    read in ``xhat = (x_eps - shift) / scale``, and ``log (1/K) sum_j p/q`` as the bound. ``variable``
    and ``state`` pass to :func:`sde_gen.log_likelihood`.

    ``cond`` (a dict of tensors with one row per image, see :func:`sde_gen.sample`) goes with the
    images: every evaluation of a chunk's images gets the chunk's rows, for ``p(x | cond)``.

    The old argument order ``evaluate_bpd(score_fn, sde, levels, transform)`` still works, with a
    ``DeprecationWarning``.
    """
    sde, score_fn = _sde_first(sde, score_fn, "evaluate_bpd")
    n = check_level_data(levels, transform, name="levels", min_items=2)
    batch_size = check_int("batch_size", batch_size, low=1)
    repeats = check_int("repeats", repeats, low=1)
    check_choice("divergence", divergence, {"exact", "hutchinson"})
    check_choice("dequantization", dequantization, {"uniform", "truncated_normal"})
    importance_samples = check_int("importance_samples", importance_samples, low=1)
    if dequantization == "uniform" and importance_samples != 1:
        raise ValueError(
            f"importance_samples={importance_samples} needs dequantization='truncated_normal' "
            "(the uniform bound takes one draw per repeat)"
        )
    seed = _noise_seed(seed, generator, noisy=True, what="dequantization")
    cond = check_cond(cond, n)

    num_chunks = _num_chunks(n, batch_size)
    chunk_nfe: dict[int, int] = {}

    book = {"calls": 0, "chunk": 0, "generator": generator}
    per_image_fn = dequantized_bpd_per_image
    if dequantization == "truncated_normal":
        per_image_fn = partial(
            importance_weighted_bpd_per_image,
            sigma=float(sde.sigma_hat(torch.tensor([eps], dtype=torch.float64))[0]),
            num_samples=importance_samples,
        )

    def log_prob(y):
        y = y.to(device) if device is not None else y
        if dequantization == "truncated_normal":  # y is xhat at eps: map to x_eps, add log|det|
            k = sde.kernel(torch.full((y.shape[0],), eps, dtype=y.dtype, device=y.device), y)
            return log_prob_fn(k.scale * y + k.shift) + batch_sum(torch.log(k.scale.abs())).cpu()
        return log_prob_fn(y)

    def log_prob_fn(y):
        if seed is None:  # K calls per (repeat, chunk), repeats outer
            book["chunk"] = (book["calls"] // importance_samples) % num_chunks
        book["calls"] += 1
        start = book["chunk"] * batch_size  # every call evaluates the images of one chunk, in order
        res = log_likelihood(
            sde,
            score_fn,
            y,
            eps=eps,
            solver=solver,
            divergence=divergence,
            num_probes=num_probes,
            generator=book["generator"],
            variable=variable,
            state=state,
            cond={k: v[start : start + y.shape[0]] for k, v in cond.items()},
        )
        chunk_nfe[book["chunk"]] = chunk_nfe.get(book["chunk"], 0) + res.nfe
        return res.log_prob.detach().cpu()

    if seed is None:
        # One stream through everything, as a single process always did (refused above where
        # several ranks would have to share it).
        per_image = per_image_fn(
            log_prob,
            levels,
            transform,
            repeats=repeats,
            generator=generator,
            batch_size=batch_size,
            dtype=dtype,
        )
    else:
        chunks = _my_chunks(num_chunks)
        bar = _progress(len(chunks), progress, "bpd")
        parts = []
        for i in chunks:
            kb = levels[i * batch_size : (i + 1) * batch_size]
            probe_device = torch.device(device) if device is not None else kb.device
            book["chunk"], book["generator"] = i, chunk_generator(seed, i, "probes", probe_device)
            deq = chunk_generator(seed, i, "dequantization", kb.device)
            parts.append(per_image_fn(log_prob, kb, transform, repeats=repeats, generator=deq, dtype=dtype))
            if bar is not None:
                bar.update(1)
        per_image = _gather_chunks(parts, bar)
    stats = _nfe_stats([chunk_nfe[i] for i in sorted(chunk_nfe)])
    se = float(per_image.std(unbiased=True) / math.sqrt(n))
    return {"bpd": float(per_image.mean()), "bpd_se": se, "per_point": per_image, **stats}
