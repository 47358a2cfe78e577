"""Pictures of results: image grids, 2-D sample scatters and the training-loss curve (PNG files,
matplotlib's Agg backend, imported only when a picture is drawn)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from .._checks import ArgumentValueError

__all__ = ["save_image_grid", "save_samples_2d", "save_loss_curve"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    plt = _pyplot()
    x = images.detach().float().cpu().clamp(low, high)
    x = (x - low) / (high - low)
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ArgumentValueError(
            "images", images, f"images must have 1 or 3 channels, got shape {tuple(x.shape)}"
        )
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
    plt = _pyplot()
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


def save_loss_curve(history: list[dict], path: str | Path) -> Path:
    """Plot the training loss of ``history`` (dicts with ``"step"`` and ``"loss"``) against the step,
    with its running mean over ~1% of the run, on a log scale where the loss stays positive."""
    plt = _pyplot()
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
