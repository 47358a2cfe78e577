"""Feature extractors, classifier scores, and the metrics of a sample set next to their reference floor.

A feature extractor is any callable ``features(images) -> (N, D)`` tensor; :class:`FeatureExtractor`
is the small base class the built-in ones share (``__call__`` and ``dim``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..._checks import ArgumentTypeError, ArgumentValueError
from .distances import as_features, frechet_distance, kernel_distance, precision_recall

__all__ = [
    "FeatureExtractor",
    "classifier_scores",
    "feature_metrics",
    "image_metrics",
    "reference_metrics",
]


class FeatureExtractor:
    """What the metrics need of a feature network: ``extractor(images) -> (N, dim)`` tensor.

    Any callable with that signature works wherever an extractor is taken (a ``dim`` attribute is
    then optional); subclasses set ``dim`` and implement ``__call__``. Images are ``(N, C, H, W)``,
    integer levels or floats in ``[-1, 1]``, as sde_gen stores data and as the sampler returns them.
    """

    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def check_images(name: str, images, *, channels=None, shape=None) -> torch.Tensor:
    """A tensor (or NumPy array) ``(N, C, H, W)`` with ``N >= 1``, integer or floating, finite;
    optionally ``C`` in ``channels`` or ``(C, H, W) == shape``. Floats far outside ``[-1, 1]``
    (``|x| > 5``) give a warning: they are most likely levels or ``[0, 255]`` pixels as floats."""
    if not isinstance(images, torch.Tensor) and hasattr(images, "__array__"):  # NumPy, a memory map
        images = torch.as_tensor(np.asarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.is_complex() or images.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer levels or real numbers, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
    if channels is not None and images.shape[1] not in channels:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, channels))} channels, got {tuple(images.shape)}"
        )
    if shape is not None and tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, shape))}), got {tuple(images.shape)}"
        )
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        bad = (~torch.isfinite(images.reshape(images.shape[0], -1))).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(
            f"{name} holds non-finite values (NaN or inf) in {len(bad)} images (first {bad[:10]})"
        )
    if images.is_floating_point() and images.numel() and float(images.abs().max()) > 5:
        warnings.warn(
            f"{name}: float images are read in model space [-1, 1], but these reach "
            f"[{float(images.min()):.3g}, {float(images.max()):.3g}]; give images stored as levels "
            "as an integer tensor (e.g. torch.uint8)",
            stacklevel=3,
        )
    return images


def classifier_scores(logits, labels=None) -> dict:
    """Scores of a sample set from a classifier's logits ``(N, K)`` (float64 inside).

    With ``p(y|x) = softmax(logits)`` and ``p(y) = mean_x p(y|x)``:

    - ``mean_entropy = E_x H(p(y|x))``, in nats: low when each sample looks like one class;
    - ``class_entropy = H(p(y))``: high (at most ``log K``) when the classes are evenly covered;
    - ``inception_score = exp(E_x KL(p(y|x) || p(y)))`` (Salimans et al. 2016) computed with the
      given classifier rather than Inception; ``E_x KL = class_entropy - mean_entropy`` (the mutual
      information of x and y), so it lies in ``[1, K]``: ``K`` for confident, evenly spread samples;
    - with ``labels`` ``(N,)``: ``accuracy``, the fraction of ``argmax`` equal to the label.
    """
    logits = as_features("logits", logits, min_rows=1)
    logp = torch.log_softmax(logits, dim=1)
    p = logp.exp()
    h = -(p * logp).sum(dim=1)
    py = p.mean(dim=0)
    log_py = torch.log(py)
    class_entropy = -(py * torch.where(py > 0, log_py, 0)).sum()
    kl = (p * (logp - log_py)).nan_to_num(0.0).sum(dim=1)  # 0 log 0 = 0 where p(y|x) underflows
    out = {
        "mean_entropy": float(h.mean()),
        "class_entropy": float(class_entropy),
        "inception_score": math.exp(float(kl.mean())),
    }
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape != (logits.shape[0],):
            raise ArgumentValueError(
                "labels", labels, f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}"
            )
        out["accuracy"] = float((logits.argmax(dim=1).cpu() == labels.cpu()).double().mean())
    return out


def feature_metrics(
    real_feats, fake_feats, *, kid_subsets: int = 100, kid_subset_size: int = 1000, k: int = 3, generator=None
) -> dict:
    """FD, KID (with its standard error), precision and recall of ``fake_feats`` against ``real_feats``
    (both ``(N, D)``), as a dict: ``fd``, ``kid``, ``kid_se``, ``precision``, ``recall``, ``n_real``,
    ``n_fake``. ``generator`` draws KID's subsets."""
    real_feats = as_features("real_feats", real_feats)
    fake_feats = as_features("fake_feats", fake_feats)
    kid = kernel_distance(real_feats, fake_feats, kid_subsets, kid_subset_size, generator=generator)
    pr = precision_recall(real_feats, fake_feats, k=k)
    return {
        "fd": frechet_distance(real_feats, fake_feats),
        "kid": kid.kid,
        "kid_se": kid.se,
        "precision": pr.precision,
        "recall": pr.recall,
        "n_real": real_feats.shape[0],
        "n_fake": fake_feats.shape[0],
    }


def image_metrics(extractor, real, fake, **kwargs) -> dict:
    """:func:`feature_metrics` of ``extractor(fake)`` against ``extractor(real)`` (image tensors
    ``(N, C, H, W)``); ``kwargs`` go to :func:`feature_metrics`."""
    if not callable(extractor):
        raise ArgumentTypeError(
            "extractor",
            extractor,
            f"extractor must be callable as extractor(images) -> (N, D), got {type(extractor).__name__}",
        )
    return feature_metrics(extractor(real), extractor(fake), **kwargs)


def reference_metrics(extractor, train_images, test_images, **kwargs) -> dict:
    """The floor a model is judged against: :func:`image_metrics` with the held-out real images in
    the place of the samples (``real = train_images``, ``fake = test_images``).

    A model's samples are compared with the same ``train_images``; FD and the k-NN radii depend on
    the number of points, so draw as many samples as there are test images for a like-for-like
    comparison. A perfect model scores about this floor, not zero.
    """
    return image_metrics(extractor, train_images, test_images, **kwargs)
