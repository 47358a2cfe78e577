"""A time-conditional MLP for vector data of any dimension."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import ArgumentValueError, check_int, check_tensor
from .embeddings import check_input_dtype, check_labels, check_time, label_embedding, make_time_embedding

__all__ = ["MLP"]


class MLP(nn.Module):
    """``net(x, t, y=None)``: ``x`` of shape ``(B, ...)`` with ``prod(...) == dim``, ``t`` of shape
    ``(B,)``; returns a tensor shaped like ``x`` (``(B, out_dim)`` when ``out_dim`` is given, e.g.
    the logits of a classifier).

    ``x`` is flattened to ``(B, dim)`` and passed through ``depth`` hidden layers of width ``hidden``,
    ``h <- act(W h + U e(t))``: the time embedding ``e(t)`` (a ``time_embedding`` of size
    ``embed_dim`` followed by a small MLP, as in Ho et al. 2020) is added to every hidden layer
    through its own linear projection ``U``. The output layer is zero-initialised, so the initial
    output is exactly 0 (the score model starts at the score of nothing in particular).

    ``num_classes=K`` makes it class-conditional: an embedding of the label ``y`` ``(B,)`` (``K + 1``
    rows, row ``K`` the null label, also used when ``y`` is ``None``) is added to ``e(t)``, as in
    Dhariwal & Nichol 2021; it is created last, so the other parameters are those of the
    unconditional network built from the same seed.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        time_embedding: str = "fourier",
        embed_dim: int = 128,
        activation: type[nn.Module] = nn.SiLU,
        num_classes: int | None = None,
        out_dim: int | None = None,
    ):
        super().__init__()
        self.dim = check_int("dim", dim, low=1)
        self.hidden = check_int("hidden", hidden, low=1)
        self.depth = check_int("depth", depth, low=1)
        self.embed_dim = check_int("embed_dim", embed_dim, low=4)
        self.time_embedding = time_embedding
        self.out_dim = None if out_dim is None else check_int("out_dim", out_dim, low=1)
        self.embed = nn.Sequential(
            make_time_embedding(time_embedding, embed_dim), nn.Linear(embed_dim, embed_dim), activation()
        )
        self.layers = nn.ModuleList(nn.Linear(dim if i == 0 else hidden, hidden) for i in range(depth))
        self.time_proj = nn.ModuleList(nn.Linear(embed_dim, hidden) for _ in range(depth))
        self.act = activation()
        self.out = nn.Linear(hidden, dim if out_dim is None else out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes, low=1)
        self.label_embed = label_embedding(num_classes, embed_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("x", x)
        d = math.prod(x.shape[1:])
        if d != self.dim:
            raise ArgumentValueError(
                "x", x, f"x must have {self.dim} entries per sample (dim), got shape {tuple(x.shape)}"
            )
        check_input_dtype(x, self.out.weight)
        y = check_labels(y, x, self.num_classes)
        e = self.embed(check_time(t, x))
        if y is not None:
            e = e + self.label_embed(y).to(e.dtype)
        h = x.reshape(x.shape[0], d)
        for layer, proj in zip(self.layers, self.time_proj, strict=True):
            h = self.act(layer(h) + proj(e))
        out = self.out(h)
        return out.reshape(x.shape) if self.out_dim is None else out

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, hidden={self.hidden}, depth={self.depth}, "
            f"time_embedding={self.time_embedding!r}"
            + (f", num_classes={self.num_classes}" if self.num_classes is not None else "")
            + (f", out_dim={self.out_dim}" if self.out_dim is not None else "")
        )
