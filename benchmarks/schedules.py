"""Time grids on the closed-form oracle: each sampler's default grid, the best named grid (by hand)
and grids tuned by ``sg.optimize_schedule``, for every SDE.

The figure is benchmarks/fast_samplers.py's: the per-component W2 of ``n`` samples of ``p_eps``
over its noise floor (1.0 = as good as exact samples), with the exact score of 8 Gaussians in 2-D
(``sg.gmm8()``, n = 20,000) and of a 16-D anisotropic mixture (``tests/problems.mixture_16d``,
n = 2,000). Every grid is judged on the same prior draw (seed 0); the tuner's pilot is another
draw (1,024 points, seed 7), so a tuned grid is not judged on the points it was tuned on.

    .venv/bin/python benchmarks/schedules.py                        # docs/benchmarks_schedules.md
    .venv/bin/python benchmarks/schedules.py --quick                # smoke run, page elsewhere
    .venv/bin/python benchmarks/schedules.py --sdes vp,ve --cache /tmp/sched   # part, resumable
    .venv/bin/python benchmarks/schedules.py --draws 8          # the default grids over 8 prior draws
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fast_samplers import SCHEDULES, sdes  # noqa: E402
from problems import ComponentW2, mixture_16d  # noqa: E402
from solvers import cpu_name, keep_interpretation  # noqa: E402

import sde_gen as sg  # noqa: E402

DTYPE = torch.float64
EPS = 1e-3
PILOT = 1024
SOLVERS = {
    "DPM-Solver++ 2M": lambda **kw: sg.DPMSolverPlusPlus(order=2, **kw),
    "UniPC": lambda **kw: sg.UniPC(**kw),
    "iPNDM": lambda **kw: sg.IPNDM(**kw),
}
GRIDS = ("default", "best named", *sg.TUNING_METHODS)


def measure(mix, sde, n, n_ref, reps, budgets, methods) -> dict:
    """``{solver: {nfe: {grid: (ratio, schedule or cost)}}}`` for one (mixture, SDE)."""
    fig = ComponentW2(mix, sde, EPS, n, n_ref, reps)
    x_T = sde.prior_sample((n, mix.dim), generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    score = mix.score_fn(sde)

    def ratio(solver) -> float:
        x = sg.sample(sde, score, x_T.shape, solver, eps=EPS, x_T=x_T)
        return fig(x)[0] / fig.floor[0]

    out: dict = {}
    for (name, make), nfe in itertools.product(SOLVERS.items(), budgets):
        cell = out.setdefault(name, {}).setdefault(nfe, {})
        cell["default"] = (ratio(make(steps=nfe)), sde.schedule_for(make(steps=nfe)))
        named = {s: ratio(make(steps=nfe, schedule=s)) for s in SCHEDULES}
        best = min(named, key=named.get)
        cell["best named"] = (named[best], best)
        cell["named"] = named
        for method in methods:
            res = sg.optimize_schedule(
                sde, score, make(steps=nfe), (PILOT, mix.dim), eps=EPS, method=method, dtype=DTYPE,
                generator=torch.Generator().manual_seed(7), return_result=True,
            )  # fmt: skip
            cell[method] = (
                ratio(make(schedule=res.grid)),
                f"{res.nfe} NFE, {res.seconds:.1f} s, {res.method}",
            )
        print(
            f"  {name} {nfe}: " + ", ".join(f"{k} {v[0]:.2f}" for k, v in cell.items() if k != "named"),
            flush=True,
        )
    return out


def worst_table(results: dict, budgets, grids) -> list[str]:
    """Per sampler and grid, the worst ratio over every (mixture, SDE) run, and the best sampler's."""
    lines = [
        "| sampler | grid | " + " | ".join(f"{b} NFE" for b in budgets) + " |",
        "|---|---|" + "---:|" * len(budgets),
    ]
    for name, grid in itertools.product(SOLVERS, grids):
        cells = [max(r[name][b][grid][0] for r in results.values()) for b in budgets]
        lines.append(f"| {name} | {grid} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    for grid in grids:
        cells = [max(min(r[s][b][grid][0] for s in SOLVERS) for r in results.values()) for b in budgets]
        lines.append(
            f"| **best of the three** | {grid} | " + " | ".join(f"**{c:.2f}**" for c in cells) + " |"
        )
    return lines + [""]


def per_sde_table(results: dict, budgets, grids) -> list[str]:
    """Per (mixture, SDE): the best of the three samplers on each grid kind, at each budget."""
    cols = [(g, b) for b in budgets for g in grids]
    lines = [
        "| mixture | SDE | " + " | ".join(f"{g}, {b} NFE" for g, b in cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    for (mname, sname), r in results.items():
        cells = [min(r[s][b][g][0] for s in SOLVERS) for g, b in cols]
        lines.append(f"| {mname} | {sname} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return lines + [""]


def unipc_final_table() -> list[str]:
    """UniPC(order=2) with and without lowering the order of its last steps (``lower_order_final``),
    on the 8 Gaussians and the 16-D mixture, for VP, sub-VP, VE and the OU SDE."""
    all_sdes = sdes()
    cols = [(nfe, grid) for nfe in (10, 20) for grid in ("log_snr", "time_quadratic")]
    lines = [
        "| mixture, SDE | " + " | ".join(f"{nfe} NFE, `{grid}`" for nfe, grid in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for (mname, mix, n, n_ref), sname in itertools.product(
        [("gmm8", sg.gmm8(dtype=DTYPE), 20000, 200000), ("16-D", mixture_16d(DTYPE), 2000, 20000)],
        ["vp", "subvp", "ve", "user (OU)"],
    ):
        sde = all_sdes[sname]
        fig = ComponentW2(mix, sde, EPS, n, n_ref, 5)
        x_T = sde.prior_sample((n, mix.dim), generator=torch.Generator().manual_seed(0), dtype=DTYPE)
        cells = []
        for nfe, grid in cols:
            pair = []
            for low in (True, False):
                solver = sg.UniPC(nfe, schedule=grid, lower_order_final=low)
                x = sg.sample(sde, mix.score_fn(sde), x_T.shape, solver, eps=EPS, x_T=x_T)
                pair.append(fig(x)[0] / fig.floor[0])
            cells.append(f"{pair[0]:.3g} / {pair[1]:.3g}")
        lines.append(f"| {mname}, {sname} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return lines


def defaults_spread_table(draws: int) -> list[str]:
    """The best of the three samplers on their default grids, on ``draws`` prior draws of the 8
    Gaussians (n = 20,000 each, seeds 0, 1, ...), per SDE: mean ± standard error, least and most;
    beside it the same figure for exact samples of p_eps, the spread a perfect sampler would show."""
    mix, all_sdes = sg.gmm8(dtype=DTYPE), sdes()
    lines = [
        "| SDE | NFE | default grids: mean ± se | least | most | exact samples: mean ± se | least | most |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sname, sde in all_sdes.items():
        fig = ComponentW2(mix, sde, EPS, 20000, 200000, 5)
        gen = torch.Generator().manual_seed(99)
        exact = [
            fig(mix.sample_marginal(20000, EPS, sde, generator=gen))[0] / fig.floor[0] for _ in range(draws)
        ]
        by_nfe: dict = {}
        for seed in range(draws):
            x_T = sde.prior_sample(
                (20000, mix.dim), generator=torch.Generator().manual_seed(seed), dtype=DTYPE
            )
            for nfe in (10, 20):
                ratios = [
                    fig(sg.sample(sde, mix.score_fn(sde), x_T.shape, make(steps=nfe), eps=EPS, x_T=x_T))[0]
                    / fig.floor[0]
                    for make in SOLVERS.values()
                ]
                by_nfe.setdefault(nfe, []).append(min(ratios))
        for nfe, vals in by_nfe.items():
            lines.append(f"| {sname} | {nfe} | {_spread(vals)} | {_spread(exact)} |")
            print(lines[-1], file=sys.stderr, flush=True)  # progress; the table goes to stdout
    return lines


def _spread(vals: list[float]) -> str:
    t = torch.tensor(vals, dtype=DTYPE)
    return f"{t.mean():.2f} ± {t.std() / len(vals) ** 0.5:.2f} | {t.min():.2f} | {t.max():.2f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: gmm8 on VP, 10 NFE, small sets")
    p.add_argument("--sdes", default=None, help="comma-separated subset of the SDE names")
    p.add_argument("--mixtures", default="gmm8,16d", help="comma-separated subset of: gmm8, 16d")
    p.add_argument("--budgets", default="5,10,20", help="NFE budgets, comma-separated")
    p.add_argument("--methods", default=",".join(sg.TUNING_METHODS), help="tuning methods, comma-separated")
    p.add_argument(
        "--cache", default=None, help="a directory keeping each (mixture, SDE) result as it is done"
    )
    p.add_argument("--out", default=None, help="the page (default docs/benchmarks_schedules.md)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--unipc-final", action="store_true", help="only print UniPC's lower_order_final table")
    p.add_argument(
        "--draws", type=int, default=0, help="only print the default grids' spread over this many draws"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.unipc_final:
        print("\n".join(unipc_final_table()))
        return
    if args.draws:
        print("\n".join(defaults_spread_table(args.draws)))
        return
    sizes = {"gmm8": (20000, 200000, 5), "16d": (2000, 20000, 5)}
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    all_sdes = sdes()
    names = args.sdes.split(",") if args.sdes else list(all_sdes)
    mixes = args.mixtures.split(",")
    if args.quick:
        sizes, budgets, names, mixes = {"gmm8": (2000, 20000, 3)}, [10], ["vp"], ["gmm8"]
    mixtures = {"gmm8": ("gmm8 (2-D)", sg.gmm8(dtype=DTYPE)), "16d": ("16-D anisotropic", mixture_16d(DTYPE))}
    out = (
        Path(args.out)
        if args.out
        else (
            ROOT / "outputs" / "schedules_quick.md"
            if args.quick
            else ROOT / "docs" / "benchmarks_schedules.md"
        )
    )
    cache = Path(args.cache) if args.cache else None
    started, t0 = datetime.datetime.now().astimezone(), time.perf_counter()
    results = {}
    for mkey, sname in itertools.product(mixes, names):
        mname, mix = mixtures[mkey]
        done = (
            None
            if cache is None
            else cache / f"{mkey}_{sname.split()[0]}{'_quick' if args.quick else ''}.json"
        )
        if done is not None and done.exists():
            results[(mname, sname)] = {
                s: {int(b): v for b, v in by.items()} for s, by in json.loads(done.read_text()).items()
            }
            for name, by in results[(mname, sname)].items():  # the default grids of this version
                for nfe, cell in by.items():
                    grid = all_sdes[sname].schedule_for(SOLVERS[name](steps=nfe))
                    cell["default"] = (cell["named"][grid], grid)
            continue
        print(f"[{mname} / {sname}]", flush=True)
        results[(mname, sname)] = measure(mix, all_sdes[sname], *sizes[mkey], budgets, methods)
        if done is not None:
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(results[(mname, sname)]))
    grids = [g for g in GRIDS if g in ("default", "best named") or g in methods]
    doc = [
        "# Time grids on the closed-form oracle: default, best by hand, tuned",
        "",
        *keep_interpretation(out),
    ]
    doc += [
        "Error: the per-component W2 figure over its noise floor (1.0 = exact samples; "
        "`benchmarks/fast_samplers.py` defines it), on one prior draw of n = 20,000 (gmm8) or 2,000 "
        f"(16-D) points; tuned grids from `sg.optimize_schedule` with a pilot of {PILOT} other points. "
        f"`best named` is the best of the {len(SCHEDULES)} named grids (sde_gen/sampling/solvers/grids.py) "
        "for that sampler, budget and SDE (the best grid by hand).",
        "",
        f"## Worst case over the {len(results)} (mixture, SDE) runs",
        "",
        *worst_table(results, budgets, grids),
        "## The best of DPM-Solver++ 2M, UniPC and iPNDM, per SDE",
        "",
        *per_sde_table(results, budgets, grids),
    ]
    for (mname, sname), res in results.items():
        doc += [
            f"## {mname}, {sname}",
            "",
            "| sampler | NFE | " + " | ".join(grids) + " |",
            "|---|---:|" + "---:|" * len(grids),
        ]
        for name, by in res.items():
            for b, cell in by.items():
                cells = [f"{cell[g][0]:.2f} ({cell[g][1]})" for g in grids]
                doc.append(f"| {name} | {b} | " + " | ".join(cells) + " |")
        doc.append("")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = "python benchmarks/schedules.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    doc += [
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, load {load:.2f}; Python "
        f"{platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s)",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z')}; total {(time.perf_counter() - t0) / 60:.1f} min",
        f"- Regenerate: `{command.strip()}`",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(doc))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
