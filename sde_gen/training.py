"""Training a score model: Adam with warm-up and clipping, EMA, exact resume, callbacks.

The loop imports neither W&B nor Hydra; loggers attach through :class:`Callback`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from . import distributed as dist
from ._checks import check_choice, check_eps, check_int, check_positive, check_real, check_sde, check_tensor
from .losses import WEIGHTINGS, ImportanceSampler, draw_dsm, dsm_loss

__all__ = [
    "EMA",
    "Trainer",
    "Callback",
    "CheckpointError",
    "save_atomic",
    "CKPT_PATTERN",
    "list_checkpoints",
    "NONFINITE",
]

NONFINITE = ("raise", "skip")

CKPT_PATTERN = re.compile(r"^ckpt_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable (truncated, corrupt, not a checkpoint) or written
    for another model. The message names the file."""


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers:
    ``shadow <- decay * shadow + (1 - decay) * param`` after every optimiser step."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        decay = check_real("ema_decay", decay)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Within the block ``model`` holds the EMA weights; its own weights come back after."""
        saved = copy.deepcopy(model.state_dict())
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(saved)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        # Onto the devices of the current shadow (the model's): checkpoints are read onto the CPU.
        self.shadow = {
            k: v.to(self.shadow[k].device if k in self.shadow else v.device, copy=True)
            for k, v in state["shadow"].items()
        }


class Callback:
    """Hooks the trainer calls; override what you need. ``metrics`` is a dict of floats."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step(self, trainer: Trainer, metrics: dict) -> None: ...

    def on_eval(self, trainer: Trainer, metrics: dict) -> None: ...

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``:
    a crash leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


class Trainer:
    """Trains ``model`` (a score function, e.g. :class:`~sde_gen.ScoreModel`) with :func:`dsm_loss`.

    Args:
        model: an ``nn.Module`` called as ``model(x_t, t)``.
        sde: the forward SDE.
        data: training data ``(N, ...)``: floats in the model's space, or levels mapped by
            ``transform``.
        transform: ``transform(batch, generator) -> float batch`` applied to each batch (e.g.
            uniform dequantization); its noise comes from the trainer's generator.
        batch_size, lr, warmup (linear warm-up steps), decay_steps (cosine decay to 0 there, or
        ``None`` for a constant rate), grad_clip (max global norm, ``None`` for
        none), ema_decay, accumulate (micro-batches per optimiser step), eps, weighting
        (``"std2"`` or ``"likelihood"``), importance_sampling (for likelihood weighting).
        seed: seeds the data order and every random draw of the loop.
        ckpt_dir, ckpt_every, keep: checkpoints ``ckpt_dir/ckpt_XXXXXXXX.pt`` every ``ckpt_every``
            steps and at the end, keeping the newest ``keep``.
        nonfinite: what a non-finite loss or gradient does. ``"raise"`` (default): the last good
            state is written as a checkpoint (with ``ckpt_dir``) and :class:`FloatingPointError`
            names the step and the likely cause. ``"skip"``: the optimiser step is skipped (the
            step counter and the schedule go on), counted in ``skipped``; more than
            ``max_skips`` skips in a row raise as above.
        eval_fn, eval_every: ``eval_fn(trainer) -> dict`` is called with the EMA weights in place.
        callbacks: :class:`Callback` instances.

    Every random number (data order, t, noise, dequantization, dropout) comes from generators
    whose states are checkpointed, so a run stopped and resumed ends with exactly the parameters
    of one that was not stopped (on the same device and software).

    Data-parallel: inside a ``torch.distributed`` process group of W processes (``torchrun``,
    :func:`sde_gen.distributed.init_from_env`), ``batch_size`` is the global batch and must be a
    multiple of W. Every rank draws the same global batch and its noise from the same seeded
    generators and runs the network on its own 1/W of it, under ``DistributedDataParallel``, so the
    averaged gradient, the parameters, the EMA and the checkpoints are those of one process with the
    same global batch, up to floating-point summation order. Only rank 0 writes checkpoints and
    calls the callbacks; ``eval_fn`` runs on every rank (so it can spread work over them).
    """

    def __init__(
        self,
        model: nn.Module,
        sde,
        data: torch.Tensor,
        *,
        transform: Callable | None = None,
        batch_size: int = 128,
        lr: float = 2e-4,
        warmup: int = 1000,
        decay_steps: int | None = None,
        grad_clip: float | None = 1.0,
        ema_decay: float = 0.999,
        accumulate: int = 1,
        eps: float = 1e-5,
        weighting: str = "std2",
        importance_sampling: bool = False,
        seed: int = 0,
        ckpt_dir: str | os.PathLike | None = None,
        ckpt_every: int | None = None,
        keep: int = 3,
        nonfinite: str = "raise",
        max_skips: int = 10,
        eval_fn: Callable | None = None,
        eval_every: int | None = None,
        callbacks: Iterable[Callback] = (),
        progress: bool | None = None,
        device: torch.device | str | None = None,
    ):
        self.model = model
        self.sde = check_sde(sde)
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"data must be a torch.Tensor of shape (N, ...), got {type(data).__name__}")
        self.data = check_tensor("data", data) if data.is_floating_point() else data
        if data.ndim < 1 or data.shape[0] == 0:
            raise ValueError(f"data must have shape (N, ...) with N >= 1, got {tuple(data.shape)}")
        self.transform = transform
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch_size={batch_size} is the global batch and must be a multiple of the number of "
                f"processes ({self.world_size})"
            )
        self._shard = slice(*dist.shard_range(self.batch_size))
        self.lr = check_positive("lr", lr)
        self.warmup = check_int("warmup", warmup, low=0)
        self.decay_steps = None if decay_steps is None else check_int("decay_steps", decay_steps, low=1)
        if self.decay_steps is not None and self.decay_steps <= self.warmup:
            raise ValueError(f"decay_steps must be > warmup={self.warmup}, got {decay_steps!r}")
        self.grad_clip = None if grad_clip is None else check_positive("grad_clip", grad_clip)
        self.accumulate = check_int("accumulate", accumulate, low=1)
        self.eps = check_eps(eps, sde.T)
        self.weighting = check_choice("weighting", weighting, set(WEIGHTINGS))
        if importance_sampling and weighting != "likelihood":
            raise ValueError(
                f"importance_sampling=True needs weighting='likelihood', got weighting={weighting!r}"
            )
        self.sampler = ImportanceSampler(sde, eps) if importance_sampling else None
        self.ckpt_dir = None if ckpt_dir is None else Path(ckpt_dir)
        self.ckpt_every = None if ckpt_every is None else check_int("ckpt_every", ckpt_every, low=1)
        self.keep = check_int("keep", keep, low=1)
        self.nonfinite = check_choice("nonfinite", nonfinite, set(NONFINITE))
        self.max_skips = check_int("max_skips", max_skips, low=0)
        self.eval_fn = eval_fn
        self.eval_every = None if eval_every is None else check_int("eval_every", eval_every, low=1)
        self.callbacks = list(callbacks) if self.rank == 0 else []
        self.progress = progress
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.net = self.model  # what the loss calls: the model, or its DistributedDataParallel wrapper
        if dist.is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)  # broadcasts rank 0's weights
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        self.ema = EMA(model, ema_decay)
        self.step = 0
        self.skipped = 0  # optimiser steps skipped for a non-finite loss or gradient
        self._skips_in_a_row = 0
        self.seed = check_int("seed", seed, low=0)
        self.data_gen = torch.Generator().manual_seed(self.seed)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self.torch_rng = self._dropout_rng()
        self._perm = torch.randperm(self.data.shape[0], generator=self.data_gen)
        self._pos = 0
        self.history: list[dict] = []

    def _dropout_rng(self, step: int = 0) -> torch.Tensor:
        """A fresh CPU RNG state for dropout: ranks draw different masks for their shards. ``step``
        restarts the streams of a run resumed with another number of processes."""
        return torch.Generator().manual_seed(self.seed + 2 + 1_000_003 * self.rank + 7919 * step).get_state()

    # -- one step ----------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to ``lr`` over ``warmup`` steps; then constant, or, with ``decay_steps``,
        a cosine decay to 0 at step ``decay_steps`` (Loshchilov & Hutter 2017), 0 after."""
        if self.warmup and step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.decay_steps is None:
            return self.lr
        frac = min(1.0, (step - self.warmup) / (self.decay_steps - self.warmup))
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * frac))

    def _next_batch(self) -> torch.Tensor:
        """The next global batch, transformed (every rank draws the same one)."""
        n = self.data.shape[0]
        idx = []
        while len(idx) < self.batch_size:
            if self._pos >= n:
                self._perm = torch.randperm(n, generator=self.data_gen)
                self._pos = 0
            take = min(self.batch_size - len(idx), n - self._pos)
            idx.append(self._perm[self._pos : self._pos + take])
            self._pos += take
            if sum(len(i) for i in idx) >= self.batch_size:
                break
        batch = self.data[torch.cat(idx)].to(self.device)
        if self.transform is not None:
            batch = self.transform(batch, self.noise_gen)
        return batch

    def _rng_snapshot(self) -> dict:
        return {
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "torch_rng": self.torch_rng,
            "perm": self._perm,
            "pos": self._pos,
        }

    def _restore_rng(self, snap: dict) -> None:
        self.data_gen.set_state(snap["data_gen"])
        self.noise_gen.set_state(snap["noise_gen"])
        self.torch_rng, self._perm, self._pos = snap["torch_rng"], snap["perm"], snap["pos"]

    def train_step(self) -> dict:
        """One optimiser step over ``accumulate`` micro-batches; returns loss, lr, grad_norm (and
        ``skipped``: 1 where a non-finite loss or gradient was skipped, else 0)."""
        self.model.train()
        lr = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        snapshot = self._rng_snapshot()
        local = torch.zeros((), dtype=torch.float64, device=self.device)  # NCCL reduces device tensors
        batches = []
        cpu_state = torch.get_rng_state()
        torch.set_rng_state(self.torch_rng)
        try:
            for i in range(self.accumulate):
                x = self._next_batch()
                draws = draw_dsm(
                    self.sde, x, eps=self.eps, importance_sampler=self.sampler, generator=self.noise_gen
                )
                batches.append(x)
                last = i == self.accumulate - 1
                # Gradients are averaged over ranks once, on the last micro-batch.
                sync = contextlib.nullcontext() if last or self.net is self.model else self.net.no_sync()
                with sync:
                    loss = dsm_loss(
                        self.sde,
                        self.net,
                        x[self._shard],
                        eps=self.eps,
                        weighting=self.weighting,
                        importance_sampler=self.sampler,
                        draws=draws.shard(self._shard),
                    )
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
            self.ema.update(self.model)
            self._skips_in_a_row = 0
        elif self.nonfinite == "skip" and self._skips_in_a_row < self.max_skips:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self._skips_in_a_row += 1
            metrics["skipped"] = 1
        else:
            self._restore_rng(snapshot)
            self._nonfinite_error(total, grad_norm, batches)
        self.step += 1
        return metrics

    def _nonfinite_error(self, loss: float, grad_norm: float, batches: list) -> None:
        """Keep the last good state as a checkpoint and raise a FloatingPointError naming the step
        and the likely cause."""
        what = (
            f"the loss is not finite ({loss})"
            if not math.isfinite(loss)
            else (f"the gradient norm is not finite ({grad_norm}; loss {loss:.6g})")
        )
        if not all(bool(torch.isfinite(x).all()) for x in batches):
            cause = "the training batch contains NaN or inf: check the data and the transform"
        elif not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            cause = "the model parameters are not finite (set from outside the trainer?)"
        elif not math.isfinite(loss):
            cause = (
                f"the network output or the loss weight overflowed: lower the learning rate (lr={self.lr}), "
                f"raise eps (eps={self.eps}) if std(eps) underflows in this dtype, "
                "or check the score network for a division by a tiny std"
            )
        else:
            cause = (
                f"the backward pass overflowed: lower the learning rate (lr={self.lr}) or raise eps "
                f"(eps={self.eps}); grad_clip cannot repair an infinite gradient"
            )
        if self._skips_in_a_row:
            what += f" for {self._skips_in_a_row + 1} batches in a row (max_skips={self.max_skips})"
        kept = ""
        if self.ckpt_dir is not None:
            path = self.save_checkpoint()
            kept = f" The last good state (step {self.step}) is in {path}."
        raise FloatingPointError(
            f"{what} at step {self.step + 1}: likely cause: "
            f"{cause}.{kept} nonfinite='skip' skips such batches and counts them."
        )

    # -- the loop ------------------------------------------------------------------------------

    def fit(self, steps: int) -> list[dict]:
        """Train until ``self.step == steps`` (continuing a resumed run); returns the history."""
        steps = check_int("steps", steps, low=0)
        for cb in self.callbacks:
            cb.on_train_start(self)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=steps,
            initial=self.step,
            disable=True if self.rank else (self.progress is False if self.progress is not None else None),
            desc="train",
            dynamic_ncols=True,
        )
        try:
            while self.step < steps:
                metrics = self.train_step()
                self.history.append(metrics)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{metrics['loss']:.4g}", **({"skipped": self.skipped} if self.skipped else {})
                )
                for cb in self.callbacks:
                    cb.on_step(self, metrics)
                if self.eval_every and self.eval_fn is not None and self.step % self.eval_every == 0:
                    self.evaluate()
                if self.ckpt_dir is not None and self.ckpt_every and self.step % self.ckpt_every == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
        if self.ckpt_dir is not None and (not self.ckpt_every or self.step % self.ckpt_every):
            self.save_checkpoint()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def evaluate(self) -> dict:
        """``eval_fn(self)`` with the EMA weights in the model, in eval mode (on every rank)."""
        if self.eval_fn is None:
            raise ValueError("evaluate() needs eval_fn")
        was_training = self.model.training
        self.model.eval()
        with self.ema.applied(self.model):
            metrics = dict(self.eval_fn(self))
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
            "ema": self.ema.state_dict(),
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
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_gen.set_state(state["data_gen"])
        self.noise_gen.set_state(state["noise_gen"])
        rngs = state.get("torch_rng_ranks", [state["torch_rng"]])
        if len(rngs) == self.world_size:
            self.torch_rng = rngs[self.rank]
        else:  # a different number of processes: fresh dropout streams, a function of the step
            self.torch_rng = self._dropout_rng(state["step"])
        self._perm, self._pos = state["perm"], state["pos"]
        self.step = state["step"]
        self.skipped = state.get("skipped", 0)
        self._skips_in_a_row = state.get("skips_in_a_row", 0)

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write a checkpoint atomically (default ``ckpt_dir/ckpt_<step>.pt``); prune to ``keep``.
        Under data parallelism every rank calls it and rank 0 writes."""
        if path is None:
            if self.ckpt_dir is None:
                raise ValueError("save_checkpoint() needs a path or a trainer with ckpt_dir")
            path = self.ckpt_dir / f"ckpt_{self.step:08d}.pt"
        path = Path(path)
        state = self.state_dict()
        if self.rank == 0:
            save_atomic(state, path)
            if self.ckpt_dir is not None and path.parent == self.ckpt_dir:
                for old in list_checkpoints(self.ckpt_dir)[: -self.keep]:
                    old.unlink(missing_ok=True)
            for cb in self.callbacks:
                cb.on_checkpoint(self, path)
        dist.barrier()
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint`. An unreadable file (truncated,
        corrupt, not a checkpoint) or one written for another model raises :class:`CheckpointError`
        naming the file, before anything is changed."""
        path = Path(path)
        self._load(read_checkpoint(path), path)

    def resume(self) -> bool:
        """Load the newest readable checkpoint in ``ckpt_dir`` if there is one; returns whether it
        did. Temporary files left by a save that was killed are deleted. A checkpoint that cannot
        be read (a torn or corrupt file) is renamed ``<name>.corrupt``, kept for inspection, and
        the next older one is tried, with a ``RuntimeWarning`` naming the file. A readable
        checkpoint of another model raises."""
        if self.ckpt_dir is None:
            return False
        if self.rank == 0 and self.ckpt_dir.is_dir():
            # Half-written temporary files of a run killed while saving: never checkpoints.
            for tmp in self.ckpt_dir.glob(".ckpt_*.pt.*.tmp"):
                tmp.unlink(missing_ok=True)
        for path in reversed(list_checkpoints(self.ckpt_dir)):
            try:
                state = read_checkpoint(path)
            except CheckpointError as e:
                warnings.warn(
                    f"{e}; moved aside to {path.name}.corrupt, trying the previous one",
                    RuntimeWarning,
                    stacklevel=2,
                )
                dist.barrier()  # every rank has read it before rank 0 moves it
                if self.rank == 0 and path.exists():
                    path.rename(path.with_name(path.name + ".corrupt"))
                dist.barrier()
                continue
            self._load(state, path)
            return True
        return False

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
            self.load_state_dict(state)
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(e).__name__}: {e})") from e


CKPT_KEYS = ("step", "model", "ema", "optimizer", "data_gen", "noise_gen", "perm", "pos")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` a trainer checkpoint onto the CPU (the random-generator states must stay
    there; the model, EMA and optimiser copy theirs to the model's device on loading); a file that
    cannot be read or holds no trainer state raises :class:`CheckpointError` naming it."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for torn or foreign files
        size = path.stat().st_size if path.exists() else None
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}; {size} bytes): "
            "it is truncated, corrupt or not a sde_gen checkpoint"
        ) from e
    missing = [k for k in CKPT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a sde_gen trainer checkpoint: it lacks {missing}")
    return state


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``ckpt_dir``, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if CKPT_PATTERN.match(p.name))
