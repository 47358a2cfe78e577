"""Few-step sampling of a trained digits model on its default grids and on grids tuned for it.

For each sampler and budget (4, 6, 8 and 10 score evaluations by default), the grid the sampler
uses by default on the model's SDE and the grids ``sg.optimize_schedule`` tunes for the model
(each method, a pilot of ``--pilot`` prior draws from seed 7, none of them the scored samples),
scored like benchmarks/sample_quality.py: Fréchet distance, KID, precision and recall of 300
samples in the digits classifier's features against the training images, ``--seeds`` sets per
row. The tuning's cost (score evaluations of the pilot batch, seconds) is reported per row;
``--cost-only`` only tunes, and prints each tuning's cost and pilot error (``--pilot 256,128``).

    .venv/bin/python benchmarks/schedules_digits.py --model PATH/model.safetensors
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from sample_quality import draw, fmt_row, footer  # noqa: E402
from solvers import keep_interpretation  # noqa: E402

import sde_gen as sg  # noqa: E402
from sde_gen import metrics as M  # noqa: E402

SAMPLERS = {
    "dpmpp": ("DPM-Solver++ 2M", lambda **kw: sg.DPMSolverPlusPlus(order=2, **kw)),
    "unipc": ("UniPC", lambda **kw: sg.UniPC(**kw)),
    "ipndm": ("iPNDM", lambda **kw: sg.IPNDM(**kw)),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model.safetensors from a digits run")
    p.add_argument("--samplers", default="dpmpp,unipc", help=f"subset of {sorted(SAMPLERS)}")
    p.add_argument("--nfe", default="4,6,8,10", help="budgets, comma-separated")
    p.add_argument("--methods", default=",".join(sg.TUNING_METHODS), help="tuning methods, comma-separated")
    p.add_argument("--pilot", default="256", help="pilot batch of the tuning (--cost-only: comma-separated)")
    p.add_argument("--cost-only", action="store_true", help="only tune; print each tuning's cost")
    p.add_argument("--seeds", type=int, default=3, help="sample sets per row")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "schedules_digits.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = sg.load_model(args.model).eval()
    data = sg.load_dataset("digits")
    n, shape = len(data.test), tuple(data.shape)
    pilots = [int(b) for b in args.pilot.split(",")]
    if args.cost_only:
        return tuning_costs(args, model, shape, pilots)
    if len(pilots) != 1:
        p.error("--pilot takes one size unless --cost-only")
    args.pilot = pilots[0]
    clf = M.DigitsClassifier(data)
    train_feats = clf(data.train)

    def score(images):
        return M.feature_metrics(
            train_feats, clf(images), generator=torch.Generator().manual_seed(0), kid_subsets=100
        )

    lines = [
        "| sampler | grid | NFE | FD | KID | precision | recall | ms per sample | tuning cost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    floor = score(data.test)
    lines.append(fmt_row("floor: test images | -", "-", [floor], 0.0) + " - |")
    started, t_all = datetime.datetime.now().astimezone(), time.perf_counter()
    for key in args.samplers.split(","):
        name, make = SAMPLERS[key]
        for nfe in [int(b) for b in args.nfe.split(",")]:
            grids = {"default": (None, "-")}
            for method in [m for m in args.methods.split(",") if m]:
                res = _tune(model, make(steps=nfe), (args.pilot, *shape), method)
                grids[f"tuned ({method})"] = (res.grid, f"{res.nfe} NFE, {res.seconds:.0f} s ({res.method})")
            for label, (grid, cost) in grids.items():
                solver = make(steps=nfe) if grid is None else make(schedule=grid)
                runs, secs = [], 0.0
                for k in range(args.seeds):
                    x, used, sec = draw(model, solver, (n, *shape), 300, k)
                    runs.append(score(x))
                    secs += sec
                lines.append(fmt_row(f"{name} | {label}", used, runs, secs / (n * args.seeds)) + f" {cost} |")
                print(lines[-1], flush=True)
                write_page(args, argv, model, n, clf.accuracy, lines, started, time.perf_counter() - t_all)
    write_page(args, argv, model, n, clf.accuracy, lines, started, time.perf_counter() - t_all)


def _tune(model, solver, pilot_shape, method):
    with torch.no_grad():
        return sg.optimize_schedule(
            model.sde, model, solver, pilot_shape, method=method,
            generator=torch.Generator().manual_seed(7), return_result=True,
        )  # fmt: skip


def tuning_costs(args, model, shape, pilots: list[int]) -> None:
    """``--cost-only``: a markdown table of what each tuning costs (score evaluations of the pilot
    batch, seconds) and its final error on the pilot against the solver's own grid."""
    print(f"torch threads {torch.get_num_threads()}; model {args.model}")
    print("| sampler | NFE | method | pilot | score evals | seconds | pilot error, tuned / own | kept |")
    print("|---|---:|---|---:|---:|---:|---|---|")
    for key in args.samplers.split(","):
        name, make = SAMPLERS[key]
        for nfe in [int(b) for b in args.nfe.split(",")]:
            for method in [m for m in args.methods.split(",") if m]:
                for pilot in pilots:
                    r = _tune(model, make(steps=nfe), (pilot, *shape), method)
                    print(
                        f"| {name} | {nfe} | {method} | {pilot} | {r.nfe} | {r.seconds:.1f} | "
                        f"{r.error:.3g} / {r.default_error:.3g} | {r.method} |",
                        flush=True,
                    )


def write_page(args, argv, model, n: int, accuracy: float, lines: list[str], started, total: float) -> None:
    """The page: the rows so far (written after each row, so a stopped run leaves what it measured)."""
    out = Path(args.out)
    command = "python benchmarks/schedules_digits.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    doc = [
        "# Few-step sampling of a digits model: default and tuned grids",
        "",
        *keep_interpretation(out),
        f"Model: `{args.model}` ({type(model.sde).__name__}, {model.parameterization} parameterization); "
        f"{n} samples per set, {args.seeds} sets per row (seeds 0..{args.seeds - 1}; FD as mean ± std over "
        "the sets, the rest as means) in the digits classifier's features (test accuracy "
        f"{accuracy:.3f}) against the training images. Tuned grids: `sg.optimize_schedule` with a pilot "
        f"of {args.pilot} prior draws (seed 7); the cost column counts score evaluations of that pilot "
        "batch and the tuning's wall time.",
        "",
        *lines,
        "",
        *footer(args.threads, started, total, command),
    ]
    out.write_text("\n".join(doc))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
