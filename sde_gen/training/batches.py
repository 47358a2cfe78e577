"""The training data as a seeded, checkpointable stream of batches."""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch

from .._checks import ArgumentTypeError, ArgumentValueError, check_callable, check_int, check_tensor

__all__ = ["Batches"]

#: Items per batch when no ``batch_size`` is given (fewer when the data hold fewer).
DEFAULT_BATCH_SIZE = 128


class Batches:
    """Batches of ``batch_size`` items drawn without replacement from ``data`` ``(N, ...)`` in a
    random order that is reshuffled at every epoch (a batch may span two epochs).

    Args:
        data: floats in the model's space, or integer levels mapped by ``transform``.
        batch_size: items per batch (under data parallelism the global batch), at most ``N`` (a
            larger batch would repeat items); default ``min(128, N)``.
        transform: ``transform(batch, generator) -> float batch`` applied to each batch on the
            training device (e.g. uniform dequantization), drawing its noise from ``generator``.
        seed: seeds the data order; a :class:`~sde_gen.Trainer` seeds its own random streams (the
            loss's noise, dropout) from it too, so one number fixes a whole run.
        labels: integer class labels ``(N,)`` in ``[0, K)``, one per item: then
            ``next(with_cond=True)`` returns each batch with its conditioning ``{"y": labels}`` (the
            rows of the same items), which a :class:`~sde_gen.Trainer` hands to its loss.
        noise: a standard normal row per item, shaped like ``data`` (e.g. the paired noise of
            :func:`~sde_gen.reflow_pairs`): the rows travel with their items, and
            ``next(with_cond=True)`` returns them under ``cond["noise"]``, which a
            :class:`~sde_gen.Trainer` hands to the loss's ``draw(..., noise=...)`` to use as the
            noise ``z`` of ``x_t = mean(t) x + std(t) z`` instead of independent draws (reflow). It
            is data, not state: :meth:`state_dict` does not hold it.

    Floating ``data`` and ``noise`` must be finite: NaN or Inf raises ``ValueError`` naming the bad
    items' count and indices, checked once here. The order's state (generator, permutation, position) is in
    :meth:`state_dict`.
    """

    def __init__(
        self,
        data: torch.Tensor,
        batch_size: int | None = None,
        *,
        transform: Callable | None = None,
        seed: int = 0,
        labels: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ):
        if not isinstance(data, torch.Tensor):
            raise ArgumentTypeError(
                "data", data, f"data must be a torch.Tensor of shape (N, ...), got {type(data).__name__}"
            )
        if data.ndim < 1 or data.shape[0] == 0:
            raise ArgumentValueError(
                "data", data, f"data must have shape (N, ...) with N >= 1, got {tuple(data.shape)}"
            )
        if data.is_complex():
            raise ArgumentTypeError(
                "data", data, f"data must be real (floats or integer levels), got dtype {data.dtype}"
            )
        if data[0].numel() == 0:
            raise ArgumentValueError(
                "data", data, f"data items must hold at least one value, got shape {tuple(data.shape)}"
            )
        n = data.shape[0]
        if data.is_floating_point():
            _check_finite(check_tensor("data", data))
        self.data = data
        self.labels = None if labels is None else _check_labels(labels, n)
        self.noise = None if noise is None else _check_noise(noise, data)
        if batch_size is None:
            batch_size = min(DEFAULT_BATCH_SIZE, n)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        if self.batch_size > n:
            raise ArgumentValueError(
                "batch_size",
                batch_size,
                f"batch_size must be <= {n}, the number of items in data (a larger batch would repeat "
                f"items), got {self.batch_size}",
            )
        self.transform = (
            None
            if transform is None
            else check_callable("transform", transform, "transform(batch, generator)")
        )
        self.seed = check_int("seed", seed, low=0)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def __repr__(self) -> str:
        labelled = "" if self.labels is None else ", labels"
        labelled += "" if self.noise is None else ", noise"
        return f"Batches(N={self.data.shape[0]}, batch_size={self.batch_size}, seed={self.seed}{labelled})"

    def next(
        self,
        device: torch.device | None = None,
        generator: torch.Generator | None = None,
        *,
        with_cond: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """The next batch, moved to ``device`` and transformed with noise from ``generator``; with
        ``with_cond=True`` the pair ``(batch, cond)``, ``cond`` = ``{"y": labels, "noise": noise}`` of
        the same items (each key only where given; ``{}`` without either). The data order depends
        on neither ``with_cond`` nor whether labels or noise are given."""
        n = self.data.shape[0]
        idx, have = [], 0
        while have < self.batch_size:
            if self.pos >= n:
                self.perm = torch.randperm(n, generator=self.generator)
                self.pos = 0
            take = min(self.batch_size - have, n - self.pos)
            idx.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            have += take
        idx = torch.cat(idx)
        batch = self.data[idx]
        batch = batch.to(device) if device is not None else batch
        batch = self.transform(batch, generator) if self.transform is not None else batch
        if not with_cond:
            return batch
        cond = {}
        for key, rows in (("y", self.labels), ("noise", self.noise)):
            if rows is not None:
                cond[key] = rows[idx].to(device) if device is not None else rows[idx]
        return batch, cond

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        """Restore the order saved by :meth:`state_dict`, checked first by :meth:`check_state_dict`
        (a checkpoint is untrusted): a bad state raises ``ValueError`` and changes nothing."""
        self.generator, self.perm, self.pos = self._checked(state)

    def check_state_dict(self, state: dict) -> None:
        """Raise ``ValueError`` naming what is wrong if ``state`` is not an order of these batches
        (another data set's permutation, a position past the end, a damaged generator state)."""
        self._checked(state)

    def _checked(self, state) -> tuple[torch.Generator, torch.Tensor, int]:
        if not isinstance(state, dict) or not {"generator", "perm", "pos"} <= set(state):
            got = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"the data order state must be a dict with generator, perm and pos, got {got}")
        gen, perm, pos = state["generator"], state["perm"], state["pos"]
        n = self.data.shape[0]
        if not (
            isinstance(perm, torch.Tensor)
            and perm.dtype == torch.int64
            and perm.shape == (n,)
            and torch.equal(perm.sort().values, torch.arange(n, device=perm.device))
        ):
            what = type(perm).__name__
            if isinstance(perm, torch.Tensor):
                what = f"{perm.dtype} {tuple(perm.shape)}"
            raise ValueError(
                f"the data order state's perm must be a permutation of the {n} items of data (int64, "
                f"shape ({n},)), got {what}: it was saved for other data, or is damaged"
            )
        try:
            index = None if isinstance(pos, bool) else operator.index(pos)  # an int or a 0-d int tensor
        except TypeError:
            index = None
        if index is None or not 0 <= index <= n:
            raise ValueError(f"the data order state's pos must be an int in [0, {n}], got {pos!r:.40}")
        if not (isinstance(gen, torch.Tensor) and gen.dtype == torch.uint8 and gen.ndim == 1):
            raise ValueError("the data order state's generator must be a uint8 tensor (a generator state)")
        fresh = torch.Generator()
        try:
            fresh.set_state(gen)
        except RuntimeError as e:
            raise ValueError(f"the data order state's generator state is damaged ({e})") from e
        return fresh, perm.cpu(), index


def _check_labels(labels, n: int) -> torch.Tensor:
    """``labels``: an integer tensor ``(n,)`` of non-negative class labels, returned as int64."""
    if not isinstance(labels, torch.Tensor):
        raise ArgumentTypeError(
            "labels", labels, f"labels must be a torch.Tensor of shape (N,), got {type(labels).__name__}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ArgumentTypeError(
            "labels",
            labels,
            f"labels must hold integer class labels (e.g. torch.long), got dtype {labels.dtype}",
        )
    if tuple(labels.shape) != (n,):
        raise ArgumentValueError(
            "labels",
            labels,
            f"labels must have shape (N,) = ({n},), one per item of data, got {tuple(labels.shape)}",
        )
    if bool((labels < 0).any()):
        raise ArgumentValueError(
            "labels", labels, f"labels must be >= 0 (class indices), got {labels[labels < 0][:5].tolist()}"
        )
    return labels.to(torch.long)


def _check_noise(noise, data: torch.Tensor) -> torch.Tensor:
    """``noise``: a finite floating-point tensor shaped like ``data``, one row per item."""
    if not isinstance(noise, torch.Tensor):
        raise ArgumentTypeError(
            "noise", noise, f"noise must be a torch.Tensor shaped like data, got {type(noise).__name__}"
        )
    if not noise.is_floating_point():
        raise ArgumentTypeError(
            "noise", noise, f"noise must be a floating-point tensor of normal draws, got {noise.dtype}"
        )
    if noise.shape != data.shape:
        raise ArgumentValueError(
            "noise",
            noise,
            f"noise must be shaped like data {tuple(data.shape)}, one row per item, got {tuple(noise.shape)}",
        )
    _check_finite(noise, name="noise")
    return noise


def _check_finite(data: torch.Tensor, chunk: int = 1 << 22, name: str = "data") -> None:
    """NaN or Inf anywhere in ``data`` raises ``ValueError`` with the count and the first indices of
    the items that hold one; checked ``chunk`` values at a time (bounded extra memory)."""
    n = data.shape[0]
    rows = max(1, chunk // max(1, data[0].numel()))
    bad = []
    for start in range(0, n, rows):
        part = data[start : start + rows]
        ok = torch.isfinite(part).reshape(part.shape[0], -1).all(dim=1)
        if not bool(ok.all()):
            bad.append(torch.nonzero(~ok).flatten().cpu() + start)
    if bad:
        idx = torch.cat(bad)
        first = idx[:10].tolist()
        raise ArgumentValueError(
            name,
            data,
            f"{name} must be finite: {idx.numel()} of its {n} items hold NaN or Inf (indices "
            f"{first}{' ...' if idx.numel() > 10 else ''}); remove or repair them before training",
        )
