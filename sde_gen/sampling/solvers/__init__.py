"""Solvers: one file per family; every one works for any :class:`~sde_gen.SDE`."""

from .base import Solver, SolverState, StepInfo, StepOutput, SteppingSolver
from .euler_maruyama import EulerMaruyama
from .exponential import DDIM, DPMSolverPlusPlus
from .heun import Heun
from .ipndm import IPNDM
from .ode import ADAPTIVE_METHODS, FIXED_METHODS, ProbabilityFlow
from .predictor_corrector import (
    CORRECTORS,
    PREDICTORS,
    AncestralPredictor,
    AnnealedLangevin,
    Corrector,
    EulerMaruyamaPredictor,
    Langevin,
    NoCorrector,
    Predictor,
    PredictorCorrector,
    ReverseDiffusionPredictor,
)
from .unipc import UniPC

__all__ = [
    "Solver",
    "SteppingSolver",
    "SolverState",
    "StepInfo",
    "StepOutput",
    "EulerMaruyama",
    "Heun",
    "IPNDM",
    "DDIM",
    "DPMSolverPlusPlus",
    "UniPC",
    "ProbabilityFlow",
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "PredictorCorrector",
    "Predictor",
    "Corrector",
    "EulerMaruyamaPredictor",
    "ReverseDiffusionPredictor",
    "AncestralPredictor",
    "Langevin",
    "AnnealedLangevin",
    "NoCorrector",
    "PREDICTORS",
    "CORRECTORS",
]
