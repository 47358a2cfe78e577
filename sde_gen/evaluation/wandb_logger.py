"""Logging a run to Weights & Biases. ``wandb`` is imported only when a logger is made.

A run is offline unless ``mode`` or the environment variable ``WANDB_MODE`` says otherwise; an
offline run is synced by the user with ``wandb sync <dir>``, which :meth:`WandbLogger.finish` prints
and never runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..training.callbacks import Callback


def wandb_mode(mode: str | None) -> str:
    """The W&B mode: ``mode`` if given, else ``$WANDB_MODE`` if set, else ``"online"`` inside a
    ``wandb agent`` (which sets ``$WANDB_SWEEP_ID``; sweeps need an account), else ``"offline"``."""
    if mode:
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_SWEEP_ID") else "offline"


class WandbLogger(Callback):
    """A trainer callback that logs a run to W&B (imported when one is made; ``pip install wandb``):
    ``config`` (e.g. the resolved settings); loss, learning rate and gradient norm every
    ``log_every`` steps; held-out evaluations; and, through :meth:`log_results`, bits/dim or NLL with
    standard errors, NFE, times and the pictures (sample grid, loss curve) as images."""

    def __init__(
        self,
        config: dict,
        *,
        out_dir: str | Path,
        project: str = "sde_gen",
        entity: str | None = None,
        mode: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
        log_every: int = 1,
    ):
        import wandb  # only here: sde_gen does not depend on W&B

        self.wandb = wandb
        self.mode = wandb_mode(mode)
        self.log_every = log_every
        wandb_dir = Path(os.environ.get("WANDB_DIR") or out_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        # W&B limits a tag to 64 characters.
        tags = [t if len(t) <= 64 else t[:61] + "..." for t in (tags or [])]
        self.run = wandb.init(
            project=project,
            entity=entity,
            mode=self.mode,
            group=group,
            tags=tags,
            name=name,
            config=config,
            dir=str(wandb_dir),
            reinit="finish_previous",
        )
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("eval/*", step_metric="train/step")

    mode_for = staticmethod(wandb_mode)  # the mode a run gets: WandbLogger.mode_for(None)

    # -- sde_gen.Callback hooks -------------------------------------------------------------------

    def on_step(self, trainer, metrics: dict) -> None:
        if metrics["step"] % self.log_every == 0 or metrics["step"] == 1:
            self.run.log(
                {
                    "train/step": metrics["step"],
                    "train/loss": metrics["loss"],
                    "train/lr": metrics["lr"],
                    "train/grad_norm": metrics["grad_norm"],
                }
            )

    def on_eval(self, trainer, metrics: dict) -> None:
        out = {f"eval/{k}": v for k, v in metrics.items() if k != "step"}
        self.run.log({"train/step": metrics["step"], **out})

    def on_checkpoint(self, trainer, path) -> None:
        self.run.summary["last_checkpoint"] = str(path)

    # -- the end of the run ---------------------------------------------------------------------------

    def log_results(self, metrics: dict, out_dir: str | Path) -> None:
        """Final metrics into the run summary (and one log row), pictures as images."""
        out_dir = Path(out_dir)
        scalars = {
            k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for k, v in scalars.items():
            self.run.summary[k] = v
        row = {f"test/{k}": v for k, v in scalars.items() if k.startswith("test_") or k.startswith("kl_")}
        row.update({f"time/{k}": v for k, v in scalars.items() if k.endswith("_seconds")})
        quality = ("fd", "kid", "precision", "recall", "energy_distance", "sample_")
        row.update({f"quality/{k}": v for k, v in scalars.items() if k.startswith(quality)})
        row.update({f"nfe/{k}": v for k, v in scalars.items() if k.endswith("_nfe")})
        for name in ("samples", "loss"):
            p = out_dir / f"{name}.png"
            if p.exists():
                row[f"images/{name}"] = self.wandb.Image(str(p), caption=name)
        self.run.log(row)

    def finish(self) -> None:
        run_dir = getattr(self.run, "dir", None)
        self.run.finish()
        if self.mode == "offline" and run_dir:
            print(f"W&B run saved offline; to upload it: wandb sync {Path(run_dir).parent}")
