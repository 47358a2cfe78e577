"""Loggers for experiments/run.py: a W&B training callback and a Hydra multirun summary.

W&B is imported here only (never in sde_gen). It runs offline unless ``logger.mode`` or the
environment variable ``WANDB_MODE`` says otherwise; offline runs are synced by the user with
``wandb sync <dir>``, which this module prints and never runs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from hydra.experimental.callback import Callback as HydraCallback

import sde_gen as sg


def wandb_mode(mode: str | None) -> str:
    """The W&B mode: ``mode`` if given, else ``$WANDB_MODE`` if set, else ``"online"`` inside a
    ``wandb agent`` (which sets ``$WANDB_SWEEP_ID``; sweeps need an account), else ``"offline"``."""
    if mode:
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_SWEEP_ID") else "offline"


class WandbCallback(sg.Callback):
    """Logs a run to W&B: the resolved config; loss, learning rate and gradient norm every
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
        import wandb

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


# -- Hydra: a table comparing the members of a multirun --------------------------------------------

COLUMNS = (
    ("test_bpd", "bpd"),
    ("test_bpd_se", "bpd se"),
    ("test_nll_nats", "nll"),
    ("test_nll_nats_se", "nll se"),
    ("fd", "FD"),
    ("fd_reference", "FD ref."),
    ("sample_nfe", "sample NFE"),
    ("likelihood_nfe", "lik. NFE"),
    ("train_seconds", "train s"),
    ("sample_seconds", "sample s"),
)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def collect(sweep_dir: str | Path) -> list[dict]:
    """One row per job under ``sweep_dir``: its overrides and its metrics.json (sorted by job number)."""
    rows = []
    for metrics_path in Path(sweep_dir).glob("*/metrics.json"):
        job = metrics_path.parent
        overrides = []
        ov = job / ".hydra" / "overrides.yaml"
        if ov.exists():
            from omegaconf import OmegaConf

            overrides = list(OmegaConf.load(ov))
        rows.append({"job": job.name, "overrides": overrides, **json.loads(metrics_path.read_text())})

    def order(r):
        return (0, int(r["job"])) if r["job"].isdigit() else (1, r["job"])

    return sorted(rows, key=order)


def comparison_table(rows: list[dict]) -> str:
    """A markdown table with a row per run and a column per headline metric present in any run."""
    cols = [(k, h) for k, h in COLUMNS if any(k in r for r in rows)]
    # Overrides shared by every run go above the table; the column shows what differs.
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    header = ["job", "overrides"] + [h for _, h in cols]
    body = [
        [r["job"], " ".join(o for o in r["overrides"] if o not in common)] + [_fmt(r.get(k)) for k, _ in cols]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    shared = [f"all runs: {' '.join(o for o in rows[0]['overrides'] if o in common)}"] if common else []
    return "\n".join(shared + [line(header), sep] + [line(b) for b in body])


def write_summary(sweep_dir: str | Path) -> str:
    """Write ``summary.md`` and ``summary.json`` into ``sweep_dir``; return the table."""
    rows = collect(sweep_dir)
    table = comparison_table(rows) if rows else "(no finished runs)"
    Path(sweep_dir, "summary.md").write_text(table + "\n")
    Path(sweep_dir, "summary.json").write_text(json.dumps(rows, indent=2))
    return table


class MultirunSummary(HydraCallback):
    """At the end of a ``-m`` sweep, print and save a table comparing its runs."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        table = write_summary(sweep_dir)
        print(f"\nmultirun summary ({sweep_dir}/summary.md):\n{table}")
