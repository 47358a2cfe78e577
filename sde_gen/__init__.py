"""sde_gen: score-based generative modelling in continuous time (Song et al. 2021) in PyTorch.

``import sde_gen as sg``: the names in ``sg.__all__`` are the supported API. The subpackages
(``sdes``, ``data``, ``models``, ``sampling``, ``likelihood``, ``files``, ``training``,
``evaluation``; docs/architecture.md) are how the code is laid out, not import paths to rely on:
files move between releases without notice. Module paths of sde_gen 0.1 still import, with a
``DeprecationWarning``, until 0.3 (``_compat.py``; CHANGELOG.md has the table).
"""

from . import _checks as checks  # argument checks that name the argument, for code built on sde_gen
from . import _compat, distributed
from ._checks import ScoreCheck
from .data import ImageData, LevelTransform, VectorData, gmm8, load_dataset, mixture_entropy
from .data.oracle import GaussianMixture, energy_distance
from .data.transforms import bits_per_dim
from .evaluation import (
    HEADLINE_METRICS,
    HeldoutEval,
    HeldoutLikelihood,
    HistoryFile,
    SamplePlan,
    SampleQuality,
    WandbLogger,
    chunk_generator,
    chunk_seed,
    evaluate_bpd,
    evaluate_model,
    evaluate_nll,
    generate_samples,
    metrics,
    metrics_table,
    read_history,
    results_table,
    save_image_grid,
    save_loss_curve,
    save_samples_2d,
)
from .evaluation.metrics import (
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
from .files import (
    CheckpointError,
    Checkpoints,
    UnsafeCheckpointError,
    load_model,
    read_model_metadata,
    save_model,
)
from .likelihood import (
    LikelihoodResult,
    dequantization,
    dequantized_bpd,
    exact_divergence,
    hutchinson_divergence,
    log_likelihood,
)
from .models import (
    MLP,
    PARAMETERIZATIONS,
    ConvClassifier,
    DataPrediction,
    EDMPreconditioning,
    FlowPrediction,
    GaussianFourierEmbedding,
    NoisePrediction,
    NoisyClassifier,
    Parameterization,
    ScoreModel,
    ScorePrediction,
    SinusoidalEmbedding,
    UNet,
    VPrediction,
    parameterization,
)
from .sampling import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    KeyedNoise,
    SampleResult,
    classifier_free_guidance,
    classifier_guidance,
    encode,
    inverse,
    sample,
)
from .sampling.inverse import (
    Colorization,
    InverseResult,
    LinearOperator,
    Mask,
    MixturePosterior,
    SuperResolution,
    mixture_posterior,
    solve_inverse,
)
from .sampling.solvers import (
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
    SolverState,
    StepInfo,
    StepOutput,
    SteppingSolver,
    UniPC,
)
from .sdes import (
    EDMSDE,
    SDE,
    VESDE,
    VPSDE,
    CosineVPSDE,
    KernelCoefficients,
    LinearSDE,
    ProbabilityFlowODE,
    RectifiedFlow,
    ReverseSDE,
    SubVPSDE,
)
from .training import (
    COUPLINGS,
    EMA,
    TIME_SAMPLERS,
    WEIGHTINGS,
    AccuracyCurve,
    Batches,
    Callback,
    ClassifierLoss,
    DSMLoss,
    EDMWeighting,
    ImportanceSampler,
    LogitNormalTime,
    LogNormalNoise,
    MinSNRWeighting,
    NonFinite,
    PeriodicEval,
    ProgressBar,
    ProgressPrinter,
    SigmoidWeighting,
    Trainer,
    UniformTime,
    WarmupCosine,
    Weighting,
    classifier_accuracy,
    dsm_loss,
    flow_weighting,
    likelihood_weighting,
    ot_permutation,
    reflow_pairs,
    std2_weighting,
    time_sampler,
    weighting,
)

_compat.install()

__version__ = "0.1.0"

# fmt: off
__all__ = [
    "SDE", "VPSDE", "SubVPSDE", "VESDE", "LinearSDE", "CosineVPSDE", "EDMSDE", "KernelCoefficients",
    "RectifiedFlow", "ReverseSDE",
    "ProbabilityFlowODE", "ScoreCheck", "Solver", "SolverState", "SteppingSolver", "StepInfo", "StepOutput",
    "EulerMaruyama", "PredictorCorrector", "ProbabilityFlow", "Heun", "IPNDM", "DDIM",
    "DPMSolverPlusPlus", "UniPC", "Predictor", "Corrector",
    "EulerMaruyamaPredictor", "ReverseDiffusionPredictor", "AncestralPredictor", "Langevin",
    "AnnealedLangevin", "NoCorrector", "PREDICTORS", "CORRECTORS", "sample", "encode",
    "SampleResult", "KeyedNoise", "log_likelihood", "LikelihoodResult", "bits_per_dim", "exact_divergence",
    "hutchinson_divergence", "GaussianMixture", "energy_distance", "dsm_loss", "ImportanceSampler",
    "WEIGHTINGS", "DSMLoss", "UniformTime", "std2_weighting", "likelihood_weighting", "flow_weighting",
    "COUPLINGS", "ot_permutation", "reflow_pairs", "ScoreModel",
    "PARAMETERIZATIONS", "Parameterization", "NoisePrediction", "ScorePrediction", "DataPrediction",
    "VPrediction", "FlowPrediction", "EDMPreconditioning", "parameterization", "Weighting", "MinSNRWeighting",
    "EDMWeighting", "SigmoidWeighting", "weighting", "LogNormalNoise", "LogitNormalTime", "TIME_SAMPLERS",
    "time_sampler", "Trainer", "Batches", "EMA", "WarmupCosine", "Checkpoints", "NonFinite",
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
    "MixturePosterior", "SampleQuality", "HeldoutLikelihood", "HeldoutEval", "HistoryFile", "read_history",
    "results_table", "metrics_table", "HEADLINE_METRICS", "WandbLogger", "SamplePlan", "evaluate_model",
]
# fmt: on
