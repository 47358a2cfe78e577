"""Exponential moving average of a model's weights, with a warm-up."""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from .._checks import ArgumentValueError, check_real

__all__ = ["EMA"]


class EMA:
    """``shadow <- beta_n * shadow + (1 - beta_n) * param`` after the n-th optimiser step
    (n = 0, 1, ...), with the warm-up ``beta_n = min(decay, (1 + n) / (10 + n))``.

    Without the warm-up (``warmup=False``, ``beta_n = decay``) the average keeps ``decay^N`` of the
    initial, untrained weights after N updates: 13.5% after 2,000 steps at 0.999. With it the
    early averages are short (``beta_0 = 0.1``: the first update nearly copies the weights) and
    lengthen until ``decay`` takes over, at ``n = (10 decay - 1) / (1 - decay)`` (8,991 steps at
    0.999); the initial weights keep ``prod beta_n``, under 1e-5 after 30 steps. This is the
    ``num_updates`` rule of TensorFlow's ``ExponentialMovingAverage``.

    Integer buffers are copied, not averaged. The state (shadow and ``num_updates``) is
    checkpointed, so a resumed run continues the same average.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = True):
        decay = check_real("decay", decay)
        if not 0.0 <= decay < 1.0:
            raise ArgumentValueError("decay", decay, f"decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """``beta_n`` of the next update."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        beta = self.current_decay()
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(beta).add_(v.detach(), alpha=1.0 - beta)
            else:
                self.shadow[k].copy_(v)
        self.num_updates += 1

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
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": self.shadow,
        }

    def load_state_dict(self, state: dict) -> None:
        """Load a state written by :meth:`state_dict`. States from before the warm-up (sde_gen 0.1,
        no ``num_updates``) load with ``warmup=False``: the average they hold was made that way."""
        self.decay = state["decay"]
        self.warmup = bool(state.get("warmup", False))
        self.num_updates = int(state.get("num_updates", 0))
        # Onto the devices of the current shadow (the model's): checkpoints are read onto the CPU.
        self.shadow = {
            k: v.to(self.shadow[k].device if k in self.shadow else v.device, copy=True)
            for k, v in state["shadow"].items()
        }
