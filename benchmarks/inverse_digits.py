"""Inverse problems on held-out digits with a trained (unconditional) digits model.

Inpaints the lower half and 50% random pixels, and super-resolves from 4x4 (factor 2), for
``--images`` test images, with every method of ``sg.solve_inverse``; saves one picture (rows: the
truth, then per task the observation and each method; columns: images) and prints a Markdown table
of the mean squared error of the filled part (in ``[-1, 1]`` units) and the digits classifier's
accuracy on the results, per task and method.

    .venv/bin/python experiments/run.py sde=vp solver=pc mode=train hydra.run.dir=/tmp/default
    .venv/bin/python benchmarks/inverse_digits.py --model /tmp/default/model.safetensors

A posterior sample's error is not 0 even for an exact sampler (the unknown pixels are uncertain);
the figures compare methods on the same images, noise seeds and unconditional sampler
(``DDIM(steps, eta=1)``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import sde_gen as sg

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model.safetensors of a digits run")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--steps", type=int, default=100, help="DDIM(eta=1) steps of every method")
    p.add_argument("--particles", type=int, default=32, help="K of the smc method")
    p.add_argument("--zeta", type=float, default=0.5, help="DPS step size")
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "inverse_digits.png"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = sg.load_model(args.model).eval()
    sde = model.sde
    data = sg.load_dataset("digits")
    idx = torch.arange(args.images) * (data.test.shape[0] // args.images)
    x_true = sg.LevelTransform(data.levels, -1.0, 1.0).centers(data.test[idx])
    labels = data.test_labels[idx]
    clf = sg.DigitsClassifier(data)

    shape = x_true.shape[1:]
    lower = torch.ones(shape)
    lower[:, shape[1] // 2 :] = 0  # known: the upper half
    rand = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    tasks = {
        "lower half": (sg.Mask(lower), 1 - lower),
        "random 50% of pixels": (sg.Mask(rand), 1 - rand),
        "super-resolution from 4x4": (sg.SuperResolution(2), torch.ones(shape)),
    }
    methods = {
        "replacement": {},
        "repaint": {"jump_length": 10, "jump_n_sample": 5},
        "dps": {"zeta": args.zeta},
        "smc": {"num_particles": args.particles},
    }
    rows, table = [x_true], []
    for task, (op, filled) in tasks.items():
        y = op(x_true)
        shown = op.pinv(y) if isinstance(op, sg.SuperResolution) else torch.where(filled.bool(), -1.0, x_true)
        rows.append(shown)
        cells = []
        for method, opts in methods.items():
            t0 = time.perf_counter()
            res = sg.solve_inverse(
                sde,
                model,
                y,
                op,
                sg.DDIM(args.steps, eta=1.0),
                method,
                generator=torch.Generator().manual_seed(1),
                return_result=True,
                **opts,
            )
            x = res.x.clamp(-1, 1)
            mse = float(((x - x_true) ** 2 * filled).sum() / (filled.sum() * args.images))
            acc = float((clf.logits(x).argmax(1) == labels).float().mean())
            cells.append(f"{mse:.3f} / {acc:.2f} / {res.nfe} / {time.perf_counter() - t0:.0f} s")
            rows.append(x)
            print(f"{task}, {method}: {cells[-1]}", flush=True)
        table.append(f"| {task} | " + " | ".join(cells) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sg.save_image_grid(torch.cat(rows), args.out, nrow=args.images)
    print()
    print(f"MSE of the filled part / classifier accuracy / NFE / seconds, {args.images} test images:")
    print()
    print("| task | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    print("\n".join(table))
    print(f"\npicture: {args.out} (rows: truth; per task: observation, {', '.join(methods)})")


if __name__ == "__main__":
    main()
