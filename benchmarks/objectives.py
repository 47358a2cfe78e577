"""Training objectives compared: parameterisation, weighting and noise-level sampler, one row each.

Each row is a set of ``experiments/run.py`` overrides (``ROWS``); the script trains and evaluates
one run per (row, data set, steps, seed) as a subprocess, each in its own run directory under
``--out``, reads its ``metrics.json`` and writes ``docs/objectives.md``:

- digits (``sde=vp solver=pc``, the default run's U-Net, 300 scored samples and the whole test
  set): Fréchet distance, KID, precision, recall and test bits/dim;
- the 8 Gaussians (``data=gmm8 model=mlp``, the issue's command: the default preset's settings on
  gmm8), scored by the KL gap in nats on 1,000 test points (exact divergence);
- ``--check``: the issue's ``python experiments/run.py data=gmm8 model=mlp
  train.parameterization=P`` as written (the preset's steps; each P's own objective, ``auto``,
  sg.objective_for) for P in noise, data, v, edm, flow, and without the key (``default``);
  ``--recipes``: the same command with each objective of ``RECIPES`` named, for P in noise, data,
  v, flow, edm.

Every row sets the parameterisation, the weighting, the time sampler and the importance sampling
itself, so no preset's objective leaks into it (the default preset, digits_quick, trains with
EDM's objective since 0.2; before, with likelihood weighting and importance sampling). The page
is rebuilt from every run directory present and from the runs recorded in the page itself (a
hidden block at its end), so rows measured earlier, here or on another machine, are never
dropped; a run directory overrides the page's record of the same run. A hand-written block
between ``<!-- interpretation -->`` and ``<!-- /interpretation -->`` at the top of the page is
kept.

    .venv/bin/python benchmarks/objectives.py --data gmm8                  # 8 rows x 2,000, 5,000 steps
    .venv/bin/python benchmarks/objectives.py --data gmm8 --check          # the issue's command as written
    .venv/bin/python benchmarks/objectives.py --data gmm8 --recipes        # ... with other objectives
    .venv/bin/python benchmarks/objectives.py --data digits --rows noise+std2,edm --seeds 0,1,2 --resume
    .venv/bin/python benchmarks/objectives.py --table-only                 # rebuild the page only
    .venv/bin/python benchmarks/objectives.py --data gmm8 --quick          # smoke run, page elsewhere
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "experiments" / "run.py"
PAGE = ROOT / "docs" / "objectives.md"
sys.path.insert(0, str(ROOT / "benchmarks"))

from solvers import cpu_name, keep_interpretation, marked_block  # noqa: E402

import sde_gen as sg  # noqa: E402

DATA_OPEN, DATA_CLOSE = "<!-- objectives-runs", "objectives-runs -->"


@dataclass(frozen=True)
class Row:
    """A training objective: its ``run.py`` overrides and what it is."""

    name: str
    overrides: tuple[str, ...]
    note: str


def _row(name: str, param: str, weighting: str, note: str, importance=False, time_sampler="uniform") -> Row:
    own = [f"train.parameterization={param}", f"train.weighting={weighting}"]
    own += [f"train.time_sampler={time_sampler}", f"train.importance_sampling={str(importance).lower()}"]
    return Row(name, tuple(own), note)


EDM = "EDM preconditioning, EDM weighting, log-normal noise levels (Karras et al. 2022)"
IS = "likelihood weighting with importance sampling (Song, Durkan et al. 2021): the bits/dim one"
ROWS = {
    r.name: r
    for r in [
        _row("noise+std2", "noise", "std2", "epsilon prediction, lambda = std^2 (conf/train/default.yaml)"),
        _row("data", "data", "std2", "x_0 prediction, the same loss in noise units"),
        _row("v", "v", "std2", "v prediction (Salimans & Ho 2022), the same loss"),
        _row("edm", "edm", "edm", EDM, time_sampler="log_normal"),
        _row("noise+min_snr", "noise", "min_snr", "epsilon prediction, min-SNR-5 (Hang et al. 2023)"),
        _row("v+min_snr", "v", "min_snr", "v prediction, min-SNR-5"),
        _row("flow", "flow", "std2", "probability-flow velocity prediction, the same loss"),
        _row("likelihood+IS", "noise", "likelihood", IS, importance=True),
    ]
}
CHECK_PARAMS = ("default", "noise", "data", "v", "edm", "flow")  # default: no train.parameterization
# --recipes: the command as written with the objective named; a run's row is "P+RECIPE".
RECIPES = {
    "edm+log_normal": ("train.weighting=edm", "train.time_sampler=log_normal"),
    "std2+uniform": ("train.weighting=std2", "train.time_sampler=uniform"),
    "edm+uniform": ("train.weighting=edm", "train.time_sampler=uniform"),
}
RECIPE_PARAMS = ("noise", "data", "v", "flow", "edm")

# What each data set's runs add to the row; {steps} is filled in.
DATA = {
    "digits": ("sde=vp", "solver=pc", "metrics.num=null", "likelihood.n=null"),
    "gmm8": (
        "data=gmm8",
        "model=mlp",
        "likelihood.divergence=exact",
        "likelihood.n=1000",
        "likelihood.rtol=1e-5",
        "likelihood.atol=1e-5",
    ),  # fmt: skip
}
QUICK = {
    "digits": ("metrics.num=20", "likelihood.n=2", "solver.steps=5", "sample.num=20", "train.warmup=2"),
    "gmm8": ("likelihood.n=20", "solver.steps=10", "sample.num=20", "train.warmup=2"),
}
QUICK_STEPS = 6
# The digits table's runs keep the rate they were measured at: the default run (UNet.digits()) trains
# at 2e-3 since 2026-12-07 (conf/model_train/unet_digits.yaml); gmm8's MLP keeps 5e-4.
DIGITS_TABLE_LR = "train.lr=5e-4"


def slug(name: str) -> str:
    return name.replace("+", "_")


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs"


@dataclass(frozen=True)
class Job:
    """One run: a row (or a check of the command as written) on a data set at a number of steps."""

    kind: str  # "digits", "gmm8", "check" (gmm8, the command as written) or "recipe" (check's
    # command with another objective, RECIPES)
    row: str
    steps: int | None  # None: the preset's
    seed: int
    quick: bool = False

    @property
    def data(self) -> str:
        return "gmm8" if self.kind in ("check", "recipe") else self.kind

    def run_dir(self, out: Path) -> Path:
        steps = "preset" if self.steps is None else f"steps{self.steps}"
        return out / ("quick" if self.quick else "") / self.kind / slug(self.row) / steps / f"seed{self.seed}"

    def overrides(self, threads: int) -> list[str]:
        if self.kind in ("check", "recipe"):
            param, _, recipe = self.row.partition("+")
            own = ["data=gmm8", "model=mlp"] + [f"train.parameterization={param}"] * (param != "default")
            own += list(DATA["gmm8"][2:])  # the KL gap measured on more test points, exactly
            own += list(RECIPES[recipe]) if recipe else []
        else:
            own = [*DATA[self.kind], *ROWS[self.row].overrides]
            own += [DIGITS_TABLE_LR] if self.kind == "digits" else []
        if self.steps is not None:
            own.append(f"train.steps={self.steps}")
        if self.quick:
            own += QUICK[self.data]
        own += [f"seed={self.seed}", f"threads={threads}", "logger=none"]
        return list({o.split("=", 1)[0]: o for o in own}.values())  # a later value of a key wins


def run_job(job: Job, out: Path, threads: int, resume: bool) -> dict | None:
    """Run ``job`` (unless ``resume`` and its metrics exist); return its record, or None on failure."""
    run_dir = job.run_dir(out)
    record_file = run_dir / "objective.json"
    if resume and (run_dir / "metrics.json").is_file() and record_file.is_file():
        print(f"  kept {run_dir.relative_to(out)}", flush=True)
        return record(run_dir)
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # a fresh run; --resume continues a stopped one from its checkpoints
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = job.overrides(threads)
    cmd = [sys.executable, str(RUN.relative_to(ROOT)), *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    with open(run_dir / "run.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if rc != 0 or not (run_dir / "metrics.json").is_file():
        tail = (run_dir / "run.log").read_text().splitlines()[-15:]
        print(f"  FAILED (exit {rc}) {run_dir}:\n    " + "\n    ".join(tail), flush=True)
        return None
    meta = {
        "kind": job.kind,
        "row": job.row,
        "steps": job.steps,
        "seed": job.seed,
        "quick": job.quick,
        "command": "python experiments/run.py " + " ".join(shlex.quote(o) for o in overrides),
        "wall_s": round(wall, 1),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "load": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    record_file.write_text(json.dumps(meta, indent=2))
    return record(run_dir)


KEEP = """train_steps fd fd_reference kid kid_se precision recall test_bpd test_bpd_se kl_gap_nats
kl_gap_nats_se test_nll_nats energy_distance train_seconds""".split()


def record(run_dir: Path) -> dict:
    """A run's record: what ``objective.json`` says of it and the figures of its ``metrics.json``."""
    meta = json.loads((run_dir / "objective.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {**meta, **{k: metrics[k] for k in KEEP if k in metrics}}


def key(r: dict) -> tuple:
    return r["kind"], r["row"], r["steps"], r["seed"]


def page_records(page: Path) -> list[dict]:
    """The runs recorded in the page's hidden block (one JSON object a line)."""
    block = marked_block(page, DATA_OPEN, DATA_CLOSE)
    lines = [] if block is None else block[len(DATA_OPEN) : -len(DATA_CLOSE)].strip().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def dir_records(out: Path, quick: bool) -> list[dict]:
    """The runs finished under ``out`` (``out/quick`` for smoke runs)."""
    base = out / "quick" if quick else out
    metas = sorted(base.glob("*/*/*/seed*/objective.json")) if base.is_dir() else []
    return [record(m.parent) for m in metas if (m.parent / "metrics.json").is_file()]


def merge(*sources: list[dict]) -> list[dict]:
    """The records of all sources, a later source's record replacing an earlier one of the same run."""
    merged = {}
    for source in sources:
        for r in source:
            merged[key(r)] = r
    return list(merged.values())


# -- the page -----------------------------------------------------------------------------------


def _mean_se(values: list[float], own_se: list[float] | None = None) -> tuple[float, float | None]:
    """The mean and its standard error over seeds; one seed: that run's own standard error (or None)."""
    if len(values) > 1:
        return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
    return values[0], (own_se[0] if own_se else None)


def _fmt(records: list[dict], k: str, digits: int, scale: float = 1.0, se_key: str | None = None) -> str:
    values = [r[k] * scale for r in records if r.get(k) is not None]
    if not values:
        return "-"
    own = [r[se_key] * scale for r in records if r.get(se_key) is not None] if se_key else None
    mean, se = _mean_se(values, own if own and len(own) == len(values) else None)
    return f"{mean:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def _groups(records: list[dict], kind: str, order: list[str]) -> list[tuple[str, int, list[dict]]]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["kind"] == kind:
            groups.setdefault((r["row"], r.get("train_steps", r["steps"])), []).append(r)
    rank = {name: i for i, name in enumerate(order)}
    ordered = sorted(groups.items(), key=lambda kv: (rank.get(kv[0][0], 99), kv[0]))
    return [(row, steps, sorted(rs, key=lambda r: r["seed"])) for (row, steps), rs in ordered]


def _seeds(rs: list[dict]) -> str:
    return ",".join(str(r["seed"]) for r in rs)


def _minutes(rs: list[dict]) -> str:
    return f"{statistics.fmean(r['wall_s'] for r in rs) / 60:.1f}"


def _provenance(rs: list[dict]) -> list[str]:
    dates = sorted({r["date"] for r in rs})
    machines = sorted({r["machine"] for r in rs})
    return [
        f"Measured {', '.join(dates)} on {'; '.join(machines)}, the cores shared with other jobs and runs "
        "(the hidden run records below give each run's `load`)."
    ]


def _floor(rs: list[dict]) -> str:
    """The FD floor of a row's runs: the same held-out images each time, so one figure, no ±."""
    values = {round(r["fd_reference"], 1) for r in rs if r.get("fd_reference") is not None}
    return "-" if not values else " / ".join(f"{v:.1f}" for v in sorted(values))


def digits_section(records: list[dict], order: list[str]) -> list[str]:
    groups = _groups(records, "digits", order)
    cmd = "python benchmarks/objectives.py --data digits --steps 2000,5000 --seeds 0,1,2 --threads 2 --resume"
    lines = ["## Digits", ""]
    lines += [
        "Each run: `python experiments/run.py sde=vp solver=pc metrics.num=null likelihood.n=null "
        "train.steps=S train.lr=5e-4 seed=K` plus the row's overrides: `UNet.digits()`, VP SDE, Adam at "
        "5e-4 (the default run's rate until 2026-12-07), the predictor-corrector sampler; FD, KID, "
        "precision and recall of 300 samples in the digits classifier's features "
        "against the training images (docs/metrics.md), test bits/dim of the 300 test images through the "
        "probability-flow ODE. ± is the standard error over seeds (one seed: FD has none; KID and "
        "bits/dim show that run's own). `FD floor`: the FD of the 300 held-out images themselves, the "
        "same images in every run (`-` for runs recorded before it was kept: 23.7 as well).",
        "",
    ]
    if not groups:
        return lines + [
            "Not yet measured. The command below runs every row at 2,000 and 5,000 steps with three seeds: "
            "48 runs, 168,000 training steps, at 0.12 s a step on quiet cores and 0.44 s on shared ones "
            "(docs/training.md) 6 to 20 hours of training plus each run's evaluation; `--rows` and "
            "`--steps` choose a part, and `--resume` continues a stopped benchmark.",
            "", "```bash", cmd, "```", "",
        ]  # fmt: skip
    lines += ["| row | steps | seeds | FD | FD floor | KID | precision | recall | test bits/dim | min/run |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row, steps, rs in groups:
        lines.append(
            f"| {row} | {steps} | {_seeds(rs)} | {_fmt(rs, 'fd', 1)} | {_floor(rs)} | "
            f"{_fmt(rs, 'kid', 0, 1, 'kid_se')} | "
            f"{_fmt(rs, 'precision', 3)} | {_fmt(rs, 'recall', 3)} | "
            f"{_fmt(rs, 'test_bpd', 3, 1, 'test_bpd_se')} | {_minutes(rs)} |"
        )
    return lines + ["", *_provenance([r for _, _, rs in groups for r in rs]), "", "```bash", cmd, "```", ""]


def gmm8_section(records: list[dict], order: list[str]) -> list[str]:
    groups = _groups(records, "gmm8", order)
    cmd = "python benchmarks/objectives.py --data gmm8 --steps 2000,5000 --seeds 0 --threads 1"
    lines = ["## 8 Gaussians: KL gap", ""]
    lines += [
        "Each run: `python experiments/run.py data=gmm8 model=mlp likelihood.divergence=exact "
        "likelihood.n=1000 train.steps=S seed=K threads=1` plus the row's overrides: the default "
        "preset's settings on gmm8 (MLP, batch 128, Adam 5e-4 with 200 warm-up steps and cosine "
        "decay, EMA 0.999 with warm-up, VP SDE). KL gap: the mean over 1,000 test points of the "
        "model's negative log-likelihood (probability-flow ODE, dopri5, exact divergence) minus the "
        "data's, an estimate of KL(data || model) in nats. ± is the standard error over seeds, or "
        "with one seed over the test points of that run (training noise, which one seed does not "
        "show, is larger).",
        "",
    ]
    if not groups:
        return lines + ["Not yet measured. The command:", "", "```bash", cmd, "```", ""]
    lines += ["| row | steps | seeds | KL gap (nats) | test NLL (nats) | train s | min/run |",
              "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for row, steps, rs in groups:
        lines.append(
            f"| {row} | {steps} | {_seeds(rs)} | {_fmt(rs, 'kl_gap_nats', 3, 1, 'kl_gap_nats_se')} | "
            f"{_fmt(rs, 'test_nll_nats', 3)} | {_fmt(rs, 'train_seconds', 0)} | {_minutes(rs)} |"
        )
    return lines + ["", *_provenance([r for _, _, rs in groups for r in rs]), "", "```bash", cmd, "```", ""]


def _own(param: str) -> str:
    """The objective ``auto`` gives ``param`` (``default``: the preset's parameterisation, edm), as W+S."""
    return "+".join(sg.objective_for("edm" if param == "default" else param))


def check_section(records: list[dict]) -> list[str]:
    groups = _groups(records, "check", list(CHECK_PARAMS))
    cmd = "python benchmarks/objectives.py --data gmm8 --check --seeds 0,1,2 --threads 1"
    lines = ["## 8 Gaussians: the issue's command as written", ""]
    lines += [
        "`python experiments/run.py data=gmm8 model=mlp train.parameterization=P` with nothing else "
        "changed: the default preset's 1,000 steps and P's own objective (`train.weighting=auto "
        "train.time_sampler=auto`, the default since 2026-12-07: `sg.objective_for`, chosen from the next "
        "table); only the evaluation is widened (`likelihood.divergence=exact likelihood.n=1000`, which "
        "does not change the trained model). The row `(default)` is the command without the key: the "
        "preset's own parameterisation, EDM's, so it equals `edm`.",
        "",
    ]
    if not groups:
        return lines + ["Not yet measured. The command:", "", "```bash", cmd, "```", ""]
    lines += [
        "| P | objective (auto) | steps | seeds | KL gap (nats) | test NLL (nats) | min/run |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for row, steps, rs in groups:
        lines.append(
            f"| {'(default)' if row == 'default' else row} | {_own(row)} | {steps} | {_seeds(rs)} | "
            f"{_fmt(rs, 'kl_gap_nats', 3, 1, 'kl_gap_nats_se')} | "
            f"{_fmt(rs, 'test_nll_nats', 3)} | {_minutes(rs)} |"
        )
    return lines + ["", *_provenance([r for _, _, rs in groups for r in rs]), "", "```bash", cmd, "```", ""]


def recipe_section(records: list[dict]) -> list[str]:
    """The command with each recipe's objective named: the KL gap per parameterisation, mean ±
    standard error over seeds; the objective that ``auto`` picks for each in bold."""
    cells = {}
    for r in records:
        if r["kind"] == "recipe":
            param, _, recipe = r["row"].partition("+")
            cells.setdefault((param, recipe), []).append(r)
    if not cells:
        return []
    cmd = "python benchmarks/objectives.py --data gmm8 --recipes --seeds 0,1,2 --threads 1"
    heads = [f"{r} (EDM's objective)" if r == "edm+log_normal" else r for r in RECIPES]
    lines = ["## 8 Gaussians: each parameterisation under each objective", ""]
    lines += [
        "The issue's command, `python experiments/run.py data=gmm8 model=mlp train.parameterization=P`, "
        "with the objective named by `train.weighting=W train.time_sampler=S` (the columns, W+S): the KL "
        "gap in nats at the preset's 1,000 steps, mean ± standard error over the seeds in brackets. In "
        "bold, each P's own objective, what `auto` (the default) trains it with (`sg.objective_for`; "
        "`score` is `noise` with the sign of the output turned, the same runs to the last digit here).",
        "",
        "| P | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(heads),
    ]
    for param in RECIPE_PARAMS:
        row = []
        for recipe in RECIPES:
            rs = sorted(cells.get((param, recipe), []), key=lambda r: r["seed"])
            cell = f"{_fmt(rs, 'kl_gap_nats', 3)} ({_seeds(rs)})" if rs else "-"
            row.append(f"**{cell}**" if rs and recipe == _own(param) else cell)
        lines.append(f"| {param} | " + " | ".join(row) + " |")
    rs = [r for v in cells.values() for r in v]
    return lines + ["", *_provenance(rs), "", "```bash", cmd, "```", ""]


def rows_section() -> list[str]:
    lines = ["## The rows", "", "| row | overrides | what it is |", "|---|---|---|"]
    for r in ROWS.values():
        lines.append(f"| {r.name} | `{' '.join(r.overrides)}` | {r.note} |")
    return lines + [
        "",
        "The loss is written once, in noise units (sde_gen.DSMLoss): a parameterisation changes what "
        "the network predicts, never the objective, so `noise+std2`, `data`, `v` and `flow` minimise "
        "the same loss through different output maps; the weighting and the noise-level sampler change "
        "the objective. min-SNR uses gamma = 5, EDM sigma_data = 0.5 (the defaults of `train.min_snr_gamma` "
        "and `train.sigma_data`).",
        "",
    ]


BANDS = (-4.0, 0.0, 4.0, 8.0)  # log-SNR band edges of the weight table


def weight_section() -> list[str]:
    """Where each row's objective puts its weight: the share of ``DSMLoss.effective_weighting``
    in bands of log-SNR, on run.py's VP SDE (rows that differ only in parameterisation share it)."""
    import torch

    import sde_gen as sg

    sde = sg.VPSDE(beta_min=0.1, beta_max=20.0)
    lo, hi = (float(v) for v in -2 * sde.sigma_hat(torch.tensor([sde.T, 1e-5], dtype=torch.float64)).log())
    grid = torch.linspace(lo, hi, 20001, dtype=torch.float64)
    edges = [lo, *BANDS, hi]
    heads = [f"{a:.1f} to {b:.1f}" for a, b in pairwise(edges)]

    def _shares(w):  # each band's share of the weight on the grid
        return [float(w[(grid >= a) & ((grid < b) | (b == hi))].sum() / w.sum()) for a, b in pairwise(edges)]

    lines = ["## Where each objective puts its weight", ""]
    lines += [
        "The share of each objective's weight W(l) over the log-SNR l = -2 log sigma_hat "
        "(`sg.DSMLoss.effective_weighting`: the weighting times the density of the noise levels drawn, "
        f"per unit of log-SNR) in bands of l, on run.py's VP SDE (l from {lo:.1f} at t = 1 to {hi:.1f} "
        "at t = 1e-5). Rows that differ only in their parameterisation share a line.",
        "",
        "| rows | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(heads),
    ]
    seen: dict[tuple, list[str]] = {}
    for r in ROWS.values():
        kw = dict(o.removeprefix("train.").split("=", 1) for o in r.overrides)
        key_ = (kw["weighting"], kw.get("time_sampler", "uniform"), kw["importance_sampling"])
        seen.setdefault(key_, []).append(r.name)
    for (weighting, sampler, importance), names in seen.items():
        loss = sg.DSMLoss(
            sde,
            weighting,
            importance_sampling=importance == "true",
            time_sampler=None if sampler == "uniform" else sampler,
        )
        shares = _shares(loss.effective_weighting(grid))
        lines.append(f"| {', '.join(names)} | " + " | ".join(f"{x:.2f}" for x in shares) + " |")
    lines += [
        "",
        "The same objective weighs each network's output differently: the share of "
        "`effective_weighting(l, parameterization=P)`, the weight of the squared error of P's network "
        "output (W(l) over P's unit, `sg.Parameterization.unit`), in the same bands, under the "
        "default objective (EDM's weighting, log-normal noise levels) and under `std2` with uniform "
        "times. EDM's network sees its weight mostly at log-SNR 0 to 8; an x_0 network's goes to the "
        "lowest noise levels under either objective.",
        "",
        "| objective | P | " + " | ".join(heads) + " |",
        "|---|---|" + "---:|" * len(heads),
    ]
    for label, weighting, sampler in (
        ("edm, log_normal", "edm", "log_normal"),
        ("std2, uniform", "std2", None),
    ):
        loss = sg.DSMLoss(sde, weighting, time_sampler=sampler)
        for param in ("edm", "noise", "v", "data", "flow"):
            shares = _shares(loss.effective_weighting(grid, parameterization=param))
            lines.append(f"| {label} | {param} | " + " | ".join(f"{x:.2f}" for x in shares) + " |")
    return lines + [""]


def write_page(page: Path, records: list[dict]) -> None:
    order = list(ROWS)
    lines = ["# Training objectives: parameterisation, weighting, noise levels", ""]
    lines += keep_interpretation(page)
    lines += rows_section() + weight_section() + digits_section(records, order) + gmm8_section(records, order)
    lines += check_section(records) + recipe_section(records)
    lines += [
        "Made by `benchmarks/objectives.py` (benchmarks/README.md); its run directories are under "
        "`outputs/objectives/` unless `--out` says otherwise. The runs behind the tables are recorded "
        "below, hidden, so that a rebuild (`--table-only`) keeps rows whose run directories are gone.",
        "",
        DATA_OPEN,
        *[json.dumps(r, sort_keys=True) for r in sorted(records, key=lambda r: tuple(map(str, key(r))))],
        DATA_CLOSE,
        "",
    ]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines))


# -- the command line ---------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(DATA), help="the data set to run (not needed with --table-only)")
    p.add_argument("--steps", default="2000,5000", help="training steps, comma-separated")
    p.add_argument("--seeds", default="0", help="seeds, comma-separated (e.g. 0,1,2)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"a subset of {', '.join(ROWS)}")
    p.add_argument("--threads", type=int, default=1, help="run.py's threads= (torch.set_num_threads)")
    check = "gmm8: the issue's command as written, train.parameterization=P, the preset's steps"
    p.add_argument("--check", action="store_true", help=check)
    recipes = f"gmm8: --check's command with each objective of {', '.join(RECIPES)}, for {RECIPE_PARAMS}"
    p.add_argument("--recipes", action="store_true", help=recipes)
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_STEPS} steps, tiny evaluation")
    p.add_argument("--resume", action="store_true", help="keep finished runs, continue stopped ones")
    p.add_argument("--table-only", action="store_true", help="rebuild the page from the runs present")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "objectives", help="run directories")
    where = "the page written (default docs/objectives.md; with --quick OUT/quick/objectives.md)"
    p.add_argument("--page", type=Path, default=None, help=where)
    args = p.parse_args(argv)
    out = args.out.resolve()
    page = args.page or (out / "quick" / "objectives.md" if args.quick else PAGE)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; the rows are {', '.join(ROWS)}")
    if not args.table_only and args.data is None:
        p.error("--data gmm8|digits is needed (or --table-only)")
    if (args.check or args.recipes) and args.data != "gmm8":
        p.error("--check and --recipes are the gmm8 command as written: --data gmm8")

    failed = 0
    if not args.table_only:
        seeds = _ints(args.seeds)
        if args.check:
            jobs = [Job("check", p_, QUICK_STEPS if args.quick else None, s, args.quick)
                    for p_ in CHECK_PARAMS for s in seeds]  # fmt: skip
        elif args.recipes:
            jobs = [Job("recipe", f"{p_}+{r}", QUICK_STEPS if args.quick else None, s, args.quick)
                    for r in RECIPES for p_ in RECIPE_PARAMS for s in seeds]  # fmt: skip
        else:
            steps = [QUICK_STEPS] if args.quick else _ints(args.steps)
            jobs = [Job(args.data, r, n, s, args.quick) for n in steps for r in rows for s in seeds]
        print(f"{len(jobs)} runs, one at a time, under {out}", flush=True)
        start = time.perf_counter()
        for i, job in enumerate(jobs, 1):
            print(
                f"[{i}/{len(jobs)}] {job.kind} {job.row} steps={job.steps or 'preset'} seed={job.seed}",
                flush=True,
            )
            rec = run_job(job, out, args.threads, args.resume)
            if rec is None:
                failed += 1
                continue
            gap = rec.get("kl_gap_nats")
            nan = float("nan")
            figures = f"KL gap {gap:.3f}" if gap is not None else f"FD {rec.get('fd', nan):.1f}"
            figures += f", bits/dim {rec['test_bpd']:.3f}" if "test_bpd" in rec else ""
            print(f"  {figures}, {rec['wall_s']:.0f} s", flush=True)
            # The page after every run, so a stopped benchmark leaves what it measured.
            write_page(page, merge(page_records(page), dir_records(out, args.quick)))
        print(f"total {time.perf_counter() - start:.0f} s, {failed} failed", flush=True)
    write_page(page, merge(page_records(page), dir_records(out, args.quick)))
    print(f"wrote {page}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
