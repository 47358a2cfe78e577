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
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from ._checks import check_choice, check_int, check_positive, check_real, check_sde, check_tensor
from .losses import WEIGHTINGS, ImportanceSampler, dsm_loss

__all__ = ["EMA", "Trainer", "Callback", "save_atomic", "CKPT_PATTERN"]

CKPT_PATTERN = re.compile(r"^ckpt_(\d{8})\.pt$")


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
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


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
        eval_fn, eval_every: ``eval_fn(trainer) -> dict`` is called with the EMA weights in place.
        callbacks: :class:`Callback` instances.

    Every random number (data order, t, noise, dequantization, dropout) comes from generators
    whose states are checkpointed, so a run stopped and resumed ends with exactly the parameters
    of one that was not stopped (on the same device and software).
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
        eval_fn: Callable | None = None,
        eval_every: int | None = None,
        callbacks: Iterable[Callback] = (),
        progress: bool | None = None,
        device: torch.device | str | None = None,
    ):
        self.model = model
        self.sde = check_sde(sde)
        self.data = check_tensor("data", data) if data.is_floating_point() else data
        if data.ndim < 1 or data.shape[0] == 0:
            raise ValueError(f"data must have shape (N, ...) with N >= 1, got {tuple(data.shape)}")
        self.transform = transform
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.lr = check_positive("lr", lr)
        self.warmup = check_int("warmup", warmup, low=0)
        self.decay_steps = None if decay_steps is None else check_int("decay_steps", decay_steps, low=1)
        if self.decay_steps is not None and self.decay_steps <= self.warmup:
            raise ValueError(f"decay_steps must be > warmup={self.warmup}, got {decay_steps!r}")
        self.grad_clip = None if grad_clip is None else check_positive("grad_clip", grad_clip)
        self.accumulate = check_int("accumulate", accumulate, low=1)
        self.eps = eps
        self.weighting = check_choice("weighting", weighting, set(WEIGHTINGS))
        if importance_sampling and weighting != "likelihood":
            raise ValueError(
                f"importance_sampling=True needs weighting='likelihood', got weighting={weighting!r}"
            )
        self.sampler = ImportanceSampler(sde, eps) if importance_sampling else None
        self.ckpt_dir = None if ckpt_dir is None else Path(ckpt_dir)
        self.ckpt_every = None if ckpt_every is None else check_int("ckpt_every", ckpt_every, low=1)
        self.keep = check_int("keep", keep, low=1)
        self.eval_fn = eval_fn
        self.eval_every = None if eval_every is None else check_int("eval_every", eval_every, low=1)
        self.callbacks = list(callbacks)
        self.progress = progress
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        self.ema = EMA(model, ema_decay)
        self.step = 0
        self.seed = check_int("seed", seed, low=0)
        self.data_gen = torch.Generator().manual_seed(self.seed)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self.torch_rng = torch.Generator().manual_seed(self.seed + 2).get_state()  # dropout
        self._perm = torch.randperm(self.data.shape[0], generator=self.data_gen)
        self._pos = 0
        self.history: list[dict] = []

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

    def train_step(self) -> dict:
        """One optimiser step over ``accumulate`` micro-batches; returns loss, lr, grad_norm."""
        self.model.train()
        lr = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        cpu_state = torch.get_rng_state()
        torch.set_rng_state(self.torch_rng)
        try:
            for _ in range(self.accumulate):
                x = self._next_batch()
                loss = dsm_loss(
                    self.sde,
                    self.model,
                    x,
                    eps=self.eps,
                    weighting=self.weighting,
                    importance_sampler=self.sampler,
                    generator=self.noise_gen,
                )
                (loss / self.accumulate).backward()
                total += loss.item() / self.accumulate
        finally:
            self.torch_rng = torch.get_rng_state()
            torch.set_rng_state(cpu_state)
        if not math.isfinite(total):
            raise FloatingPointError(
                f"the loss is not finite ({total}) at step {self.step}: lower the learning rate, "
                "check the data for NaN, or raise eps if std(eps) underflows"
            )
        max_norm = self.grad_clip if self.grad_clip is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        return {"step": self.step, "loss": total, "lr": lr, "grad_norm": grad_norm}

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
            disable=self.progress is False if self.progress is not None else None,
            desc="train",
            dynamic_ncols=True,
        )
        try:
            while self.step < steps:
                metrics = self.train_step()
                self.history.append(metrics)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4g}")
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
        """``eval_fn(self)`` with the EMA weights in the model, in eval mode."""
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
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "torch_rng": self.torch_rng,
            "perm": self._perm,
            "pos": self._pos,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_gen.set_state(state["data_gen"])
        self.noise_gen.set_state(state["noise_gen"])
        self.torch_rng = state["torch_rng"]
        self._perm, self._pos = state["perm"], state["pos"]
        self.step = state["step"]

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write a checkpoint atomically (default ``ckpt_dir/ckpt_<step>.pt``); prune to ``keep``."""
        if path is None:
            if self.ckpt_dir is None:
                raise ValueError("save_checkpoint() needs a path or a trainer with ckpt_dir")
            path = self.ckpt_dir / f"ckpt_{self.step:08d}.pt"
        path = save_atomic(self.state_dict(), path)
        if self.ckpt_dir is not None and Path(path).parent == self.ckpt_dir:
            for old in list_checkpoints(self.ckpt_dir)[: -self.keep]:
                old.unlink(missing_ok=True)
        for cb in self.callbacks:
            cb.on_checkpoint(self, path)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        path = Path(path)
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as e:  # torch raises several types for torn or foreign files
            raise RuntimeError(
                f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); "
                "it is truncated or not a sde_gen checkpoint"
            ) from e
        self.load_state_dict(state)

    def resume(self) -> bool:
        """Load the newest checkpoint in ``ckpt_dir`` if there is one; returns whether it did."""
        if self.ckpt_dir is None:
            return False
        ckpts = list_checkpoints(self.ckpt_dir)
        if not ckpts:
            return False
        self.load_checkpoint(ckpts[-1])
        return True


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``ckpt_dir``, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if CKPT_PATTERN.match(p.name))
