"""Turn a network ``net(x, t, **cond)`` into a score function ``score_fn(x, t, **cond)``."""

from __future__ import annotations

import torch
from torch import nn

from ..sdes.base import check_sde
from .parameterizations import PARAMETERIZATIONS, Parameterization
from .parameterizations import parameterization as _parameterization

__all__ = ["ScoreModel", "PARAMETERIZATIONS"]


class ScoreModel(nn.Module):
    """A score function made of a network, invisible to the solvers.

    ``parameterization`` says what the network predicts (:mod:`sde_gen.models.parameterizations`):
    ``"noise"`` (the default; the reference's choice for VP and sub-VP), ``"score"`` (the
    reference's choice for VE), ``"data"``, ``"v"``, ``"flow"``, ``"edm"`` (EDM's preconditioning
    with ``sigma_data`` 0.5; ``sg.EDMPreconditioning(sigma_data)`` for another), or a
    :class:`~sde_gen.Parameterization` of your own. Each is written through the SDE's kernel, so
    any SDE works.

    ``model(x, t, **cond)`` is the score and :meth:`denoise` the denoiser ``E[x_0 | x_t]``; the two
    agree by Tweedie's formula for any network. Conditioning (e.g. ``y=labels`` for a
    class-conditional network) is passed to the network unchanged.
    """

    def __init__(self, net: nn.Module, sde, parameterization: str | Parameterization = "noise"):
        super().__init__()
        self.net = net
        self.sde = check_sde(sde)
        self.param = _parameterization(parameterization)

    @property
    def parameterization(self) -> str:
        """The parameterisation's name (``self.param`` is the object)."""
        return self.param.name

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return self.sde.marginal(torch.zeros(t.shape[0], 1, dtype=t.dtype, device=t.device), t)[1]

    @property
    def num_classes(self) -> int | None:
        """The network's number of classes ``K`` (the null label is ``K``), ``None`` if unconditional."""
        return getattr(self.net, "num_classes", None)

    def _output(self, x: torch.Tensor, t: torch.Tensor, cond: dict):
        k = self.sde.kernel(t, x)
        x_in, t_in = self.param.inputs(x, t, k, self.sde)
        return (self.net(x_in, t_in, **cond) if cond else self.net(x_in, t_in)), k

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        out, k = self._output(x, t, cond)
        return self.param.score(out, x, t, k, self.sde)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        """``E[x_0 | x_t = x]`` from one network evaluation (the fast samplers call this)."""
        out, k = self._output(x, t, cond)
        return self.param.denoise(out, x, t, k, self.sde)

    def extra_repr(self) -> str:
        return f"parameterization={self.param!r}, sde={self.sde!r}"
