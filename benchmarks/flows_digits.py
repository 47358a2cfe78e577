"""Flow matching against VP on digits at equal training steps: Fréchet distance at 1 to 50 score
evaluations and test bits/dim, with minibatch optimal-transport couplings and after one reflow.

Rows, each a run of ``experiments/run.py`` at the default run's settings (``digits_quick``: 1,000
steps of the 8x8 U-Net, 100 samples scored against 100 held-out images, bits/dim of the first 100
test images), one seed:

- ``vp``: the default, VP with EDM's objective (``sde=vp``);
- ``flow``: ``experiment=digits_flow`` (the straight path, flow matching's loss);
- ``flow+ot``: the same with ``train.coupling=ot``;
- ``flow+reflow``: ``experiment=digits_flow`` trained on the pairs of the ``flow`` row's ODE
  (``train.reflow_from``, as many pairs as training images), so it costs that row's training too.

Each row trains once with the adaptive probability-flow ODE as its sampler (dopri5: FD and its
evaluations, test bits/dim), then its model file draws the same 100 samples' worth with DDIM at
1, 2, 4, 10, 20 and 50 evaluations on the SDE's own grid (``solver=ddim solver.steps=K``:
``log_snr`` on VP, uniform in ``t`` on the straight path, where DDIM is Euler in ``t``). FD is
reported beside its floor (``fd_reference``: 100 held-out images against the training set).
Straightness (Liu et al. 2022; ``benchmarks/flows.py``'s figure, 0 for straight paths) is measured
on each model file's 200-step DDIM paths from 100 prior draws (``--straightness``).

    .venv/bin/python benchmarks/flows_digits.py --rows vp,flow+ot --out outputs/flows_digits
    .venv/bin/python benchmarks/flows_digits.py --rows flow,flow+reflow --out outputs/flows_digits
    .venv/bin/python benchmarks/flows_digits.py --straightness --out outputs/flows_digits
    .venv/bin/python benchmarks/flows_digits.py --table-only --out outputs/flows_digits
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "experiments" / "run.py"
NFES = (1, 2, 4, 10, 20, 50)
ROWS = {
    "vp": ("sde=vp", "solver=ode"),
    "flow": ("experiment=digits_flow",),
    "flow+ot": ("experiment=digits_flow", "train.coupling=ot"),
    "flow+reflow": ("experiment=digits_flow", "train.reflow_from={flow}"),
}


def run(overrides: list[str], run_dir: Path, threads: int) -> dict:
    """One run of run.py into ``run_dir``; its metrics.json (raises with the log's tail if it fails)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(RUN), *overrides, f"threads={threads}", "logger=none"]
    cmd.append(f"hydra.run.dir={run_dir}")
    with open(run_dir / "run.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"}, stdout=log,
                            stderr=subprocess.STDOUT).returncode  # fmt: skip
    if rc != 0:
        tail = "\n".join((run_dir / "run.log").read_text().splitlines()[-15:])
        raise RuntimeError(f"run.py failed ({rc}) in {run_dir}:\n{tail}")
    return json.loads((run_dir / "metrics.json").read_text())


def measure(row: str, out: Path, seed: int, threads: int, extra: list[str]) -> dict:
    row_dir = out / row.replace("+", "_")
    overrides = [o.format(flow=out / "flow" / "model.safetensors") for o in ROWS[row]]
    start = time.perf_counter()
    trained = run([*overrides, f"seed={seed}", *extra], row_dir, threads)
    result = {
        "overrides": overrides,
        "seed": seed,
        "train_seconds": trained["train_seconds"],
        "fd_reference": trained["fd_reference"],
        "ode_fd": trained["fd"],
        "ode_nfe": trained["sample_nfe"],
        "test_bpd": trained["test_bpd"],
        "test_bpd_se": trained["test_bpd_se"],
    }
    model = row_dir / "model.safetensors"
    for nfe in NFES:
        sampled = run(
            ["mode=sample", f"ckpt={model}", "solver=ddim", f"solver.steps={nfe}", f"seed={seed}", *extra],
            row_dir / f"ddim{nfe}",
            threads,
        )
        result[f"fd_{nfe}"] = sampled["fd"]
    result["wall_seconds"] = time.perf_counter() - start
    return result


def add_straightness(out: Path, seed: int) -> None:
    """Each measured row's straightness, from its model file, added to its record."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from flows import straightness

    import sde_gen as sg

    for row in ROWS:
        record = out / f"{row.replace('+', '_')}.json"
        if not record.is_file():
            continue
        model = sg.load_model(out / row.replace("+", "_") / "model.safetensors").eval()
        x_T = model.sde.prior_sample((100, 1, 8, 8), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            value = straightness(model.sde, model, x_T)
        result = json.loads(record.read_text())
        record.write_text(json.dumps({**result, "straightness": value}, indent=1))
        print(f"[{row}] straightness {value:.3f}", flush=True)


def table(results: dict) -> str:
    head = "| row | train s | " + " | ".join(f"FD, {k} NFE" for k in NFES)
    head += " | FD, dopri5 (NFE) | FD floor | test bits/dim | straightness |"
    lines = [head, "|---|" + "---:|" * (len(NFES) + 5)]
    for name in ROWS:
        if name not in results:
            continue
        r = results[name]
        cells = " | ".join(f"{r[f'fd_{k}']:.1f}" for k in NFES)
        lines.append(
            f"| {name} | {r['train_seconds']:.0f} | {cells} | {r['ode_fd']:.1f} ({r['ode_nfe']}) | "
            f"{r['fd_reference']:.1f} | {r['test_bpd']:.3f} ± {r['test_bpd_se']:.3f} | "
            + (f"{r['straightness']:.3f} |" if "straightness" in r else "- |")
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"a subset of {', '.join(ROWS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "outputs" / "flows_digits"))
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--straightness", action="store_true", help="add the straightness of the rows measured")
    p.add_argument("--extra", default="", help="more run.py overrides for every run (a smoke test)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = [] if args.table_only or args.straightness else args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if "flow+reflow" in rows and "flow" not in rows and not (out / "flow" / "model.safetensors").is_file():
        p.error("flow+reflow reflows the flow row's model: run --rows flow first (or with it)")
    for row in rows:
        result = measure(row, out, args.seed, args.threads, args.extra.split())
        (out / f"{row.replace('+', '_')}.json").write_text(json.dumps(result, indent=1))
        print(f"[{row}] done in {result['wall_seconds']:.0f} s", flush=True)
    if args.straightness:
        add_straightness(out, args.seed)
    files = {r: out / f"{r.replace('+', '_')}.json" for r in ROWS}
    results = {r: json.loads(f.read_text()) for r, f in files.items() if f.is_file()}
    print(table(results))


if __name__ == "__main__":
    main()
