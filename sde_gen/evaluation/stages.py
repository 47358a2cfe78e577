"""First stages of a run, trained before its score model (resuming after a kill) or read back from
their files: a latent model's autoencoder and the training images' latents (:class:`LatentStage`,
Rombach et al. 2022), and a cascade's low-resolution model (:class:`LowResolutionStage`, Ho et al.
2021), whose score model is then the super-resolution stage.

A stage offers ``shape(data)`` (what the run's score model draws), ``prepare(data, out_dir, ...)``
(the stage itself, then the data the score model trains on, ``None`` for the images themselves),
``transform`` (``transform(batch, generator)`` turning a batch of those data into training inputs,
or ``None``), ``wrap_loss(loss)``, ``autoencoder`` (or ``None``), ``condition(n, ...)`` (what the
score model's samples are drawn given, or ``None``, and the score evaluations that took), ``likelihood``
(whether the run's likelihood is defined) and ``metrics``, the stage's figures."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import distributed as dist_utils
from .._checks import ArgumentTypeError, check_choice, check_int, check_real
from ..data import ImageData, LevelTransform
from ..files import Checkpoints, load_autoencoder, load_model, save_autoencoder, save_model
from ..models.autoencoder import Autoencoder
from ..models.score import ScoreModel
from ..sampling.inverse.operators import SuperResolution
from ..sampling.solvers.base import Solver
from ..training import AutoencoderLoss, Batches, SuperResolutionLoss, Trainer, WarmupCosine
from .drivers import generate_samples

__all__ = ["LatentStage", "LowResolutionStage"]


class LatentStage:
    """An autoencoder for a latent model, trained on an image set before the score model.

    Args:
        autoencoder: e.g. :class:`sde_gen.AutoencoderKL` (its weights start as built).
        steps, batch_size, lr, warmup: its training (Adam, warm-up then cosine decay, no EMA).
        kl_weight: of :class:`sde_gen.AutoencoderLoss`.
        ckpt_every: its checkpoints (under ``out_dir/autoencoder/checkpoints``).
    :meth:`prepare` returns the latents the score model trains on; a run directory that holds
    ``autoencoder.safetensors`` reads it back instead of training (a resumed or evaluated run).
    """

    FILE = "autoencoder.safetensors"
    likelihood = True  # its bound

    def __init__(
        self,
        autoencoder: Autoencoder,
        steps: int = 2000,
        batch_size: int = 128,
        lr: float = 1e-3,
        warmup: int = 100,
        kl_weight: float = 1e-6,
        ckpt_every: int = 500,
        latents: str = "sample",
    ):
        if not isinstance(autoencoder, Autoencoder):
            raise ArgumentTypeError(
                "autoencoder",
                autoencoder,
                f"autoencoder must be an sde_gen Autoencoder, got {type(autoencoder).__name__}",
            )
        self.autoencoder = autoencoder
        self.steps = check_int("steps", steps, low=0)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.lr = check_real("lr", lr, low=0.0)
        self.warmup = check_int("warmup", warmup, low=0)
        self.loss = AutoencoderLoss(kl_weight)
        self.ckpt_every = check_int("ckpt_every", ckpt_every, low=1)
        self.latents = check_choice("latents", latents, {"sample", "mean"})
        self.metrics: dict = {}  # prepare()'s figures

    def shape(self, data: ImageData) -> tuple[int, ...]:
        """The latents' shape: what the score model draws."""
        return tuple(self.autoencoder.latent_shape(tuple(data.train.shape[1:])))

    @property
    def transform(self):
        """With ``latents="sample"``: ``transform(batch, generator)``, a fresh draw ``u = scale z``, ``z ~
        q(z | x)``, for every example of every batch (Rombach et al. 2022 draw the posterior at every
        step); ``prepare`` returns the scaled posterior means and standard deviations stacked on dim 1.
        With ``"mean"``: ``None`` (the score model trains on the scaled means themselves)."""
        return self._draw if self.latents == "sample" else None

    @staticmethod
    def _draw(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, std = batch.unbind(1)
        return mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)

    def wrap_loss(self, loss):
        """The score model's loss as it is."""
        return loss

    def condition(self, n: int, **kwargs) -> tuple[None, int]:
        """Nothing: a latent model's samples are drawn unconditionally."""
        return None, 0

    def prepare(
        self, data: ImageData, out_dir: str | Path | None, *, seed: int = 0, device=None, **run
    ) -> tuple[torch.Tensor, dict]:
        """Train the autoencoder on ``data.train`` (dequantized to ``[-1, 1]``) or read it from
        ``out_dir``, fit its latent scale, and return the latents of the training images (of one
        dequantization drawn from ``seed``: the encoder's means times the scale, with the posterior's
        standard deviations times the scale stacked on dim 1 when ``latents="sample"``) and the stage's
        figures: ``autoencoder_seconds``, ``autoencoder_test_mse`` (reconstruction of the test
        images), ``latent_scale``. ``out_dir=None`` (objects built, no job) trains nothing and returns
        zeros of the latents' shape."""
        if not isinstance(data, ImageData):
            raise ArgumentTypeError(
                "data", data, f"a latent model needs an image set, got {type(data).__name__}"
            )
        if out_dir is None:
            moments = (2,) if self.latents == "sample" else ()  # the means, and the stds stacked on dim 1
            return torch.zeros(len(data.train), *moments, *self.shape(data)), {}
        out_dir, levels = Path(out_dir), LevelTransform(data.levels, -1.0, 1.0)
        path, start = out_dir / self.FILE, time.perf_counter()
        ae = self.autoencoder
        if path.exists():
            self.autoencoder = ae = load_autoencoder(path, device=device)
        else:
            trainer = Trainer(
                ae.to(device) if device is not None else ae,
                self.loss,
                Batches(data.train, batch_size=self.batch_size, transform=levels.dequantize, seed=seed),
                lambda params: torch.optim.Adam(params, lr=self.lr),
                lr_schedule=WarmupCosine(self.warmup, self.steps),
                ema=None,
                checkpoints=Checkpoints(out_dir / "autoencoder" / "checkpoints", every=self.ckpt_every),
            )
            trainer.resume()
            trainer.fit(self.steps)
            ae.fit_scale(self._dequantized(data.train, levels, seed, "scale", device))
            if dist_utils.is_main_process():
                save_autoencoder(path, ae)
        ae.eval()
        with torch.no_grad():
            test = self._dequantized(data.test, levels, seed, "test", device)
            mse = float(
                torch.cat(
                    [(ae.decode(ae.encode(b)[0]) - b).pow(2).flatten(1).mean(1) for b in test.split(500)]
                ).mean()
            )
            train = self._dequantized(data.train, levels, seed, "latents", device)
            moments = [ae.encode(b) for b in train.split(500)]
            scale = ae.scale.to(moments[0][0].dtype)
            latents = torch.cat([scale * mean for mean, _ in moments]).cpu()
            if self.latents == "sample":
                std = torch.cat([scale * torch.exp(0.5 * logvar) for _, logvar in moments]).cpu()
                latents = torch.stack([latents, std], 1)
        figures = {"autoencoder_seconds": time.perf_counter() - start, "autoencoder_test_mse": mse}
        return latents, figures | {"latent_scale": float(ae.scale)}

    STREAMS = {"scale": 1, "test": 2, "latents": 3}  # one dequantization stream per use, from the seed

    @classmethod
    def _dequantized(
        cls, k: torch.Tensor, levels: LevelTransform, seed: int, what: str, device
    ) -> torch.Tensor:
        x = levels.dequantize(k, torch.Generator().manual_seed(4 * seed + cls.STREAMS[what]))
        return x.to(device) if device is not None else x


class LowResolutionStage:
    """A cascade's first stage (Ho et al. 2021): a score model of the images average-pooled by
    ``factor``, trained before the run's score model, which is then the super-resolution stage
    (:class:`sde_gen.SuperResolutionUNet`, trained by :class:`sde_gen.SuperResolutionLoss` with
    augmentation levels in ``[0, max_noise]``).

    Args:
        net: the low-resolution network (e.g. a :class:`sde_gen.UNet` of side ``image_size / factor``).
        solver: what draws the low-resolution samples at evaluation.
        low_noise: the augmentation ``s`` of those samples that the super-resolution stage is given
            (chosen by measurement, as Ho et al. do; within ``[0, max_noise]``).
        steps, batch_size, lr, warmup, ema_decay, ckpt_every: the first stage's training (Adam,
            warm-up then cosine decay), with the run's SDE, parameterisation and loss.
    The trained stage is kept as ``low_resolution.safetensors`` (EMA weights) in the run directory.
    """

    FILE = "low_resolution.safetensors"
    transform = None  # trains on the images themselves
    likelihood = False  # no density in the full space (docs/latent_and_cascades.md)
    autoencoder = None

    def __init__(
        self,
        net: torch.nn.Module,
        solver: Solver,
        factor: int = 2,
        low_noise: float = 0.2,
        max_noise: float = 0.5,
        steps: int = 2000,
        batch_size: int = 128,
        lr: float = 5e-4,
        warmup: int = 100,
        ema_decay: float = 0.999,
        ckpt_every: int = 500,
    ):
        if not isinstance(net, torch.nn.Module):
            raise ArgumentTypeError("net", net, f"net must be a torch.nn.Module, got {type(net).__name__}")
        if not isinstance(solver, Solver):
            raise ArgumentTypeError(
                "solver", solver, f"solver must be an sde_gen Solver, got {type(solver).__name__}"
            )
        self.net, self.solver, self.model = net, solver, None
        self.factor = check_int("factor", factor, low=1)
        self.max_noise = check_real("max_noise", max_noise, low=0.0)
        self.low_noise = check_real("low_noise", low_noise, low=0.0)
        self.steps = check_int("steps", steps, low=0)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.lr, self.warmup = check_real("lr", lr, low=0.0), check_int("warmup", warmup, low=0)
        self.ema_decay = check_real("ema_decay", ema_decay, low=0.0)
        self.ckpt_every = check_int("ckpt_every", ckpt_every, low=1)
        self.metrics: dict = {}

    def shape(self, data: ImageData) -> tuple[int, ...]:
        """The images' shape: the super-resolution stage draws full-size images."""
        return tuple(data.train.shape[1:])

    def wrap_loss(self, loss) -> SuperResolutionLoss:
        return SuperResolutionLoss(loss, self.factor, self.max_noise)

    def prepare(
        self, data: ImageData, out_dir, *, seed: int = 0, device=None, sde, loss_fn, parameterization
    ):
        """Train the low-resolution model on the pooled, dequantized training images (or read it from
        ``out_dir``); returns ``(None, figures)``: the run's score model trains on the images
        themselves. ``out_dir=None`` builds the model and trains nothing."""
        if not isinstance(data, ImageData):
            raise ArgumentTypeError("data", data, f"a cascade needs an image set, got {type(data).__name__}")
        pool, levels = SuperResolution(self.factor), LevelTransform(data.levels, -1.0, 1.0)
        self.low_shape = tuple(pool.y_shape(tuple(data.train.shape[1:])))
        start = time.perf_counter()
        if out_dir is None:
            self.model = ScoreModel(self.net, sde, parameterization)
            return None, {}
        path = Path(out_dir) / self.FILE
        if not path.exists():
            model = ScoreModel(self.net, sde, parameterization).to(device)
            trainer = Trainer(
                model,
                loss_fn,
                Batches(
                    data.train,
                    batch_size=self.batch_size,
                    seed=seed,
                    transform=lambda k, g: pool(levels.dequantize(k, g)),
                ),  # fmt: skip
                lambda params: torch.optim.Adam(params, lr=self.lr),
                lr_schedule=WarmupCosine(self.warmup, self.steps),
                ema=self.ema_decay,
                checkpoints=Checkpoints(
                    Path(out_dir) / "low_resolution" / "checkpoints", every=self.ckpt_every
                ),
            )
            trainer.resume()
            trainer.fit(self.steps)
            if dist_utils.is_main_process():
                recipe = {"name": data.name, "shape": list(self.low_shape), "levels": data.levels}
                save_model(path, model, ema=trainer.ema, data={**recipe, "low": -1.0, "high": 1.0})
            dist_utils.barrier()
        self.model = load_model(path, device=device).eval()
        return None, {"first_stage_seconds": time.perf_counter() - start}

    def condition(self, n: int, *, seed: int, batch_size: int = 500, eps: float = 1e-3, device=None):
        """``({"low": x_low + s e, "low_noise": s}, nfe)`` for ``n`` low-resolution samples drawn with
        ``solver`` (seed ``seed``; ``e`` from ``seed + 1``), ``s`` = ``low_noise``, and the score
        evaluations they took."""
        res = generate_samples(self.model.sde, self.model, n, self.low_shape, self.solver, seed=seed,
                               batch_size=batch_size, eps=eps, denoise=True, device=device)  # fmt: skip
        low = res["samples"]
        e = torch.randn(low.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=low.dtype)
        s = torch.full((n,), self.low_noise, dtype=low.dtype)
        return {"low": low + self.low_noise * e, "low_noise": s}, res["nfe"]
