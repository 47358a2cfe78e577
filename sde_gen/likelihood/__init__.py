"""Likelihoods: the probability-flow log-density and everything in bits/dim.

- ``probability_flow.py``: ``log_likelihood`` with exact or Hutchinson divergence, in ``t``,
  ``sigma_hat`` or ``lambda``;
- ``bpd.py``: uniformly dequantized bits/dim of integer data under any density;
- ``dequantization.py``: the truncated-normal importance-weighted bound;
- ``latent.py``: the negative ELBO of a latent model, an upper bound on its NLL.

``bits_per_dim`` (a log-density to bits/dim) is the data's own arithmetic, in ``data/transforms.py``.
"""

from . import bpd, dequantization, latent, probability_flow
from .bpd import *  # noqa: F403
from .latent import *  # noqa: F403
from .probability_flow import *  # noqa: F403

__all__ = [*probability_flow.__all__, *bpd.__all__, *latent.__all__, "dequantization"]
