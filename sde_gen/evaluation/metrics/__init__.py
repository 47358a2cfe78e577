"""Sample-quality metrics: Fréchet distance, KID, precision and recall, on the features of a
classifier trained on the data (digits, MNIST) or of the FID Inception network (RGB images).

See docs/metrics.md. Everything here works on feature sets ``(N, D)`` or on image tensors
``(N, C, H, W)`` given with a feature extractor, any callable ``images -> (N, D)``.
"""

from .classifier import DigitsClassifier, default_cache_dir
from .distances import KID, PrecisionRecall, frechet_distance, kernel_distance, precision_recall
from .features import (
    FeatureExtractor,
    classifier_scores,
    feature_metrics,
    image_metrics,
    reference_metrics,
)
from .inception import FID_WEIGHTS_FILE, FIDInceptionV3, InceptionFeatures, find_fid_weights

__all__ = [
    "frechet_distance",
    "kernel_distance",
    "KID",
    "precision_recall",
    "PrecisionRecall",
    "FeatureExtractor",
    "DigitsClassifier",
    "InceptionFeatures",
    "FIDInceptionV3",
    "FID_WEIGHTS_FILE",
    "find_fid_weights",
    "classifier_scores",
    "feature_metrics",
    "image_metrics",
    "reference_metrics",
    "default_cache_dir",
]
