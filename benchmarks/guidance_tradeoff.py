"""Classifier-free guidance on digits: class accuracy against sample quality as the weight w grows.

Draws class-balanced samples (as many as the test set, 3 sets per w) from a class-conditional
digits model (``experiment=digits_cond``) guided with ``sg.classifier_free_guidance`` at each w,
and scores them in the digits classifier's features: the accuracy of the classifier on the
samples against the labels they were drawn for, the Fréchet distance to the training images,
precision and recall. Writes a plot of the trade-off and prints a Markdown table.

    .venv/bin/python experiments/run.py experiment=digits_cond mode=train hydra.run.dir=/tmp/cond
    .venv/bin/python benchmarks/guidance_tradeoff.py --model /tmp/cond/model.safetensors

The same grid from the command line, one run per w: experiments/sweeps/guidance_w.yaml.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import sde_gen as sg
from sde_gen import metrics as M

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a class-conditional digits model.safetensors")
    p.add_argument("--w", default="-1,0,0.5,1,2,4", help="guidance weights (-1: the unconditional model)")
    p.add_argument("--steps", type=int, default=20, help="DPMSolverPlusPlus steps (NFE: 2 per step)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "guidance_tradeoff.png"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = [float(v) for v in args.w.split(",")]

    model = sg.load_model(args.model).eval()
    k = model.num_classes
    if k is None:
        p.error(f"{args.model} is not a class-conditional model (its num_classes is None)")
    data = sg.load_dataset("digits")
    n = data.test.shape[0]
    clf = M.DigitsClassifier(data)
    train_feats = clf(data.train)
    labels = torch.arange(n) % k
    floor = M.feature_metrics(train_feats, clf(data.test), generator=torch.Generator().manual_seed(0))
    rows = []
    for w in weights:
        score = sg.classifier_free_guidance(model, w, null=k)
        runs, t0 = [], time.perf_counter()
        for seed in range(args.seeds):
            with torch.no_grad():
                x = sg.sample(
                    model.sde,
                    score,
                    (n, *data.shape),
                    sg.DPMSolverPlusPlus(args.steps),
                    generator=torch.Generator().manual_seed(seed),
                    cond={"y": labels},
                    denoise=True,
                )
            m = M.feature_metrics(train_feats, clf(x), generator=torch.Generator().manual_seed(0))
            m["class_accuracy"] = float((clf.logits(x).argmax(1) == labels).float().mean())
            runs.append(m)
        sec = (time.perf_counter() - t0) / args.seeds

        def mean(key, runs=runs):
            return statistics.fmean(r[key] for r in runs)

        def sd(key, runs=runs):
            return statistics.stdev(r[key] for r in runs) if len(runs) > 1 else 0.0

        rows.append(
            (
                w,
                mean("class_accuracy"),
                sd("class_accuracy"),
                mean("fd"),
                sd("fd"),
                mean("precision"),
                mean("recall"),
                sec,
            )
        )
        print(rows[-1], flush=True)

    nfe = 2 * (args.steps + 1)
    print(
        f"\n{n} samples per set, {args.seeds} sets per w, DPMSolverPlusPlus({args.steps}), NFE {nfe} guided;"
    )
    print(
        f"floor (test images): FD {floor['fd']:.1f}, precision {floor['precision']:.3f}, "
        f"recall {floor['recall']:.3f}; classifier test accuracy {clf.accuracy:.3f}\n"
    )
    print("| w | class accuracy | FD | precision | recall | seconds per set |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w, acc, acc_sd, fd, fd_sd, prec, rec, sec in rows:
        cells = [
            f"{w:g}",
            f"{acc:.3f} ± {acc_sd:.3f}",
            f"{fd:.1f} ± {fd_sd:.1f}",
            f"{prec:.3f}",
            f"{rec:.3f}",
        ]
        print("| " + " | ".join(cells) + f" | {sec:.0f} |")
    plot(rows, floor, args.out)
    print(f"\nplot: {args.out}")


def plot(rows, floor, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar(ws, [r[3] for r in rows], yerr=[r[4] for r in rows], marker="o", color="C0", label="FD")
    ax.axhline(floor["fd"], color="C0", ls="--", lw=0.8, label="FD floor (test images)")
    ax.set_xlabel("guidance weight w (guidance_scale = 1 + w)")
    ax.set_ylabel("Fréchet distance (classifier features)", color="C0")
    ax2 = ax.twinx()
    ax2.errorbar(
        ws, [r[1] for r in rows], yerr=[r[2] for r in rows], marker="s", color="C1", label="class accuracy"
    )
    ax2.set_ylabel("class accuracy of the samples", color="C1")
    fig.legend(loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
