"""A tour of sde_gen on the closed-form oracle: every solver, every SDE, exact likelihoods.

Each sampler is fed the exact score of a 2-D Gaussian mixture, so the figures below measure the
solvers alone: the energy distance to exact samples of p_eps (next to its value between two exact
sets: the noise floor) and the likelihood error in nats against the analytic log-density.

    python experiments/demo.py [--n 2000] [--steps 500]
"""

from __future__ import annotations

import argparse
import time

import torch

import sde_gen as sg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    for flag, default in (("--n", 2000), ("--steps", 500), ("--seed", 0)):  # samples, solver steps, seed
        parser.add_argument(flag, type=int, default=default)
    args, eps, rows, lik_rows = parser.parse_args(), 1e-3, [], []
    means = torch.tensor([[2.0, 0.0], [-2.0, 0.5], [0.0, 2.5]], dtype=torch.float64)
    data = sg.GaussianMixture.isotropic(means, std=0.45, weights=torch.tensor([0.5, 0.3, 0.2]))
    sdes = {"VP": sg.VPSDE(), "sub-VP": sg.SubVPSDE(), "VE": sg.VESDE()}
    solvers = {
        "Euler-Maruyama": sg.EulerMaruyama(steps=args.steps),
        "PC (reverse diffusion + Langevin)": sg.PredictorCorrector(steps=args.steps),
        "PC (ancestral, no corrector)": sg.PredictorCorrector(args.steps, "ancestral", None),
        "probability flow (dopri5)": sg.ProbabilityFlow(rtol=1e-5, atol=1e-5),
    }
    print(f"2-D Gaussian mixture, {args.n} samples, eps={eps}, float64, {torch.get_num_threads()} threads\n")
    for sde_name, sde in sdes.items():
        g = torch.Generator().manual_seed(args.seed)
        ref = data.sample_marginal(args.n, eps, sde, generator=g)
        floors = torch.tensor([sg.energy_distance(data.sample_marginal(args.n, eps, sde, generator=g), ref)
                               for _ in range(5)])  # fmt: skip
        floor = f"{floors.mean():.5f}+-{floors.std():.5f}"
        for name, solver in solvers.items():
            start, shape = time.perf_counter(), (args.n, 2)
            out = sg.sample(sde, data.score_fn(sde), shape, solver, eps=eps, generator=g, dtype=torch.float64,
                            return_result=True)  # fmt: skip
            seconds, ed = time.perf_counter() - start, sg.energy_distance(out.x, ref)
            rows.append({"SDE": sde_name, "solver": name, "NFE": out.nfe, "seconds": seconds,
                         "energy dist.": ed, "noise floor (5 exact sets)": floor})  # fmt: skip
        g = torch.Generator().manual_seed(args.seed)
        x = data.sample_marginal(256, 1e-5, sde, generator=g)
        truth, solver = data.log_prob(x, 1e-5, sde), sg.ProbabilityFlow(rtol=1e-7, atol=1e-7)
        for divergence in ["exact", "hutchinson"]:
            res = sg.log_likelihood(sde, data.score_fn(sde), x, eps=1e-5, divergence=divergence, num_probes=4,
                                    generator=g, solver=solver)  # fmt: skip
            # The ODE ends at p_T; the prior is only close to it. The oracle knows p_T exactly.
            p_T = data.log_prob(res.z, sde.T, sde)
            err = (res.log_prob - res.prior_log_prob + p_T - truth).abs().mean().item()
            se = None if res.std_error is None else res.std_error.mean().item()
            mismatch = (res.prior_log_prob - p_T).abs().mean().item()
            lik_rows.append({"SDE": sde_name, "divergence": divergence, "NFE": res.nfe, "mean abs err": err,
                             "mean s.e.": se, "prior mismatch": mismatch})  # fmt: skip
    print(sg.results_table(rows, list(rows[0])))
    print("\nExact likelihood through the probability-flow ODE (256 points of p_eps, eps=1e-5):")
    print(sg.results_table(lik_rows, list(lik_rows[0])))


if __name__ == "__main__":
    main()
