"""Bits per dimension of integer data under any model density: uniform dequantization averaged
over repeats (:func:`dequantized_bpd`). The conversion from a log-density (``bits_per_dim``) is
the data's own arithmetic (``data/transforms.py``); the chunked, rank-spread evaluation of a
score model on integer images is ``evaluate_bpd`` (``evaluation/bpd.py``).

Data with ``levels`` values per dimension are mapped into the model's range by a
:class:`sde_gen.LevelTransform`; the bound is Theis et al. (2016)'s, derived in docs/maths.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._checks import ArgumentValueError, check_int, check_per_item
from ..data.transforms import LevelTransform, check_level_data

__all__ = ["dequantized_bpd", "dequantized_bpd_per_image"]


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
            check_per_item("log_prob_fn", log_prob_fn, lp, kb.shape[0])
            bad = ~torch.isfinite(lp)
            if bool(bad.any()):
                raise ArgumentValueError(
                    "log_prob_fn",
                    log_prob_fn,
                    f"log_prob_fn returned {int(bad.sum())} non-finite log-densities",
                )
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
