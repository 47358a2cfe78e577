"""Small shared helpers: broadcasting a per-sample value against a batch, flat dimensions."""

from __future__ import annotations

import math

import torch


def batch_broadcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample tensor ``v`` of shape ``(B,)`` to ``(B, 1, ..., 1)`` to broadcast with
    ``x`` of shape ``(B, ...)``. A tensor already shaped like ``x`` is returned as it is."""
    if v.ndim == x.ndim:
        return v
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def flat_dim(x: torch.Tensor) -> int:
    """Number of entries per sample of ``x`` of shape ``(B, ...)``."""
    return math.prod(x.shape[1:])


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension: ``(B, ...) -> (B,)``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def time_vector(t: float, x: torch.Tensor) -> torch.Tensor:
    """The time ``t`` as a tensor of shape ``(B,)`` in the dtype and on the device of ``x``."""
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
