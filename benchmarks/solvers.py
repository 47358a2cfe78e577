"""Solver and likelihood benchmarks on the closed-form Gaussian-mixture oracle.

Every figure is measured against an exact answer: samples are compared with exact draws of
p_eps (unbiased energy distance, next to its noise floor), log-likelihoods with the analytic
log-density of the mixture pushed through the SDE. Score evaluations (NFE) are the portable cost;
wall times are for this machine and the oracle's score, not a network's.

    .venv/bin/python benchmarks/solvers.py            # full run, writes docs/benchmarks.md
    .venv/bin/python benchmarks/solvers.py --quick    # smoke run, about a minute

A hand-written block between ``<!-- interpretation -->`` and ``<!-- /interpretation -->`` at the
top of the output file is kept when the file is regenerated.
"""

from __future__ import annotations

import argparse
import datetime
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from problems import OrnsteinUhlenbeck, mixture_2d, mixture_16d  # noqa: E402

import sde_gen as sg  # noqa: E402

DTYPE = torch.float64
SDES = {
    "vp": ("VPSDE()", sg.VPSDE),
    "subvp": ("SubVPSDE()", sg.SubVPSDE),
    "ve": ("VESDE()", sg.VESDE),
    "user": (
        "OrnsteinUhlenbeck(theta=4, s=sqrt(8)) from tests/problems.py, a user-written SDE",
        OrnsteinUhlenbeck,
    ),
}
MARK_OPEN, MARK_CLOSE = "<!-- interpretation -->", "<!-- /interpretation -->"
FLOOR_Z = 3.0  # a run "reaches the floor" when its energy distance is below mean + 3 std of the floor

# torchdiffeq warns on every fixed-grid solve that rk4 ignores the accepted-step callback.
warnings.filterwarnings("ignore", message="Solver '.*' does not support callbacks")


@dataclass
class Config:
    n: int  # samples per sampling run (and per exact set of the noise floor)
    steps: tuple[int, ...]  # steps of EM / PC / ancestral
    ode_tols: tuple[float, ...]  # rtol = atol of dopri5 sampling
    rk4_steps: tuple[int, ...]  # fixed rk4 steps (4 NFE each)
    floor_reps: int  # exact sets for the noise floor
    eps: float  # sampling end time
    lik_n: dict  # samples per likelihood run, by mixture name
    lik_tols: tuple[float, ...]
    probes: tuple[int, ...]
    lik_eps: float


FULL = Config(
    n=2000,
    steps=(50, 200, 1000),
    ode_tols=(1e-3, 1e-5),
    rk4_steps=(12, 50, 250),
    floor_reps=20,
    eps=1e-3,
    lik_n={"2d": 500, "16d": 200},
    lik_tols=(1e-3, 1e-5),
    probes=(1, 16),
    lik_eps=1e-5,
)
QUICK = Config(
    n=500,
    steps=(20, 100),
    ode_tols=(1e-3,),
    rk4_steps=(5, 25),
    floor_reps=4,
    eps=1e-3,
    lik_n={"2d": 100, "16d": 40},
    lik_tols=(1e-3,),
    probes=(1, 16),
    lik_eps=1e-5,
)
MIXTURES = {"2d": mixture_2d, "16d": mixture_16d}


# -- machine ---------------------------------------------------------------------------------------


def cpu_name() -> str:
    name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine()


def machine_lines(cfg: Config, threads: int, command: str) -> list[str]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        f"- Machine: {cpu_name()} ({platform.machine()}), {os.cpu_count()} logical CPUs, "
        f"{platform.system()} {platform.release()}; 1-min load average at start {load:.2f}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, "
        f"`torch.set_num_threads({threads})`, dtype {str(DTYPE).replace('torch.', '')}, CPU",
        f"- Sampling: n = {cfg.n} samples per run, eps = {cfg.eps:g}, noise floor from "
        f"{cfg.floor_reps} exact sets; likelihood: n = {cfg.lik_n['2d']} (2-D) and {cfg.lik_n['16d']} "
        f"(16-D) points, eps = {cfg.lik_eps:g}",
        f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Regenerate: `{command}`",
    ]


# -- sampling --------------------------------------------------------------------------------------


def sampling_solvers(cfg: Config):
    """``(family, steps-or-tolerance label, solver)`` for every sampling run."""
    runs = []
    for s in cfg.steps:
        runs.append(("Euler-Maruyama", f"{s} steps", sg.EulerMaruyama(s)))
    for s in cfg.steps:
        runs.append(("PC: reverse diffusion + Langevin", f"{s} steps", sg.PredictorCorrector(s)))
    for s in cfg.steps:
        runs.append(
            ("PC: ancestral, no corrector", f"{s} steps", sg.PredictorCorrector(s, "ancestral", None))
        )
    for tol in cfg.ode_tols:
        runs.append(("ODE dopri5", f"rtol=atol={tol:g}", sg.ProbabilityFlow("dopri5", rtol=tol, atol=tol)))
    for s in cfg.rk4_steps:
        runs.append(("ODE rk4", f"{s} steps", sg.ProbabilityFlow("rk4", steps=s)))
    return runs


def figures(x, ref, ref_logp, mix, sde, eps):
    """The two-sample figures of ``x`` against the exact reference: the energy distance, and the
    gap in mean exact log-density ``mean log p_eps(x) - mean log p_eps(ref)`` (negative when the
    samples are too spread out, positive when they are too concentrated)."""
    return sg.energy_distance(x, ref), float(mix.log_prob(x, eps, sde).mean()) - ref_logp


def noise_floor(mix, sde, cfg: Config):
    """A reference exact sample of p_eps, and the mean and std of both figures between further
    independent exact sets of the same size and the reference."""
    g = torch.Generator().manual_seed(1234)
    ref = mix.sample_marginal(cfg.n, cfg.eps, sde, generator=g)
    ref_logp = float(mix.log_prob(ref, cfg.eps, sde).mean())
    vals = torch.tensor(
        [
            figures(mix.sample_marginal(cfg.n, cfg.eps, sde, generator=g), ref, ref_logp, mix, sde, cfg.eps)
            for _ in range(cfg.floor_reps)
        ],
        dtype=torch.float64,
    )
    mean, std = vals.mean(0), vals.std(0, unbiased=True)
    return ref, ref_logp, dict(ed=(float(mean[0]), float(std[0])), logp=(float(mean[1]), float(std[1])))


def bench_sampling(name: str, sde, cfg: Config, log):
    mix = mixture_2d(DTYPE)
    ref, ref_logp, floor = noise_floor(mix, sde, cfg)
    (fmean, fstd), (lmean, lstd) = floor["ed"], floor["logp"]
    log(
        f"[{name}] noise floor: energy distance {fmean:+.2e} +- {fstd:.2e}, "
        f"log p gap {lmean:+.2e} +- {lstd:.2e}"
    )
    rows = []
    for family, label, solver in sampling_solvers(cfg):
        g = torch.Generator().manual_seed(0)  # same prior draw for every solver
        t0 = time.perf_counter()
        res = sg.sample(
            sde,
            mix.score_fn(sde),
            (cfg.n, 2),
            solver,
            eps=cfg.eps,
            generator=g,
            dtype=DTYPE,
            return_result=True,
        )
        wall = time.perf_counter() - t0
        ed, lp = figures(res.x, ref, ref_logp, mix, sde, cfg.eps)
        z, zl = (ed - fmean) / fstd, (lp - lmean) / lstd
        rows.append(dict(family=family, label=label, nfe=res.nfe, wall=wall, ed=ed, z=z, lp=lp, zl=zl))
        log(
            f"[{name}] {family:34s} {label:18s} nfe={res.nfe:5d} {wall:7.2f}s  "
            f"ED={ed:+.2e} z={z:+6.1f}  logp gap={lp:+.2e} z={zl:+6.1f}"
        )
    return dict(floor=floor, rows=rows)


def sampling_table(result) -> list[str]:
    (fmean, fstd), (lmean, lstd) = result["floor"]["ed"], result["floor"]["logp"]
    out = [
        f"Noise floor (independent exact sets against the reference, mean +- std): energy distance "
        f"{fmean:+.2e} +- {fstd:.2e}; log p gap {lmean:+.2e} +- {lstd:.2e}.",
        "",
        "| solver | setting | NFE | time [s] | energy distance | z (ED) | log p gap | z (log p) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        out.append(
            f"| {r['family']} | {r['label']} | {r['nfe']} | {r['wall']:.2f} "
            f"| {r['ed']:+.2e} | {r['z']:+.1f} | {r['lp']:+.2e} | {r['zl']:+.1f} |"
        )
    return out


def floor_summary(results: dict) -> list[str]:
    """Per SDE and solver family, the smallest NFE from which both figures stay within the floor."""
    families = list(dict.fromkeys(r["family"] for res in results.values() for r in res["rows"]))
    out = [
        f"Smallest NFE from which a solver stays within the noise floor at every larger setting tried, "
        f"as `energy distance / log p gap`: the figure is within the floor when it is less than "
        f"{FLOOR_Z:g} floor std above the floor mean (energy distance) or less than {FLOOR_Z:g} floor "
        "std from the floor mean (log p gap). `-`: not reached at the largest setting.",
        "",
        "| solver | " + " | ".join(results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for fam in families:
        cells = []
        for res in results.values():
            rows = sorted((r for r in res["rows"] if r["family"] == fam), key=lambda r: r["nfe"])
            pair = []
            for ok in ([r["z"] < FLOOR_Z for r in rows], [abs(r["zl"]) < FLOOR_Z for r in rows]):
                first = next((i for i in range(len(rows)) if all(ok[i:])), None)
                pair.append("-" if first is None else str(rows[first]["nfe"]))
            cells.append(" / ".join(pair))
        out.append(f"| {fam} | " + " | ".join(cells) + " |")
    return out


# -- likelihood ------------------------------------------------------------------------------------


def likelihood_runs(cfg: Config):
    runs = []
    for tol in cfg.lik_tols:
        runs.append(("exact", 1, tol))
        for k in cfg.probes:
            runs.append(("hutchinson", k, tol))
    return runs


def bench_likelihood(name: str, sde, cfg: Config, log):
    rows = []
    for mname, make in MIXTURES.items():
        mix = make(DTYPE)
        n = cfg.lik_n[mname]
        x = mix.sample_marginal(n, cfg.lik_eps, sde, generator=torch.Generator().manual_seed(7))
        exact = mix.log_prob(x, cfg.lik_eps, sde)
        for div, k, tol in likelihood_runs(cfg):
            solver = sg.ProbabilityFlow("dopri5", rtol=tol, atol=tol)
            t0 = time.perf_counter()
            res = sg.log_likelihood(
                sde,
                mix.score_fn(sde),
                x,
                eps=cfg.lik_eps,
                divergence=div,
                num_probes=k,
                solver=solver,
                generator=torch.Generator().manual_seed(11),
            )
            wall = time.perf_counter() - t0
            # Replace the prior by the exact p_T so that only the ODE and divergence errors remain.
            corrected = res.log_prob - res.prior_log_prob + mix.log_prob(res.z, sde.T, sde)
            err = corrected - exact
            raw = res.log_prob - exact
            row = dict(
                mixture=mname,
                dim=mix.dim,
                div=div,
                probes=k if div == "hutchinson" else None,
                tol=tol,
                n=n,
                nfe=res.nfe,
                wall=wall,
                mae=float(err.abs().mean()),
                bias=float(err.mean()),
                bias_se=float(err.std() / math.sqrt(n)),
                err_sd=float(err.std()),
                mae_raw=float(raw.abs().mean()),
                prior_gap=float((raw - err).mean()),
                hutch_se=None if res.std_error is None else float(res.std_error.mean()),
            )
            rows.append(row)
            log(
                f"[{name}] {mname:3s} {div:10s} K={k:2d} tol={tol:g} nfe={res.nfe:4d} {wall:6.2f}s "
                f"MAE={row['mae']:.2e} bias={row['bias']:+.2e}+-{row['bias_se']:.1e} raw={row['mae_raw']:.2e}"
            )
    return rows


def likelihood_table(rows) -> list[str]:
    out = [
        "| data | divergence | rtol=atol | n | NFE | time [s] | MAE [nats] | mean error +- s.e. "
        "| sd of error | mean Hutchinson s.e. | raw MAE (with prior) | mean prior gap |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        div = "exact" if r["div"] == "exact" else f"Hutchinson, {r['probes']} probe{'s' * (r['probes'] > 1)}"
        se = "-" if r["hutch_se"] is None else f"{r['hutch_se']:.2e}"
        out.append(
            f"| {r['dim']}-D | {div} | {r['tol']:g} | {r['n']} | {r['nfe']} | {r['wall']:.2f} "
            f"| {r['mae']:.2e} "
            f"| {r['bias']:+.1e} +- {r['bias_se']:.1e} | {r['err_sd']:.2e} | {se} | {r['mae_raw']:.2e} "
            f"| {r['prior_gap']:+.2e} |"
        )
    return out


# -- document --------------------------------------------------------------------------------------


def marked_block(path: Path, start: str, end: str) -> str | None:
    """The text of the file ``path`` from the marker ``start`` to the marker ``end``, both included
    (``None`` if the file or a marker is missing): a block that a page keeps when rebuilt."""
    text = path.read_text() if path.is_file() else ""
    i, j = text.find(start), text.find(end)
    return text[i : j + len(end)] if 0 <= i <= j else None


def keep_interpretation(path: Path) -> list[str]:
    """The page's hand-written block between the interpretation markers, to keep, and a blank line."""
    block = marked_block(path, MARK_OPEN, MARK_CLOSE)
    return [] if block is None else [block, ""]


def document(header, sampling, likelihood, cfg, total_s, interpretation) -> str:
    lines = ["# Benchmarks: solvers and likelihoods on the closed-form oracle", ""]
    lines += interpretation
    lines += ["## Set-up", ""] + header + [f"- Total run time: {total_s:.0f} s", ""]
    lines += [
        "Every run uses the exact score of a Gaussian mixture pushed through the SDE "
        "(`GaussianMixture.score_fn`), so the errors below are the solvers' alone. NFE counts score "
        "evaluations; it is the figure that carries over to a score network, whose evaluations "
        "dominate the cost. Wall times are single runs with the oracle's score on this machine.",
        "",
        "## Sampling",
        "",
        f"Data: the 2-D three-component mixture `mixture_2d` of `tests/problems.py`. Each run draws "
        f"n = {cfg.n} samples of p_eps (eps = {cfg.eps:g}) in float64 from the prior with the same "
        "seeded `torch.Generator`, and the figure is the unbiased squared energy distance "
        "`sg.energy_distance(samples, reference)` to one fixed exact sample of p_eps of the same size. "
        "A second, more sensitive figure is the *log p gap*, `mean log p_eps(samples) - mean log "
        "p_eps(reference)` with the exact density: negative when samples are too spread out, positive "
        "when too concentrated on the modes. The noise floor is each figure for independent exact sets "
        "against the same reference (both are zero in expectation; negative energy distances are "
        "noise), and the z columns are `(figure - floor mean) / floor std`. Every solver starts from "
        "the same prior draw, so the deterministic ODE runs differ only by their discretisation error. "
        "Stepping solvers use uniform steps in t; PC uses 2 NFE per step (one Langevin corrector step, "
        "snr = 0.16), rk4 4 NFE per step.",
        "",
    ]
    lines += floor_summary(sampling) + [""]
    for name, res in sampling.items():
        lines += [f"### {name}: {SDES[name][0]}", ""] + sampling_table(res) + [""]
    lines += [
        "## Likelihood",
        "",
        f"`sg.log_likelihood` with dopri5 on the probability-flow ODE, eps = {cfg.lik_eps:g}, on exact "
        "samples of p_eps of the 2-D mixture and of the 16-D four-component mixture `mixture_16d`. "
        "The error of a point is `res.log_prob - res.prior_log_prob + log p_T(res.z)` minus the analytic "
        "`log p_eps(x)`: the prior is replaced by the exact marginal at T, so only the ODE and divergence "
        "errors remain. *MAE* is its mean absolute value (nats per sample); *mean error +- s.e.* is its "
        "mean with the standard error over the n points (a bias check: Hutchinson is unbiased); *sd of "
        "error* its spread over points; *mean Hutchinson s.e.* the mean of `res.std_error` (the "
        "per-point standard error over the probes, defined for more than one probe). *Raw MAE* compares "
        "`res.log_prob` itself, with the library's prior, and *mean prior gap* is the mean of "
        "`prior_log_prob - log p_T(z)`: the error from p_T not being exactly the prior. Probes are "
        "Rademacher, drawn once per solve.",
        "",
    ]
    for name, rows in likelihood.items():
        lines += [f"### {name}: {SDES[name][0]}", ""] + likelihood_table(rows) + [""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, about a minute (smoke run)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="Markdown file to write")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1: the tensors are small, extra threads only add overhead)",
    )
    p.add_argument("--sdes", default=",".join(SDES), help=f"comma-separated subset of {list(SDES)}")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    names = [s for s in args.sdes.split(",") if s]
    bad = [s for s in names if s not in SDES]
    if bad:
        p.error(f"--sdes: unknown {bad}; choose from {list(SDES)}")

    torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else FULL
    argv = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join([".venv/bin/python", "benchmarks/solvers.py", *argv])
    header = machine_lines(cfg, args.threads, command)
    print("\n".join(header), flush=True)

    def log(msg):
        print(msg, flush=True)

    # Warm-up: first calls pay for imports and allocator set-up.
    warm = sg.VPSDE()
    wmix = mixture_2d(DTYPE)
    sg.sample(warm, wmix.score_fn(warm), (8, 2), sg.ProbabilityFlow("rk4", steps=2), dtype=DTYPE)
    for div in ("exact", "hutchinson"):
        sg.log_likelihood(warm, wmix.score_fn(warm), wmix.sample(8), divergence=div, num_probes=2)

    t_start = time.perf_counter()
    sampling, likelihood = {}, {}
    for name in names:
        sampling[name] = bench_sampling(name, SDES[name][1](), cfg, log)
    for name in names:
        likelihood[name] = bench_likelihood(name, SDES[name][1](), cfg, log)
    total = time.perf_counter() - t_start

    out = Path(args.out)
    text = document(header, sampling, likelihood, cfg, total, keep_interpretation(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print()
    print("\n".join(floor_summary(sampling)))
    print(f"\nTotal {total:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
