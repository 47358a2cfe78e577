"""Where a trained 8-Gaussians model is wrong: its probability-flow velocity against the exact one,
band by band in ``t``, beside the share of training draws each band gets.

The KL gap that ``benchmarks/objectives.py`` reports is the test NLL of the probability-flow ODE
minus the data's entropy; the ODE integrates the model's velocity ``f - g^2 score / 2``, so a
velocity error anywhere in ``[eps, T]`` moves the end point and the log-density. This script loads
model files trained by that benchmark (its ``--recipes`` runs), draws ``--n`` points of
the exact marginal at each ``t`` of a grid (the 8 Gaussians under the model's SDE, from
``sde_gen.GaussianMixture``), and reports per band of ``t`` the mean squared velocity error
``E |v_theta(x_t, t) - v(x_t, t)|^2`` (float64, averaged over the grid's times in the band) and,
for each objective named, the share of that objective's noise-level draws that fall in the band.

    .venv/bin/python benchmarks/objective_errors.py                 # the runs under outputs/objectives
    .venv/bin/python benchmarks/objective_errors.py --n 4000 --seeds 1,2

It prints a markdown table; docs/objectives.md quotes it with this command.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import sde_gen as sg
from sde_gen.data.toy import gmm8

ROOT = Path(__file__).resolve().parents[1]
# (label, run directory under outputs/objectives/ with {seed}, its objective as DSMLoss arguments)
RUNS = (
    ("edm, EDM's objective", "recipe/edm_edm_log_normal/preset/seed{seed}", "edm+log_normal"),
    ("v, EDM's objective", "recipe/v_edm_log_normal/preset/seed{seed}", "edm+log_normal"),
    ("flow, EDM's objective", "recipe/flow_edm_log_normal/preset/seed{seed}", "edm+log_normal"),
    ("data, EDM's objective", "recipe/data_edm_log_normal/preset/seed{seed}", "edm+log_normal"),
    ("flow, std2 + uniform", "recipe/flow_std2_uniform/preset/seed{seed}", "std2+uniform"),
    ("data, edm + uniform", "recipe/data_edm_uniform/preset/seed{seed}", "edm+uniform"),
)
OBJECTIVES = {
    "edm+log_normal": dict(weighting="edm", time_sampler="log_normal"),
    "std2+uniform": dict(weighting="std2", time_sampler="uniform"),
    "edm+uniform": dict(weighting="edm", time_sampler="uniform"),
}
BANDS = (1e-5, 1e-3, 1e-2, 0.1, 0.3, 0.5, 0.7, 1.0)
PAIRS = tuple(zip(BANDS, BANDS[1:], strict=False))  # [lo, hi) of each band


def _shares(sde, objective: str, n: int, generator) -> list[float]:
    sampler = sg.DSMLoss(sde, eps=1e-5, **OBJECTIVES[objective]).time_sampler
    t, _ = sampler.sample(n, generator=generator, dtype=torch.float64)
    return [float(((t >= lo) & (t < hi)).double().mean()) for lo, hi in PAIRS]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "outputs" / "objectives"))
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--n", type=int, default=2000, help="points of the exact marginal per time")
    p.add_argument("--per-band", type=int, default=8, help="times per band (log-spaced)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    mix = gmm8()
    gen = torch.Generator().manual_seed(0)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, sde = [], None
    for label, pattern, objective in RUNS:
        errs = []
        for seed in seeds:
            path = Path(args.out) / pattern.format(seed=seed) / "model.safetensors"
            if not path.exists():
                continue
            model = sg.load_model(path).double()
            sde = model.sde
            ode, exact = sg.ProbabilityFlowODE(sde, model), sg.ProbabilityFlowODE(sde, mix.score_fn(sde))
            band_errs = []
            for lo, hi in PAIRS:
                ts = torch.logspace(math.log10(lo), math.log10(hi), args.per_band)
                e = 0.0
                for t in ts.tolist():
                    x = mix.sample_marginal(args.n, t, sde, generator=gen).double()
                    tt = torch.full((args.n,), t, dtype=torch.float64)
                    with torch.no_grad():
                        dv = ode.drift(x, tt) - exact.drift(x, tt)
                    e += float((dv**2).sum(1).mean()) / len(ts)
                band_errs.append(e)
            kl = json.loads((path.parent / "metrics.json").read_text())["kl_gap_nats"]
            errs.append((band_errs, kl))
        if errs:
            mean = [sum(e[0][i] for e in errs) / len(errs) for i in range(len(PAIRS))]
            kl = sum(e[1] for e in errs) / len(errs)
            rows.append((label, objective, mean, kl, len(errs)))
    if sde is None:
        raise SystemExit(f"no model files under {args.out}: run objectives.py --data gmm8 --recipes first")
    heads = [f"[{lo:g}, {hi:g})" for lo, hi in PAIRS]
    print("| model | runs | KL gap (nats) | " + " | ".join(heads) + " |")
    print("|---|---:|---:|" + "---:|" * len(heads))
    for label, _, mean, kl, n in rows:
        print(f"| {label} | {n} | {kl:.3f} | " + " | ".join(f"{v:.3g}" for v in mean) + " |")
    for objective in dict.fromkeys(r[1] for r in rows):
        shares = _shares(sde, objective, 200_000, torch.Generator().manual_seed(1))
        print(f"| share of {objective}'s draws | | | " + " | ".join(f"{s:.3f}" for s in shares) + " |")


if __name__ == "__main__":
    main()
