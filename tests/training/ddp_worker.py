"""Training job for tests/test_distributed.py: run under ``torchrun`` (2 processes, gloo) and in
process (the single-process reference) with the same global batch.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT STEPS
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

import sde_gen as sg


class Calls(sg.Callback):
    """Counts the callbacks a rank receives (only rank 0 should receive any)."""

    def __init__(self):
        self.n = 0

    def on_step(self, trainer, metrics):
        self.n += 1

    def on_checkpoint(self, trainer, path):
        self.n += 1


def noisy(batch, generator):
    """A transform with its own noise (like dequantization), drawn for the global batch."""
    return batch + 0.05 * torch.rand(batch.shape, generator=generator, dtype=batch.dtype)


def train(out: Path, steps: int) -> dict:
    sg.distributed.init_from_env()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sde = sg.VPSDE()
    data = sg.gmm8().sample(200, generator=torch.Generator().manual_seed(1))
    model = sg.ScoreModel(sg.MLP(dim=2, hidden=32, depth=2), sde).double()
    calls = Calls()
    trainer = sg.Trainer(
        model,
        sg.DSMLoss(sde, "likelihood", importance_sampling=True),
        sg.Batches(data, batch_size=32, transform=noisy, seed=3),
        functools.partial(torch.optim.Adam, lr=1e-3),
        lr_schedule=sg.WarmupCosine(warmup=2, decay_steps=20),
        ema=0.9,
        accumulate=2,
        checkpoints=sg.Checkpoints(out / "ckpt", every=3),
        callbacks=[calls],
    )
    resumed_from = trainer.step if trainer.resume() else None
    trainer.fit(steps)
    result = {
        "rank": trainer.rank,
        "world_size": trainer.world_size,
        "resumed_from": resumed_from,
        "callback_calls": calls.n,
        "state": trainer.state_dict(),
        "losses": [h["loss"] for h in trainer.history],
    }
    torch.save(result, out / f"rank{trainer.rank}_of{trainer.world_size}.pt")
    return result


if __name__ == "__main__":
    train(Path(sys.argv[1]), int(sys.argv[2]))
    # Everything is written and closed: leave without the interpreter's finalisation. During it a
    # gloo worker thread that drops the last reference to a collective's tensor takes the GIL, is
    # made to exit, and aborts the process now and then (SIGABRT, "terminate called without an
    # active exception", after the work is done; see pytorch/pytorch#190489 and #179291, and
    # destroy_process_group() does not join gloo's threads).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
