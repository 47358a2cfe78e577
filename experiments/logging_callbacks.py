"""The Hydra multirun summary: a table comparing the members of a ``-m`` sweep."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import OmegaConf

import sde_gen as sg

COLUMNS = (
    ("test_bpd", "bpd"), ("test_bpd_se", "bpd se"), ("test_nll_nats", "nll"), ("test_nll_nats_se", "nll se"),
    ("fd", "FD"), ("fd_reference", "FD ref."), ("sample_nfe", "sample NFE"), ("likelihood_nfe", "lik. NFE"),
    ("train_seconds", "train s"), ("sample_seconds", "sample s"),
)  # fmt: skip


def collect(sweep_dir: str | Path) -> list[dict]:
    """One row per job under ``sweep_dir``: its overrides and its metrics.json (sorted by job number)."""
    rows = []
    for metrics_path in Path(sweep_dir).glob("*/metrics.json"):
        ov = metrics_path.parent / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(ov)) if ov.exists() else []
        metrics = json.loads(metrics_path.read_text())
        rows.append({"job": metrics_path.parent.name, "overrides": overrides, **metrics})
    return sorted(rows, key=lambda r: (0, int(r["job"])) if r["job"].isdigit() else (1, r["job"]))


def comparison_table(rows: list[dict]) -> str:
    """A markdown table with a row per run and a column per headline metric present in any run;
    overrides shared by every run go above it, the column shows what differs."""
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    shown = [{**r, "overrides": " ".join(o for o in r["overrides"] if o not in common)} for r in rows]
    cols = [("job", "job"), ("overrides", "overrides")] + [c for c in COLUMNS if any(c[0] in r for r in rows)]
    shared = [f"all runs: {' '.join(o for o in rows[0]['overrides'] if o in common)}"] if common else []
    return "\n".join(shared + [sg.results_table(shown, cols)])


class MultirunSummary(HydraCallback):
    """At the end of a ``-m`` sweep, print the table and write ``summary.md`` and ``summary.json``."""

    def on_multirun_end(self, config, **kwargs) -> None:
        if (sweep_dir := Path(config.hydra.sweep.dir)).is_dir():
            rows = collect(sweep_dir)
            table = comparison_table(rows) if rows else "(no finished runs)"
            (sweep_dir / "summary.md").write_text(table + "\n")
            (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2))
            print(f"\nmultirun summary ({sweep_dir}/summary.md):\n{table}")
