"""Sample quality against score evaluations (NFE) for every sampler, on a trained digits model.

Each sampler draws the same number of samples as the digits test set (300) from one trained
model, at a ladder of NFE budgets; the samples are scored in the digits classifier's features
(Fréchet distance, KID, precision and recall; ``docs/metrics.md``) against the training images,
beside the floor (the test images in place of the samples). Wall time per sample is for this
machine's CPUs and the model's forward pass.

    .venv/bin/python experiments/run.py sde=vp solver=pc mode=train hydra.run.dir=/tmp/default
    .venv/bin/python benchmarks/sample_quality.py --model /tmp/default/model.safetensors

writes ``docs/sample_quality.md`` (``--out`` for elsewhere); ``--nfe 10,20`` and ``--samplers
em,ode_rk4`` choose a subset. A hand-written block between ``<!-- interpretation -->`` and
``<!-- /interpretation -->`` at the top of the output file is kept when it is regenerated.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from solvers import cpu_name, keep_interpretation  # noqa: E402

import sde_gen as sg  # noqa: E402
from sde_gen import metrics as M  # noqa: E402


@dataclass(frozen=True)
class Sampler:
    """A sampler family: ``make(nfe)`` builds the solver that spends ``nfe`` score evaluations (or
    ``None`` when the budget does not fit the method, e.g. fewer than one step); ``budgets`` are
    the NFE it is run at unless ``--nfe`` says otherwise."""

    name: str
    make: Callable[[int], sg.Solver | None]
    note: str
    budgets: tuple[int, ...] = (10, 20, 50)


def _steps(nfe: int, per_step: int):
    return nfe // per_step if nfe % per_step == 0 and nfe >= per_step else None


def _build(cls, nfe: int, per_step: int = 1, **kwargs):
    steps = _steps(nfe, per_step)
    return None if steps is None else cls(steps=steps, **kwargs)


SLOW = (100, 1000)
SAMPLERS = {
    s.name: s
    for s in [
        Sampler("em", lambda n: _build(sg.EulerMaruyama, n), "Euler-Maruyama, 1 NFE per step", SLOW),
        Sampler(
            "pc",
            lambda n: _build(sg.PredictorCorrector, n, 2),
            "reverse diffusion + Langevin (the default run's sampler), 2 NFE per step",
            SLOW,
        ),
        Sampler(
            "ancestral",
            lambda n: _build(sg.PredictorCorrector, n, predictor="ancestral", corrector="none"),
            "ancestral (DDPM) predictor alone, 1 NFE per step",
            SLOW,
        ),
        Sampler(
            "ode_rk4",
            lambda n: _build(lambda steps: sg.ProbabilityFlow("rk4", steps=steps), n, 4),
            "probability-flow ODE, RK4 on a uniform grid, 4 NFE per step",
            (20, 100),
        ),
        Sampler("ddim", lambda n: _build(sg.DDIM, n), "DDIM (eta = 0), log-SNR grid"),
        Sampler("ddim_eta1", lambda n: _build(sg.DDIM, n, eta=1.0), "DDIM eta = 1 (ancestral), log-SNR grid"),
        Sampler("dpmpp2m", lambda n: _build(sg.DPMSolverPlusPlus, n), "DPM-Solver++ 2M, log-SNR grid"),
        Sampler(
            "dpmpp3m", lambda n: _build(sg.DPMSolverPlusPlus, n, order=3), "DPM-Solver++ 3M, log-SNR grid"
        ),
        Sampler(
            "sde_dpmpp2m",
            lambda n: _build(sg.DPMSolverPlusPlus, n, stochastic=True),
            "SDE-DPM-Solver++ 2M, log-SNR grid",
        ),
        Sampler("unipc", lambda n: _build(sg.UniPC, n), "UniPC bh2 order 2, log-SNR grid"),
        Sampler("ipndm", lambda n: _build(sg.IPNDM, n), "iPNDM, EDM grid"),
        Sampler(
            "ipndm_uniform",
            lambda n: _build(sg.IPNDM, n, schedule="time_uniform"),
            "iPNDM, uniform grid in t (the oracle's best)",
        ),
        Sampler(
            "dpmpp2m_quadratic",
            lambda n: _build(sg.DPMSolverPlusPlus, n, schedule="time_quadratic"),
            "DPM-Solver++ 2M, time-quadratic grid",
        ),
        Sampler("heun", lambda n: _build(sg.Heun, n), "EDM's Heun (Algorithm 1), EDM grid"),
    ]
}


def machine_line(threads: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, 1-min load average at start "
        f"{load:.2f}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"`torch.set_num_threads({threads})`, float32, CPU"
    )


def footer(threads: int, started, total_s: float, command: str) -> list[str]:
    """A page's last lines: the machine, the date and run time, the command that remakes it."""
    return [
        machine_line(threads),
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z')}; total {total_s / 60:.1f} min",
        f"- Regenerate: `{command}`",
        "",
    ]


def draw(model, solver, shape, batch: int, seed: int) -> tuple[torch.Tensor, int, float]:
    """``shape[0]`` samples in batches of ``batch``: the samples, the NFE per sample, seconds."""
    sde, n = model.sde, shape[0]
    t0 = time.perf_counter()
    out, nfe = [], 0
    with torch.no_grad():
        for i, start in enumerate(range(0, n, batch)):
            b = min(batch, n - start)
            g = torch.Generator().manual_seed(seed * 1_000_003 + i)
            res = sg.sample(sde, model, (b, *shape[1:]), solver, generator=g, return_result=True)
            out.append(res.x)
            nfe = res.nfe
    return torch.cat(out), nfe, time.perf_counter() - t0


def fmt_row(name, nfe, runs: list[dict], sec_per_sample) -> str:
    """A table row: FD as mean ± std over the sample sets (one set: no spread), the rest as means."""

    def mean(k):
        return sum(r[k] for r in runs) / len(runs)

    fd = f"{mean('fd'):.1f}"
    if len(runs) > 1:
        fd += f" ± {statistics.stdev(r['fd'] for r in runs):.1f}"
    return (
        f"| {name} | {nfe} | {fd} | {mean('kid'):.0f} | "
        f"{mean('precision'):.3f} | {mean('recall'):.3f} | {sec_per_sample * 1e3:.1f} |"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model.safetensors from a digits run")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help=f"subset of {sorted(SAMPLERS)}")
    p.add_argument("--nfe", default=None, help="NFE budgets for every sampler (default: each its own)")
    p.add_argument("--seeds", type=int, default=3, help="sample sets per row (FD mean and spread)")
    p.add_argument("--num", type=int, default=None, help="samples per run (default: the test set's size)")
    p.add_argument("--batch", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "sample_quality.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.samplers.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SAMPLERS))
    if unknown:
        p.error(f"unknown samplers {unknown}; choose from {sorted(SAMPLERS)}")
    budgets = None if args.nfe is None else [int(v) for v in args.nfe.split(",")]

    model = sg.load_model(args.model).eval()
    data = sg.load_dataset("digits")
    n = args.num or len(data.test)
    clf = M.DigitsClassifier(data)
    train_feats = clf(data.train)
    kw = dict(kid_subsets=100)

    def score(images):
        return M.feature_metrics(train_feats, clf(images), generator=torch.Generator().manual_seed(0), **kw)

    floor = score(data.test)
    lines = [
        "| sampler | NFE | FD | KID | precision | recall | ms per sample |",
        "|---|---:|---:|---:|---:|---:|---:|",
        fmt_row("floor: test images", "-", [floor], 0.0),
    ]
    started = datetime.datetime.now().astimezone()
    t_all = time.perf_counter()
    for name in names:
        for nfe in budgets or SAMPLERS[name].budgets:
            solver = SAMPLERS[name].make(nfe)
            if solver is None:
                continue
            runs, secs = [], 0.0
            for k in range(args.seeds):
                x, used, sec = draw(model, solver, (n, *data.shape), args.batch, args.seed + k)
                runs.append(score(x))
                secs += sec
            lines.append(fmt_row(name, used, runs, secs / (n * args.seeds)))
            print(lines[-1], flush=True)
    total = time.perf_counter() - t_all

    out = Path(args.out)
    command = "python benchmarks/sample_quality.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    sde_name = type(model.sde).__name__
    doc = [
        "# Sample quality against NFE on the default digits model",
        "",
        *keep_interpretation(out),
        f"Model: `{args.model}` ({sde_name}, {model.parameterization} parameterization); "
        f"{n} samples per set drawn in batches of {args.batch}, {args.seeds} sets per row (seeds "
        f"{args.seed}..{args.seed + args.seeds - 1}; FD as mean ± std over the sets, the other figures "
        "as means), scored in the digits classifier's features "
        f"(test accuracy {clf.accuracy:.3f}) against the "
        f"{len(data.train)} training images. KID is unbiased and can be negative (100 subsets "
        "of each set). The floor row scores the test images in place of samples.",
        "",
        *lines,
        "",
        "Samplers:",
        "",
        *[f"- `{s}`: {SAMPLERS[s].note}" for s in names],
        "",
        *footer(args.threads, started, total, command),
    ]
    out.write_text("\n".join(doc))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
