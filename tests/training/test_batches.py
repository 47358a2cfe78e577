"""The stream of training batches: sampling without replacement epoch by epoch, seeded, resumable."""

from __future__ import annotations

import io
import math

import pytest
import torch

import sde_gen as sg

N = 10


def _stream(batches: sg.Batches, n_batches: int) -> torch.Tensor:
    return torch.cat([batches.next() for _ in range(n_batches)])


@pytest.mark.parametrize("batch_size", [1, 2, 5, 10, 3, 4, 7])
def test_every_item_appears_exactly_once_per_epoch(batch_size):
    """Batch sizes that divide N and that do not (batches then span two epochs): cut the stream
    into consecutive runs of N, each is a permutation."""
    data = torch.arange(N)
    span = math.lcm(N, batch_size)  # the shortest stream of whole batches and whole epochs
    n_batches = span * math.ceil(6 * N / span) // batch_size  # at least 6 epochs
    stream = _stream(sg.Batches(data, batch_size=batch_size, seed=0), n_batches)
    assert stream.numel() == n_batches * batch_size and stream.numel() % N == 0
    per_epoch = stream.reshape(-1, N)
    assert per_epoch.shape[0] >= 6
    for order in per_epoch:
        assert torch.equal(order.sort().values, data)
    # The order is reshuffled at each epoch, from the seeded generator: the first epoch is
    # randperm(N) of a generator seeded with the seed, the next ones its following draws.
    g = torch.Generator().manual_seed(0)
    for order in per_epoch:
        assert torch.equal(order, torch.randperm(N, generator=g))
    assert len({tuple(o.tolist()) for o in per_epoch}) > 1


def test_items_are_rows_of_the_data_and_keep_their_shape():
    data = torch.arange(N * 6, dtype=torch.float32).reshape(N, 2, 3)
    batch = sg.Batches(data, batch_size=4, seed=5).next()
    assert batch.shape == (4, 2, 3)
    idx = (batch[:, 0, 0] / 6).long()
    assert torch.equal(batch, data[idx])


def test_the_same_seed_gives_the_same_order_and_another_seed_another():
    data = torch.arange(N)
    a = _stream(sg.Batches(data, batch_size=3, seed=7), 20)
    b = _stream(sg.Batches(data, batch_size=3, seed=7), 20)
    c = _stream(sg.Batches(data, batch_size=3, seed=8), 20)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_the_global_rng_does_not_matter():
    data = torch.arange(N)
    torch.manual_seed(1)
    a = _stream(sg.Batches(data, batch_size=3, seed=7), 20)
    torch.manual_seed(2)
    b = _stream(sg.Batches(data, batch_size=3, seed=7), 20)
    assert torch.equal(a, b)


@pytest.mark.parametrize("stop", [0, 1, 3, 7])  # at the start, mid-epoch, at an epoch boundary (3 x 10 / 3)
def test_state_dict_resumes_the_identical_stream(stop):
    data = torch.arange(N)
    straight = _stream(sg.Batches(data, batch_size=3, seed=4), 20)
    first = sg.Batches(data, batch_size=3, seed=4)
    head = _stream(first, stop) if stop else torch.empty(0, dtype=data.dtype)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # through a file, as a checkpoint does
    _stream(first, 5)  # the first stream goes on: the saved state must not change with it
    buf.seek(0)
    resumed = sg.Batches(data, batch_size=3, seed=99)  # the state replaces the seed's order
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    tail = _stream(resumed, 20 - stop)
    assert torch.equal(torch.cat([head, tail]), straight)


def test_transform_receives_the_batch_and_the_generator():
    data = torch.arange(N, dtype=torch.float64)
    calls = []

    def transform(batch, generator):
        calls.append((batch.clone(), generator))
        return batch + torch.rand(batch.shape, generator=generator, dtype=batch.dtype)

    g = torch.Generator().manual_seed(3)
    out = sg.Batches(data, batch_size=4, transform=transform, seed=0).next(generator=g)
    raw = sg.Batches(data, batch_size=4, seed=0).next()
    ((got, gen),) = calls
    assert gen is g and torch.equal(got, raw)
    assert torch.equal(
        out, raw + torch.rand(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    )
    # Integer data (levels) reaches the transform as it is, to be mapped there.
    seen = []
    sg.Batches(torch.arange(N), 2, transform=lambda b, gen: seen.append(b.dtype) or b.float()).next()
    assert seen == [torch.int64]


def test_a_trainer_hands_the_transform_its_noise_generator():
    gens = []

    def transform(batch, generator):
        gens.append(generator)
        return batch

    sde = sg.VPSDE()
    torch.manual_seed(0)
    model = sg.ScoreModel(sg.MLP(dim=2, hidden=8, depth=1), sde)
    data = sg.gmm8().sample(64, generator=torch.Generator().manual_seed(0)).float()
    trainer = sg.Trainer(model, sg.DSMLoss(sde), sg.Batches(data, 16, transform=transform, seed=2), ema=None)
    trainer.fit(3)
    assert len(gens) == 3 and all(g is trainer.noise_gen for g in gens)
    assert trainer.seed == 2 and trainer.noise_gen.initial_seed() == 3  # data.seed + 1


@pytest.mark.parametrize(
    "args, kw, error, name",
    [
        (([1.0, 2.0, 3.0],), {}, TypeError, "data"),
        ((torch.zeros(0, 2),), {}, ValueError, "data"),
        ((torch.zeros(5, 2),), {"batch_size": 0}, ValueError, "batch_size"),
        ((torch.zeros(5, 2),), {"batch_size": 2.0}, TypeError, "batch_size"),
        ((torch.zeros(5, 2),), {"transform": 3}, TypeError, "transform"),
        ((torch.zeros(5, 2),), {"seed": -1}, ValueError, "seed"),
        ((torch.zeros(5, 2),), {"batch_size": 6}, ValueError, "batch_size"),
        ((torch.zeros(5, 2),), {"batch_size": 10**9}, ValueError, "batch_size"),
    ],
)
def test_bad_arguments_name_themselves(args, kw, error, name):
    with pytest.raises(error, match=name):
        sg.Batches(*args, **kw)
