"""Train and evaluate a score model from the command line (no Hydra).

python experiments/train.py --data gmm8 --steps 20000 --weighting likelihood --importance-sampling
python experiments/train.py --data digits --steps 6000 --out outputs/digits
"""

from __future__ import annotations

import argparse
import json

import torch
from pipeline import run

import sde_gen as sg

SDES = {"vp": sg.VPSDE, "subvp": sg.SubVPSDE, "ve": sg.VESDE}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="gmm8")
    p.add_argument("--sde", default="vp", choices=sorted(SDES))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cosine", action="store_true", help="cosine decay of the learning rate to 0")
    p.add_argument("--weighting", default="std2", choices=list(sg.WEIGHTINGS))
    p.add_argument("--importance-sampling", action="store_true")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--channels", type=int, default=None)
    p.add_argument("--likelihood-n", type=int, default=None)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--divergence", default="exact", choices=["exact", "hutchinson"])
    p.add_argument("--probes", type=int, default=1)
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = sg.load_dataset(args.data)
    if isinstance(data, sg.ImageData):
        c, h, _ = data.shape
        overrides = {} if args.channels is None else {"channels": args.channels}
        net = sg.UNet.digits(**overrides) if h == 8 else sg.UNet.mnist(**overrides)
    else:
        net = sg.MLP(data.dim, hidden=args.hidden, depth=args.depth)
    solver = sg.ProbabilityFlow(rtol=args.rtol, atol=args.rtol)
    out = (
        args.out
        or f"outputs/{args.data}-{args.sde}-{args.weighting}{'-is' if args.importance_sampling else ''}"
    )
    metrics = run(
        data,
        SDES[args.sde](),
        net,
        out_dir=out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        cosine_decay=args.cosine,
        ema_decay=args.ema,
        weighting=args.weighting,
        importance_sampling=args.importance_sampling,
        ckpt_every=args.ckpt_every,
        sample_solver=sg.PredictorCorrector(steps=500),
        num_samples=args.num_samples if data.train.ndim == 2 else 64,
        likelihood_solver=solver,
        likelihood_n=args.likelihood_n,
        repeats=args.repeats,
        seed=args.seed,
    )
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
