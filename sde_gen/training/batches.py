"""The training data as a seeded, checkpointable stream of batches."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_int, check_tensor

__all__ = ["Batches"]


class Batches:
    """Batches of ``batch_size`` items drawn without replacement from ``data`` ``(N, ...)`` in a
    random order that is reshuffled at every epoch (a batch may span two epochs).

    Args:
        data: floats in the model's space, or integer levels mapped by ``transform``.
        batch_size: items per batch (under data parallelism the global batch).
        transform: ``transform(batch, generator) -> float batch`` applied to each batch on the
            training device (e.g. uniform dequantization), drawing its noise from ``generator``.
        seed: seeds the data order; a :class:`~sde_gen.Trainer` seeds its own random streams (the
            loss's noise, dropout) from it too, so one number fixes a whole run.

    The order's state (generator, permutation, position) is in :meth:`state_dict`.
    """

    def __init__(
        self, data: torch.Tensor, batch_size: int = 128, *, transform: Callable | None = None, seed: int = 0
    ):
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"data must be a torch.Tensor of shape (N, ...), got {type(data).__name__}")
        if data.ndim < 1 or data.shape[0] == 0:
            raise ValueError(f"data must have shape (N, ...) with N >= 1, got {tuple(data.shape)}")
        self.data = check_tensor("data", data) if data.is_floating_point() else data
        self.batch_size = check_int("batch_size", batch_size, low=1)
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform must be callable as transform(batch, generator), got {type(transform).__name__}"
            )
        self.transform = transform
        self.seed = check_int("seed", seed, low=0)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.perm = torch.randperm(self.data.shape[0], generator=self.generator)
        self.pos = 0

    def __repr__(self) -> str:
        return f"Batches(N={self.data.shape[0]}, batch_size={self.batch_size}, seed={self.seed})"

    def next(
        self, device: torch.device | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The next batch, moved to ``device`` and transformed with noise from ``generator``."""
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
        batch = self.data[torch.cat(idx)]
        batch = batch.to(device) if device is not None else batch
        return self.transform(batch, generator) if self.transform is not None else batch

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.pos = state["perm"], int(state["pos"])
