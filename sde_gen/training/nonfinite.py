"""What a non-finite loss or gradient does to training, and the diagnosis it gets."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .._checks import check_choice, check_int

__all__ = ["NonFinite", "NONFINITE", "nonfinite_error"]

NONFINITE = ("raise", "skip")


class NonFinite:
    """What a non-finite loss or gradient does. ``mode="raise"``: stop, keeping the last good
    state. ``mode="skip"``: skip that optimiser step (the step counter and the schedule go on),
    count it, and stop after more than ``max_skips`` skips in a row. A trainer's
    ``nonfinite="skip"`` is ``NonFinite("skip")``."""

    def __init__(self, mode: str = "raise", max_skips: int = 10):
        self.mode = check_choice("nonfinite", mode, set(NONFINITE))
        self.max_skips = check_int("max_skips", max_skips, low=0)

    def __repr__(self) -> str:
        return f"NonFinite({self.mode!r}, max_skips={self.max_skips})"


def nonfinite_error(
    trainer, loss: float, grad_norm: float, batches: list, kept: Path | None
) -> FloatingPointError:
    """The error for step ``trainer.step + 1``, whose loss or gradient norm is not finite: what
    happened, the likely cause (NaN in the batch, non-finite parameters, a forward or a backward
    overflow) and where the last good state was kept (``kept``, a checkpoint, or ``None``)."""
    what = (
        f"the loss is not finite ({loss})"
        if not math.isfinite(loss)
        else f"the gradient norm is not finite ({grad_norm}; loss {loss:.6g})"
    )
    eps = getattr(trainer.loss_fn, "eps", None)
    raise_eps = f"raise eps (eps={eps})" if eps is not None else "raise the loss's smallest time"
    if not all(bool(torch.isfinite(x).all()) for x in batches):
        cause = "the training batch contains NaN or inf: check the data and the transform"
    elif not all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters()):
        cause = "the model parameters are not finite (set from outside the trainer?)"
    elif not math.isfinite(loss):
        cause = (
            f"the network output or the loss weight overflowed: lower the learning rate (lr={trainer.lr}), "
            f"{raise_eps} if std(eps) underflows in this dtype, "
            "or check the score network for a division by a tiny std"
        )
    else:
        cause = (
            f"the backward pass overflowed: lower the learning rate (lr={trainer.lr}) or {raise_eps}; "
            "grad_clip cannot repair an infinite gradient"
        )
    in_a_row = trainer._skips_in_a_row
    if in_a_row:
        what += f" for {in_a_row + 1} batches in a row (max_skips={trainer.nonfinite.max_skips})"
    where = f" The last good state (step {trainer.step}) is in {kept}." if kept is not None else ""
    return FloatingPointError(
        f"{what} at step {trainer.step + 1}: likely cause: "
        f"{cause}.{where} nonfinite='skip' skips such batches and counts them."
    )
