"""Evaluation of trained models: test NLL (vector data), test bits/dim (images), samples, pictures.

Large test sets and large sample sets are processed in chunks of ``batch_size`` items: only one
chunk is on the device at a time and results are moved to the CPU. Under ``torch.distributed``
(e.g. ``torchrun``) the chunks are spread over the ranks, each rank taking a contiguous run of
chunks (:func:`sde_gen.distributed.shard_range` over the chunk indices; counts differ by at most
one), and the per-point results are gathered on every rank in the original order.

Seeds. With an integer ``seed``, chunk ``i`` draws all its noise from its own generators,
:func:`chunk_generator` ``(seed, i, stream)``: one stream per purpose (dequantization, Hutchinson
probes, samples). A chunk's result then depends only on ``(seed, batch_size, i)`` and the data, not
on which rank computes it or how many ranks there are: 1 and N ranks give bit-identical results on
the same hardware. With ``generator=`` instead, the chunks share that one stream, in order, as a
single process always did; that cannot be split over ranks, so it is refused under
``torch.distributed`` wherever noise is drawn.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from . import distributed as dist_utils
from ._checks import check_choice, check_int, check_tensor
from .likelihood import log_likelihood
from .solvers.ode import ProbabilityFlow

__all__ = [
    "evaluate_nll",
    "evaluate_bpd",
    "generate_samples",
    "chunk_seed",
    "chunk_generator",
    "STREAMS",
    "save_image_grid",
    "save_samples_2d",
]

# -- chunk-seeded randomness -------------------------------------------------------------------

#: The noise streams of one chunk: each purpose draws from its own generator, so e.g. the number
#: of Hutchinson probes does not change the dequantization noise.
STREAMS = {"dequantization": 0, "probes": 1, "samples": 2}

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    """SplitMix64's output function (Steele, Lea & Flood 2014): a bijection of 64-bit integers
    whose output bits each depend on every input bit."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _check_seed(seed) -> int:
    seed = check_int("seed", seed, low=0)
    if seed > _MASK64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed!r}")
    return seed


def chunk_seed(seed: int, index: int, stream: str = "samples") -> int:
    """The 64-bit seed of chunk ``index``'s generator for ``stream`` (a key of :data:`STREAMS`):
    ``h(h(h(seed) ^ index) ^ stream_id)`` with ``h`` SplitMix64's mixer. For a fixed ``seed`` and
    ``stream`` distinct chunks get distinct seeds (the map is a bijection of ``index``), and
    neighbouring seeds or chunks give unrelated streams."""
    seed = _check_seed(seed)
    index = check_int("index", index, low=0)
    check_choice("stream", stream, STREAMS)
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ index) ^ STREAMS[stream])


def chunk_generator(seed: int, index: int, stream: str = "samples", device=None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU) seeded with :func:`chunk_seed`. CPU and
    CUDA generators give different streams from the same seed."""
    return torch.Generator(device=torch.device("cpu") if device is None else device).manual_seed(
        chunk_seed(seed, index, stream)
    )


def _noise_seed(seed, generator, *, noisy: bool, what: str) -> int | None:
    """Check ``seed`` and ``generator`` and refuse what cannot be reproduced across ranks."""
    if seed is not None and generator is not None:
        raise ValueError(
            f"pass either seed= (one generator per chunk) or generator= (one stream), not both; "
            f"got seed={seed!r} and generator={generator!r}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if seed is not None:
        seed = _check_seed(seed)
    if noisy and seed is None and dist_utils.is_distributed():
        raise ValueError(
            f"{what} under torch.distributed needs seed= (an int): generator={generator!r} is one stream "
            f"that cannot be split over {dist_utils.get_world_size()} ranks reproducibly"
        )
    return seed


# -- chunks spread over ranks ------------------------------------------------------------------


def _num_chunks(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def _my_chunks(num_chunks: int) -> range:
    """The chunk indices this rank handles: a contiguous run, balanced across ranks."""
    return range(*dist_utils.shard_range(num_chunks))


def _progress(total: int, enabled: bool, desc: str):
    if not enabled or not dist_utils.is_main_process():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True)


def _gather_chunks(parts: list[torch.Tensor], bar) -> torch.Tensor:
    """Close the progress bar; this rank's per-point results (float64, CPU), gathered from every
    rank in rank order: the original order, since ranks hold contiguous runs of chunks."""
    if bar is not None:
        bar.close()
    mine = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    return dist_utils.gather_cat(mine)


def _nfe_stats(chunk_nfe: list[int]) -> dict:
    """Gather this rank's per-chunk NFE: the total, per chunk (in chunk order) and per rank."""
    per_chunk = dist_utils.gather_cat(torch.tensor(chunk_nfe, dtype=torch.int64))
    per_rank = dist_utils.gather_cat(torch.tensor([sum(chunk_nfe)], dtype=torch.int64))
    return {
        "nfe": int(per_rank.sum()),
        "nfe_per_chunk": per_chunk.tolist(),
        "nfe_per_rank": per_rank.tolist(),
        "nfe_rank_max": int(per_rank.max()),
        "nfe_rank_min": int(per_rank.min()),
    }


# -- likelihoods -------------------------------------------------------------------------------


def evaluate_nll(
    score_fn: Callable,
    sde,
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
    """
    x = check_tensor("x", x)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_choice("divergence", divergence, {"exact", "hutchinson"})
    noisy = divergence == "hutchinson"
    seed = _noise_seed(seed, generator, noisy=noisy, what="divergence='hutchinson'")
    chunks = _my_chunks(_num_chunks(x.shape[0], batch_size))
    bar = _progress(len(chunks), progress, "nll")
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
        )
        nll.append(-res.log_prob.detach().double().cpu())
        chunk_nfe.append(res.nfe)
        if bar is not None:
            bar.update(1)
    nll = _gather_chunks(nll, bar)
    se = float(nll.std() / math.sqrt(nll.numel())) if nll.numel() > 1 else float("nan")
    return {"nll": float(nll.mean()), "nll_se": se, "per_point": nll, **_nfe_stats(chunk_nfe)}


def evaluate_bpd(
    score_fn: Callable,
    sde,
    levels: torch.Tensor,
    transform,
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
) -> dict:
    """Bits/dim of integer images ``levels`` ``(N, C, H, W)`` under the probability-flow model, each
    dequantized ``repeats`` times (:func:`sde_gen.data.dequantized_bpd`), in chunks of
    ``batch_size`` images moved to ``device`` one at a time, spread over the ranks under
    ``torch.distributed`` (every rank passes the same ``levels``).

    Returns the same dict on every rank: ``{"bpd": mean, "bpd_se": standard error over images,
    "per_point": each image's bits/dim averaged over the repeats (float64, CPU, in order), and the
    NFE keys of :func:`evaluate_nll`}``.

    With ``seed``, chunk ``i`` dequantizes its images (all repeats, in turn) from
    ``chunk_generator(seed, i, "dequantization", levels.device)`` and draws Hutchinson probes from
    ``chunk_generator(seed, i, "probes", device)``. With ``generator`` (single process only), all
    repeats of the dequantization and all probes come from that one stream, repeats outer, chunks
    inner. With ``divergence="hutchinson"`` the log-densities are unbiased estimates, so the mean
    stays unbiased and the standard error, taken over images, includes the probes' noise.
    """
    from .data.transforms import check_level_data, dequantized_bpd_per_image

    n = check_level_data(levels, transform, name="levels", min_items=2)
    batch_size = check_int("batch_size", batch_size, low=1)
    repeats = check_int("repeats", repeats, low=1)
    check_choice("divergence", divergence, {"exact", "hutchinson"})
    seed = _noise_seed(seed, generator, noisy=True, what="dequantization")

    num_chunks = _num_chunks(n, batch_size)
    chunk_nfe: dict[int, int] = {}
    state = {"calls": 0, "chunk": 0, "generator": generator}

    def log_prob(y):
        y = y.to(device) if device is not None else y
        res = log_likelihood(
            sde,
            score_fn,
            y,
            eps=eps,
            solver=solver,
            divergence=divergence,
            num_probes=num_probes,
            generator=state["generator"],
        )
        if seed is None:  # one call per (repeat, chunk), repeats outer
            state["chunk"] = state["calls"] % num_chunks
        state["calls"] += 1
        chunk_nfe[state["chunk"]] = chunk_nfe.get(state["chunk"], 0) + res.nfe
        return res.log_prob.detach().cpu()

    if seed is None:
        # One stream through everything, as a single process always did (refused above where
        # several ranks would have to share it).
        per_image = dequantized_bpd_per_image(
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
            state["chunk"], state["generator"] = i, chunk_generator(seed, i, "probes", probe_device)
            deq = chunk_generator(seed, i, "dequantization", kb.device)
            parts.append(
                dequantized_bpd_per_image(
                    log_prob, kb, transform, repeats=repeats, generator=deq, dtype=dtype
                )
            )
            if bar is not None:
                bar.update(1)
        per_image = _gather_chunks(parts, bar)
    stats = _nfe_stats([chunk_nfe[i] for i in sorted(chunk_nfe)])
    se = float(per_image.std(unbiased=True) / math.sqrt(n))
    return {"bpd": float(per_image.mean()), "bpd_se": se, "per_point": per_image, **stats}


# -- samples -----------------------------------------------------------------------------------


def _check_sample_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be the shape of one sample, a tuple of ints, got {shape!r}") from None
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"shape must be the shape of one sample, a tuple of positive ints, got {shape!r}")
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
) -> dict:
    """Draw ``n`` samples of shape ``shape`` (one sample's, e.g. ``(3, 32, 32)``) with
    :func:`sde_gen.sample`, in chunks of ``batch_size``, spread over the ranks under
    ``torch.distributed``.

    Chunk ``i`` holds samples ``[i * batch_size, (i + 1) * batch_size)`` and draws its prior sample
    and solver noise from ``chunk_generator(seed, i, "samples", device)``, so the samples depend on
    ``(seed, batch_size)`` but not on the number of ranks. Each chunk is sampled under
    ``torch.no_grad()`` on ``device`` and moved to the CPU; the ranks then exchange one round of
    chunks at a time (at most ``world_size * batch_size`` samples in flight).

    Returns the same dict on every rank: ``{"samples": (n, *shape) CPU tensor in order, "path":
    None, and the NFE keys of :func:`evaluate_nll`}`` (the NFE of a chunk includes the denoising
    step's score evaluation).

    With ``out`` (a path, conventionally ``.npy``), rank 0 writes each round's chunks into a
    ``numpy.lib.format.open_memmap`` file instead of keeping them (written as ``<out>.partial`` and
    renamed when complete, so a stopped run leaves no file that looks finished); then ``"samples"``
    is that file opened read-only (``numpy.load(out, mmap_mode="r")``) on rank 0 and ``None`` on the
    other ranks, and ``"path"`` is ``out`` on every rank. Only rank 0 touches the file, so no shared
    filesystem is needed.
    """
    from .sampling import sample

    n = check_int("n", n, low=1)
    shape = _check_sample_shape(shape)
    batch_size = check_int("batch_size", batch_size, low=1)
    seed = _noise_seed(check_int("seed", seed, low=0), None, noisy=True, what="sampling")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path (str or os.PathLike) or None, got {type(out).__name__}")
    probe = torch.empty(0, dtype=dtype, device=device)  # resolves torch's default dtype and device
    dtype, device = probe.dtype, probe.device
    if out is not None:
        try:
            probe.cpu().numpy()
        except TypeError:
            raise TypeError(f"out= writes a numpy file, and numpy has no dtype for {dtype}") from None

    num_chunks = _num_chunks(n, batch_size)
    world = dist_utils.get_world_size()
    shards = [dist_utils.shard_range(num_chunks, r, world) for r in range(world)]
    mine = range(*shards[dist_utils.get_rank()])
    rounds = max(stop - start for start, stop in shards)
    write = out is not None and dist_utils.is_main_process()
    parts: list = [None] * num_chunks
    chunk_nfe: list[int] = []
    mm, tmp = None, None
    bar = _progress(rounds, progress, "samples")
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
                    generator=chunk_generator(seed, i, "samples", device),
                    denoise=denoise,
                    dtype=dtype,
                    device=device,
                    return_result=True,
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
    stats = _nfe_stats(chunk_nfe)
    if out is None:
        return {"samples": torch.cat(parts), "path": None, **stats}
    path = Path(out)
    samples = None
    if write:
        mm.flush()
        del mm
        os.replace(tmp, path)
        import numpy as np

        samples = np.load(path, mmap_mode="r")
    dist_utils.barrier()
    return {"samples": samples, "path": path, **stats}


def save_image_grid(
    images: torch.Tensor,
    path: str | Path,
    *,
    low: float = -1.0,
    high: float = 1.0,
    nrow: int | None = None,
    pad: int = 1,
) -> Path:
    """Save images ``(N, C, H, W)`` in ``[low, high]`` as one PNG grid (C = 1 grey, C = 3 RGB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = images.detach().float().cpu().clamp(low, high)
    x = (x - low) / (high - low)
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(x.shape)}")
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[
            :, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w
        ] = x[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Small images (8x8 digits) are enlarged by an integer factor, nearest neighbour, so that the
    # grid is at least ~512 pixels wide and can be looked at.
    factor = max(1, 512 // grid.shape[-1])
    grid = grid.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
    arr = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
    plt.imsave(path, arr, cmap="gray" if c == 1 else None, vmin=0.0, vmax=1.0)
    return path


def save_samples_2d(
    samples: torch.Tensor,
    path: str | Path,
    *,
    log_prob: Callable | None = None,
    data: torch.Tensor | None = None,
    title: str = "",
) -> Path:
    """Scatter 2-D samples over the data density (contours of ``exp(log_prob)``) or data points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = samples.detach().double().cpu()
    lim = float(s.abs().quantile(0.995)) * 1.15
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    if log_prob is not None:
        g = torch.linspace(-lim, lim, 200, dtype=torch.float64)
        xx, yy = torch.meshgrid(g, g, indexing="xy")
        dens = log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().reshape(200, 200)
        ax.contourf(xx.numpy(), yy.numpy(), dens.numpy(), levels=20, cmap="Blues")
    elif data is not None:
        d = data.detach().double().cpu()
        ax.scatter(d[:, 0], d[:, 1], s=1, c="lightgrey", label="data")
    ax.scatter(s[:, 0], s[:, 1], s=1.5, c="crimson", alpha=0.6, label="samples")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
