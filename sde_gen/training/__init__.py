"""Training: the loop (:class:`Trainer`) and the small objects it is handed.

- ``trainer.py``: the loop, data parallelism, resume;
- ``nonfinite.py``: what a non-finite loss or gradient does, and its diagnosis;
- ``batches.py``: the seeded, checkpointable stream of training batches;
- ``ema.py``: the exponential moving average of the weights, with warm-up;
- ``schedules.py``: learning-rate schedules;
- ``losses.py``: ``DSMLoss`` (weighting and time sampler as replaceable parts), ``dsm_loss``;
- ``classifier_loss.py``: ``ClassifierLoss`` for noise-conditional classifiers;
- ``callbacks.py``: progress, periodic evaluation, the base class loggers derive from.

Checkpoint files are ``sde_gen/files/``; the optimiser is any ``torch.optim.Optimizer``.
"""

from .batches import Batches
from .callbacks import Callback, PeriodicEval, ProgressBar, ProgressPrinter
from .classifier_loss import AccuracyCurve, ClassifierLoss, classifier_accuracy
from .ema import EMA
from .losses import (
    WEIGHTINGS,
    DSMDraws,
    DSMLoss,
    ImportanceSampler,
    UniformTime,
    dsm_loss,
    likelihood_weighting,
    std2_weighting,
)
from .nonfinite import NONFINITE, NonFinite
from .schedules import WarmupCosine
from .trainer import Trainer

__all__ = [
    "Trainer",
    "Batches",
    "EMA",
    "WarmupCosine",
    "NonFinite",
    "NONFINITE",
    "Callback",
    "ProgressBar",
    "ProgressPrinter",
    "PeriodicEval",
    "DSMLoss",
    "DSMDraws",
    "dsm_loss",
    "WEIGHTINGS",
    "std2_weighting",
    "likelihood_weighting",
    "UniformTime",
    "ImportanceSampler",
    "ClassifierLoss",
    "classifier_accuracy",
    "AccuracyCurve",
]
