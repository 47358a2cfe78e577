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

COLUMNS = ("fd", "fd_reference", "kid", "kid_se", "precision", "recall", "sample_nfe", "sample_seconds")


def sampler_label(solver: dict) -> str:
    name = str(solver.get("_target_", "?")).rsplit(".", 1)[-1]
    skip = {"_target_", "steps"}
    extra = ", ".join(f"{k}={v}" for k, v in solver.items() if k not in skip and v is not None)
    return f"{name}({extra})" if extra else name


def collect(root: Path) -> list[dict]:
    rows = []
    for metrics_file in sorted(root.rglob("metrics.json")):
        config_file = metrics_file.with_name("config_resolved.json")
        if not config_file.exists():
            print(f"skipped {metrics_file}: no config_resolved.json beside it", file=sys.stderr)
            continue
        metrics = json.loads(metrics_file.read_text())
        config = json.loads(config_file.read_text())
        rows.append(
            {"sampler": sampler_label(config.get("solver", {})), **{k: metrics.get(k) for k in COLUMNS}}
        )
    return rows


def table(rows: list[dict], sort: str = "fd") -> str:
    def key(r):
        v = r.get(sort)
        return (r.get("sample_nfe") or 0, float("inf") if v is None else v)

    def cell(v):
        if v is None:
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| sampler | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for r in sorted(rows, key=key):
        lines.append(f"| {r['sampler']} | " + " | ".join(cell(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="the sweep directory (hydra.sweep.dir) to read")
    p.add_argument("--sort", default="fd", choices=COLUMNS)
    args = p.parse_args(argv)
    if not args.root.is_dir():
        p.error(f"{args.root} is not a directory")
    rows = collect(args.root)
    if not rows:
        p.error(f"no metrics.json with a config_resolved.json beside it under {args.root}")
    print(table(rows, args.sort))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
