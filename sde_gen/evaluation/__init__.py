"""Evaluation of trained models on large test and sample sets, chunk by chunk and spread over ranks.

- :mod:`.seeds`: per-chunk generators (``chunk_seed``, ``chunk_generator``, ``STREAMS``);
- :mod:`.chunks`: which chunks a rank takes, and the gathering of their results;
- :mod:`.drivers`: ``evaluate_nll`` (vector data) and ``generate_samples``;
- :mod:`.plots`: image grids, 2-D scatters and loss curves.

``evaluate_bpd`` (images) lives with the rest of bits/dim in :mod:`sde_gen.bpd`, which builds on
this package; it is re-exported here on first use.
"""

from __future__ import annotations

from .drivers import evaluate_nll, generate_samples
from .plots import save_image_grid, save_loss_curve, save_samples_2d
from .seeds import STREAMS, chunk_generator, chunk_seed

__all__ = [
    "evaluate_nll",
    "evaluate_bpd",
    "generate_samples",
    "chunk_seed",
    "chunk_generator",
    "STREAMS",
    "save_image_grid",
    "save_samples_2d",
    "save_loss_curve",
]


def __getattr__(name: str):
    # sde_gen.bpd imports this package's modules, so evaluate_bpd is imported from it on first use.
    if name == "evaluate_bpd":
        from ..bpd import evaluate_bpd

        return evaluate_bpd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
