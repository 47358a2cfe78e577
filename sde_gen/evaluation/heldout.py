"""The likelihood of held-out data under a trained score model, at the end of a run and during it."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch

from .. import distributed as dist_utils
from .._checks import check_choice, check_eps, check_int, check_positive
from ..data import ImageData, LevelTransform
from ..data.oracle import energy_distance
from ..data.transforms import bits_per_dim
from ..likelihood.probability_flow import log_likelihood
from ..sampling.loop import sample
from ..sampling.solvers.ode import ProbabilityFlow
from ..training.callbacks import PeriodicEval
from .bpd import evaluate_bpd
from .drivers import evaluate_nll
from .metrics import frechet_distance
from .plots import save_image_grid, save_samples_2d


class HeldoutLikelihood:
    """The test NLL (vector data, nats) or bits/dim (images) of a score model through the
    probability-flow ODE, on the first ``n`` test points (``None``: all).

    ``divergence`` is ``"exact"``, ``"hutchinson"`` (``num_probes`` probes) or ``"auto"`` (exact for
    vector data, Hutchinson for images); the ODE solver is :class:`sde_gen.ProbabilityFlow` with
    ``method``, ``steps`` (fixed grids), ``rtol`` and ``atol``; ``eps`` is the smallest time and ``T``
    the SDE's end time; images get ``repeats`` dequantizations each. The test set is split into
    chunks of ``batch_size`` spread over the ranks (:func:`sde_gen.evaluate_bpd`,
    :func:`sde_gen.evaluate_nll`), so the result does not depend on the number of processes."""

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
        self.solver = ProbabilityFlow(method=method, rtol=rtol, atol=atol, steps=steps)
        self.eps = check_eps(eps, T)
        self.repeats = check_int("repeats", repeats, low=1)
        self.batch_size = check_int("batch_size", batch_size, low=1)

    def divergence_for(self, images: bool) -> str:
        """The divergence used for image data (``images=True``) or vector data."""
        if self.divergence != "auto":
            return self.divergence
        return "hutchinson" if images else "exact"

    def __call__(self, sde, model, data, *, seed: int = 0, device=None, autoencoder=None) -> dict:
        """The figures as a dict: ``test_bpd`` and ``test_bpd_se`` (images) or ``test_nll_nats`` and
        ``test_nll_nats_se`` (vector data, in float64; with the data's density also
        ``data_entropy_nats`` and the paired KL estimate ``kl_gap_nats`` and its ``kl_gap_nats_se``);
        ``likelihood_nfe`` (total over chunks), ``likelihood_nfe_rank_max``, ``likelihood_seconds``
        and ``likelihood_divergence``. Chunk ``i`` draws its noise from ``(seed, i)``. With an
        ``autoencoder`` (a latent ``model``, images only): ``test_bpd_bound`` and its
        ``test_bpd_bound_se``, the negative ELBO in bits/dim (:func:`sde_gen.latent_nll_bound`)."""
        test = data.test if self.n is None else data.test[: self.n]
        images = isinstance(data, ImageData)
        divergence = self.divergence_for(images)
        common = dict(eps=self.eps, solver=self.solver, batch_size=self.batch_size, seed=seed)
        common.update(divergence=divergence, num_probes=self.num_probes, device=device)
        start = time.perf_counter()
        if images:
            transform = LevelTransform(data.levels, -1.0, 1.0)
            r = evaluate_bpd(
                sde, model, test, transform, repeats=self.repeats, autoencoder=autoencoder, **common
            )
            key = "test_bpd" if autoencoder is None else "test_bpd_bound"
            out = {key: r["bpd"], f"{key}_se": r["bpd_se"]}
        else:
            # Vector models are small: evaluate in float64, where the ODE tolerance sets the error.
            x = test.to(torch.float64)
            r = evaluate_nll(sde, copy.deepcopy(model).double(), x, **common)
            out = {"test_nll_nats": r["nll"], "test_nll_nats_se": r["nll_se"]}
            if data.log_prob is not None:
                # KL(p || q) estimated on the same test points: E_p[log p - log q], paired.
                log_p = data.log_prob(x).double()
                gap = r["per_point"] + log_p
                out["data_entropy_nats"] = float(-log_p.mean())
                out["kl_gap_nats"] = float(gap.mean())
                out["kl_gap_nats_se"] = float(gap.std() / math.sqrt(len(gap)))
        out["likelihood_nfe"], out["likelihood_nfe_rank_max"] = r["nfe"], r["nfe_rank_max"]
        out["likelihood_seconds"] = time.perf_counter() - start
        probes = f"hutchinson x{self.num_probes}"
        out["likelihood_divergence"] = divergence if divergence == "exact" else probes
        return out


class HeldoutEval:
    """Periodic evaluation during training, every ``every`` steps (``None``: never), with the
    weights the trainer holds (the EMA weights inside :meth:`sde_gen.EMA.applied`): the training
    loss on ``n`` fixed test points, their bits/dim (images: one dequantization, 1-probe
    Hutchinson) or NLL in nats (vector data) through the ODE at tolerance ``rtol``, and a picture of
    64 probability-flow samples, ``samples_step<N>.png``. :meth:`callback` makes the trainer
    callback."""

    def __init__(self, every: int | None = None, n: int = 256, rtol: float = 1e-3):
        self.every = None if every is None else check_int("every", every, low=1)
        self.n = check_int("n", n, low=1)
        self.rtol = check_positive("rtol", rtol)

    def callback(self, sde, data, loss_fn, *, seed: int, out_dir=None, quality=None) -> PeriodicEval | None:
        """The :class:`sde_gen.PeriodicEval` callback, or ``None`` when ``every`` is ``None``.
        ``out_dir`` (rank 0 writes there) receives the pictures. With an enabled
        :class:`sde_gen.SampleQuality` ``quality``, the 64 samples are also scored: ``eval_fd``
        (images, the Fréchet distance to the training images in ``quality``'s features) or
        ``eval_energy_distance`` (vector data, to 64 held-out points); over 64 samples these are
        noisier and larger than the final figures."""
        if self.every is None:
            return None
        images = isinstance(data, ImageData)
        n = min(self.n, data.test.shape[0])
        g = torch.Generator().manual_seed(seed + 20)
        x = LevelTransform(data.levels, -1.0, 1.0).dequantize(data.test[:n], g) if images else data.test[:n]
        quick = ProbabilityFlow(rtol=self.rtol, atol=self.rtol)
        out_dir = None if out_dir is None else Path(out_dir)

        def eval_fn(trainer):
            gen = torch.Generator().manual_seed(seed + 21)  # the same t and noise at every evaluation
            model, xb = trainer.model, x.to(trainer.device)
            with torch.no_grad():
                metrics = {"heldout_loss": float(loss_fn(model, xb, generator=gen).mean())}
            divergence = "hutchinson" if images else "exact"
            lik = log_likelihood(sde, model, xb, solver=quick, divergence=divergence, generator=gen)
            log_prob = lik.log_prob.detach().cpu()
            if images:
                metrics["eval_bpd"] = float(bits_per_dim(log_prob, data.num_dims, levels=data.levels).mean())
            else:
                metrics["eval_nll_nats"] = float(-log_prob.mean())
            if out_dir is not None and dist_utils.is_main_process():  # the others go on to the next step
                shape = (64, *data.train.shape[1:])
                with torch.no_grad():
                    xs = sample(
                        sde, model, shape, quick, generator=gen, denoise=images, device=trainer.device
                    )
                metrics.update(self._scores(xs.detach().cpu(), data, quality))
                path = out_dir / f"samples_step{trainer.step:08d}.png"
                if images:
                    save_image_grid(xs, path)
                elif xs.shape[1] == 2:
                    save_samples_2d(xs.cpu(), path, log_prob=data.log_prob, title=f"step {trainer.step}")
            return metrics

        return PeriodicEval(eval_fn, self.every)

    @staticmethod
    def _scores(xs: torch.Tensor, data, quality) -> dict:
        if quality is None or not quality.enabled:
            return {}
        if isinstance(data, ImageData):
            return {"eval_fd": frechet_distance(quality.train_features(data), quality.features(data)(xs))}
        ref = data.test[: xs.shape[0]].double().reshape(xs.shape[0], -1)
        return {"eval_energy_distance": energy_distance(xs.double().reshape(ref.shape), ref)}
