"""The comparison table of a sampler sweep: one row per run directory found under ROOT.

    python experiments/sweeps/sampler_table.py outputs/samplers [--sort fd]

Reads every ``metrics.json`` under ROOT with its ``config_resolved.json`` beside it and prints a
Markdown table of the sampler, its settings, the score evaluations it used and the sample-quality
figures, sorted by NFE and then FD.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import sde_gen as sg

COLUMNS = ("fd", "fd_reference", "kid", "kid_se", "precision", "recall", "sample_nfe", "sample_seconds")


def sampler_label(solver: dict) -> str:
    name = str(solver.get("_target_", "?")).rsplit(".", 1)[-1]
    shown = {k: v for k, v in solver.items() if k not in ("_target_", "steps") and v is not None}
    extra = ", ".join(f"{k}={v}" for k, v in shown.items())
    return f"{name}({extra})" if extra else name


def collect(root: Path) -> list[dict]:
    rows = []
    for metrics_file in sorted(root.rglob("metrics.json")):
        config_file = metrics_file.with_name("config_resolved.json")
        if not config_file.exists():
            print(f"skipped {metrics_file}: no config_resolved.json beside it", file=sys.stderr)
            continue
        solver = json.loads(config_file.read_text()).get("solver", {})
        rows.append({"sampler": sampler_label(solver), **json.loads(metrics_file.read_text())})
    return rows


def table(rows: list[dict], sort: str = "fd") -> str:
    key = lambda r: (r.get("sample_nfe") or 0, float("inf") if r.get(sort) is None else r[sort])  # noqa: E731
    return sg.results_table(sorted(rows, key=key), ("sampler", *COLUMNS))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="the sweep directory (hydra.sweep.dir) to read")
    p.add_argument("--sort", default="fd", choices=COLUMNS)
    args = p.parse_args(argv)
    rows = collect(args.root) if args.root.is_dir() else p.error(f"{args.root} is not a directory")
    print(table(rows, args.sort) if rows else p.error(f"no run with a config_resolved.json in {args.root}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
