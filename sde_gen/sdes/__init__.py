"""SDEs: the base class and its derived dynamics, the built-in SDEs, linear SDEs of your own.

- ``base.py``: :class:`SDE` (five methods to write; the kernel, prior, noise level and the reverse
  dynamics derived from them), ``VPSDE``, ``SubVPSDE``, ``VESDE``;
- ``linear.py``: ``LinearSDE``, the kernel of ``dx = a(t) x dt + g(t) dW`` derived numerically;
- ``schedules.py``: ``CosineVPSDE``, ``EDMSDE``;
- ``flows.py``: ``RectifiedFlow``, the straight path of flow matching and rectified flow;
- ``reverse.py``: the reverse SDE and the probability-flow ODE of any SDE and score.
"""

from .base import SDE, VESDE, VPSDE, KernelCoefficients, SubVPSDE, check_sde, transition_between
from .flows import RectifiedFlow
from .linear import LinearSDE
from .reverse import ProbabilityFlowODE, ReverseSDE
from .schedules import EDMSDE, CosineVPSDE

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "LinearSDE",
    "CosineVPSDE",
    "EDMSDE",
    "RectifiedFlow",
    "KernelCoefficients",
    "ReverseSDE",
    "ProbabilityFlowODE",
    "check_sde",
    "transition_between",
]
