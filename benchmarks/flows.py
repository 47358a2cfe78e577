"""Flow matching against VP at equal training steps, on the 8 Gaussians: few-step sampling,
straightness and the exact KL gap, with and without minibatch optimal-transport couplings.

Rows (each an MLP of run.py's `model=mlp` trained by the library's Trainer on gmm8 samples):

- ``vp``: the VP SDE, noise prediction, ``std2`` weighting (the reference objective);
- ``flow``: ``sg.RectifiedFlow``, velocity prediction, the ``flow`` weighting (flow matching);
- ``flow+ot``: the same with ``coupling="ot"`` (minibatch optimal transport, Tong et al. 2023);
- ``flow+reflow``: the ``flow`` model reflowed once (Liu et al. 2022): 50,000 pairs of prior draws
  and their images under its ODE (``sg.reflow_pairs``, dopri5), then as many steps again of flow
  matching on exactly those pairs (``sg.Batches(x, noise=...)``), starting from the flow model's
  weights as Liu et al. do. Its training time includes the first stage and the pairs.

Each trained model (its EMA weights, float64) draws 5,000 samples from one prior draw with DDIM
(Euler on ``d xhat / d sigma_hat``; on the straight path Euler in ``t``) on the grid uniform in
``t`` at 1, 2, 4, 10, 20 and 50 evaluations, and with the adaptive ODE (dopri5). The figure is the
per-component W2 of tests/problems.ComponentW2 over its noise floor (exact samples of p_eps: 1.0),
so that what the model has not learned and what the sampler loses add up in one number.
Straightness (Liu et al. 2022) is ``E int ||dx/dt - (x_eps - x_T) / (T - eps)||^2 dt`` along
200-step Euler trajectories, divided by ``E ||x_eps - x_T||^2 / (T - eps)`` (0 for straight
paths). The KL gap is the exact test NLL (probability flow, exact divergence, 1,000 test points)
minus the data's entropy, in nats.

    .venv/bin/python benchmarks/flows.py --steps 3000 --out outputs/flows.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from problems import ComponentW2  # noqa: E402

import sde_gen as sg  # noqa: E402

F64 = torch.float64
EPS = 1e-3
NFES = (1, 2, 4, 10, 20, 50)


def rows() -> dict:
    return {
        "vp": (sg.VPSDE(), "noise", "std2", "independent"),
        "flow": (sg.RectifiedFlow(), "flow", "flow", "independent"),
        "flow+ot": (sg.RectifiedFlow(), "flow", "flow", "ot"),
        "flow+reflow": (sg.RectifiedFlow(), "flow", "flow", "reflow"),
    }


def train(sde, param, weighting, coupling, steps: int, seed: int, model=None, batches=None):
    """A model trained for ``steps`` on gmm8 samples (or on ``batches``, from ``model``'s weights)."""
    torch.manual_seed(seed)
    if batches is None:
        data = sg.gmm8().sample(100_000, generator=torch.Generator().manual_seed(seed)).float()
        batches = sg.Batches(data, 512, seed=seed)
    if model is None:
        model = sg.ScoreModel(sg.MLP(2, hidden=256, depth=3, embed_dim=128), sde, param)
    loss = sg.DSMLoss(sde, weighting, eps=EPS, coupling=coupling)
    trainer = sg.Trainer(model, loss, batches, lambda p: torch.optim.Adam(p, 1e-3))
    t0 = time.perf_counter()
    trainer.fit(steps)
    with trainer.ema.applied(model):
        trained = copy.deepcopy(model)  # the EMA weights
    return trained.double().eval(), time.perf_counter() - t0


def reflow(base, base_seconds: float, sde, steps: int, seed: int, pairs: int = 50_000):
    """``base`` reflowed once on ``pairs`` pairs of its ODE; the seconds include ``base_seconds``."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        x, noise = sg.reflow_pairs(sde, base, pairs, (2,), generator=gen, batch_size=10_000, dtype=F64)
    batches = sg.Batches(x.float(), 512, seed=seed, noise=noise.float())
    pair_seconds = time.perf_counter() - t0
    start = copy.deepcopy(base).float()
    model, seconds = train(sde, "flow", "flow", "independent", steps, seed, start, batches)
    return model, base_seconds + pair_seconds + seconds


def straightness(sde, score_fn, x_T, steps: int = 200) -> float:
    """Liu et al.'s straightness of the sampling paths, from 200 DDIM steps uniform in t (on the
    straight path DDIM is Euler in t), relative to the squared chord."""
    xs = [x_T]
    res = sg.sample(
        sde, score_fn, x_T.shape, sg.DDIM(steps=steps, schedule="time_uniform"), eps=EPS, x_T=x_T,
        callback=lambda info: xs.append(info.x), return_result=True,
    )  # fmt: skip
    grid, path = res.grid.to(F64), torch.stack(xs).flatten(2)  # (steps + 1, N, dims)
    dt = grid[:-1] - grid[1:]
    vel = (path[1:] - path[:-1]) / dt[:, None, None]
    span = float(grid[0] - grid[-1])
    chord = (path[-1] - path[0]) / span
    dev = ((vel - chord) ** 2).sum(-1).mean(-1)
    return float((dev * dt).sum() / (chord.pow(2).sum(-1).mean() * span))


def evaluate(model, sde, n: int = 5000) -> dict:
    mix = sg.gmm8()
    fig = ComponentW2(mix, sde, EPS, n, 100_000, 4)
    x_T = sde.prior_sample((n, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    out = {}
    with torch.no_grad():
        for nfe in NFES:
            x = sg.sample(
                sde, model, x_T.shape, sg.DDIM(steps=nfe, schedule="time_uniform"), eps=EPS, x_T=x_T
            )
            out[f"ddim_{nfe}"] = fig(x)[0] / fig.floor[0]
        res = sg.sample(
            sde, model, x_T.shape, sg.ProbabilityFlow("dopri5"), eps=EPS, x_T=x_T, return_result=True
        )
        out["ode"], out["ode_nfe"] = fig(res.x)[0] / fig.floor[0], res.nfe
        out["straightness"] = straightness(sde, model, x_T[:1000])
    test = mix.sample(1000, generator=torch.Generator().manual_seed(99))
    lik = sg.log_likelihood(
        sde, model, test, eps=EPS, divergence="exact", solver=sg.ProbabilityFlow(rtol=1e-6, atol=1e-6)
    )
    entropy = -mix.log_prob(mix.sample(200_000, generator=torch.Generator().manual_seed(7))).mean()
    out["kl_gap"] = float(-lik.log_prob.mean() - entropy)
    out["kl_gap_se"] = float(lik.log_prob.std() / len(test) ** 0.5)
    return out


def table(results: dict) -> str:
    head = (
        "| row | train s | "
        + " | ".join(f"{k} NFE" for k in NFES)
        + " | dopri5 (NFE) | straightness | KL gap (nats) |"
    )
    lines = [head, "|---|" + "---:|" * (len(NFES) + 4)]
    for name, r in results.items():
        cells = " | ".join(f"{r[f'ddim_{k}']:.1f}" for k in NFES)
        lines.append(
            f"| {name} | {r['train_seconds']:.0f} | {cells} | {r['ode']:.2f} ({r['ode_nfe']}) | "
            f"{r['straightness']:.3f} | {r['kl_gap']:.3f} ± {r['kl_gap_se']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default=None, help="a subset of vp, flow, flow+ot, flow+reflow")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "outputs" / "flows.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    trained = {}
    for name, (sde, param, weighting, coupling) in rows().items():
        if args.rows and name not in args.rows.split(","):
            continue
        if coupling == "reflow":
            base = trained.get("flow") or train(sde, param, weighting, "independent", args.steps, args.seed)
            model, seconds = reflow(*base, sde, args.steps, args.seed)
        else:
            model, seconds = train(sde, param, weighting, coupling, args.steps, args.seed)
            trained[name] = model, seconds
        results[name] = {
            "train_seconds": seconds,
            "steps": args.steps,
            "seed": args.seed,
            **evaluate(model, sde),
        }
        out.write_text(json.dumps(results, indent=1))
        print(f"[{name}] done", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
