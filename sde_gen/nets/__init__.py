"""Noise-conditional networks ``net(x, t) -> tensor shaped like x`` (``t`` of shape ``(B,)``)."""

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
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "TIME_EMBEDDINGS",
    "make_time_embedding",
]
