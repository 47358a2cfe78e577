"""Models: :class:`ScoreModel` (a network as a score function, ``score.py``), what the network
predicts (``parameterizations.py``: noise, score, data, v, flow, EDM's preconditioning), noise-conditional
networks ``net(x, t) -> tensor shaped like x`` (``t`` of shape ``(B,)``; class-conditional with
``num_classes``: ``net(x, t, y=labels)``), noise-conditional classifiers ``p(y | x_t, t)`` and
autoencoders for latent models (``autoencoder.py``, ``autoencoder_kl.py``)."""

from .autoencoder import Autoencoder, LinearAutoencoder
from .autoencoder_kl import AutoencoderKL
from .classifier import ConvClassifier, NoisyClassifier
from .embeddings import (
    TIME_EMBEDDINGS,
    GaussianFourierEmbedding,
    SinusoidalEmbedding,
    make_time_embedding,
)
from .mlp import MLP
from .parameterizations import (
    PARAMETERIZATIONS,
    DataPrediction,
    EDMPreconditioning,
    FlowPrediction,
    NoisePrediction,
    Parameterization,
    ScorePrediction,
    VPrediction,
    objective_for,
    parameterization,
)
from .score import ScoreModel
from .superres import SuperResolutionUNet
from .unet import UNet

__all__ = [
    "ScoreModel",
    "PARAMETERIZATIONS",
    "Parameterization",
    "NoisePrediction",
    "ScorePrediction",
    "DataPrediction",
    "VPrediction",
    "FlowPrediction",
    "EDMPreconditioning",
    "parameterization",
    "objective_for",
    "MLP",
    "UNet",
    "SuperResolutionUNet",
    "ConvClassifier",
    "NoisyClassifier",
    "Autoencoder",
    "LinearAutoencoder",
    "AutoencoderKL",
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "TIME_EMBEDDINGS",
    "make_time_embedding",
]
