"""The classic flow-matching sampler in sde_gen against facebookresearch/flow_matching's ODESolver.

Flow matching samples by integrating the velocity from noise to data in its own time ``s``
(``x_s = s x_data + (1 - s) z``). On ``sg.RectifiedFlow`` (``x_t = (1 - t) x_0 + t z``) that is
``s = 1 - t``, and its velocity ``u(x, s) = -dx/dt`` is minus the probability-flow velocity
``f - g^2 score / 2``. So ``sg.ProbabilityFlow("euler" | "midpoint", steps=N)`` on the straight
path is the classic sampler; fed the same exact velocity (a Gaussian mixture's score, float64),
the same prior draw and the same grid (``s = 1 - t``), both must give the same samples up to
rounding. Nothing is downloaded: pass the folder that holds the package ``flow_matching``
(a checkout of github.com/facebookresearch/flow_matching).

    .venv/bin/python benchmarks/flow_matching_reference.py --flow-matching /path/to/checkout
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from problems import mixture_2d  # noqa: E402

import sde_gen as sg  # noqa: E402

F64 = torch.float64


def compare(ODESolver, method: str, steps: int, n: int = 2000, eps: float = 1e-3) -> dict:
    sde, mix = sg.RectifiedFlow(), mixture_2d()
    score = mix.score_fn(sde)
    x_T = sde.prior_sample((n, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    solver = sg.ProbabilityFlow(method, steps=steps)
    ours = sg.sample(sde, score, x_T.shape, solver, eps=eps, x_T=x_T, dtype=F64)

    def velocity(x, t):  # flow matching's u(x, s), s = 1 - t
        tt = (1.0 - t).expand(x.shape[0])
        g2 = sde.diffusion(tt)[:, None] ** 2
        return -(sde.drift(x, tt) - 0.5 * g2 * score(x, tt))

    grid = 1.0 - solver.grid(sde, sde.T, eps)  # increasing s
    theirs = ODESolver(velocity_model=velocity).sample(
        x_init=x_T, step_size=None, method=method, time_grid=grid
    )
    return {
        "method": method,
        "steps": steps,
        "max_abs_diff": (ours - theirs).abs().max().item(),
        "max_abs_sample": ours.abs().max().item(),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flow-matching", required=True, help="folder holding the package flow_matching")
    args = p.parse_args(argv)
    folder = Path(args.flow_matching)
    if not (folder / "flow_matching" / "solver" / "ode_solver.py").exists():
        raise SystemExit(f"{folder} does not hold flow_matching/solver/ode_solver.py")
    sys.path.insert(0, str(folder))
    from flow_matching.solver import ODESolver

    print("| method | steps | max abs difference | max abs sample |")
    print("|---|---:|---:|---:|")
    for method in ("euler", "midpoint"):
        for steps in (10, 20, 100):
            r = compare(ODESolver, method, steps)
            print(f"| {method} | {steps} | {r['max_abs_diff']:.1e} | {r['max_abs_sample']:.2f} |")


if __name__ == "__main__":
    main()
