"""The training loop: one optimiser step at a time, data-parallel, resumable to the bit.

The trainer owns the loop and nothing else: the loss, the optimiser, the learning-rate schedule,
the EMA, the batches and the checkpoint folder are objects handed to it. It imports neither W&B
nor Hydra; loggers attach through callbacks.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from .. import distributed as dist
from .._checks import ArgumentTypeError, ArgumentValueError, check_callable, check_int, check_positive
from ..files.checkpoint import MAX_STEPS, CheckpointError, Checkpoints, read_checkpoint, save_atomic
from ..sdes.base import SDE
from .batches import Batches
from .callbacks import Callback
from .ema import EMA
from .nonfinite import NonFinite, nonfinite_error
from .reflow import check_takes_noise

__all__ = ["Trainer"]


class Trainer:
    """Minimises ``loss_fn`` over ``data`` with ``optimizer``.

    Args:
        model: an ``nn.Module`` on the training device (e.g. a :class:`~sde_gen.ScoreModel`).
        loss_fn: ``loss_fn(model, batch, generator=...) -> (B,)`` per-example losses, e.g.
            :class:`~sde_gen.DSMLoss`. A loss with a ``draw(batch, generator)`` method (as
            ``DSMLoss`` has) is called as ``loss_fn(model, shard, draws=draws.shard(...))``, which
            makes data-parallel training equal to one process. With labelled batches the loss
            also gets their conditioning, ``loss_fn(..., y=labels)`` (each rank its shard).
            With paired noise (``Batches(noise=...)``, reflow) the loss must have such a
            ``draw(batch, generator, noise=...)``: the noise of the whole micro-batch goes to it.
        data: a :class:`~sde_gen.Batches` (data, batch size, transform, seed, labels), or a tensor
            for ``Batches(data)``.
        optimizer: a ``torch.optim.Optimizer`` over ``model.parameters()``, or a callable
            ``optimizer(params)`` that builds one (``functools.partial(torch.optim.Adam, lr=...)``,
            or Hydra's ``_partial_``); default Adam with lr 2e-4.
        lr_schedule: ``lr_schedule(step) -> factor`` multiplying each group's initial rate, e.g.
            :class:`~sde_gen.WarmupCosine`; ``None`` keeps the rate.
        ema: an :class:`~sde_gen.EMA` of ``model``, a decay for ``EMA(model, decay)``, or ``None``.
        grad_clip: max global gradient norm, ``None`` for none.
        accumulate: micro-batches of ``data.batch_size`` per optimiser step.
        checkpoints: a :class:`~sde_gen.Checkpoints` folder, or ``None`` to write none.
        nonfinite: what a non-finite loss or gradient does. ``"raise"``: the last good state is
            written as a checkpoint (with ``checkpoints``) and :class:`FloatingPointError` names
            the step and the likely cause. ``"skip"``: skip and count (``trainer.skipped``), at
            most 10 in a row; :class:`NonFinite` sets that number.
        callbacks: :class:`Callback` instances (progress, periodic evaluation, loggers).

    Every random number (data order, t, noise, dequantization, dropout) comes from generators
    seeded by ``data.seed`` whose states are checkpointed, so a run stopped and resumed ends with
    exactly the parameters of one that was not stopped (on the same device and software).

    Data-parallel: inside a ``torch.distributed`` process group of W processes (``torchrun``,
    :func:`sde_gen.distributed.init_from_env`), ``data.batch_size`` is the global batch and must be
    a multiple of W. Every rank draws the same global batch and its noise from the same seeded
    generators and runs the network on its own 1/W of it, under ``DistributedDataParallel``, so the
    averaged gradient, the parameters, the EMA and the checkpoints are those of one process with the
    same global batch, up to floating-point summation order. Only rank 0 writes checkpoints and
    calls the callbacks (except those with ``all_ranks``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        data: Batches | torch.Tensor,
        optimizer: torch.optim.Optimizer | Callable | None = None,
        *,
        lr_schedule: Callable[[int], float] | None = None,
        ema: EMA | float | None = 0.999,
        grad_clip: float | None = 1.0,
        accumulate: int = 1,
        checkpoints: Checkpoints | None = None,
        nonfinite: str | NonFinite = "raise",
        callbacks: Iterable[Callback] = (),
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        if isinstance(loss_fn, SDE):  # Trainer(model, sde, data) of sde_gen 0.1 (CHANGELOG.md)
            raise ArgumentTypeError(
                "loss_fn",
                loss_fn,
                f"loss_fn must be a loss, got the SDE {type(loss_fn).__name__}: since sde_gen 0.2 the "
                "trainer takes Trainer(model, loss_fn, data, optimizer), e.g. loss_fn=sg.DSMLoss(sde)",
            )
        self.loss_fn = check_callable("loss_fn", loss_fn, "loss_fn(model, batch)")
        self.data = data if isinstance(data, Batches) else Batches(data)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if self.data.batch_size % self.world_size:
            raise ValueError(
                f"batch_size={self.data.batch_size} is the global batch and must be a multiple of the "
                f"number of processes ({self.world_size})"
            )
        if self.world_size > 1 and getattr(loss_fn, "draw", None) is None:
            raise ValueError(
                "data-parallel training needs a loss with a draw(batch, generator) method, e.g. DSMLoss"
            )
        if getattr(self.data, "noise", None) is not None:
            check_takes_noise(loss_fn)
        self._shard = slice(*dist.shard_range(self.data.batch_size))
        self.optimizer = self._build_optimizer(optimizer)
        self._base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.lr_schedule = (
            None if lr_schedule is None else check_callable("lr_schedule", lr_schedule, "lr_schedule(step)")
        )
        self.ema = EMA(model, ema) if ema is not None and not isinstance(ema, EMA) else ema
        self.grad_clip = None if grad_clip is None else check_positive("grad_clip", grad_clip)
        self.accumulate = check_int("accumulate", accumulate, low=1)
        if checkpoints is not None and not isinstance(checkpoints, Checkpoints):
            raise ArgumentTypeError(
                "checkpoints",
                checkpoints,
                f"checkpoints must be a sde_gen.Checkpoints or None, got {type(checkpoints).__name__}",
            )
        self.checkpoints = checkpoints
        self.nonfinite = nonfinite if isinstance(nonfinite, NonFinite) else NonFinite(nonfinite)
        self.callbacks: list[Callback] = []
        self.add_callbacks(*callbacks)
        self.device = next(model.parameters()).device
        self.net = self.model  # what the loss calls: the model, or its DistributedDataParallel wrapper
        if dist.is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)  # broadcasts rank 0's weights
        self.step = 0
        self.skipped = 0  # optimiser steps skipped for a non-finite loss or gradient
        self._skips_in_a_row = 0
        self.seed = self.data.seed
        self.noise_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self.torch_rng = self._dropout_rng()
        self.history: list[dict] = []

    def add_callbacks(self, *callbacks: Callback) -> None:
        """Attach callbacks (on rank 0; on every rank those with ``all_ranks``)."""
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be sde_gen.Callback instances, got {type(cb).__name__}")
            if self.rank == 0 or cb.all_ranks:
                self.callbacks.append(cb)

    def _build_optimizer(self, optimizer) -> torch.optim.Optimizer:
        params = list(self.model.parameters())
        if optimizer is None:
            return torch.optim.Adam(params, lr=2e-4)
        if not isinstance(optimizer, torch.optim.Optimizer):
            if not callable(optimizer):
                raise ArgumentTypeError(
                    "optimizer",
                    optimizer,
                    f"optimizer must be a torch.optim.Optimizer or a callable optimizer(params), got "
                    f"{type(optimizer).__name__}",
                )
            optimizer = optimizer(params)
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise ArgumentTypeError(
                    "optimizer",
                    optimizer,
                    f"optimizer(params) must return a torch.optim.Optimizer, got {type(optimizer).__name__}",
                )
        ours = {id(p) for p in params}
        theirs = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if theirs != ours:
            raise ArgumentValueError(
                "optimizer",
                optimizer,
                "optimizer must optimise exactly the model's parameters (build it on model.parameters())",
            )
        return optimizer

    def _dropout_rng(self, step: int = 0) -> torch.Tensor:
        """A fresh CPU RNG state for dropout: ranks draw different masks for their shards. ``step``
        restarts the streams of a run resumed with another number of processes."""
        return torch.Generator().manual_seed(self.seed + 2 + 1_000_003 * self.rank + 7919 * step).get_state()

    @property
    def lr(self) -> float:
        """The first parameter group's initial learning rate."""
        return self._base_lrs[0]

    # -- one step ----------------------------------------------------------------------------

    def _rng_snapshot(self) -> dict:
        return {
            "data": self.data.state_dict(),
            "noise_gen": self.noise_gen.get_state(),
            "torch_rng": self.torch_rng,
        }

    def _restore_rng(self, snap: dict) -> None:
        self.data.load_state_dict(snap["data"])
        self.noise_gen.set_state(snap["noise_gen"])
        self.torch_rng = snap["torch_rng"]

    def _micro_loss(self, x: torch.Tensor, cond: dict) -> torch.Tensor:
        """The mean loss of this rank's shard of the micro-batch ``x`` and its conditioning ``cond``;
        ``cond["noise"]`` (paired noise from ``Batches(noise=...)``) goes to the loss's ``draw``
        for the whole micro-batch, not to the model."""
        cond = dict(cond)
        noise = cond.pop("noise", None)  # the loss takes it (checked when the trainer was built)
        draw = getattr(self.loss_fn, "draw", None)
        if draw is None:
            return self.loss_fn(self.net, x, generator=self.noise_gen, **cond).mean()
        paired = {} if noise is None else {"noise": noise}
        draws = draw(x, generator=self.noise_gen, **paired)
        shard = {k: v[self._shard] for k, v in cond.items()}  # labels go with their examples
        return self.loss_fn(self.net, x[self._shard], draws=draws.shard(self._shard), **shard).mean()

    def train_step(self) -> dict:
        """One optimiser step over ``accumulate`` micro-batches; returns loss, lr, grad_norm (and
        ``skipped``: 1 where a non-finite loss or gradient was skipped, else 0)."""
        self.model.train()
        factor = 1.0 if self.lr_schedule is None else float(self.lr_schedule(self.step))
        for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base * factor
        lr = self._base_lrs[0] * factor
        self.optimizer.zero_grad(set_to_none=True)
        snapshot = self._rng_snapshot()
        local = torch.zeros((), dtype=torch.float64, device=self.device)  # NCCL reduces device tensors
        batches = []
        cpu_state = torch.get_rng_state()
        torch.set_rng_state(self.torch_rng)
        try:
            for i in range(self.accumulate):
                x, cond = self.data.next(self.device, self.noise_gen, with_cond=True)
                batches.append(x)
                # Gradients are averaged over ranks once, on the last micro-batch.
                last = i == self.accumulate - 1
                sync = contextlib.nullcontext() if last or self.net is self.model else self.net.no_sync()
                with sync:
                    loss = self._micro_loss(x, cond)
                    (loss / self.accumulate).backward()
                local += loss.detach().double() / self.accumulate
        finally:
            self.torch_rng = torch.get_rng_state()
            torch.set_rng_state(cpu_state)
        total = float(dist.all_reduce_sum(local)) / self.world_size
        max_norm = self.grad_clip if self.grad_clip is not None else float("inf")
        grad_norm = float("nan")
        if math.isfinite(total):
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        metrics = {"step": self.step + 1, "loss": total, "lr": lr, "grad_norm": grad_norm, "skipped": 0}
        if math.isfinite(total) and math.isfinite(grad_norm):
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self._skips_in_a_row = 0
        elif self.nonfinite.mode == "skip" and self._skips_in_a_row < self.nonfinite.max_skips:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self._skips_in_a_row += 1
            metrics["skipped"] = 1
        else:
            self._restore_rng(snapshot)
            kept = self.save_checkpoint() if self.checkpoints is not None else None
            raise nonfinite_error(self, total, grad_norm, batches, kept)
        self.step += 1
        return metrics

    # -- the loop ------------------------------------------------------------------------------

    def fit(self, steps: int) -> list[dict]:
        """Train until ``self.step == steps`` (continuing a resumed run); returns the history."""
        steps = check_int("steps", steps, low=0, high=MAX_STEPS, why="checkpoint names hold 8 digits")
        for cb in self.callbacks:
            cb.on_train_start(self)
        while self.step < steps:
            metrics = self.train_step()
            self.history.append(metrics)
            for cb in self.callbacks:
                cb.on_step(self, metrics)
            if self.checkpoints is not None and self.checkpoints.due(self.step):
                self.save_checkpoint()
        if self.checkpoints is not None and not self.checkpoints.due(self.step):
            self.save_checkpoint()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def evaluate(self, eval_fn: Callable) -> dict:
        """``eval_fn(self)`` with the EMA weights in the model, in eval mode (on every rank); its
        metrics, with ``step``, reach the callbacks' ``on_eval``."""
        was_training = self.model.training
        self.model.eval()
        with self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext():
            metrics = dict(eval_fn(self))
        self.model.train(was_training)
        metrics["step"] = self.step
        for cb in self.callbacks:
            cb.on_eval(self, metrics)
        return metrics

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything a resumed run needs. Under data parallelism every rank must call it (the
        ranks' dropout RNG states are gathered into ``torch_rng_ranks``)."""
        rngs = [self.torch_rng]
        if dist.is_distributed():
            rngs = [None] * self.world_size
            torch.distributed.all_gather_object(rngs, self.torch_rng)
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self._rng_snapshot(),
            "torch_rng": rngs[0],
            "torch_rng_ranks": rngs,
            "seed": self.seed,
            "skipped": self.skipped,
            "skips_in_a_row": self._skips_in_a_row,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is None:  # trained without an EMA: start one here
            self.ema = EMA(self.model, self.ema.decay, warmup=self.ema.warmup)
        elif self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data.load_state_dict(state["data"])
        self.noise_gen.set_state(state["noise_gen"])
        rngs = state.get("torch_rng_ranks", [state["torch_rng"]])
        if len(rngs) == self.world_size:
            self.torch_rng = rngs[self.rank]
        else:  # a different number of processes: fresh dropout streams, a function of the step
            self.torch_rng = self._dropout_rng(state["step"])
        self.step = state["step"]
        self.skipped = state.get("skipped", 0)
        self._skips_in_a_row = state.get("skips_in_a_row", 0)

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write a checkpoint atomically: into ``checkpoints`` (pruned to its ``keep``) or to
        ``path``. Under data parallelism every rank calls it and rank 0 writes."""
        if path is None and self.checkpoints is None:
            raise ValueError("save_checkpoint() needs a path or a trainer with checkpoints")
        state = self.state_dict()
        if self.rank == 0:
            for cb in self.callbacks:
                cb.before_checkpoint(self)
        if path is None:
            path = self.checkpoints.save(state, self.step)
        else:
            path = Path(path)
            if self.rank == 0:
                save_atomic(state, path)
        if self.rank == 0:
            for cb in self.callbacks:
                cb.on_checkpoint(self, path)
        dist.barrier()
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` (``torch.load(weights_only=True)``:
        no code in the file runs). An unreadable file (truncated, corrupt, not a checkpoint), one
        that needs full unpickling (:class:`~sde_gen.training.checkpoint.UnsafeCheckpointError`) or
        one written for another model raises :class:`CheckpointError` naming the file, before
        anything is changed."""
        path = Path(path)
        self._load(read_checkpoint(path), path)

    def resume(self) -> bool:
        """Load the newest readable checkpoint in ``checkpoints`` (:meth:`Checkpoints.newest`: torn
        files are moved aside with a warning); returns whether there was one. A readable checkpoint
        of another model, or one that needs full unpickling, raises :class:`CheckpointError`."""
        if self.checkpoints is None:
            return False
        return self.checkpoints.newest(self._load) is not None

    def _load(self, state: dict, path: Path) -> None:
        own = self.model.state_dict()
        theirs = state["model"]
        bad = sorted(set(own) ^ set(theirs)) or [
            k for k in own if tuple(own[k].shape) != tuple(theirs[k].shape)
        ]
        if bad:
            raise CheckpointError(
                f"checkpoint {path} was written for another model: these parameters differ in name or "
                f"shape: {bad[:5]}{' ...' if len(bad) > 5 else ''}"
            )
        try:
            self.data.check_state_dict(state["data"])  # refused before anything is changed
            self.load_state_dict(state)
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(e).__name__}: {e})") from e
