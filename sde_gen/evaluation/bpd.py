"""The chunked, rank-spread test bits/dim of a score model on integer images (:func:`evaluate_bpd`),
through the probability-flow likelihood and uniform or truncated-normal dequantization."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from .._checks import ArgumentValueError, check_choice, check_cond, check_int
from .._utils import batch_sum
from ..data.transforms import LevelTransform, check_level_data
from ..likelihood.bpd import dequantized_bpd_per_image
from ..likelihood.dequantization import importance_weighted_bpd_per_image
from ..likelihood.latent import latent_nll_bound
from ..likelihood.probability_flow import log_likelihood
from ..sampling.solvers.ode import ProbabilityFlow
from .chunks import count_chunks, gather_chunks, my_chunks, nfe_stats, progress_bar
from .drivers import sde_first
from .seeds import chunk_generator, noise_seed

__all__ = ["evaluate_bpd"]


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
    autoencoder=None,
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

    With an ``autoencoder`` (:class:`sde_gen.Autoencoder`), ``score_fn`` is a latent model's and
    the figure is the bound of :func:`sde_gen.latent_nll_bound` (one draw of ``z`` per image and
    repeat, from the chunk's probe stream), in bits/dim: an upper bound, not the likelihood.

    The old argument order ``evaluate_bpd(score_fn, sde, levels, transform)`` still works, with a
    ``DeprecationWarning``.
    """
    sde, score_fn = sde_first(sde, score_fn, "evaluate_bpd")
    n = check_level_data(levels, transform, name="levels", min_items=2)
    batch_size = check_int("batch_size", batch_size, low=1)
    repeats = check_int("repeats", repeats, low=1)
    check_choice("divergence", divergence, {"exact", "hutchinson"})
    check_choice("dequantization", dequantization, {"uniform", "truncated_normal"})
    importance_samples = check_int("importance_samples", importance_samples, low=1)
    if dequantization == "uniform" and importance_samples != 1:
        raise ArgumentValueError(
            "importance_samples",
            importance_samples,
            f"importance_samples={importance_samples} needs dequantization='truncated_normal' "
            "(the uniform bound takes one draw per repeat)",
        )
    if autoencoder is not None and dequantization != "uniform":
        raise ArgumentValueError(
            "dequantization", dequantization, "a latent model's bound takes dequantization='uniform'"
        )
    seed = noise_seed(seed, generator, noisy=True, what="dequantization")
    cond = check_cond(cond, n)

    num_chunks = count_chunks(n, batch_size)
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
        if autoencoder is None:
            return ode_log_prob(y)
        bound = latent_nll_bound(autoencoder, ode_log_prob, y, generator=book["generator"])
        return -bound.nll_bound.detach().cpu()

    def ode_log_prob(y):
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
        return res.log_prob.detach().cpu() if autoencoder is None else res.log_prob.detach()

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
        chunks = my_chunks(num_chunks)
        bar = progress_bar(len(chunks), progress, "bpd")
        parts = []
        for i in chunks:
            kb = levels[i * batch_size : (i + 1) * batch_size]
            probe_device = torch.device(device) if device is not None else kb.device
            book["chunk"], book["generator"] = i, chunk_generator(seed, i, "probes", probe_device)
            deq = chunk_generator(seed, i, "dequantization", kb.device)
            parts.append(per_image_fn(log_prob, kb, transform, repeats=repeats, generator=deq, dtype=dtype))
            if bar is not None:
                bar.update(1)
        per_image = gather_chunks(parts, bar)
    stats = nfe_stats([chunk_nfe[i] for i in sorted(chunk_nfe)])
    se = float(per_image.std(unbiased=True) / math.sqrt(n))
    return {"bpd": float(per_image.mean()), "bpd_se": se, "per_point": per_image, **stats}
