"""sde_gen: score-based generative modelling in continuous time (Song et al. 2021) in PyTorch."""

from . import distributed
from .data import (
    ImageData,
    LevelTransform,
    VectorData,
    dequantized_bpd,
    gmm8,
    load_dataset,
    mixture_entropy,
)
from .evaluation import (
    chunk_generator,
    chunk_seed,
    evaluate_bpd,
    evaluate_nll,
    generate_samples,
    save_image_grid,
    save_samples_2d,
)
from .likelihood import (
    LikelihoodResult,
    bits_per_dim,
    exact_divergence,
    hutchinson_divergence,
    log_likelihood,
)
from .losses import WEIGHTINGS, ImportanceSampler, dsm_loss
from .nets import MLP, GaussianFourierEmbedding, SinusoidalEmbedding, UNet
from .oracle import GaussianMixture, energy_distance
from .reverse import ProbabilityFlowODE, ReverseSDE, ScoreCheck
from .sampling import SampleResult, encode, sample
from .score import PARAMETERIZATIONS, ScoreModel
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
from .training import EMA, Callback, CheckpointError, Trainer

__version__ = "0.1.0"

# fmt: off
__all__ = [
    "SDE", "VPSDE", "SubVPSDE", "VESDE", "LinearSDE", "KernelCoefficients", "ReverseSDE",
    "ProbabilityFlowODE", "ScoreCheck", "Solver", "SteppingSolver", "StepInfo", "StepOutput",
    "EulerMaruyama", "PredictorCorrector", "ProbabilityFlow", "Predictor", "Corrector",
    "EulerMaruyamaPredictor", "ReverseDiffusionPredictor", "AncestralPredictor", "Langevin",
    "AnnealedLangevin", "NoCorrector", "PREDICTORS", "CORRECTORS", "sample", "encode",
    "SampleResult", "log_likelihood", "LikelihoodResult", "bits_per_dim", "exact_divergence",
    "hutchinson_divergence", "GaussianMixture", "energy_distance", "dsm_loss", "ImportanceSampler",
    "WEIGHTINGS", "ScoreModel", "PARAMETERIZATIONS", "Trainer", "EMA", "Callback", "CheckpointError",
    "evaluate_nll",
    "evaluate_bpd", "generate_samples", "chunk_seed", "chunk_generator", "save_image_grid",
    "save_samples_2d", "MLP", "UNet", "GaussianFourierEmbedding",
    "SinusoidalEmbedding", "load_dataset", "VectorData", "ImageData", "LevelTransform", "dequantized_bpd",
    "mixture_entropy", "gmm8", "distributed",
]
# fmt: on
