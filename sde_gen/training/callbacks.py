"""Hooks into the training loop: the base class, progress reports and periodic evaluation."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .._checks import ArgumentTypeError, check_int

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["Callback", "ProgressBar", "ProgressPrinter", "PeriodicEval"]


class Callback:
    """Hooks the trainer calls; override what you need. ``metrics`` is a dict of floats.

    Under data parallelism callbacks run on rank 0 only, unless ``all_ranks`` is true (for work
    that every rank must join, such as an evaluation spread over the ranks)."""

    all_ranks = False

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step(self, trainer: Trainer, metrics: dict) -> None: ...

    def on_eval(self, trainer: Trainer, metrics: dict) -> None: ...

    def before_checkpoint(self, trainer: Trainer) -> None:
        """Called just before a checkpoint is written: what must exist whenever the checkpoint does
        (e.g. the history up to its step) is written here, since a kill may come right after it."""

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar over the steps with the loss (and skipped steps). ``enabled=None``: only on a
    terminal (tqdm's rule)."""

    def __init__(self, total: int, enabled: bool | None = None):
        self.total, self.enabled, self.bar = total, enabled, None

    def on_train_start(self, trainer) -> None:
        from tqdm.auto import tqdm

        disable = None if self.enabled is None else not self.enabled
        self.bar = tqdm(
            total=self.total, initial=trainer.step, disable=disable, desc="train", dynamic_ncols=True
        )

    def on_step(self, trainer, metrics: dict) -> None:
        self.bar.update(1)
        extra = {"skipped": trainer.skipped} if trainer.skipped else {}
        self.bar.set_postfix(loss=f"{metrics['loss']:.4g}", **extra)

    def on_train_end(self, trainer) -> None:
        self.bar.close()


class ProgressPrinter(Callback):
    """One line every ``every`` steps (loss, speed, time left): the progress report where no
    terminal shows a bar (output to a file, a cluster job)."""

    def __init__(self, total: int, every: int):
        self.total, self.every = total, check_int("every", every, low=1)
        self.start, self.first = None, 0

    def on_train_start(self, trainer) -> None:
        self.start, self.first = time.perf_counter(), trainer.step

    def on_step(self, trainer, metrics: dict) -> None:
        step = metrics["step"]
        if step % self.every and step != self.total:
            return
        per_step = (time.perf_counter() - self.start) / max(1, step - self.first)
        left = per_step * (self.total - step) / 60
        print(
            f"step {step}/{self.total}  loss {metrics['loss']:.4g}  {per_step:.3f} s/step  "
            f"{left:.1f} min left",
            flush=True,
        )


class PeriodicEval(Callback):
    """``trainer.evaluate(eval_fn)`` every ``every`` steps: ``eval_fn(trainer) -> dict`` sees the
    EMA weights; its metrics reach every callback's ``on_eval``. Runs on every rank."""

    all_ranks = True

    def __init__(self, eval_fn: Callable, every: int):
        if not callable(eval_fn):
            raise ArgumentTypeError(
                "eval_fn",
                eval_fn,
                f"eval_fn must be callable as eval_fn(trainer), got {type(eval_fn).__name__}",
            )
        self.eval_fn, self.every = eval_fn, check_int("every", every, low=1)

    def on_step(self, trainer, metrics: dict) -> None:
        if trainer.step % self.every == 0:
            trainer.evaluate(self.eval_fn)
