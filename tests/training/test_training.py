"""The training loop: exact resume, EMA evaluated, atomic checkpoints, warm-up, clipping.

The pieces the trainer is handed have tests of their own: test_ema.py, test_schedules.py,
test_batches.py, test_checkpoints.py.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import sde_gen as sg


class TinyNet(nn.Module):
    """A small noise-conditional MLP with dropout (so resuming must restore the dropout RNG)."""

    def __init__(self, dim=2, hidden=32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Dropout(0.2), nn.Linear(hidden, dim)
        )

    def forward(self, x, t):
        return self.body(torch.cat([x.flatten(1), t[:, None]], 1)).reshape(x.shape)


def _dequantize(batch, generator):
    """A transform with its own noise: the trainer must checkpoint that generator too."""
    return batch + 0.01 * torch.rand(batch.shape, generator=generator, dtype=batch.dtype)


def _data():
    return (
        sg.GaussianMixture.isotropic(torch.tensor([[2.0, 0.0], [-2.0, 0.0]]), 0.5)
        .sample(300, generator=torch.Generator().manual_seed(0))
        .float()
    )


def _trainer(
    tmp_path,
    seed=0,
    *,
    transform=_dequantize,
    accumulate=2,
    lr=1e-3,
    warmup=5,
    decay_steps=None,
    grad_clip=1.0,
    ema=0.9,
    ckpt_every=None,
    keep=3,
    nonfinite="raise",
    callbacks=(),
):
    """The test trainer: likelihood weighting with importance sampling, batches of 64 over 300
    points, Adam, warm-up, EMA, checkpoints in ``tmp_path`` (``None``: no checkpoints)."""
    torch.manual_seed(123)  # the same initial weights for every trainer
    sde = sg.VPSDE()
    model = sg.ScoreModel(TinyNet(), sde)
    if ema == "plain":  # the EMA of sde_gen 0.1, without warm-up
        ema = sg.EMA(model, 0.9, warmup=False)
    return sg.Trainer(
        model,
        sg.DSMLoss(sde, "likelihood", importance_sampling=True),
        sg.Batches(_data(), batch_size=64, transform=transform, seed=seed),
        functools.partial(torch.optim.Adam, lr=lr),
        lr_schedule=sg.WarmupCosine(warmup, decay_steps),
        ema=ema,
        grad_clip=grad_clip,
        accumulate=accumulate,
        checkpoints=None if tmp_path is None else sg.Checkpoints(tmp_path, every=ckpt_every, keep=keep),
        nonfinite=nonfinite,
        callbacks=callbacks,
    )


def _params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_stopped_and_resumed_run_ends_with_identical_parameters(tmp_path):
    straight = _trainer(tmp_path / "a")
    straight.fit(23)  # 23 steps of 2 x 64 over 300 points: crosses epoch boundaries mid-batch

    first = _trainer(tmp_path / "b", ckpt_every=10)
    first.fit(10)
    del first
    resumed = _trainer(tmp_path / "b", ckpt_every=10)
    torch.manual_seed(999)  # global RNG state must not matter
    assert resumed.resume() and resumed.step == 10
    resumed.fit(23)
    a, b = _params(straight), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k]) for k in a)
    assert resumed.ema.num_updates == straight.ema.num_updates == 23
    # ... and the run was not trivially constant: the weights moved.
    fresh = _params(_trainer(tmp_path / "c"))
    assert any(not torch.equal(a[k], fresh[k]) for k in a)


def test_a_different_seed_gives_a_different_run(tmp_path):
    a, b = _trainer(tmp_path / "a", seed=0), _trainer(tmp_path / "b", seed=1)
    a.fit(5)
    b.fit(5)
    assert any(not torch.equal(a.model.state_dict()[k], b.model.state_dict()[k]) for k in _params(a))


def test_evaluation_sees_the_ema_weights_and_training_weights_come_back(tmp_path):
    seen = {}

    def eval_fn(trainer):
        seen.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
        seen["training"] = trainer.model.training
        return {"value": 1.0}

    evals = []

    class Record(sg.Callback):
        def on_eval(self, trainer, metrics):
            evals.append(metrics)

    trainer = _trainer(tmp_path, callbacks=[sg.PeriodicEval(eval_fn, 4), Record()])
    trainer.fit(4)
    raw = _params(trainer)
    for k, v in trainer.ema.shadow.items():
        assert torch.equal(seen[k], v)
    assert any(not torch.equal(raw[k], trainer.ema.shadow[k]) for k in raw)
    assert seen["training"] is False
    assert trainer.model.training  # restored
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in raw.items())
    assert evals == [{"value": 1.0, "step": 4}]
    # trainer.evaluate() is the same call, outside the loop.
    assert trainer.evaluate(eval_fn) == {"value": 1.0, "step": 4}


def test_warmup_and_gradient_clipping(tmp_path):
    trainer = _trainer(tmp_path, warmup=4, lr=1e-3, grad_clip=1e-3)
    got = [trainer.lr * trainer.lr_schedule(s) for s in range(5)]
    assert got == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    before = [p.detach().clone() for p in trainer.model.parameters()]
    metrics = trainer.train_step()
    assert metrics["lr"] == pytest.approx(2.5e-4)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    # Adam's first step moves each parameter by lr * sign(grad) whatever the clipping, so check the
    # norm it reports instead: the pre-clip norm, with clipping active.
    assert metrics["grad_norm"] > 1e-3
    after = list(trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    # After clipping, the gradients Adam saw have norm grad_clip (torch divides by norm + 1e-6).
    gn = metrics["grad_norm"]
    clipped = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in trainer.model.parameters()])
    )
    assert float(clipped) == pytest.approx(1e-3 * gn / (gn + 1e-6), rel=1e-5)


def test_checkpoints_are_atomic_and_pruned(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, ckpt_every=2, keep=2)
    trainer.fit(6)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt_00000004.pt", "ckpt_00000006.pt"]
    good = (tmp_path / "ckpt_00000006.pt").read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(tmp_path / "ckpt_00000006.pt")
    assert (tmp_path / "ckpt_00000006.pt").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temporary file left behind


def test_cosine_decay_schedule(tmp_path):
    """Warm-up to lr, then lr (1 + cos(pi f)) / 2 with f the fraction of the decay done; the rate
    the optimiser uses at each step is that one."""
    lrs = []

    class Rate(sg.Callback):
        def on_step(self, trainer, metrics):
            lrs.append(trainer.optimizer.param_groups[0]["lr"])

    trainer = _trainer(tmp_path, warmup=2, lr=1.0, decay_steps=6, callbacks=[Rate()])
    expected = [0.5, 1.0, 1.0, 0.8535534, 0.5, 0.1464466, 0.0, 0.0]
    assert [trainer.lr_schedule(s) for s in range(8)] == pytest.approx(expected, abs=1e-6)
    trainer.fit(8)
    assert lrs == pytest.approx(expected, abs=1e-6)
    # A decay that would end within the warm-up is no decay: constant after the warm-up.
    short = _trainer(tmp_path, warmup=10, decay_steps=5)
    assert [short.lr_schedule(s) for s in (0, 9, 10, 50)] == [0.1, 1.0, 1.0, 1.0]
