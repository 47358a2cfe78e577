"""Sampling: keyed noise, the solvers and their protocol, the one loop, guidance, inverse problems.

- ``noise.py``: ``KeyedNoise``, normals keyed by (seed, sample, draw);
- ``solvers/``: one file per family, each solver an object with ``init`` and ``step``; the time
  grids (``grids.py``) and the ``(xhat, sigma_hat)`` variables the fast samplers share;
- ``loop.py``: ``sample`` and ``encode``;
- ``guidance.py``: classifier-free and classifier guidance as score functions;
- ``tuning.py``: ``optimize_schedule``, time grids tuned for a score function;
- ``cascade.py``: ``sample_cascade`` (stage by stage, with conditioning augmentation) and ``sample_latent``;
- ``inverse/``: linear inverse problems (replacement, RePaint, DPS, SMC) and the exact posterior.
"""

from . import inverse
from .cascade import CascadeStage, sample_cascade, sample_latent
from .guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    classifier_free_guidance,
    classifier_guidance,
)
from .loop import SampleResult, encode, sample
from .noise import KeyedNoise
from .tuning import MAX_TUNED_STEPS, TUNING_METHODS, TunedSchedule, optimize_schedule

__all__ = [
    "sample",
    "encode",
    "SampleResult",
    "KeyedNoise",
    "classifier_free_guidance",
    "classifier_guidance",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "inverse",
    "optimize_schedule",
    "TunedSchedule",
    "TUNING_METHODS",
    "MAX_TUNED_STEPS",
    "CascadeStage",
    "sample_cascade",
    "sample_latent",
]
