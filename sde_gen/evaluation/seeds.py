"""Chunk-seeded randomness: one generator per (seed, chunk, stream), and the seed/generator check.

With an integer ``seed``, chunk ``i`` draws all its noise from its own generators,
:func:`chunk_generator` ``(seed, i, stream)``: one stream per purpose (dequantization, Hutchinson
probes, samples). A chunk's result then depends only on ``(seed, batch_size, i)`` and the data, not
on which rank computes it or how many ranks there are: 1 and N ranks give bit-identical results on
the same hardware. With ``generator=`` instead, the chunks share that one stream, in order, as a
single process always did; that cannot be split over ranks, so it is refused under
``torch.distributed`` wherever noise is drawn.
"""

from __future__ import annotations

import torch

from .. import distributed as dist_utils
from .._checks import ArgumentTypeError, ArgumentValueError, check_choice, check_int

__all__ = ["STREAMS", "chunk_seed", "chunk_generator"]

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
        raise ArgumentValueError("seed", seed, f"seed must be in [0, 2**64), got {seed!r}")
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


def noise_seed(seed, generator, *, noisy: bool, what: str) -> int | None:
    """Check ``seed`` and ``generator`` and refuse what cannot be reproduced across ranks."""
    if seed is not None and generator is not None:
        raise ValueError(
            f"pass either seed= (one generator per chunk) or generator= (one stream), not both; "
            f"got seed={seed!r} and generator={generator!r}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(
            "generator",
            generator,
            f"generator must be a torch.Generator or None, got {type(generator).__name__}",
        )
    if seed is not None:
        seed = _check_seed(seed)
    if noisy and seed is None and dist_utils.is_distributed():
        raise ValueError(
            f"{what} under torch.distributed needs seed= (an int): generator={generator!r} is one stream "
            f"that cannot be split over {dist_utils.get_world_size()} ranks reproducibly"
        )
    return seed
