"""Scale-out benchmarks: data-parallel training speed and the memory bound of chunked evaluation.

    .venv/bin/python benchmarks/scaleout.py            # ~3 min on 2 cores, writes docs/benchmarks_scaleout.md
    .venv/bin/python benchmarks/scaleout.py --quick    # a smoke run

1. Training: seconds per optimiser step of ``UNet.digits()`` (1.26M parameters) on the 8x8 digits,
   global batch 128, as one process (1 and 2 threads) and as 2 processes under torchrun (gloo,
   1 thread each: the same 2 cores).
2. Memory: the peak resident memory of a fresh process that evaluates bits/dim (``evaluate_bpd``)
   of N digits images in chunks of ``batch_size``, and one that draws n samples into an ``.npy``
   file with ``generate_samples(out=...)``: the peak follows the chunk, not N.

Each measurement runs in its own subprocess, so that ``ru_maxrss`` is that measurement's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# -- workers (run in subprocesses) ----------------------------------------------------------------------


def worker_train(steps: int, warm: int) -> dict:
    import torch

    import sde_gen as sg

    sg.distributed.init_from_env(backend="gloo")
    data = sg.load_dataset("digits")
    torch.manual_seed(0)
    sde = sg.VPSDE()
    model = sg.ScoreModel(sg.UNet.digits(), sde)
    transform = sg.LevelTransform(data.levels, -1.0, 1.0)
    batches = sg.Batches(data.train, batch_size=128, transform=transform.dequantize)
    trainer = sg.Trainer(model, sg.DSMLoss(sde), batches)  # Adam, lr 2e-4, constant
    trainer.fit(warm)
    sg.distributed.barrier()
    start = time.perf_counter()
    trainer.fit(warm + steps)
    sg.distributed.barrier()
    return {"s_per_step": (time.perf_counter() - start) / steps, "world_size": trainer.world_size}


def worker_bpd(n: int, batch_size: int) -> dict:
    import torch

    import sde_gen as sg

    data = sg.load_dataset("digits")
    torch.manual_seed(0)
    sde = sg.VPSDE()
    model = sg.ScoreModel(sg.UNet.digits(), sde).eval()
    levels = data.test.repeat((n + data.test.shape[0] - 1) // data.test.shape[0], 1, 1, 1)[:n]
    start = time.perf_counter()
    with torch.no_grad():
        r = sg.evaluate_bpd(
            sde,
            model,
            levels,
            sg.LevelTransform(data.levels, -1.0, 1.0),
            solver=sg.ProbabilityFlow("euler", steps=2),
            divergence="hutchinson",
            batch_size=batch_size,
            seed=0,
        )
    return {"bpd": r["bpd"], "seconds": time.perf_counter() - start}


def worker_samples(n: int, batch_size: int) -> dict:
    import torch

    import sde_gen as sg

    torch.manual_seed(0)
    sde = sg.VPSDE()
    model = sg.ScoreModel(sg.UNet.digits(), sde).eval()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        r = sg.generate_samples(
            sde,
            model,
            n,
            (1, 8, 8),
            sg.EulerMaruyama(steps=2),
            seed=0,
            batch_size=batch_size,
            out=Path(tmp) / "samples.npy",
        )
        size = Path(r["path"]).stat().st_size
    return {"file_mb": size / 2**20, "seconds": time.perf_counter() - start}


WORKERS = {"train": worker_train, "bpd": worker_bpd, "samples": worker_samples}


def child_main(kind: str, args: list[int]) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    out = WORKERS[kind](*args)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if int(os.environ.get("RANK", "0")) == 0:
        print("RESULT " + json.dumps(out), flush=True)


# -- the driver -----------------------------------------------------------------------------------------


def run_child(kind: str, *args: int, threads: int = 1, nproc: int = 1) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), BENCH_THREADS=str(threads), WANDB_MODE="disabled")
    script = [str(Path(__file__).resolve()), "--child", kind, *map(str, args)]
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *script,
        ]
    else:
        cmd = [sys.executable, *script]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    if res.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_scaleout.md"))
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child_main(a.child[0], [int(v) for v in a.child[1:]])
        return
    steps, warm = (3, 1) if a.quick else (20, 3)
    lines = [
        "# Scale-out benchmarks",
        "",
        f"Written by `python benchmarks/scaleout.py{' --quick' if a.quick else ''}` on "
        f"{os.cpu_count()} CPU cores, torch {__import__('torch').__version__}, "
        f"{time.strftime('%Y-%m-%d')}. Each row is a fresh process (or torchrun group); peak memory is "
        "its `ru_maxrss` (rank 0 under torchrun).",
        "",
        "## Data-parallel training",
        "",
        f"`UNet.digits()` (1.26M parameters) on the 8x8 digits, global batch 128, {steps} steps timed after "
        f"{warm} warm-up steps. Two gloo processes share the 2 cores with one thread each.",
        "",
        "| processes x threads | s / step | peak memory (MB) |",
        "|---|---|---|",
    ]
    for nproc, threads in ((1, 1), (1, 2), (2, 1)):
        r = run_child("train", steps, warm, threads=threads, nproc=nproc)
        lines.append(f"| {nproc} x {threads} | {r['s_per_step']:.3f} | {r['peak_rss_mb']:.0f} |")
        print(lines[-1], flush=True)
    lines += [
        "",
        "## Memory of chunked evaluation",
        "",
        "`evaluate_bpd` of N digits test images (tiled) with an untrained `UNet.digits()`, a 2-step Euler",
        "grid and a Hutchinson divergence (the memory of the ODE state and of one vector-Jacobian",
        "product per chunk), and `generate_samples` of n 8x8 samples into an `.npy` file (2 Euler-Maruyama",
        "steps). One thread.",
        "",
        "| job | N | batch_size | peak memory (MB) | seconds |",
        "|---|---|---|---|---|",
    ]
    sizes = (300, 1200) if a.quick else (300, 3000)
    for n in sizes:
        for bs in (50, 300):
            r = run_child("bpd", n, bs)
            lines.append(f"| evaluate_bpd | {n} | {bs} | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} |")
            print(lines[-1], flush=True)
    for n in (2000, 20000) if not a.quick else (500, 2000):
        r = run_child("samples", n, 500)
        lines.append(
            f"| generate_samples (out=.npy) | {n} | 500 | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} |"
        )
        print(lines[-1], flush=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
