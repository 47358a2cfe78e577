"""Sample quality of generated samples against a data set, each figure beside its reference floor."""

from __future__ import annotations

import torch

from .._checks import ArgumentTypeError, check_choice, check_int, check_tensor
from ..data import ImageData
from ..data.oracle import energy_distance
from .metrics import DigitsClassifier, InceptionFeatures, classifier_scores, feature_metrics

FIGURES = ("fd", "kid", "kid_se", "precision", "recall")


class SampleQuality:
    """Scores samples against ``data`` (an :class:`sde_gen.ImageData` or :class:`sde_gen.VectorData`),
    each figure beside its *reference*: the same figure for as many held-out points, which is the
    floor a perfect model reaches at that sample size.

    Images: Fréchet distance, KID and its standard error, precision and recall (k-NN with ``k``)
    against the training images, in the features of ``extractor``: ``"classifier"``
    (:class:`sde_gen.DigitsClassifier`, trained once on the training split and cached), ``"inception"``
    (:class:`sde_gen.InceptionFeatures` from a local weights file) or ``"auto"`` (the classifier for
    grey images, Inception for RGB); a :class:`sde_gen.FeatureExtractor` may be passed as ``features``
    instead. With a classifier, also the entropies of its predicted classes and, given the labels
    the samples were drawn for, ``class_accuracy``. Vector data: the energy distance to the held-out
    set and, where the data density is known, the mean exact log-density of the samples.

    ``num`` is how many samples are scored (``None``: as many as the held-out set; see :meth:`count`);
    ``enabled=False`` marks the scoring as switched off (callers skip it).
    """

    EXTRACTORS = ("auto", "classifier", "inception")

    def __init__(
        self,
        num: int | None = None,
        extractor: str = "auto",
        k: int = 3,
        kid_subsets: int = 100,
        enabled: bool = True,
        *,
        features=None,
    ):
        self.num = None if num is None else check_int("num", num, low=2)
        self.extractor = check_choice("extractor", extractor, self.EXTRACTORS)
        self.k = check_int("k", k, low=1)
        self.kid_subsets = check_int("kid_subsets", kid_subsets, low=1)
        if not isinstance(enabled, bool):
            raise ArgumentTypeError("enabled", enabled, f"enabled must be a bool, got {enabled!r}")
        self.enabled = enabled
        self._features = features
        self._train_features = None

    def count(self, data, drawn: int) -> int:
        """How many samples are scored: ``num``, else as many as the held-out set for images and
        the ``drawn`` samples (at most the held-out set) for vector data."""
        if self.num is not None:
            return self.num
        return data.test.shape[0] if isinstance(data, ImageData) else min(drawn, data.test.shape[0])

    def features(self, data):
        """The feature extractor for image ``data`` (built once; the classifier trains or loads
        from its cache here)."""
        if self._features is None:
            rgb = data.shape[0] == 3
            kind = self.extractor if self.extractor != "auto" else ("inception" if rgb else "classifier")
            self._features = InceptionFeatures() if kind == "inception" else DigitsClassifier(data)
        return self._features

    def train_features(self, data) -> torch.Tensor:
        """The training images' features, computed once."""
        if self._train_features is None:
            self._train_features = self.features(data)(data.train)
        return self._train_features

    def __call__(
        self, samples: torch.Tensor, data, *, seed: int = 0, labels: torch.Tensor | None = None
    ) -> dict:
        """The figures of ``samples`` ``(n, ...)`` and their ``*_reference`` floors, as a flat dict.
        The reference scores the first ``n`` held-out points (all of them where there are fewer),
        so that both sides of a figure share its small-sample bias. ``seed`` draws KID's subsets."""
        samples = check_tensor("samples", samples)
        n = samples.shape[0]
        if not isinstance(data, ImageData):
            return self._vector(samples, data)
        feats = self.features(data)
        train = self.train_features(data)
        kw = dict(kid_subsets=self.kid_subsets, k=self.k)
        model = feature_metrics(train, feats(samples), generator=torch.Generator().manual_seed(seed), **kw)
        ref = feature_metrics(
            train, feats(data.test[:n]), generator=torch.Generator().manual_seed(seed), **kw
        )
        out = {key: model[key] for key in FIGURES}
        out.update({f"{key}_reference": ref[key] for key in FIGURES})
        if hasattr(feats, "logits"):
            scores = classifier_scores(feats.logits(samples), labels)
            if labels is not None:
                out["class_accuracy"] = scores["accuracy"]
            out["sample_class_entropy"] = scores["class_entropy"]
            out["sample_mean_entropy"] = scores["mean_entropy"]
            out["classifier_test_accuracy"] = feats.accuracy
        return out

    @staticmethod
    def _vector(samples: torch.Tensor, data) -> dict:
        n = samples.shape[0]
        x = samples.double().reshape(n, -1)
        test = data.test[:n].double().reshape(-1, x.shape[1])
        half = data.train[:n].double().reshape(-1, x.shape[1])
        out = {
            "energy_distance": energy_distance(x, test),
            "energy_distance_reference": energy_distance(half, test),
        }
        if data.log_prob is not None:
            out["sample_log_prob"] = float(data.log_prob(x).mean())
            out["sample_log_prob_reference"] = float(data.log_prob(test).mean())
        return out
