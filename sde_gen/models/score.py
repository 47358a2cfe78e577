"""Turn a network ``net(x, t, **cond)`` into a score function ``score_fn(x, t, **cond)``."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice
from .._utils import batch_broadcast
from ..sdes.base import check_sde

__all__ = ["ScoreModel", "PARAMETERIZATIONS"]

PARAMETERIZATIONS = ("noise", "score")


class ScoreModel(nn.Module):
    """A score function made of a network, invisible to the solvers.

    - ``"noise"``: the network predicts the noise ``z`` in ``x_t = mean + std z``, and
      ``score = -net(x, t) / std(t)`` (the reference's choice for VP and sub-VP);
    - ``"score"``: the network output is scaled, ``score = net(x, t) / std(t)`` (the reference's
      choice for VE, Song & Ermon 2020, technique 3), so the network works at unit scale.

    ``std(t)`` comes from ``sde.marginal``, so any SDE works. Call it as ``model(x, t)``, or with
    conditioning as ``model(x, t, **cond)`` (e.g. ``y=labels`` for a class-conditional network),
    which is passed to the network unchanged.
    """

    def __init__(self, net: nn.Module, sde, parameterization: str = "noise"):
        super().__init__()
        self.net = net
        self.sde = check_sde(sde)
        self.parameterization = check_choice("parameterization", parameterization, set(PARAMETERIZATIONS))

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return self.sde.marginal(torch.zeros(t.shape[0], 1, dtype=t.dtype, device=t.device), t)[1]

    @property
    def num_classes(self) -> int | None:
        """The network's number of classes ``K`` (the null label is ``K``), ``None`` if unconditional."""
        return getattr(self.net, "num_classes", None)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        out = self.net(x, t, **cond) if cond else self.net(x, t)
        std = batch_broadcast(self.std(t), x)
        return -out / std if self.parameterization == "noise" else out / std

    def extra_repr(self) -> str:
        return f"parameterization={self.parameterization!r}, sde={self.sde!r}"
