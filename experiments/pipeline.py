"""Train, sample and evaluate one model: the job behind the experiment scripts.

Everything is passed in as built objects (data, SDE, network, solvers); this module knows no
configuration system. It writes into ``out_dir``: ``checkpoints/``, ``metrics.json``, a sample
picture (``samples.png``), the loss curve (``loss.png``) and ``history.json``. Re-running with the
same ``out_dir`` resumes training from the newest checkpoint.

Under ``torchrun`` every rank calls :func:`run`: training is data-parallel (:class:`sde_gen.Trainer`),
sampling and the likelihood are split over the ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path

import torch

import sde_gen as sg

MODES = ("train", "sample", "likelihood", "all")


def run(
    data,
    sde,
    net: torch.nn.Module,
    *,
    out_dir: str | Path,
    mode: str = "all",
    parameterization: str = "noise",
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 2e-4,
    warmup: int = 100,
    cosine_decay: bool = False,
    grad_clip: float | None = 1.0,
    ema_decay: float = 0.999,
    weighting: str = "std2",
    importance_sampling: bool = False,
    train_eps: float = 1e-5,
    ckpt_every: int | None = None,
    keep: int = 3,
    nonfinite: str = "raise",
    max_skips: int = 10,
    device: torch.device | str | None = None,
    eval_every: int | None = None,
    sample_solver: sg.Solver | None = None,
    sample_eps: float = 1e-3,
    num_samples: int = 64,
    likelihood_solver: sg.ProbabilityFlow | None = None,
    likelihood_eps: float = 1e-5,
    likelihood_n: int | None = None,
    divergence: str = "exact",
    num_probes: int = 1,
    repeats: int = 1,
    eval_batch_size: int = 500,
    seed: int = 0,
    ckpt: str | Path | None = None,
    callbacks=(),
    progress: bool | None = None,
    eval_fn=None,
) -> dict:
    """Run ``mode`` (``train``, ``sample``, ``likelihood`` or ``all``) and return the metrics.

    ``eval_fn(trainer) -> dict`` is called every ``eval_every`` training steps with the EMA weights
    in place (its metrics reach the callbacks' ``on_eval``)."""
    sg._checks.check_choice("mode", mode, set(MODES))
    main_process = sg.distributed.is_main_process()
    device = torch.device(device) if device is not None else torch.device("cpu")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = isinstance(data, sg.ImageData)
    transform = sg.LevelTransform(data.levels, -1.0, 1.0) if images else None
    model = sg.ScoreModel(net, sde, parameterization)
    trainer = sg.Trainer(
        model,
        sde,
        data.train,
        transform=(lambda batch, g: transform.dequantize(batch, g)) if images else None,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        decay_steps=steps if cosine_decay else None,
        grad_clip=grad_clip,
        ema_decay=ema_decay,
        eps=train_eps,
        weighting=weighting,
        importance_sampling=importance_sampling,
        seed=seed,
        ckpt_dir=out_dir / "checkpoints",
        ckpt_every=ckpt_every,
        keep=keep,
        nonfinite=nonfinite,
        max_skips=max_skips,
        device=device,
        callbacks=[*callbacks, history_file := HistoryFile(out_dir / "history.json")],
        progress=progress,
        eval_every=eval_every,
        eval_fn=eval_fn,
    )
    metrics: dict = {"train_steps": steps}
    if ckpt is not None:
        trainer.load_checkpoint(ckpt)
    elif trainer.resume() and main_process:
        print(f"resumed from step {trainer.step} in {out_dir / 'checkpoints'}", flush=True)
    if mode in ("train", "all"):
        start = time.perf_counter()
        trainer.fit(steps)
        metrics["train_seconds"] = time.perf_counter() - start
        metrics["skipped_steps"] = trainer.skipped
        if main_process:
            history_file.write(trainer)
        history = [
            h for h in history_file.rows(trainer) if math.isfinite(h["loss"])
        ]  # skipped steps have no loss
        if history:
            if main_process:
                save_loss_curve(history, out_dir / "loss.png")
            metrics["final_loss"] = sum(h["loss"] for h in history[-100:]) / len(history[-100:])
    metrics["step"] = trainer.step

    model.eval()
    with trainer.ema.applied(model), torch.no_grad():
        if mode in ("sample", "all"):
            solver = sample_solver if sample_solver is not None else sg.PredictorCorrector(steps=1000)
            start = time.perf_counter()
            # Chunks of eval_batch_size, each with its own seed, spread over the ranks: the samples
            # do not depend on the number of processes.
            res = sg.generate_samples(
                sde,
                model,
                num_samples,
                data.train.shape[1:],
                solver,
                seed=seed + 10,
                batch_size=eval_batch_size,
                eps=sample_eps,
                denoise=images,
                device=device,
            )
            metrics["sample_seconds"] = time.perf_counter() - start
            metrics["sample_nfe"] = res["nfe"]
            if main_process:
                save_samples(res["samples"], data, out_dir)
        if mode in ("likelihood", "all"):
            metrics.update(
                evaluate_likelihood(
                    model,
                    sde,
                    data,
                    transform,
                    likelihood_solver,
                    likelihood_eps,
                    likelihood_n,
                    repeats,
                    eval_batch_size,
                    seed + 11,
                    divergence=divergence,
                    num_probes=num_probes,
                    device=device,
                )
            )
    if main_process:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def evaluate_likelihood(
    model,
    sde,
    data,
    transform,
    solver,
    eps,
    n,
    repeats,
    batch_size,
    seed,
    divergence="exact",
    num_probes=1,
    device=None,
) -> dict:
    """Test bits/dim (images) or NLL in nats with the KL gap to the data where its density is known.
    The test set is evaluated in chunks of ``batch_size`` spread over the ranks; chunk ``i`` draws its
    dequantization noise and probes from ``(seed, i)``. ``likelihood_nfe`` is the total over chunks,
    ``likelihood_nfe_rank_max`` the largest on one rank (all equal on a fixed grid)."""
    test = data.test if n is None else data.test[:n]
    start = time.perf_counter()
    if transform is not None:
        r = sg.evaluate_bpd(
            model,
            sde,
            test,
            transform,
            repeats=repeats,
            eps=eps,
            solver=solver,
            batch_size=batch_size,
            seed=seed,
            divergence=divergence,
            num_probes=num_probes,
            device=device,
        )
        out = {"test_bpd": r["bpd"], "test_bpd_se": r["bpd_se"]}
    else:
        # Vector models are small: evaluate in float64, where the ODE tolerance sets the error.
        model64 = copy.deepcopy(model).double()
        x = test.to(torch.float64)
        r = sg.evaluate_nll(
            model64,
            sde,
            x,
            eps=eps,
            solver=solver,
            batch_size=batch_size,
            divergence=divergence,
            num_probes=num_probes,
            seed=seed,
            device=device,
        )
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


def save_samples(x: torch.Tensor, data, out_dir: Path) -> None:
    """``samples.pt`` and a picture: an image grid, or 2-D samples over the data density."""
    torch.save(x, out_dir / "samples.pt")
    if isinstance(data, sg.ImageData):
        sg.save_image_grid(x, out_dir / "samples.png")
    elif x.shape[1] == 2:
        sg.save_samples_2d(
            x,
            out_dir / "samples.png",
            log_prob=data.log_prob,
            data=None if data.log_prob else data.test,
            title=f"{x.shape[0]} samples",
        )


def save_loss_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    loss = torch.tensor([h["loss"] for h in history])
    w = max(1, len(loss) // 100)
    smooth = torch.nn.functional.avg_pool1d(loss[None, None], w, stride=1).flatten() if w > 1 else loss
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, loss.tolist(), color="lightgrey", lw=0.5, label="loss")
    ax.plot(steps[w - 1 :], smooth.tolist(), color="C0", lw=1.2, label=f"mean of {w}")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss")
    ax.set_yscale("log" if float(loss.min()) > 0 else "linear")
    ax.legend()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
