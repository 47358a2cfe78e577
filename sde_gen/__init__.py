"""sde_gen: score-based generative modelling in continuous time (Song et al. 2021) in PyTorch."""

from .likelihood import (
    LikelihoodResult,
    bits_per_dim,
    exact_divergence,
    hutchinson_divergence,
    log_likelihood,
)
from .oracle import GaussianMixture, energy_distance
from .reverse import ProbabilityFlowODE, ReverseSDE, ScoreCheck
from .sampling import SampleResult, encode, sample
from .sde import SDE, VESDE, VPSDE, KernelCoefficients, LinearSDE, SubVPSDE
from .solvers import (
    CORRECTORS,
    PREDICTORS,
    AncestralPredictor,
    AnnealedLangevin,
    Corrector,
    EulerMaruyama,
    EulerMaruyamaPredictor,
    Langevin,
    NoCorrector,
    Predictor,
    PredictorCorrector,
    ProbabilityFlow,
    ReverseDiffusionPredictor,
    Solver,
    StepInfo,
    StepOutput,
    SteppingSolver,
)

__version__ = "0.1.0"

__all__ = [
    # SDEs
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "LinearSDE",
    "KernelCoefficients",
    "ReverseSDE",
    "ProbabilityFlowODE",
    "ScoreCheck",
    # solvers
    "Solver",
    "SteppingSolver",
    "StepInfo",
    "StepOutput",
    "EulerMaruyama",
    "PredictorCorrector",
    "ProbabilityFlow",
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
    # sampling and likelihood
    "sample",
    "encode",
    "SampleResult",
    "log_likelihood",
    "LikelihoodResult",
    "bits_per_dim",
    "exact_divergence",
    "hutchinson_divergence",
    # oracle
    "GaussianMixture",
    "energy_distance",
]
