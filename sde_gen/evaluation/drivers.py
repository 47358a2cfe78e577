"""The evaluation drivers: test NLL of vector data and large sample sets, chunk by chunk.

Both process their items in chunks of ``batch_size``: only one chunk is on the device at a time and
results are moved to the CPU; under ``torch.distributed`` the chunks are spread over the ranks
(:mod:`.chunks`) and draw their noise from per-chunk generators (:mod:`.seeds`), so 1 and N ranks
give bit-identical results. Bits/dim of images is :func:`sde_gen.bpd.evaluate_bpd`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from .. import distributed as dist_utils
from .._checks import ArgumentTypeError, ArgumentValueError, check_choice, check_cond, check_int, check_tensor
from ..likelihood.probability_flow import log_likelihood
from ..sampling.loop import sample
from ..sampling.noise import KeyedNoise
from ..sampling.solvers.ode import ProbabilityFlow
from ..sdes.base import SDE
from .chunks import count_chunks, gather_chunks, my_chunks, nfe_stats, progress_bar
from .seeds import chunk_generator, noise_seed

__all__ = ["evaluate_nll", "generate_samples"]


def sde_first(sde, score_fn, name: str) -> tuple:
    """``(sde, score_fn)``, swapped back with a ``DeprecationWarning`` where ``name`` was called in
    the old order ``name(score_fn, sde, ...)`` (a callable first, an :class:`sde_gen.SDE` second)."""
    if isinstance(score_fn, SDE) and not isinstance(sde, SDE) and callable(sde):
        warnings.warn(
            f"{name}(score_fn, sde, ...) is deprecated: pass the SDE first, {name}(sde, score_fn, ...), "
            "as in sample() and log_likelihood()",
            DeprecationWarning,
            stacklevel=3,
        )
        return score_fn, sde
    return sde, score_fn


def evaluate_nll(
    sde,
    score_fn: Callable,
    x: torch.Tensor,
    *,
    eps: float = 1e-5,
    solver: ProbabilityFlow | None = None,
    batch_size: int = 1000,
    divergence: str = "exact",
    num_probes: int = 1,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device=None,
    progress: bool = False,
    cond: dict | None = None,
) -> dict:
    """Negative log-likelihood in nats of vector data ``x`` ``(N, ...)`` under the probability-flow
    model, in chunks of ``batch_size`` points (moved to ``device`` one at a time when given),
    spread over the ranks under ``torch.distributed`` (every rank passes the same ``x``).

    Returns the same dict on every rank: ``{"nll": mean, "nll_se": standard error over the N
    points, "per_point": the N values (float64, CPU, in the order of x), "nfe", "nfe_per_chunk",
    "nfe_per_rank", "nfe_rank_max", "nfe_rank_min"}``: ``nfe`` counts score evaluations over all
    ranks, ``nfe_per_chunk`` and ``nfe_per_rank`` are lists (chunk order, rank order) and the last
    two their extremes over ranks. With a fixed grid (``ProbabilityFlow("rk4", steps=K)``: ``4 K``
    per chunk) every chunk costs the same, and so does every rank when the number of chunks is a
    multiple of the number of ranks; an adaptive method's cost varies from chunk to chunk.

    Hutchinson probes (``divergence="hutchinson"``) come from chunk generators when ``seed`` is
    given, else from ``generator`` (one stream, single process only). An adaptive solver controls
    its error over the whole chunk, so results depend on ``batch_size`` within the tolerance; with
    a fixed grid they do not (up to rounding).

    ``cond`` (a dict of tensors with one row per point of ``x``, see :func:`sde_gen.sample`) is
    split with the points: each chunk's rows go with its points, giving ``-log p(x | cond)``.

    The old argument order ``evaluate_nll(score_fn, sde, x)`` still works, with a ``DeprecationWarning``.
    """
    sde, score_fn = sde_first(sde, score_fn, "evaluate_nll")
    x = check_tensor("x", x)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_choice("divergence", divergence, {"exact", "hutchinson"})
    cond = check_cond(cond, x.shape[0])
    noisy = divergence == "hutchinson"
    seed = noise_seed(seed, generator, noisy=noisy, what="divergence='hutchinson'")
    chunks = my_chunks(count_chunks(x.shape[0], batch_size))
    bar = progress_bar(len(chunks), progress, "nll")
    nll, chunk_nfe = [], []
    for i in chunks:
        xb = x[i * batch_size : (i + 1) * batch_size]
        xb = xb.to(device) if device is not None else xb
        g = chunk_generator(seed, i, "probes", xb.device) if noisy and seed is not None else generator
        res = log_likelihood(
            sde,
            score_fn,
            xb,
            eps=eps,
            solver=solver,
            divergence=divergence,
            num_probes=num_probes,
            generator=g,
            cond=_rows(cond, i * batch_size, xb.shape[0]),
        )
        nll.append(-res.log_prob.detach().double().cpu())
        chunk_nfe.append(res.nfe)
        if bar is not None:
            bar.update(1)
    nll = gather_chunks(nll, bar)
    se = float(nll.std() / math.sqrt(nll.numel())) if nll.numel() > 1 else float("nan")
    return {"nll": float(nll.mean()), "nll_se": se, "per_point": nll, **nfe_stats(chunk_nfe)}


def _rows(cond: dict, start: int, size: int) -> dict:
    """Rows ``[start, start + size)`` of every conditioning tensor: a chunk's share."""
    return {k: v[start : start + size] for k, v in cond.items()}


def _check_sample_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise ArgumentTypeError(
            "shape", shape, f"shape must be the shape of one sample, a tuple of ints, got {shape!r}"
        ) from None
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ArgumentValueError(
            "shape", shape, f"shape must be the shape of one sample, a tuple of positive ints, got {shape!r}"
        )
    return shape


def generate_samples(
    sde,
    score_fn: Callable,
    n: int,
    shape,
    solver,
    *,
    seed: int,
    batch_size: int = 1000,
    eps: float = 1e-3,
    denoise: bool = False,
    dtype: torch.dtype | None = None,
    device=None,
    out: str | os.PathLike | None = None,
    progress: bool = False,
    noise: str = "chunk",
    cond: dict | None = None,
) -> dict:
    """Draw ``n`` samples of shape ``shape`` (one sample's, e.g. ``(3, 32, 32)``) with
    :func:`sde_gen.sample`, in chunks of ``batch_size``, spread over the ranks under
    ``torch.distributed``.

    Chunk ``i`` holds samples ``[i * batch_size, (i + 1) * batch_size)`` and draws its prior sample
    and solver noise from ``chunk_generator(seed, i, "samples", device)``, so the samples depend on
    ``(seed, batch_size)`` but not on the number of ranks. With ``noise="keyed"`` chunk ``i``
    draws with ``KeyedNoise(seed, offset=i * batch_size)`` instead: sample ``k``'s noise depends on
    ``(seed, k)`` only, so the samples depend on neither ``batch_size`` nor the number of ranks,
    and equal ``sample(..., generator=KeyedNoise(seed))`` of all ``n`` at once (for a score
    function that treats rows independently). Each chunk is sampled under
    ``torch.no_grad()`` on ``device`` and moved to the CPU; the ranks then exchange one round of
    chunks at a time (at most ``world_size * batch_size`` samples in flight).

    ``cond`` (a dict of tensors with ``n`` rows, e.g. ``{"y": labels}``; see :func:`sde_gen.sample`)
    is split with the samples: chunk ``i`` gets rows ``[i * batch_size, (i + 1) * batch_size)``, so
    sample ``k`` is drawn with row ``k`` of every tensor, whatever the chunking and the ranks.

    Returns the same dict on every rank: ``{"samples": (n, *shape) CPU tensor in order, "path":
    None, "cond": the conditioning as given (``{}`` without), and the NFE keys of
    :func:`evaluate_nll`}`` (the NFE of a chunk includes the denoising step's score evaluations).

    With ``out`` (a path, conventionally ``.npy``), rank 0 writes each round's chunks into a
    ``numpy.lib.format.open_memmap`` file instead of keeping them (written as ``<out>.partial`` and
    renamed when complete, so a stopped run leaves no file that looks finished); then ``"samples"``
    is that file opened read-only (``numpy.load(out, mmap_mode="r")``) on rank 0 and ``None`` on the
    other ranks, and ``"path"`` is ``out`` on every rank. Only rank 0 touches the file, so no shared
    filesystem is needed.
    """
    n = check_int("n", n, low=1)
    shape = _check_sample_shape(shape)
    batch_size = check_int("batch_size", batch_size, low=1)
    seed = noise_seed(check_int("seed", seed, low=0), None, noisy=True, what="sampling")
    check_choice("noise", noise, {"chunk", "keyed"})
    cond = check_cond(cond, n)
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise ArgumentTypeError(
            "out", out, f"out must be a path (str or os.PathLike) or None, got {type(out).__name__}"
        )
    probe = torch.empty(0, dtype=dtype, device=device)  # resolves torch's default dtype and device
    dtype, device = probe.dtype, probe.device
    if out is not None:
        try:
            probe.cpu().numpy()
        except TypeError:
            raise ArgumentTypeError(
                "out", out, f"out= writes a numpy file, and numpy has no dtype for {dtype}"
            ) from None

    num_chunks = count_chunks(n, batch_size)
    world = dist_utils.get_world_size()
    shards = [dist_utils.shard_range(num_chunks, r, world) for r in range(world)]
    mine = range(*shards[dist_utils.get_rank()])
    rounds = max(stop - start for start, stop in shards)
    write = out is not None and dist_utils.is_main_process()
    parts: list = [None] * num_chunks
    chunk_nfe: list[int] = []
    mm, tmp = None, None
    bar = progress_bar(rounds, progress, "samples")
    for j in range(rounds):
        if j < len(mine):
            i = mine[j]
            size = min(batch_size, n - i * batch_size)
            with torch.no_grad():
                res = sample(
                    sde,
                    score_fn,
                    (size,) + shape,
                    solver,
                    eps=eps,
                    generator=KeyedNoise(seed, offset=i * batch_size)
                    if noise == "keyed"
                    else chunk_generator(seed, i, "samples", device),
                    denoise=denoise,
                    dtype=dtype,
                    device=device,
                    return_result=True,
                    cond=_rows(cond, i * batch_size, size),
                )
            xb = res.x.detach().cpu()
            chunk_nfe.append(res.nfe)
        else:
            xb = torch.zeros((0,) + shape, dtype=dtype)
        # This round's chunks of every rank, in rank order: chunk start_r + j of each rank r.
        gathered = dist_utils.gather_cat(xb)
        offset = 0
        for start, stop in shards:
            if start + j >= stop:
                continue
            i = start + j
            size = min(batch_size, n - i * batch_size)
            piece = gathered[offset : offset + size]
            offset += size
            if out is None:
                parts[i] = piece
            elif write:
                if mm is None:
                    from numpy.lib.format import open_memmap

                    tmp = Path(str(out) + ".partial")
                    tmp.parent.mkdir(parents=True, exist_ok=True)
                    mm = open_memmap(tmp, mode="w+", dtype=piece.numpy().dtype, shape=(n,) + shape)
                mm[i * batch_size : i * batch_size + size] = piece.numpy()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    stats = nfe_stats(chunk_nfe)
    if out is None:
        return {"samples": torch.cat(parts), "path": None, "cond": cond, **stats}
    path = Path(out)
    samples = None
    if write:
        mm.flush()
        del mm
        os.replace(tmp, path)
        import numpy as np

        samples = np.load(path, mmap_mode="r")
    dist_utils.barrier()
    return {"samples": samples, "path": path, "cond": cond, **stats}
