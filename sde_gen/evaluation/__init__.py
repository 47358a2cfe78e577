"""Evaluation of trained models on large test and sample sets, chunk by chunk and spread over ranks.

- :mod:`.seeds`: per-chunk generators (``chunk_seed``, ``chunk_generator``, ``STREAMS``);
- :mod:`.chunks`: which chunks a rank takes, and the gathering of their results;
- :mod:`.drivers`: ``evaluate_nll`` (vector data) and ``generate_samples``;
- :mod:`.plots`: image grids, 2-D scatters and loss curves;
- :mod:`.quality`: ``SampleQuality``, sample-quality figures beside their reference floors;
- :mod:`.heldout`: ``HeldoutLikelihood`` (test bits/dim or NLL) and ``HeldoutEval`` (during training);
- :mod:`.model_eval`: ``SamplePlan`` and ``evaluate_model``, a trained model evaluated into a directory;
- :mod:`.history`: ``HistoryFile`` and ``read_history``, the training curve of a run directory;
- :mod:`.results`: ``results_table`` and ``metrics_table``, Markdown tables of run results;
- :mod:`.wandb_logger`: ``WandbLogger``, a trainer callback logging to W&B;
- :mod:`.stages`: first stages of a run: ``LatentStage`` (a latent model's autoencoder) and
  ``LowResolutionStage`` (a cascade's low-resolution model).

- ``bpd.py``: ``evaluate_bpd``, the test bits/dim of a score model on integer images;
"""

from __future__ import annotations

from .bpd import evaluate_bpd
from .drivers import evaluate_nll, generate_samples
from .heldout import HeldoutEval, HeldoutLikelihood
from .history import HistoryFile, read_history
from .model_eval import SamplePlan, evaluate_model, save_samples
from .plots import save_image_grid, save_loss_curve, save_samples_2d
from .quality import SampleQuality
from .results import HEADLINE_METRICS, metrics_table, results_table
from .seeds import STREAMS, chunk_generator, chunk_seed
from .stages import LatentStage, LowResolutionStage
from .wandb_logger import WandbLogger, wandb_mode

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
    "SampleQuality",
    "HeldoutLikelihood",
    "HeldoutEval",
    "HistoryFile",
    "SamplePlan",
    "evaluate_model",
    "save_samples",
    "read_history",
    "results_table",
    "metrics_table",
    "HEADLINE_METRICS",
    "WandbLogger",
    "wandb_mode",
    "LatentStage",
    "LowResolutionStage",
]
