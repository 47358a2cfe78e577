"""Evaluation of trained models on large test and sample sets, chunk by chunk and spread over ranks.

- :mod:`.seeds`: per-chunk generators (``chunk_seed``, ``chunk_generator``, ``STREAMS``);
- :mod:`.chunks`: which chunks a rank takes, and the gathering of their results;
- :mod:`.drivers`: ``evaluate_nll`` (vector data) and ``generate_samples``;
- :mod:`.plots`: image grids, 2-D scatters and loss curves.

- ``bpd.py``: ``evaluate_bpd``, the test bits/dim of a score model on integer images;
"""

from __future__ import annotations

from .bpd import evaluate_bpd
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
