"""Train, sample and evaluate one model into a run directory: the job behind experiments/run.py.

Everything arrives as built objects (a :class:`sde_gen.Trainer` holding the model, loss,
optimiser and checkpoints; the SDE; the data; a sampling solver; the :class:`Sampling` and
:class:`Likelihood` settings); this module knows no configuration system. It writes into
``out_dir``: ``checkpoints/`` (through the trainer), ``metrics.json``, ``samples.png`` and
``samples.pt``, the loss curve ``loss.png`` and ``history.json``. Re-running with the same
``out_dir`` resumes training from the newest checkpoint.

Under ``torchrun`` every rank calls :func:`run`: training is data-parallel, sampling and the
likelihood are split over the ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from pathlib import Path

import torch

import sde_gen as sg

check_choice, check_eps, check_int, check_positive, check_real = (
    sg.checks.check_choice,
    sg.checks.check_eps,
    sg.checks.check_int,
    sg.checks.check_positive,
    sg.checks.check_real,
)

__all__ = [
    "MODES",
    "Sampling",
    "Likelihood",
    "SampleMetrics",
    "HeldoutEval",
    "HistoryFile",
    "run",
    "evaluate",
    "save_samples",
]

MODES = ("train", "sample", "likelihood", "all", "evaluate")


class Sampling:
    """What mode ``sample`` draws: ``num`` samples down to time ``eps`` (images denoised with
    Tweedie's formula; chunks of ``likelihood.batch_size``), with ``T`` the SDE's end time.

    A class-conditional model (``num_classes = K``) draws class-balanced labels, the first ``num``
    as one picture row per class, and is guided with classifier-free guidance of weight ``w``
    (Ho & Salimans 2021; ``w = 0`` is the conditional model, ``guidance_scale = 1 + w``) inside the
    optional ``interval`` of noise levels ``(sigma_lo, sigma_hi)`` of ``sg.classifier_free_guidance``."""

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
        return sg.classifier_free_guidance(
            model, self.w, null=model.num_classes, interval=self.interval, sde=sde
        )


class Likelihood:
    """How mode ``likelihood`` measures the test NLL (vector data) or bits/dim (images) through the
    probability-flow ODE: the first ``n`` test points (``None``: all), the divergence (``"auto"``:
    exact for vector data, Hutchinson with ``num_probes`` probes for images), the ODE solver
    (``method``, ``steps`` for fixed grids, ``rtol``, ``atol``), the smallest time ``eps``,
    ``repeats`` dequantizations per image and chunks of ``batch_size``."""

    DIVERGENCES = ("auto", "exact", "hutchinson")

    def __init__(
        self,
        n: int | None = None,
        divergence: str = "auto",
        num_probes: int = 1,
        method: str = "dopri5",
        steps: int | None = None,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        eps: float = 1e-5,
        repeats: int = 1,
        batch_size: int = 500,
        *,
        T: float = 1.0,
    ):
        self.n = None if n is None else check_int("n", n, low=1)
        self.divergence = check_choice("divergence", divergence, self.DIVERGENCES)
        self.num_probes = check_int("num_probes", num_probes, low=1)
        # The solver checks method, steps, rtol and atol (a fixed grid: the same NFE on every rank).
        self.solver = sg.ProbabilityFlow(method=method, rtol=rtol, atol=atol, steps=steps)
        self.eps = check_eps(eps, T)
        self.repeats = check_int("repeats", repeats, low=1)
        self.batch_size = check_int("batch_size", batch_size, low=1)

    def divergence_for(self, images: bool) -> str:
        if self.divergence != "auto":
            return self.divergence
        return "hutchinson" if images else "exact"


class SampleMetrics:
    """Sample quality in modes ``sample``, ``all`` and ``evaluate``: ``num`` samples (``None``: as
    many as the held-out set) scored against the training set, each figure beside its reference
    floor (the held-out set scored the same way).

    Images: Fréchet distance, KID and its standard error, precision and recall (k-NN with ``k``)
    in the features of ``extractor``: ``"classifier"`` (:class:`sde_gen.DigitsClassifier`, trained
    once on the data's training split and cached; digits, mnist5k, mnist), ``"inception"``
    (:class:`sde_gen.InceptionFeatures` from a local weights file) or ``"auto"`` (the classifier
    for grey images with labels, Inception for RGB). Vector data: the energy distance to the
    held-out set and, where the data density is known, the mean exact log-density of the samples.
    ``enabled=False`` skips it all."""

    EXTRACTORS = ("auto", "classifier", "inception")

    def __init__(
        self,
        num: int | None = None,
        extractor: str = "auto",
        k: int = 3,
        kid_subsets: int = 100,
        enabled: bool = True,
    ):
        self.num = None if num is None else check_int("num", num, low=2)
        self.extractor = check_choice("extractor", extractor, self.EXTRACTORS)
        self.k = check_int("k", k, low=1)
        self.kid_subsets = check_int("kid_subsets", kid_subsets, low=1)
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {enabled!r}")
        self.enabled = enabled
        self._features = None
        self._train_features = None

    def count(self, data, drawn: int) -> int:
        """How many samples are scored: ``num``, else as many as the held-out set for images and
        the ``drawn`` samples (at most the held-out set) for vector data."""
        if self.num is not None:
            return self.num
        return data.test.shape[0] if isinstance(data, sg.ImageData) else min(drawn, data.test.shape[0])

    def features(self, data):
        """The feature extractor for image ``data`` (built once; the classifier trains or loads
        from its cache here)."""
        if self._features is None:
            rgb = data.shape[0] == 3
            kind = self.extractor if self.extractor != "auto" else ("inception" if rgb else "classifier")
            self._features = sg.InceptionFeatures() if kind == "inception" else sg.DigitsClassifier(data)
        return self._features

    def train_features(self, data) -> torch.Tensor:
        """The training images' features, computed once."""
        if self._train_features is None:
            self._train_features = self.features(data)(data.train)
        return self._train_features

    def __call__(self, samples: torch.Tensor, data, *, seed: int, labels: torch.Tensor | None = None) -> dict:
        """The figures of ``samples`` and their references, as a flat dict; with the ``labels`` the
        samples were drawn for, ``class_accuracy`` (the feature classifier's accuracy on them)."""
        g = torch.Generator().manual_seed(seed)
        if isinstance(data, sg.ImageData):
            feats = self.features(data)
            train = self.train_features(data)
            kw = dict(kid_subsets=self.kid_subsets, k=self.k)
            model = sg.feature_metrics(train, feats(samples), generator=g, **kw)
            ref = sg.feature_metrics(
                train, feats(data.test), generator=torch.Generator().manual_seed(seed), **kw
            )
            out = {key: model[key] for key in ("fd", "kid", "kid_se", "precision", "recall")}
            out.update(
                {f"{key}_reference": ref[key] for key in ("fd", "kid", "kid_se", "precision", "recall")}
            )
            if hasattr(feats, "logits"):
                scores = sg.classifier_scores(feats.logits(samples), labels)
                if labels is not None:
                    out["class_accuracy"] = scores["accuracy"]
                out["sample_class_entropy"] = scores["class_entropy"]
                out["sample_mean_entropy"] = scores["mean_entropy"]
                out["classifier_test_accuracy"] = feats.accuracy
            return out
        n = samples.shape[0]
        x = samples.double().reshape(n, -1)
        test = data.test[:n].double().reshape(-1, x.shape[1])
        half = data.train[:n].double().reshape(-1, x.shape[1])
        out = {
            "energy_distance": sg.energy_distance(x, test),
            "energy_distance_reference": sg.energy_distance(half, test),
        }
        if data.log_prob is not None:
            out["sample_log_prob"] = float(data.log_prob(x).mean())
            out["sample_log_prob_reference"] = float(data.log_prob(test).mean())
        return out


class HeldoutEval:
    """Periodic evaluation every ``every`` training steps (``None``: never) with the EMA weights:
    the training loss on ``n`` fixed test points, their bits/dim (images: one dequantization,
    1-probe Hutchinson) or NLL in nats (vector data) through the ODE at tolerance ``rtol``, and a
    picture of 64 probability-flow samples, ``samples_step<N>.png``."""

    def __init__(self, every: int | None = None, n: int = 256, rtol: float = 1e-3):
        self.every = None if every is None else check_int("every", every, low=1)
        self.n = check_int("n", n, low=1)
        self.rtol = check_positive("rtol", rtol)

    def callback(
        self, sde, data, loss_fn, *, seed: int, out_dir: Path | None, quality: SampleMetrics | None = None
    ) -> sg.PeriodicEval | None:
        """The trainer callback, or ``None`` when ``every`` is ``None``. With ``quality`` enabled,
        the 64 samples of the picture are also scored: ``eval_fd`` (images, the Fréchet distance to
        the training images in ``quality``'s features) or ``eval_energy_distance`` (vector data, to
        64 held-out points); over 64 samples these are noisier and larger than the final figures."""
        if self.every is None:
            return None
        images = isinstance(data, sg.ImageData)
        n = min(self.n, data.test.shape[0])
        g = torch.Generator().manual_seed(seed + 20)
        x = (
            sg.LevelTransform(data.levels, -1.0, 1.0).dequantize(data.test[:n], g)
            if images
            else data.test[:n]
        )
        quick = sg.ProbabilityFlow(rtol=self.rtol, atol=self.rtol)

        def eval_fn(trainer):
            gen = torch.Generator().manual_seed(seed + 21)  # the same t and noise at every evaluation
            model = trainer.model
            xb = x.to(trainer.device)
            with torch.no_grad():
                metrics = {"heldout_loss": float(loss_fn(model, xb, generator=gen).mean())}
            lik = sg.log_likelihood(
                sde, model, xb, solver=quick, divergence="hutchinson" if images else "exact", generator=gen
            )
            if images:
                metrics["eval_bpd"] = float(
                    sg.bits_per_dim(lik.log_prob.detach().cpu(), data.num_dims, levels=data.levels).mean()
                )
            else:
                metrics["eval_nll_nats"] = float(-lik.log_prob.detach().mean())
            if out_dir is not None and sg.distributed.is_main_process():  # the others go on to the next step
                with torch.no_grad():
                    xs = sg.sample(
                        sde,
                        model,
                        (64, *data.train.shape[1:]),
                        quick,
                        generator=gen,
                        denoise=images,
                        device=trainer.device,
                    )
                if quality is not None and quality.enabled:
                    xs_cpu = xs.detach().cpu()
                    if images:
                        fake = quality.features(data)(xs_cpu)
                        metrics["eval_fd"] = sg.frechet_distance(quality.train_features(data), fake)
                    else:
                        ref = data.test[: xs_cpu.shape[0]].double().reshape(xs_cpu.shape[0], -1)
                        metrics["eval_energy_distance"] = sg.energy_distance(
                            xs_cpu.double().reshape(ref.shape), ref
                        )
                path = out_dir / f"samples_step{trainer.step:08d}.png"
                if images:
                    sg.save_image_grid(xs, path)
                elif xs.shape[1] == 2:
                    sg.save_samples_2d(xs.cpu(), path, log_prob=data.log_prob, title=f"step {trainer.step}")
            return metrics

        return sg.PeriodicEval(eval_fn, self.every)


def run(
    trainer: sg.Trainer,
    sde,
    data,
    *,
    out_dir: str | Path,
    mode: str = "all",
    steps: int = 1000,
    solver: sg.Solver | None = None,
    sampling: Sampling | None = None,
    likelihood: Likelihood | None = None,
    quality: SampleMetrics | None = None,
    seed: int = 0,
    ckpt: str | Path | None = None,
    export: dict | None = None,
) -> dict:
    """Run ``mode`` (``train``, ``sample``, ``likelihood``, ``all``, or ``evaluate``: sample,
    likelihood and sample quality without training) and return the metrics.

    ``trainer.model`` is the score model; it is trained to ``steps`` (resuming from the trainer's
    checkpoints, or from ``ckpt``), then sampled with ``solver`` and evaluated with the EMA
    weights (:func:`evaluate`). With ``export`` (the keyword arguments of :func:`sde_gen.save_model`
    besides the model and EMA: ``data``, ``sde_config``, ``net_config``), a run that trained writes
    the EMA model to ``model.safetensors``."""
    check_choice("mode", mode, set(MODES))
    steps = check_int("steps", steps, low=0)
    main_process = sg.distributed.is_main_process()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, device = trainer.model, trainer.device
    history_file = HistoryFile(out_dir / "history.json")
    trainer.add_callbacks(history_file)
    metrics: dict = {"train_steps": steps}
    if ckpt is not None:
        trainer.load_checkpoint(ckpt)
    elif trainer.resume() and main_process:
        print(f"resumed from step {trainer.step} in {trainer.checkpoints.dir}", flush=True)
    if mode in ("train", "all"):
        start = time.perf_counter()
        trainer.fit(steps)
        metrics["train_seconds"] = time.perf_counter() - start
        metrics["skipped_steps"] = trainer.skipped
        if main_process:
            history_file.write(trainer)
        # Skipped steps have no loss.
        history = [h for h in history_file.rows(trainer) if math.isfinite(h["loss"])]
        if history:
            if main_process:
                sg.save_loss_curve(history, out_dir / "loss.png")
            metrics["final_loss"] = sum(h["loss"] for h in history[-100:]) / len(history[-100:])
    metrics["step"] = trainer.step

    if export is not None and mode in ("train", "all") and main_process:
        # The EMA model as a file to share: weights and recipe, nothing executable.
        try:
            sg.save_model(out_dir / "model.safetensors", model, ema=trainer.ema, **export)
        except TypeError as e:  # a network or SDE that a model file cannot name
            print(f"model.safetensors not written: {e}", flush=True)
    ema = trainer.ema.applied(model) if trainer.ema is not None else contextlib.nullcontext()
    with ema:
        metrics.update(
            evaluate(
                model,
                sde,
                data,
                out_dir=out_dir,
                mode=mode,
                solver=solver,
                sampling=sampling,
                likelihood=likelihood,
                quality=quality,
                seed=seed,
                device=device,
            )
        )
    if main_process:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def evaluate(
    model,
    sde,
    data,
    *,
    out_dir: str | Path,
    mode: str = "all",
    solver: sg.Solver | None = None,
    sampling: Sampling | None = None,
    likelihood: Likelihood | None = None,
    quality: SampleMetrics | None = None,
    seed: int = 0,
    device=None,
) -> dict:
    """Sample (modes ``sample``, ``all``, ``evaluate``: ``samples.pt``, ``samples.png``, and the
    sample-quality figures of ``quality``) and measure the test likelihood (modes ``likelihood``,
    ``all``, ``evaluate``) of the score model ``model`` as it is, in eval mode; returns the
    metrics. Noise comes from seeds ``seed + 10`` (samples), ``seed + 11`` (likelihood) and
    ``seed + 12`` (KID's subsets), chunk by chunk, so the results do not depend on the number of
    processes."""
    sampling = sampling if sampling is not None else Sampling(T=sde.T)
    likelihood = likelihood if likelihood is not None else Likelihood(T=sde.T)
    out_dir = Path(out_dir)
    images = isinstance(data, sg.ImageData)
    quality = quality if quality is not None else SampleMetrics(enabled=False)
    metrics: dict = {}
    model.eval()
    with torch.no_grad():
        if mode in ("sample", "all", "evaluate"):
            solver = solver if solver is not None else sg.PredictorCorrector(steps=1000)
            start = time.perf_counter()
            num = max(sampling.num, quality.count(data, sampling.num)) if quality.enabled else sampling.num
            k = getattr(model, "num_classes", None)
            labels = None if k is None else sampling.labels(k, num)
            res = sg.generate_samples(
                sde,
                sampling.score_fn(model, sde),
                num,
                data.train.shape[1:],
                solver,
                seed=seed + 10,
                batch_size=likelihood.batch_size,
                eps=sampling.eps,
                denoise=images,
                device=device,
                cond=None if labels is None else {"y": labels},
            )
            metrics["sample_seconds"] = time.perf_counter() - start
            metrics["sample_nfe"] = res["nfe"]
            if sg.distributed.is_main_process():
                rows = None if k is None else max(sampling.num // k, 1)
                save_samples(res["samples"], data, out_dir, picture=sampling.num, nrow=rows, labels=labels)
            if quality.enabled:
                start = time.perf_counter()
                n_scored = quality.count(data, sampling.num)
                scored = res["samples"][:n_scored]
                metrics.update(
                    quality(
                        scored, data, seed=seed + 12, labels=None if labels is None else labels[:n_scored]
                    )
                )
                metrics["metrics_seconds"] = time.perf_counter() - start
        if mode in ("likelihood", "all", "evaluate"):
            metrics.update(evaluate_likelihood(sde, model, data, likelihood, seed=seed + 11, device=device))
    return metrics


def evaluate_likelihood(sde, model, data, settings: Likelihood, *, seed: int, device=None) -> dict:
    """Test bits/dim (images) or NLL in nats with the KL gap to the data where its density is known.
    The test set is evaluated in chunks spread over the ranks; chunk ``i`` draws its dequantization
    noise and probes from ``(seed, i)``. ``likelihood_nfe`` is the total over chunks,
    ``likelihood_nfe_rank_max`` the largest on one rank (all equal on a fixed grid)."""
    test = data.test if settings.n is None else data.test[: settings.n]
    images = isinstance(data, sg.ImageData)
    divergence = settings.divergence_for(images)
    common = dict(
        eps=settings.eps,
        solver=settings.solver,
        batch_size=settings.batch_size,
        seed=seed,
        divergence=divergence,
        num_probes=settings.num_probes,
        device=device,
    )
    start = time.perf_counter()
    if images:
        transform = sg.LevelTransform(data.levels, -1.0, 1.0)
        r = sg.evaluate_bpd(sde, model, test, transform, repeats=settings.repeats, **common)
        out = {"test_bpd": r["bpd"], "test_bpd_se": r["bpd_se"]}
    else:
        # Vector models are small: evaluate in float64, where the ODE tolerance sets the error.
        model64 = copy.deepcopy(model).double()
        x = test.to(torch.float64)
        r = sg.evaluate_nll(sde, model64, x, **common)
        nll = r["per_point"]
        out = {"test_nll_nats": r["nll"], "test_nll_nats_se": r["nll_se"]}
        if data.log_prob is not None:
            # KL(p || q) estimated on the same test points: E_p[log p - log q], paired.
            log_p = data.log_prob(x).double()
            gap = nll + log_p
            out["data_entropy_nats"] = float(-log_p.mean())
            out["kl_gap_nats"] = float(gap.mean())
            out["kl_gap_nats_se"] = float(gap.std() / math.sqrt(len(gap)))
    out["likelihood_nfe"], out["likelihood_nfe_rank_max"] = r["nfe"], r["nfe_rank_max"]
    out["likelihood_seconds"] = time.perf_counter() - start
    num_probes = settings.num_probes
    out["likelihood_divergence"] = divergence if divergence == "exact" else f"hutchinson x{num_probes}"
    return out


class HistoryFile(sg.Callback):
    """``history.json`` (loss, lr, grad norm per step), rewritten with every checkpoint, so that a
    run killed and resumed keeps the curve up to the checkpoint it resumed from."""

    def __init__(self, path: Path):
        self.path, self.earlier = Path(path), []

    def on_train_start(self, trainer) -> None:
        if trainer.step and self.path.exists():
            self.earlier = [h for h in json.loads(self.path.read_text()) if h["step"] <= trainer.step]

    def rows(self, trainer) -> list[dict]:
        return self.earlier + trainer.history

    def on_checkpoint(self, trainer, path) -> None:
        self.write(trainer)

    def write(self, trainer) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.rows(trainer)))
        os.replace(tmp, self.path)


def save_samples(
    x: torch.Tensor, data, out_dir: Path, picture: int | None = None, nrow: int | None = None, labels=None
) -> None:
    """``samples.pt`` (and ``labels.pt`` for a class-conditional model) and a picture of the first
    ``picture`` (default all): an image grid of ``nrow`` per row, or 2-D samples over the data
    density."""
    torch.save(x, out_dir / "samples.pt")
    if labels is not None:
        torch.save(labels, out_dir / "labels.pt")
    if isinstance(data, sg.ImageData):
        sg.save_image_grid(x[:picture], out_dir / "samples.png", nrow=nrow)
    elif x.shape[1] == 2:
        sg.save_samples_2d(
            x,
            out_dir / "samples.png",
            log_prob=data.log_prob,
            data=None if data.log_prob else data.test,
            title=f"{x.shape[0]} samples",
        )
