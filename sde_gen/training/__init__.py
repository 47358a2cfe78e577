"""Training: the loop (:class:`Trainer`) and the small objects it is handed.

- ``trainer.py``: the loop, data parallelism, resume;
- ``nonfinite.py``: what a non-finite loss or gradient does, and its diagnosis;
- ``batches.py``: the seeded, checkpointable stream of training batches;
- ``ema.py``: the exponential moving average of the weights, with warm-up;
- ``schedules.py``: learning-rate schedules;
- ``checkpoint.py``: atomic checkpoint files, rotation, recovery, loading without unpickling code;
- ``callbacks.py``: progress, periodic evaluation, the base class loggers derive from.

The loss is :class:`sde_gen.DSMLoss` (``sde_gen/losses.py``); the optimiser is any
``torch.optim.Optimizer``.
"""

from .batches import Batches
from .callbacks import Callback, PeriodicEval, ProgressBar, ProgressPrinter
from .checkpoint import (
    CKPT_PATTERN,
    CheckpointError,
    Checkpoints,
    UnsafeCheckpointError,
    list_checkpoints,
    read_checkpoint,
    save_atomic,
)
from .ema import EMA
from .nonfinite import NONFINITE, NonFinite
from .schedules import WarmupCosine
from .trainer import Trainer

__all__ = [
    "Trainer",
    "Batches",
    "EMA",
    "WarmupCosine",
    "Checkpoints",
    "CheckpointError",
    "NonFinite",
    "NONFINITE",
    "Callback",
    "ProgressBar",
    "ProgressPrinter",
    "PeriodicEval",
    "save_atomic",
    "UnsafeCheckpointError",
    "read_checkpoint",
    "list_checkpoints",
    "CKPT_PATTERN",
]
