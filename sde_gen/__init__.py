"""sde_gen: score-based generative modelling in continuous time (Song et al. 2021) in PyTorch."""

from . import _checks as checks  # argument checks that name the argument, for code built on sde_gen
from . import dequantization, distributed, inverse, metrics
from .bpd import bits_per_dim, dequantized_bpd, evaluate_bpd
from .classifier_loss import AccuracyCurve, ClassifierLoss, classifier_accuracy
from .data import (
    ImageData,
    LevelTransform,
    VectorData,
    gmm8,
    load_dataset,
    mixture_entropy,
)
from .evaluation import (
    chunk_generator,
    chunk_seed,
    evaluate_nll,
    generate_samples,
    save_image_grid,
    save_loss_curve,
    save_samples_2d,
)
from .export import load_model, read_model_metadata, save_model
from .guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    classifier_free_guidance,
    classifier_guidance,
)
from .inverse import (
    Colorization,
    InverseResult,
    LinearOperator,
    Mask,
    MixturePosterior,
    SuperResolution,
    mixture_posterior,
    solve_inverse,
)
from .likelihood import (
    LikelihoodResult,
    exact_divergence,
    hutchinson_divergence,
    log_likelihood,
)
from .losses import (
    WEIGHTINGS,
    DSMLoss,
    ImportanceSampler,
    UniformTime,
    dsm_loss,
    likelihood_weighting,
    std2_weighting,
)
from .metrics import (
    KID,
    DigitsClassifier,
    FeatureExtractor,
    InceptionFeatures,
    PrecisionRecall,
    classifier_scores,
    feature_metrics,
    frechet_distance,
    image_metrics,
    kernel_distance,
    precision_recall,
    reference_metrics,
)
from .nets import MLP, ConvClassifier, GaussianFourierEmbedding, NoisyClassifier, SinusoidalEmbedding, UNet
from .noise import KeyedNoise
from .oracle import GaussianMixture, energy_distance
from .reverse import ProbabilityFlowODE, ReverseSDE, ScoreCheck
from .sampling import SampleResult, encode, sample
from .score import PARAMETERIZATIONS, ScoreModel
from .sde import SDE, VESDE, VPSDE, KernelCoefficients, LinearSDE, SubVPSDE
from .sde_schedules import EDMSDE, CosineVPSDE
from .solvers import (
    CORRECTORS,
    DDIM,
    IPNDM,
    PREDICTORS,
    AncestralPredictor,
    AnnealedLangevin,
    Corrector,
    DPMSolverPlusPlus,
    EulerMaruyama,
    EulerMaruyamaPredictor,
    Heun,
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
    UniPC,
)
from .training import (
    EMA,
    Batches,
    Callback,
    CheckpointError,
    Checkpoints,
    NonFinite,
    PeriodicEval,
    ProgressBar,
    ProgressPrinter,
    Trainer,
    UnsafeCheckpointError,
    WarmupCosine,
)

__version__ = "0.1.0"

# fmt: off
__all__ = [
    "SDE", "VPSDE", "SubVPSDE", "VESDE", "LinearSDE", "CosineVPSDE", "EDMSDE", "KernelCoefficients",
    "ReverseSDE",
    "ProbabilityFlowODE", "ScoreCheck", "Solver", "SteppingSolver", "StepInfo", "StepOutput",
    "EulerMaruyama", "PredictorCorrector", "ProbabilityFlow", "Heun", "IPNDM", "DDIM",
    "DPMSolverPlusPlus", "UniPC", "Predictor", "Corrector",
    "EulerMaruyamaPredictor", "ReverseDiffusionPredictor", "AncestralPredictor", "Langevin",
    "AnnealedLangevin", "NoCorrector", "PREDICTORS", "CORRECTORS", "sample", "encode",
    "SampleResult", "KeyedNoise", "log_likelihood", "LikelihoodResult", "bits_per_dim", "exact_divergence",
    "hutchinson_divergence", "GaussianMixture", "energy_distance", "dsm_loss", "ImportanceSampler",
    "WEIGHTINGS", "DSMLoss", "UniformTime", "std2_weighting", "likelihood_weighting", "ScoreModel",
    "PARAMETERIZATIONS", "Trainer", "Batches", "EMA", "WarmupCosine", "Checkpoints", "NonFinite",
    "Callback", "ProgressBar", "ProgressPrinter", "PeriodicEval", "CheckpointError", "UnsafeCheckpointError",
    "evaluate_nll",
    "evaluate_bpd", "generate_samples", "chunk_seed", "chunk_generator", "save_image_grid",
    "save_samples_2d", "save_loss_curve", "MLP", "UNet", "GaussianFourierEmbedding",
    "SinusoidalEmbedding", "load_dataset", "VectorData", "ImageData", "LevelTransform", "dequantized_bpd",
    "mixture_entropy", "gmm8", "distributed", "checks", "save_model", "load_model",
    "read_model_metadata", "metrics", "dequantization", "frechet_distance", "kernel_distance", "KID",
    "precision_recall",
    "PrecisionRecall", "FeatureExtractor", "DigitsClassifier", "InceptionFeatures", "classifier_scores",
    "feature_metrics", "image_metrics", "reference_metrics", "NoisyClassifier", "ConvClassifier",
    "ClassifierLoss", "classifier_accuracy", "AccuracyCurve", "classifier_free_guidance",
    "classifier_guidance", "ClassifierFreeGuidance", "ClassifierGuidance", "inverse", "LinearOperator",
    "Mask", "Colorization", "SuperResolution", "solve_inverse", "InverseResult", "mixture_posterior",
    "MixturePosterior",
]
# fmt: on
