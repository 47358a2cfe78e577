"""Training job for tests/training/test_distributed.py: the two stage losses (an autoencoder with
``AutoencoderLoss`` and a super-resolution score model with ``SuperResolutionLoss``), run under
``torchrun`` (2 processes, gloo) and in process (the single-process reference) with the same
global batch.

    python -m torch.distributed.run --nproc_per_node=2 tests/training/stage_ddp_worker.py OUT STEPS
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

import sde_gen as sg


def _trainer(model, loss, data):
    return sg.Trainer(
        model,
        loss,
        sg.Batches(data, batch_size=8, seed=3),
        functools.partial(torch.optim.Adam, lr=1e-3),
        ema=None,
        accumulate=2,
    )


def train(out: Path, steps: int) -> dict:
    sg.distributed.init_from_env()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ae = sg.AutoencoderKL(image_size=8, latent_channels=2, channels=8, channel_mult=(1, 2)).double()
    net = sg.SuperResolutionUNet(
        image_size=8, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0
    ).double()
    sde = sg.VPSDE()
    result = {}
    for name, model, loss in (
        ("autoencoder", ae, sg.AutoencoderLoss(kl_weight=0.1)),
        ("superres", sg.ScoreModel(net, sde), sg.SuperResolutionLoss(sg.DSMLoss(sde), 2, 0.5)),
    ):
        trainer = _trainer(model, loss, data)
        trainer.fit(steps)
        result[name] = {
            "world_size": trainer.world_size,
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "losses": [h["loss"] for h in trainer.history],
        }
    torch.save(result, out / f"stages_rank{sg.distributed.get_rank()}.pt")
    return result


if __name__ == "__main__":
    train(Path(sys.argv[1]), int(sys.argv[2]))
    sys.stdout.flush()  # leave without the interpreter's finalisation, as ddp_worker.py does (why there)
    sys.stderr.flush()
    os._exit(0)
