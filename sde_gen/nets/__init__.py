"""Noise-conditional networks ``net(x, t) -> tensor shaped like x`` (``t`` of shape ``(B,)``;
class-conditional with ``num_classes``: ``net(x, t, y=labels)``) and noise-conditional classifiers
``p(y | x_t, t)``."""

from .classifier import ConvClassifier, NoisyClassifier
from .embeddings import (
    TIME_EMBEDDINGS,
    GaussianFourierEmbedding,
    SinusoidalEmbedding,
    make_time_embedding,
)
from .mlp import MLP
from .unet import UNet

__all__ = [
    "MLP",
    "UNet",
    "ConvClassifier",
    "NoisyClassifier",
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "TIME_EMBEDDINGS",
    "make_time_embedding",
]
