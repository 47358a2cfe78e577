"""Linear inverse problems ``y = A x + noise`` solved with an unconditional score model, for every
SDE with a Gaussian kernel: operators, four posterior samplers and the exact posterior of a
Gaussian-mixture prior for testing them."""

from .exact import CascadeOracle, MixturePosterior, mixture_posterior
from .operators import Colorization, LinearOperator, Mask, SuperResolution
from .solve import METHODS, InverseResult, repaint_schedule, solve_inverse

__all__ = [
    "LinearOperator",
    "Mask",
    "Colorization",
    "SuperResolution",
    "solve_inverse",
    "InverseResult",
    "METHODS",
    "repaint_schedule",
    "mixture_posterior",
    "MixturePosterior",
    "CascadeOracle",
]
