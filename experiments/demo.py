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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="samples per run")
    parser.add_argument("--steps", type=int, default=500, help="steps of the stepping solvers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    eps = 1e-3
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
    print(
        f"{'SDE':7} {'solver':36} {'NFE':>6} {'seconds':>8} {'energy dist.':>13}",
        f"{'noise floor (5 exact sets)':>27}",
    )
    for sde_name, sde in sdes.items():
        g = torch.Generator().manual_seed(args.seed)
        ref = data.sample_marginal(args.n, eps, sde, generator=g)
        floors = torch.tensor(
            [sg.energy_distance(data.sample_marginal(args.n, eps, sde, generator=g), ref) for _ in range(5)]
        )
        floor = f"{floors.mean():.5f}+-{floors.std():.5f}"
        for name, solver in solvers.items():
            start = time.perf_counter()
            out = sg.sample(
                sde,
                data.score_fn(sde),
                (args.n, 2),
                solver,
                eps=eps,
                generator=g,
                dtype=torch.float64,
                return_result=True,
            )
            seconds = time.perf_counter() - start
            ed = sg.energy_distance(out.x, ref)
            print(f"{sde_name:7} {name:36} {out.nfe:6d} {seconds:8.2f} {ed:13.5f} {floor:>27}")

    print("\nExact likelihood through the probability-flow ODE (256 points of p_eps, eps=1e-5):")
    print(
        f"{'SDE':7} {'divergence':12} {'NFE':>5} {'mean |error| nats':>18}",
        f"{'mean s.e.':>10} {'prior mismatch':>15}",
    )
    for sde_name, sde in sdes.items():
        g = torch.Generator().manual_seed(args.seed)
        x = data.sample_marginal(256, 1e-5, sde, generator=g)
        truth = data.log_prob(x, 1e-5, sde)
        for divergence in ["exact", "hutchinson"]:
            res = sg.log_likelihood(
                sde,
                data.score_fn(sde),
                x,
                eps=1e-5,
                divergence=divergence,
                num_probes=4,
                generator=g,
                solver=sg.ProbabilityFlow(rtol=1e-7, atol=1e-7),
            )
            # The ODE ends at p_T; the prior is only close to it. The oracle knows p_T exactly.
            p_T = data.log_prob(res.z, sde.T, sde)
            err = (res.log_prob - res.prior_log_prob + p_T - truth).abs().mean().item()
            mismatch = (res.prior_log_prob - p_T).abs().mean().item()
            se = "-" if res.std_error is None else f"{res.std_error.mean().item():.2e}"
            print(f"{sde_name:7} {divergence:12} {res.nfe:5d} {err:18.2e} {se:>10} {mismatch:15.2e}")


if __name__ == "__main__":
    main()
