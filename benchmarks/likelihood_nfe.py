"""NFE of the likelihood ODE at a given accuracy, in t versus noise-level variables; and digits
bits/dim with uniform versus truncated-normal dequantization (Zheng et al. 2023).

Part 1 (the oracle, a few minutes on one thread): for the 2-D and 16-D Gaussian mixtures of
tests/problems.py and VP, sub-VP, VE and a user's Ornstein-Uhlenbeck SDE, dopri5 is swept over
rtol = atol = 10^-2.5 ... 10^-8 (quarter decades) with exact divergence, for each integration
variable and state of :func:`sde_gen.log_likelihood`; the error is the mean over samples of
|log p - truth| with the prior swapped for the exact log p_T (only the ODE's error), and the table
gives the fewest NFE of the sweep at which it is below 1e-3 and 1e-4 nats per sample.

Part 2 (``--digits-model PATH``, minutes): test bits/dim of the 300 digits test images under a
trained model, with uniform dequantization and with truncated-normal dequantization at K = 1 and
4, with the likelihood settings of conf/config.yaml (Hutchinson, one probe, dopri5 at 1e-5,
eps = 1e-5) unless told otherwise.

    python benchmarks/likelihood_nfe.py                      # part 1, writes docs/benchmarks_likelihood.md
    python benchmarks/likelihood_nfe.py --digits-model /tmp/default_model.safetensors
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from problems import OrnsteinUhlenbeck, mixture_2d, mixture_16d  # noqa: E402

import sde_gen as sg  # noqa: E402

EPS = 1e-3
TOLS = [10.0 ** (-k / 4) for k in range(10, 33)]  # 10^-2.5 ... 10^-8 in quarter decades
TARGETS = (1e-3, 1e-4)
PAIRS = [
    ("t", "x"),
    ("sigma_hat", "x"),
    ("half_log_snr", "x"),
    ("sigma_hat", "xhat"),
    ("half_log_snr", "xhat"),
]
SDES = {"VP": sg.VPSDE, "sub-VP": sg.SubVPSDE, "VE": sg.VESDE, "OU (user)": OrnsteinUhlenbeck}
DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks_likelihood.md")


def sweep(sde, mix, x, variable, state):
    """``[(tol, nfe, error)]`` until the error is 3x below the tightest target."""
    truth = mix.log_prob(x, EPS, sde)
    out = []
    for tol in TOLS:
        res = sg.log_likelihood(
            sde,
            mix.score_fn(sde),
            x,
            eps=EPS,
            solver=sg.ProbabilityFlow(rtol=tol, atol=tol),
            variable=variable,
            state=state,
        )
        ode = res.log_prob - res.prior_log_prob + mix.log_prob(res.z, sde.T, sde)
        out.append((tol, res.nfe, float((ode - truth).abs().mean())))
        if out[-1][2] < min(TARGETS) / 3:
            break
    return out


def nfe_for(runs, target):
    ok = [nfe for _, nfe, err in runs if err <= target]
    return min(ok) if ok else None


def oracle_table() -> list[str]:
    lines = [
        "| data | SDE | variable, state | NFE for 1e-3 | NFE for 1e-4 |",
        "|---|---|---|---:|---:|",
    ]
    for label, mix, n in [("2-D", mixture_2d(), 32), ("16-D", mixture_16d(), 8)]:
        for name, make in SDES.items():
            sde = make()
            x = mix.sample_marginal(n, EPS, sde, generator=torch.Generator().manual_seed(0))
            for variable, state in PAIRS:
                runs = sweep(sde, mix, x, variable, state)
                cells = [nfe_for(runs, tgt) for tgt in TARGETS]
                txt = ["-" if c is None else str(c) for c in cells]
                row = f"| {label} | {name} | {variable}, {state} | {txt[0]} | {txt[1]} |"
                print(row, flush=True)
                lines.append(row)
    return lines


def digits(path: str, args) -> list[str]:
    model = sg.load_model(path)
    data = sg.load_dataset("digits")
    test = data.test if args.n is None else data.test[: args.n]
    transform = sg.LevelTransform(data.levels, -1.0, 1.0)
    solver = sg.ProbabilityFlow(rtol=args.tol, atol=args.tol)
    common = dict(
        solver=solver,
        seed=0,
        divergence=args.divergence,
        num_probes=1,
        batch_size=len(test),
        repeats=args.repeats,
    )
    lines = [
        f"Model `{os.path.basename(path)}` ({model.sde!r}), {len(test)} digits test images, dopri5 at "
        f"rtol = atol = {args.tol:g}, eps = {args.eps:g}, {args.divergence} divergence, "
        f"{args.repeats} repeat(s), seed 0.",
        "",
        "| dequantization | K | eps | sigma_hat(eps) | test bits/dim | s.e. | NFE per solve | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [("uniform", 1, args.eps)] + [
        ("truncated_normal", K, e) for e in args.tn_eps or [args.eps] for K in args.k
    ]
    for deq, K, eps in rows:
        start = time.perf_counter()
        r = sg.evaluate_bpd(
            model.sde, model, test, transform, dequantization=deq, importance_samples=K, eps=eps, **common
        )
        secs = time.perf_counter() - start
        per_solve = r["nfe"] / (K * args.repeats)
        s_eps = float(model.sde.sigma_hat(torch.tensor([eps], dtype=torch.float64))[0])
        row = (
            f"| {deq} | {K} | {eps:g} | {s_eps:.3g} | {r['bpd']:.4f} | {r['bpd_se']:.4f} | {per_solve:.0f} "
            f"| {secs:.0f} |"
        )
        print(row, flush=True)
        lines.append(row)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits-model", help="a model file from sg.save_model: run part 2 instead of part 1")
    p.add_argument("--n", type=int, default=None, help="first n test images (default all 300)")
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--divergence", default="hutchinson", choices=["hutchinson", "exact"])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--k", type=int, nargs="+", default=[1, 4], help="importance samples K (truncated normal)")
    p.add_argument(
        "--tn-eps", type=float, nargs="+", help="eps values for the truncated normal (default --eps)"
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    if args.digits_model:
        torch.set_default_dtype(torch.float32)
        lines = digits(args.digits_model, args)
        print("\n".join(lines))
        if not args.no_write:
            write_section("Digits bits/dim: uniform versus truncated-normal dequantization", lines, args)
        return
    start = time.perf_counter()
    lines = oracle_table()
    print(f"{time.perf_counter() - start:.0f} s")
    if not args.no_write:
        write_section("The oracle: NFE at a given accuracy", lines, args)


def write_section(title: str, lines: list[str], args) -> None:
    """Replace (or add) the section ``## title`` of docs/benchmarks_likelihood.md."""
    intro = ORACLE_INTRO if title.startswith("The oracle") else [f"`python {' '.join(sys.argv)}`", ""]
    block = [f"## {title}", "", *intro, *lines, ""]
    text = open(DOC).read() if os.path.exists(DOC) else "# Likelihood benchmarks\n\n"
    parts = text.split("\n## ")
    head, sections = parts[0], {p.split("\n", 1)[0]: "## " + p for p in parts[1:]}
    sections[title] = "\n".join(block)
    with open(DOC, "w") as f:
        f.write(head.rstrip("\n") + "\n\n" + "\n".join(v.rstrip("\n") + "\n" for v in sections.values()))
    print(f"wrote {os.path.normpath(DOC)}", file=sys.stderr)


ORACLE_INTRO = [
    "Written by `python benchmarks/likelihood_nfe.py` (exact divergence, float64, eps = 1e-3, "
    "one thread). dopri5 swept over rtol = atol = 10^-2.5 ... 10^-8 in quarter decades; the entry is "
    "the fewest score evaluations of the sweep whose mean |log p - truth| per sample (prior swapped "
    "for the exact log p_T) is at most the target; '-' if none. 32 samples in 2-D, 8 in 16-D. "
    "`variable` and `state` are the keywords of `sg.log_likelihood`; (t, x) is the default.",
    "",
]


if __name__ == "__main__":
    main()
