"""Evaluation of trained models: test NLL (vector data), test bits/dim (images), pictures."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from ._checks import check_int
from .likelihood import log_likelihood
from .solvers.ode import ProbabilityFlow

__all__ = ["evaluate_nll", "evaluate_bpd", "save_image_grid", "save_samples_2d"]


def evaluate_nll(
    score_fn: Callable,
    sde,
    x: torch.Tensor,
    *,
    eps: float = 1e-5,
    solver: ProbabilityFlow | None = None,
    batch_size: int = 1000,
    divergence: str = "exact",
    num_probes: int = 1,
    generator=None,
) -> dict:
    """Negative log-likelihood in nats of vector data ``x`` ``(N, ...)`` under the probability-flow
    model: ``{"nll": mean, "nll_se": standard error over the N points, "nfe": total,
    "per_point": the N values (float64, CPU)}``."""
    batch_size = check_int("batch_size", batch_size, low=1)
    nll, nfe = [], 0
    for start in range(0, x.shape[0], batch_size):
        res = log_likelihood(
            sde,
            score_fn,
            x[start : start + batch_size],
            eps=eps,
            solver=solver,
            divergence=divergence,
            num_probes=num_probes,
            generator=generator,
        )
        nll.append(-res.log_prob.detach().double().cpu())
        nfe += res.nfe
    nll = torch.cat(nll)
    se = float(nll.std() / math.sqrt(nll.numel())) if nll.numel() > 1 else float("nan")
    return {"nll": float(nll.mean()), "nll_se": se, "nfe": nfe, "per_point": nll}


def evaluate_bpd(
    score_fn: Callable,
    sde,
    levels: torch.Tensor,
    transform,
    *,
    repeats: int = 1,
    eps: float = 1e-5,
    solver: ProbabilityFlow | None = None,
    batch_size: int = 256,
    generator=None,
    divergence: str = "exact",
    num_probes: int = 1,
    dtype=torch.float32,
    device=None,
) -> dict:
    """Bits/dim of integer images ``levels`` ``(N, C, H, W)`` under the probability-flow model, each
    dequantized ``repeats`` times (:func:`sde_gen.data.dequantized_bpd`):
    ``{"bpd": mean, "bpd_se": standard error, "nfe": total}``. With ``divergence="hutchinson"`` the
    log-densities are unbiased estimates, so the mean stays unbiased and the standard error, taken
    over images, includes the probes' noise; the probes come from ``generator``."""
    from .data.transforms import dequantized_bpd

    nfe = 0

    def log_prob(y):
        nonlocal nfe
        y = y.to(device) if device is not None else y
        res = log_likelihood(
            sde,
            score_fn,
            y,
            eps=eps,
            solver=solver,
            divergence=divergence,
            num_probes=num_probes,
            generator=generator,
        )
        nfe += res.nfe
        return res.log_prob.detach().cpu()

    mean, se = dequantized_bpd(
        log_prob, levels, transform, repeats=repeats, generator=generator, batch_size=batch_size, dtype=dtype
    )
    return {"bpd": mean, "bpd_se": se, "nfe": nfe}


def save_image_grid(
    images: torch.Tensor,
    path: str | Path,
    *,
    low: float = -1.0,
    high: float = 1.0,
    nrow: int | None = None,
    pad: int = 1,
) -> Path:
    """Save images ``(N, C, H, W)`` in ``[low, high]`` as one PNG grid (C = 1 grey, C = 3 RGB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = images.detach().float().cpu().clamp(low, high)
    x = (x - low) / (high - low)
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(x.shape)}")
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[
            :, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w
        ] = x[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Small images (8x8 digits) are enlarged by an integer factor, nearest neighbour, so that the
    # grid is at least ~512 pixels wide and can be looked at.
    factor = max(1, 512 // grid.shape[-1])
    grid = grid.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
    arr = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
    plt.imsave(path, arr, cmap="gray" if c == 1 else None, vmin=0.0, vmax=1.0)
    return path


def save_samples_2d(
    samples: torch.Tensor,
    path: str | Path,
    *,
    log_prob: Callable | None = None,
    data: torch.Tensor | None = None,
    title: str = "",
) -> Path:
    """Scatter 2-D samples over the data density (contours of ``exp(log_prob)``) or data points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = samples.detach().double().cpu()
    lim = float(s.abs().quantile(0.995)) * 1.15
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    if log_prob is not None:
        g = torch.linspace(-lim, lim, 200, dtype=torch.float64)
        xx, yy = torch.meshgrid(g, g, indexing="xy")
        dens = log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().reshape(200, 200)
        ax.contourf(xx.numpy(), yy.numpy(), dens.numpy(), levels=20, cmap="Blues")
    elif data is not None:
        d = data.detach().double().cpu()
        ax.scatter(d[:, 0], d[:, 1], s=1, c="lightgrey", label="data")
    ax.scatter(s[:, 0], s[:, 1], s=1.5, c="crimson", alpha=0.6, label="samples")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
