"""Training: the loop (:class:`Trainer`) and the small objects it is handed.

- ``trainer.py``: the loop, data parallelism, resume;
- ``nonfinite.py``: what a non-finite loss or gradient does, and its diagnosis;
- ``batches.py``: the seeded, checkpointable stream of training batches;
- ``ema.py``: the exponential moving average of the weights, with warm-up;
- ``schedules.py``: learning-rate schedules;
- ``losses.py``: ``DSMLoss`` (weighting and time sampler as replaceable parts), ``dsm_loss``;
- ``weightings.py``: the weightings of the noise levels (std2, likelihood, min-SNR, EDM, sigmoid, flow);
- ``couplings.py``: pairing a batch with its noise (independent, minibatch optimal transport);
- ``reflow.py``: the (sample, noise) pairs of a model's probability-flow ODE, to reflow on;
- ``noise_levels.py``: the time samplers (uniform, importance, log-normal, logit-normal);
- ``classifier_loss.py``: ``ClassifierLoss`` for noise-conditional classifiers;
- ``autoencoder_loss.py``: ``AutoencoderLoss`` (an autoencoder's weighted negative ELBO);
- ``superres_loss.py``: ``SuperResolutionLoss`` (a cascade's stage, with conditioning augmentation);
- ``callbacks.py``: progress, periodic evaluation, the base class loggers derive from.

Checkpoint files are ``sde_gen/files/``; the optimiser is any ``torch.optim.Optimizer``.
"""

from .autoencoder_loss import AutoencoderLoss, gaussian_nll, kl_divergence
from .batches import Batches
from .callbacks import Callback, PeriodicEval, ProgressBar, ProgressPrinter
from .classifier_loss import AccuracyCurve, ClassifierLoss, classifier_accuracy
from .couplings import COUPLINGS, ot_permutation
from .ema import EMA
from .losses import DSMDraws, DSMLoss, dsm_loss
from .noise_levels import (
    TIME_SAMPLERS,
    ImportanceSampler,
    LogitNormalTime,
    LogNormalNoise,
    UniformTime,
    time_sampler,
)
from .nonfinite import NONFINITE, NonFinite
from .reflow import reflow_pairs
from .schedules import WarmupCosine
from .superres_loss import SuperResolutionLoss
from .trainer import Trainer
from .weightings import (
    WEIGHTINGS,
    EDMWeighting,
    MinSNRWeighting,
    SigmoidWeighting,
    Weighting,
    flow_weighting,
    likelihood_weighting,
    std2_weighting,
    weighting,
)

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
    "COUPLINGS",
    "ot_permutation",
    "reflow_pairs",
    "std2_weighting",
    "likelihood_weighting",
    "flow_weighting",
    "Weighting",
    "MinSNRWeighting",
    "EDMWeighting",
    "SigmoidWeighting",
    "weighting",
    "UniformTime",
    "ImportanceSampler",
    "LogNormalNoise",
    "LogitNormalTime",
    "TIME_SAMPLERS",
    "time_sampler",
    "ClassifierLoss",
    "classifier_accuracy",
    "AccuracyCurve",
    "AutoencoderLoss",
    "SuperResolutionLoss",
    "gaussian_nll",
    "kl_divergence",
]
