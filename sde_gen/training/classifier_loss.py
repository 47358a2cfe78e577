"""Training and evaluating a noise-conditional classifier ``p(y | x_t, t)`` (Song et al. 2021, Sec. 5
and App. I.4; Dhariwal & Nichol 2021, Sec. 4).

The loss is the cross-entropy of the true label on ``x_t = mean(x_0, t) + std(t) z`` from the
SDE's kernel at ``t ~ U(eps, T)``,

    L = E_t E_{x_0, y} E_{x_t | x_0} [ -log p_theta(y | x_t, t) ],

minimised by the exact ``p(y | x_t)`` for every ``t`` (the responsibilities, for a labelled
Gaussian mixture). :class:`ClassifierLoss` has the interface of :class:`~sde_gen.DSMLoss`
(``draw``, ``draws=``), so a :class:`~sde_gen.Trainer` trains it unchanged, data-parallel too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch

from .._checks import ArgumentTypeError, ArgumentValueError, check_int, check_tensor
from .._utils import batch_broadcast
from ..models.classifier import NoisyClassifier, check_class_labels
from ..sdes.base import check_sde
from .losses import DSMDraws, DSMLoss

__all__ = ["ClassifierLoss", "AccuracyCurve", "classifier_accuracy"]


class ClassifierLoss:
    """Per-example cross-entropy of a noise-conditional classifier: ``ClassifierLoss(sde)(model, x,
    y=labels) -> (B,)``, ``model(x_t, t) -> logits (B, K)`` (e.g. a :class:`NoisyClassifier`).

    Args:
        sde: the forward SDE whose kernel noises the data.
        eps: the smallest time.
        time_sampler: another time distribution (as for :class:`~sde_gen.DSMLoss`; its weights
            multiply the loss); default uniform on ``[eps, T]``.
    """

    def __init__(self, sde, *, eps: float = 1e-5, time_sampler=None):
        self.sde = check_sde(sde)
        # The time sampler, its checks and the draws are those of DSMLoss (t first, then z).
        self._dsm = DSMLoss(sde, time_sampler=time_sampler, eps=eps)
        self.eps, self.time_sampler = self._dsm.eps, self._dsm.time_sampler

    def __repr__(self) -> str:
        return f"ClassifierLoss(time_sampler={self.time_sampler!r})"

    def draw(self, x: torch.Tensor, generator: torch.Generator | None = None) -> DSMDraws:
        """Draw ``t`` and then the noise ``z`` for the batch ``x``, in that order from ``generator``."""
        return self._dsm.draw(x, generator)

    def __call__(
        self,
        model: Callable,
        x: torch.Tensor,
        *,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        draws: DSMDraws | None = None,
    ) -> torch.Tensor:
        """``-log p(y | x_t, t)`` ``(B,)`` for data ``x`` ``(B, ...)`` with labels ``y`` ``(B,)``;
        ``draws`` (from :meth:`draw`) fixes the times and noise, then ``generator`` is not used."""
        if not callable(model):
            raise ArgumentTypeError(
                "model",
                model,
                f"model must be callable as model(x_t, t) -> logits, got {type(model).__name__}",
            )
        x = check_tensor("x", x)
        if y is None:
            raise ValueError(
                "ClassifierLoss needs the labels: loss(model, x, y=labels) (Batches(..., labels=))"
            )
        draws = self._dsm.draws_for(x, generator, draws)
        mean, std = self.sde.marginal(x, draws.t)
        x_t = mean + batch_broadcast(std, x) * draws.z
        logits = model(x_t, draws.t)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ArgumentValueError(
                "model", model, f"model must return logits of shape (B, K) = ({x.shape[0]}, K), got {got}"
            )
        y = check_class_labels(y, x.shape[0], logits.shape[1]).to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        return loss if draws.inv_p is None else loss * draws.inv_p


class AccuracyCurve(NamedTuple):
    """Held-out accuracy against time: ``times`` ``(M,)``, ``accuracy`` ``(M,)`` and its binomial
    standard error ``stderr = sqrt(a (1 - a) / n)`` ``(M,)``, all float64."""

    times: torch.Tensor
    accuracy: torch.Tensor
    stderr: torch.Tensor


@torch.no_grad()
def classifier_accuracy(
    classifier,
    sde,
    x: torch.Tensor,
    y: torch.Tensor,
    times: Iterable[float] | torch.Tensor,
    *,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> AccuracyCurve:
    """The accuracy of ``argmax_k p(k | x_t)`` on held-out ``x`` ``(N, ...)`` with labels ``y``
    ``(N,)``, noised by ``sde``'s kernel to each time of ``times``.

    ``classifier`` is a :class:`NoisyClassifier` (one evaluation per batch) or any
    ``log_prob_fn(x, t, y) -> (B,)`` with ``num_classes`` given (``K`` evaluations, e.g. the exact
    ``GaussianMixture.classifier_fn(sde)``, the Bayes classifier). The noise ``z`` is drawn once
    from ``generator`` and shared by every time (common random numbers: the curve is smooth in t).
    """
    check_sde(sde)
    x = check_tensor("x", x)
    if isinstance(classifier, NoisyClassifier):
        K = classifier.num_classes
        if K is None:  # the network does not say: read it off one evaluation
            K = classifier(x[:1], torch.full((1,), float(sde.T), dtype=x.dtype, device=x.device)).shape[1]
    elif callable(classifier):
        K = check_int("num_classes", num_classes, low=2) if num_classes is not None else None
        if K is None:
            raise ArgumentValueError(
                "num_classes", num_classes, "num_classes is needed when classifier is a log_prob_fn(x, t, y)"
            )
    else:
        raise ArgumentTypeError(
            "classifier",
            classifier,
            "classifier must be a NoisyClassifier or a log_prob_fn(x, t, y), got "
            f"{type(classifier).__name__}",
        )
    batch_size = check_int("batch_size", batch_size, low=1)
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if times.numel() == 0 or not bool(((times > 0) & (times <= sde.T)).all()):
        raise ArgumentValueError(
            "times",
            times,
            f"times must be a non-empty sequence in (0, T] = (0, {sde.T}], got {times.tolist()}",
        )
    y = check_class_labels(y, x.shape[0], K).to(x.device)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    acc = []
    for s in times.tolist():
        correct = 0
        for i in range(0, x.shape[0], batch_size):
            xb, zb = x[i : i + batch_size], z[i : i + batch_size]
            t = torch.full((xb.shape[0],), s, dtype=x.dtype, device=x.device)
            mean, std = sde.marginal(xb, t)
            x_t = mean + batch_broadcast(std, xb) * zb
            if isinstance(classifier, NoisyClassifier):
                scores = classifier(x_t, t)
            else:
                scores = torch.stack(
                    [classifier(x_t, t, torch.full_like(y[i : i + xb.shape[0]], k)) for k in range(K)], dim=1
                )
            correct += int((scores.argmax(dim=1) == y[i : i + xb.shape[0]]).sum())
        acc.append(correct / x.shape[0])
    a = torch.tensor(acc, dtype=torch.float64)
    return AccuracyCurve(times, a, (a * (1 - a) / x.shape[0]).sqrt())
