"""Few-step samplers on the closed-form oracle, for every SDE, beside DPM-Solver's published code.

Every sampler is fed the exact score of a Gaussian mixture (8 Gaussians in 2-D, ``sg.gmm8()``, and
a 16-D anisotropic mixture, ``tests/problems.mixture_16d``) and draws ``n`` samples of ``p_eps``
from the same prior draw. The error figure is per component: each sample is assigned to the
component of largest responsibility under ``p_eps``, and

    error = sum_k w_k W2^2(Gaussian fit to the samples of k, Gaussian fit to exact samples of k),

the Fréchet distance per component against a large exact reference set assigned by the same rule
(so the truncation by the assignment cancels), weighted by the mixture weights. The noise floor is
the same figure for independent exact sets of ``n``; a sampler's figure is reported as a multiple
of the floor (1.0 = as good as exact samples). The mode weights are checked separately:
``chi2 = sum_k (w_hat_k - w_k)^2 / w_k`` over its floor.

    .venv/bin/python benchmarks/fast_samplers.py          # full run: docs/benchmarks_samplers.md
    .venv/bin/python benchmarks/fast_samplers.py --quick         # smoke run
    .venv/bin/python benchmarks/fast_samplers.py --dpm-solver /path/to/dpm_solver_pytorch.py

``--dpm-solver`` adds DPM-Solver's published implementation (Lu et al., github.com/LuChengTHU/
dpm-solver, file ``dpm_solver_pytorch.py``; VP only) with the best of its settings; nothing is
downloaded. Solver overhead (time outside the score function over the score's own time) is
measured at batch 10,000 in 2-D and batch 128 on an 8x8 U-Net (``UNet.digits()``; its weights do
not change the time).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import itertools
import json
import math
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from problems import ComponentW2, OrnsteinUhlenbeck, mixture_16d  # noqa: E402
from solvers import cpu_name, keep_interpretation  # noqa: E402

import sde_gen as sg  # noqa: E402
from sde_gen.sampling.solvers.grids import SCHEDULES  # noqa: E402  (the named grids, one list)

warnings.filterwarnings("ignore", message="Solver '.*' does not support callbacks")
DTYPE = torch.float64


def sdes() -> dict:
    out = {
        "vp": sg.VPSDE(),
        "subvp": sg.SubVPSDE(),
        "ve": sg.VESDE(),
        "user (OU)": OrnsteinUhlenbeck(),
    }
    for name, cls in (("cosine_vp", "CosineVPSDE"), ("edm", "EDMSDE"), ("flow", "RectifiedFlow")):
        if hasattr(sg, cls):
            out[name] = getattr(sg, cls)()
    return out


@dataclass(frozen=True)
class Family:
    """A sampler family: ``make(nfe, schedule)`` builds the solver spending ``nfe`` evaluations, or
    ``None`` when that budget does not fit it."""

    name: str
    make: object
    schedules: tuple = SCHEDULES


def _per(nfe: int, k: int) -> int | None:
    return nfe // k if nfe % k == 0 and nfe >= k else None


def _fixed(cls_name: str, per_step: int = 1, **kw):
    def make(nfe, schedule):
        steps = _per(nfe, per_step)
        if steps is None or not hasattr(sg, cls_name):
            return None
        try:
            return getattr(sg, cls_name)(steps=steps, schedule=schedule, **kw)
        except ValueError:  # e.g. too few steps for the order
            return None

    return make


def _ode(method: str, per_step: int):
    def make(nfe, schedule):
        steps = _per(nfe, per_step)
        return None if steps is None else sg.ProbabilityFlow(method, steps=steps, schedule=schedule)

    return make


FAMILIES = [
    Family("Euler-Maruyama", _fixed("EulerMaruyama")),
    Family("PC ancestral", _fixed("PredictorCorrector", predictor="ancestral", corrector=None)),
    Family("ODE Euler", _ode("euler", 1)),
    Family("ODE midpoint", _ode("midpoint", 2)),
    Family("ODE rk4", _ode("rk4", 4)),
    Family("DDIM", _fixed("DDIM")),
    Family("DDIM eta=1", _fixed("DDIM", eta=1.0)),
    Family("DPM-Solver++ 2M", _fixed("DPMSolverPlusPlus", order=2)),
    Family("DPM-Solver++ 3M", _fixed("DPMSolverPlusPlus", order=3)),
    Family("SDE-DPM-Solver++ 2M", _fixed("DPMSolverPlusPlus", order=2, stochastic=True)),
    Family("UniPC bh1 (order 2)", _fixed("UniPC", order=2, variant="bh1")),
    Family("UniPC bh2 (order 2)", _fixed("UniPC", order=2, variant="bh2")),
    Family("UniPC bh2 (order 3)", _fixed("UniPC", order=3, variant="bh2")),
    Family("iPNDM", _fixed("IPNDM")),
    Family("Heun (EDM)", _fixed("Heun")),
]


# -- the error figure --------------------------------------------------------------------------------


# -- DPM-Solver's published code (VP only) ----------------------------------------------------------


def dpm_solver_runs(path: str, sde, mix, x_T, eps, nfe):
    """Best of DPM-Solver's settings at ``nfe`` evaluations on VP: (label, samples) pairs."""
    spec = importlib.util.spec_from_file_location("dpm_solver_pytorch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ns = mod.NoiseScheduleVP(
        "linear", continuous_beta_0=sde.beta_min, continuous_beta_1=sde.beta_max, dtype=DTYPE
    )
    score = mix.score_fn(sde)

    def noise_model(x, t):  # noise prediction: eps = -std(t) * score
        t = t.reshape(-1).expand(x.shape[0])
        return -ns.marginal_std(t)[:, None] * score(x, t)

    model_fn = mod.model_wrapper(noise_model, ns, model_type="noise", guidance_type="uncond")
    out = []
    for algo, method, order, skip in itertools.product(
        ("dpmsolver", "dpmsolver++"),
        ("multistep", "singlestep"),
        (2, 3),
        ("logSNR", "time_uniform", "time_quadratic"),
    ):
        if order > nfe:
            continue
        solver = mod.DPM_Solver(model_fn, ns, algorithm_type=algo)
        calls = [0]

        def counted(x, t, _f=model_fn, calls=calls):
            calls[0] += 1
            return _f(x, t)

        solver.model = counted
        with torch.no_grad():
            x = solver.sample(
                x_T.clone(), steps=nfe, t_start=1.0, t_end=eps, order=order, skip_type=skip, method=method
            )
        out.append((f"{algo} {method} order {order} {skip}", x, calls[0]))
    return out


# -- overhead ----------------------------------------------------------------------------------------


def overhead(solver, sde, score_fn, shape, dtype, reps=3):
    """Time outside the score over the score's time, for one ``sg.sample`` call (best of ``reps``)."""
    best = None
    for _ in range(reps):
        spent = [0.0]

        def timed(x, t, spent=spent):
            t0 = time.perf_counter()
            out = score_fn(x, t)
            spent[0] += time.perf_counter() - t0
            return out

        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        with torch.no_grad():
            sg.sample(sde, timed, shape, solver, generator=g, dtype=dtype)
        total = time.perf_counter() - t0
        ratio = (total - spent[0]) / spent[0]
        best = ratio if best is None else min(best, ratio)
    return best


# -- main --------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dpm-solver", default=None, help="path to DPM-Solver's dpm_solver_pytorch.py")
    p.add_argument("--sdes", default=None, help="comma-separated subset of the SDE names")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_samplers.md"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "img" / "samplers_nfe.png"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mixtures", default=None, help="comma-separated subset of: gmm8, 16d")
    p.add_argument("--no-overhead", action="store_true", help="skip the overhead measurement (partial runs)")
    p.add_argument(
        "--cache", default=None, help="a directory keeping each (mixture, SDE) result as it is done"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    quick = args.quick
    # samples per run, reference set, exact sets for the floor: per mixture (16-D costs more per sample)
    sizes = {"gmm8": (20000, 200000, 5), "16d": (2000, 20000, 5)}
    if quick:
        sizes = {k: (2000, 20000, 3) for k in sizes}
    budgets = (10, 20) if quick else (5, 10, 20, 50)
    eps = 1e-3
    all_sdes = sdes()
    if args.sdes:
        keep = [s.strip() for s in args.sdes.split(",")]
        all_sdes = {k: v for k, v in all_sdes.items() if k in keep}
    mixtures = {"gmm8": ("gmm8 (2-D)", sg.gmm8(dtype=DTYPE)), "16d": ("16-D anisotropic", mixture_16d(DTYPE))}
    if quick:
        mixtures = dict(list(mixtures.items())[:1])
    if args.mixtures:
        keep = [m.strip() for m in args.mixtures.split(",")]
        mixtures = {k: v for k, v in mixtures.items() if k in keep}
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().astimezone()
    t_all = time.perf_counter()
    results = {}  # (mixture, sde) -> {family: {nfe: (best ratio, schedule, chi2 ratio)}}
    detail = {}  # (mixture, sde) -> rows (family, schedule, nfe, w2 ratio, chi2 ratio)
    for (mkey, (mname, mix)), (sname, sde) in itertools.product(mixtures.items(), all_sdes.items()):
        n, n_ref, reps = sizes[mkey]
        done = None if cache is None else cache / f"{mkey}_{sname.split()[0]}{'_quick' if quick else ''}.json"
        if done is not None and done.exists():
            saved = json.loads(done.read_text())
            results[(mname, sname)] = {
                f: {int(b): tuple(v) for b, v in by.items()} for f, by in saved["best"].items()
            }
            detail[(mname, sname)] = [tuple(r) for r in saved["rows"]]
            print(f"[{mname} / {sname}] read from {done}", flush=True)
            continue
        fig = ComponentW2(mix, sde, eps, n, n_ref, reps)
        g = torch.Generator().manual_seed(0)
        x_T = sde.prior_sample((n, mix.dim), generator=g, dtype=DTYPE)
        best, rows = {}, []
        for fam, nfe, schedule in itertools.product(FAMILIES, budgets, SCHEDULES):
            solver = fam.make(nfe, schedule)
            if solver is None:
                continue
            res = sg.sample(
                sde,
                mix.score_fn(sde),
                x_T.shape,
                solver,
                eps=eps,
                x_T=x_T,
                generator=torch.Generator().manual_seed(1),
                return_result=True,
            )
            if res.nfe != nfe:
                raise AssertionError(f"{fam.name} at {nfe} NFE used {res.nfe}")
            w2, chi2 = fig(res.x)
            r = (w2 / fig.floor[0], chi2 / fig.floor[1])
            rows.append((fam.name, schedule, nfe, *r))
            cur = best.setdefault(fam.name, {}).get(nfe)
            if cur is None or r[0] < cur[0]:
                best[fam.name][nfe] = (r[0], schedule, r[1])
        if args.dpm_solver and sname == "vp":
            for nfe in budgets:
                for label, x, calls in dpm_solver_runs(args.dpm_solver, sde, mix, x_T, eps, nfe):
                    w2, chi2 = fig(x)
                    r = (w2 / fig.floor[0], chi2 / fig.floor[1])
                    rows.append((f"DPM-Solver (published): {label}", "-", calls, *r))
                    cur = best.setdefault("DPM-Solver (published), best setting", {}).get(nfe)
                    if calls == nfe and (cur is None or r[0] < cur[0]):
                        best["DPM-Solver (published), best setting"][nfe] = (r[0], label, r[1])
        results[(mname, sname)] = best
        detail[(mname, sname)] = rows
        if done is not None:
            done.write_text(json.dumps({"best": best, "rows": rows}))
        print(f"[{mname} / {sname}] done at {time.perf_counter() - t_all:.0f} s", flush=True)

    # overhead
    oh = []
    mix2 = sg.gmm8(dtype=torch.float32)
    sde = sg.VPSDE()
    net = sg.ScoreModel(sg.UNet.digits(), sde).eval()
    for fam in [] if args.no_overhead else FAMILIES:
        solver = fam.make(10, "log_snr")
        if solver is None:
            continue
        a = overhead(solver, sde, mix2.score_fn(sde), (10000, 2), torch.float32)
        b = overhead(solver, sde, net, (128, 1, 8, 8), torch.float32, reps=2)
        oh.append(f"| {fam.name} | {100 * a:.1f}% | {100 * b:.1f}% |")
    total = time.perf_counter() - t_all

    doc = ["# Few-step samplers on the closed-form oracle", "", *keep_interpretation(Path(args.out))]
    doc += [
        "Error: the per-component W2 figure over its noise floor (1.0 = exact samples; the module "
        "docstring of `benchmarks/fast_samplers.py` defines it), best schedule in brackets. "
        "Samples per run, reference set and exact sets of the floor: "
        + "; ".join(
            f"{mixtures[k][0]}: n = {v[0]}, {v[1]}, {v[2]}" for k, v in sizes.items() if k in mixtures
        )
        + f". eps = {eps:g}, float64, exact score.",
        "",
        *worst_case_table(detail, budgets),
    ]
    for (mname, sname), best in results.items():
        doc += [f"## {mname}, {sname}", "", "| sampler | " + " | ".join(f"{b} NFE" for b in budgets) + " |"]
        doc.append("|---|" + "---:|" * len(budgets))
        for fam, by in best.items():
            cells = [f"{by[b][0]:.2f} ({by[b][1]})" if b in by else "-" for b in budgets]
            doc.append(f"| {fam} | " + " | ".join(cells) + " |")
        doc.append("")
    doc += [
        "## Solver overhead",
        "",
        "Time outside the score function over the score's own time, 10 NFE, `log_snr` grid, float32: "
        "batch 10,000 of the exact gmm8 score in 2-D, and batch 128 of `UNet.digits()` (8x8).",
        "",
        "| sampler | 2-D oracle, batch 10,000 | digits U-Net, batch 128 |",
        "|---|---:|---:|",
        *oh,
        "",
        "## Every run",
        "",
        "| mixture | SDE | sampler | schedule | NFE | W2 / floor | chi2 / floor |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for (mname, sname), rows in detail.items():
        doc += [f"| {mname} | {sname} | {f} | {s} | {nfe} | {a:.2f} | {c:.2f} |" for f, s, nfe, a, c in rows]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = "python benchmarks/fast_samplers.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    doc += [
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, load {load:.2f}; Python "
        f"{platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s)",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z')}; total {total / 60:.1f} min",
        f"- Regenerate: `{command.strip()}`",
        "",
    ]
    Path(args.out).write_text("\n".join(doc))
    plot(results, budgets, args.plot)
    print(f"wrote {args.out} and {args.plot}")


def worst_case_table(detail, budgets, top: int = 15) -> list[str]:
    """Each (sampler, schedule) by its worst error over every (mixture, SDE) run, best first: the
    table a default is chosen from, since a default must hold for the SDE a user brings."""
    worst: dict = {}
    for rows in detail.values():
        for fam, schedule, nfe, w2, _ in rows:
            if fam.startswith("DPM-Solver (published)"):
                continue
            cell = worst.setdefault((fam, schedule), {})
            cell[nfe] = max(cell.get(nfe, 0.0), w2)
    ranked = sorted(worst.items(), key=lambda kv: tuple(kv[1].get(b, math.inf) for b in (10, 20, 50, 5)))
    out = [
        f"## Worst case over every mixture and SDE ({len(detail)} runs), the {top} best settings",
        "",
        "| sampler | schedule | " + " | ".join(f"{b} NFE" for b in budgets) + " |",
        "|---|---|" + "---:|" * len(budgets),
    ]
    for (fam, schedule), by in ranked[:top]:
        out.append(
            f"| {fam} | {schedule} | "
            + " | ".join(f"{by[b]:.2f}" if b in by else "-" for b in budgets)
            + " |"
        )
    return out + [""]


def plot(results, budgets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for fam, by in results[key].items():
            xs = [b for b in budgets if b in by]
            if xs:
                ax.loglog(xs, [max(by[b][0], 1e-2) for b in xs], marker="o", ms=3, label=fam)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_title(" / ".join(key), fontsize=9)
        ax.set_xlabel("NFE")
        ax.set_ylabel("error / noise floor")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
