"""Learning-rate schedules against their formula, and the rate the trainer hands the optimiser.

factor(s) = (s + 1) / warmup                                          s < warmup
          = (1 + cos(pi min(1, (s - warmup) / (decay_steps - warmup)))) / 2   after.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_training import TinyNet

import sde_gen as sg


def _formula(s: int, warmup: int, decay_steps: int | None) -> float:
    if s < warmup:
        return (s + 1) / warmup
    if decay_steps is None or decay_steps <= warmup:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / (decay_steps - warmup))))


@pytest.mark.parametrize("warmup, decay_steps", [(4, 12), (0, 10), (3, 4), (5, None)])
def test_factors_follow_the_formula_at_every_step(warmup, decay_steps):
    schedule = sg.WarmupCosine(warmup, decay_steps)
    for s in range(30):
        assert schedule(s) == pytest.approx(_formula(s, warmup, decay_steps), rel=1e-15, abs=1e-15), s


def test_chosen_points_of_warmup_and_cosine():
    schedule = sg.WarmupCosine(warmup=4, decay_steps=12)
    # The warm-up is linear and reaches 1 on its last step.
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == 1.0  # the cosine starts at 1 ...
    assert schedule(8) == pytest.approx(0.5, abs=1e-15)  # ... is 1/2 half way, (4 + 12) / 2 ...
    assert schedule(6) == pytest.approx((1 + math.sqrt(0.5)) / 2, abs=1e-15)  # ... cos(pi/4) a quarter way
    assert schedule(12) == 0.0 and schedule(13) == 0.0 and schedule(10**6) == 0.0  # ... and 0 from there
    # Symmetry of the cosine about its midpoint: f(8 - k) + f(8 + k) = 1.
    for k in range(5):
        assert schedule(8 - k) + schedule(8 + k) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize(
    "schedule",
    [
        sg.WarmupCosine(4, 12, cosine=False),
        sg.WarmupCosine(4, None),
        sg.WarmupCosine(4, 4),  # a decay that ends with the warm-up
        sg.WarmupCosine(4, 2),  # ... or before it: a run too short to decay
    ],
)
def test_constant_after_warmup_without_a_decay(schedule):
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert all(schedule(s) == 1.0 for s in range(4, 100))
    assert schedule.decay_steps is None


def test_no_warmup_no_decay_is_the_constant_rate():
    assert all(sg.WarmupCosine()(s) == 1.0 for s in range(50))


@pytest.mark.parametrize(
    "kw, error, name",
    [
        ({"warmup": -1}, ValueError, "warmup"),
        ({"warmup": 1.5}, TypeError, "warmup"),
        ({"decay_steps": 0}, ValueError, "decay_steps"),
    ],
)
def test_bad_arguments_name_themselves(kw, error, name):
    with pytest.raises(error, match=name):
        sg.WarmupCosine(**kw)


def test_trainer_sets_every_groups_rate_to_base_times_factor_at_each_step():
    """Two parameter groups with their own base rates; a callback reads the rates of the step just
    taken. Adam's first step moves each parameter by lr g / (|g| + 1e-8): the rate is the one used."""
    torch.manual_seed(0)
    sde = sg.VPSDE()
    model = sg.ScoreModel(TinyNet(), sde).double()  # no zero-initialised layer: every gradient moves
    params = list(model.parameters())
    bases = (0.1, 0.03)
    optimizer = torch.optim.Adam(
        [{"params": params[:2], "lr": bases[0]}, {"params": params[2:]}], lr=bases[1]
    )
    schedule = sg.WarmupCosine(warmup=4, decay_steps=10)
    seen = []

    class Rates(sg.Callback):
        def on_step(self, trainer, metrics):
            seen.append(([g["lr"] for g in trainer.optimizer.param_groups], metrics["lr"]))

    data = sg.gmm8().sample(256, generator=torch.Generator().manual_seed(0))
    trainer = sg.Trainer(
        model,
        sg.DSMLoss(sde),
        sg.Batches(data, batch_size=32, seed=0),
        optimizer,
        lr_schedule=schedule,
        ema=None,
        grad_clip=None,
        callbacks=[Rates()],
    )
    before = [p.detach().clone() for p in params]
    trainer.fit(1)
    for group, base in zip(trainer.optimizer.param_groups, bases, strict=True):
        lr = base * schedule(0)
        for p in group["params"]:
            i = next(j for j, q in enumerate(params) if q is p)
            step = (before[i] - p.detach()).abs()
            big = p.grad.abs() > 1e-4  # where eps = 1e-8 is below 1e-4 relative
            assert big.float().mean() > 0.5, float(big.float().mean())
            torch.testing.assert_close(step[big], torch.full_like(step[big], lr), rtol=1e-4, atol=0)
    trainer.fit(14)
    assert len(seen) == 14
    for s, (rates, reported) in enumerate(seen):
        assert rates == pytest.approx([b * _formula(s, 4, 10) for b in bases], rel=1e-15, abs=1e-15)
        assert reported == pytest.approx(bases[0] * _formula(s, 4, 10), rel=1e-15, abs=1e-15)
    assert trainer.lr == bases[0]  # the base rate, unchanged by the schedule
