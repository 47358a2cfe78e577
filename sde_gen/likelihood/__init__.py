"""Likelihoods: the probability-flow log-density and everything in bits/dim.

- ``probability_flow.py``: ``log_likelihood`` with exact or Hutchinson divergence, in ``t``,
  ``sigma_hat`` or ``lambda``;
- ``bpd.py``: uniformly dequantized bits/dim of integer data under any density;
- ``dequantization.py``: the truncated-normal importance-weighted bound.

``bits_per_dim`` (a log-density to bits/dim) is the data's own arithmetic, in ``data/transforms.py``.
"""

from . import dequantization
from .bpd import dequantized_bpd, dequantized_bpd_per_image
from .probability_flow import (
    VARIABLES,
    LikelihoodResult,
    exact_divergence,
    hutchinson_divergence,
    log_likelihood,
    noise_level_rates,
)

__all__ = [
    "log_likelihood",
    "LikelihoodResult",
    "exact_divergence",
    "hutchinson_divergence",
    "noise_level_rates",
    "VARIABLES",
    "dequantized_bpd",
    "dequantized_bpd_per_image",
    "dequantization",
]
