"""Evaluating a trained score model into a directory: samples, their picture and quality, likelihood."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import distributed as dist_utils
from .._checks import check_eps, check_int, check_real
from ..data import ImageData
from ..sampling.guidance import classifier_free_guidance
from .drivers import generate_samples
from .heldout import HeldoutLikelihood
from .plots import save_image_grid, save_samples_2d
from .quality import SampleQuality


class SamplePlan:
    """What is drawn for a picture: ``num`` samples down to time ``eps`` (``T`` the SDE's end time;
    images are denoised with Tweedie's formula). A class-conditional model (``num_classes = K``)
    draws class-balanced labels, one picture row per class, guided with classifier-free guidance
    of weight ``w`` (Ho & Salimans 2021; ``w = 0`` is the conditional model) inside the optional
    noise levels ``interval = (sigma_lo, sigma_hi)`` (:func:`sde_gen.classifier_free_guidance`)."""

    def __init__(self, num: int = 64, eps: float = 1e-3, *, T: float = 1.0, w: float = 0.0, interval=None):
        self.num = check_int("num", num, low=1)
        self.eps = check_eps(eps, T)
        self.w = check_real("w", w)
        self.interval = None if interval is None else tuple(float(v) for v in interval)

    def labels(self, num_classes: int, total: int) -> torch.Tensor:
        """Labels of ``total`` samples: the first ``num`` in ``num_classes`` runs of equal length
        (one row per class; ``num`` is rounded down to a multiple), the rest cycling through them."""
        per_class = max(self.num // num_classes, 1)
        head = torch.arange(num_classes).repeat_interleave(per_class)
        tail = torch.arange(max(total - head.numel(), 0)) % num_classes
        return torch.cat([head, tail])[:total]

    def score_fn(self, model, sde):
        """The score the samples are drawn with: ``model`` itself, or guided for ``w != 0``."""
        if getattr(model, "num_classes", None) is None or (self.w == 0.0 and self.interval is None):
            return model
        k = model.num_classes
        return classifier_free_guidance(model, self.w, null=k, interval=self.interval, sde=sde)


def evaluate_model(
    model,
    sde,
    data,
    solver,
    *,
    plan: SamplePlan | None = None,
    quality: SampleQuality | None = None,
    likelihood: HeldoutLikelihood | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 500,
    device=None,
    stage=None,
) -> dict:
    """Draw samples of ``model`` with ``solver`` and score them (with a ``plan``), and measure the
    held-out likelihood (with a ``likelihood``); returns the figures as a flat dict.

    One draw of ``max(plan.num, quality.count(...))`` samples in chunks of ``batch_size``: the first
    ``plan.num`` make the picture, the first ``quality.count`` are scored. Keyed noise
    (:func:`sde_gen.generate_samples`) makes a prefix independent of how many are drawn, so scoring
    more samples leaves the picture as it is. Seeds: ``seed + 10`` (samples), ``seed + 11``
    (likelihood), ``seed + 12`` (KID's subsets). With ``out_dir``, rank 0 writes ``samples.pt``
    (``labels.pt`` for a class-conditional model) and ``samples.png``. Adds ``sample_seconds``,
    ``sample_nfe`` and ``metrics_seconds``; ``model`` is put in eval mode.

    With a first ``stage`` (:class:`sde_gen.LatentStage`, :class:`sde_gen.LowResolutionStage`),
    ``model`` is its second: a latent model's samples are decoded before they are scored or saved
    and its likelihood is a bound (``test_bpd_bound``); a cascade's are drawn given the first
    stage's samples (``stage.condition``, seed ``seed + 13``; ``sample_nfe`` counts both stages) and
    it has no likelihood."""
    metrics, images = {}, isinstance(data, ImageData)
    shape = data.train.shape[1:] if stage is None else stage.shape(data)
    autoencoder = None if stage is None else stage.autoencoder
    model.eval()
    with torch.no_grad():
        if plan is not None:
            scored = quality.count(data, plan.num) if quality is not None and quality.enabled else 0
            start, k, num = time.perf_counter(), getattr(model, "num_classes", None), max(plan.num, scored)
            labels = None if k is None else plan.labels(k, num)
            kw = dict(seed=seed + 13, batch_size=batch_size, eps=plan.eps, device=device)
            given, first_nfe = (None, 0) if stage is None else stage.condition(num, **kw)
            cond = {**({} if labels is None else {"y": labels}), **(given or {})}
            res = generate_samples(
                sde, plan.score_fn(model, sde), num, shape, solver, seed=seed + 10,
                batch_size=batch_size, eps=plan.eps, denoise=images, device=device, cond=cond or None,
            )  # fmt: skip
            res["nfe"] += first_nfe  # a cascade: its first stage's evaluations too
            if autoencoder is not None:
                res["samples"] = torch.cat(
                    [autoencoder.from_latent(u.to(device)).cpu() for u in res["samples"].split(500)]
                )
            metrics.update(sample_seconds=time.perf_counter() - start, sample_nfe=res["nfe"])
            if out_dir is not None and dist_utils.is_main_process():
                rows = None if k is None else max(plan.num // k, 1)
                save_samples(res["samples"], data, Path(out_dir), plan.num, rows, labels)
            if scored:
                start, y = time.perf_counter(), None if labels is None else labels[:scored]
                metrics.update(quality(res["samples"][:scored], data, seed=seed + 12, labels=y))
                metrics["metrics_seconds"] = time.perf_counter() - start
        if likelihood is not None and (stage is None or stage.likelihood):
            metrics.update(
                likelihood(sde, model, data, seed=seed + 11, device=device, autoencoder=autoencoder)
            )
    return metrics


def save_samples(x, data, out_dir: Path, picture: int | None = None, nrow: int | None = None, labels=None):
    """``samples.pt`` (and ``labels.pt``) in ``out_dir`` and ``samples.png``: the first ``picture``
    samples as an image grid of ``nrow`` per row, or 2-D samples over the data density."""
    torch.save(x, out_dir / "samples.pt")
    if labels is not None:
        torch.save(labels, out_dir / "labels.pt")
    if isinstance(data, ImageData):
        save_image_grid(x[:picture], out_dir / "samples.png", nrow=nrow)
    elif x.shape[1] == 2:
        shown = None if data.log_prob else data.test
        title = f"{x.shape[0]} samples"
        save_samples_2d(x, out_dir / "samples.png", log_prob=data.log_prob, data=shown, title=title)
