"""Minibatch optimal-transport couplings against the exact assignment and the 1-D closed form."""

from __future__ import annotations

import itertools

import pytest
import torch

import sde_gen as sg
from sde_gen._checks import ArgumentError

F64 = torch.float64


def _cost(x, z):
    return ((x - z) ** 2).reshape(x.shape[0], -1).sum(1).sum().item()


def test_the_pairing_is_the_best_of_every_permutation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=g, dtype=F64) + 1.0
    z = torch.randn(7, 3, generator=g, dtype=F64)
    perm = sg.ot_permutation(x, z)
    assert sorted(perm.tolist()) == list(range(7))
    best = min(_cost(x, z[list(p)]) for p in itertools.permutations(range(7)))
    assert _cost(x, z[perm]) == pytest.approx(best, rel=1e-12)


def test_in_one_dimension_it_is_the_monotone_rearrangement():
    """In 1-D the optimal transport pairs the k-th smallest data point with the k-th smallest noise."""
    g = torch.Generator().manual_seed(1)
    x = 3.0 * torch.rand(200, 1, generator=g, dtype=F64) - 2.0
    z = torch.randn(200, 1, generator=g, dtype=F64)
    paired = z[sg.ot_permutation(x, z)]
    order = x[:, 0].argsort()
    assert torch.equal(paired[order, 0], z[:, 0].sort().values)


def test_the_loss_draws_the_same_noise_paired_by_transport():
    """coupling="ot" keeps the times and the set of noise draws of the independent coupling (so the
    marginal of x_t is unchanged) and only reorders the noise; the paired draws cost far less, and
    on images (B, C, H, W) the pairing is the flattened one."""
    sde = sg.RectifiedFlow()
    x = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=F64) * 0.3 + 1.0
    ind = sg.DSMLoss(sde, eps=1e-3).draw(x, generator=torch.Generator().manual_seed(3))
    ot = sg.DSMLoss(sde, eps=1e-3, coupling="ot").draw(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ot.t, ind.t)
    assert torch.equal(ot.z, ind.z[sg.ot_permutation(x, ind.z)])
    assert _cost(x, ot.z) < 0.9 * _cost(x, ind.z)


def test_minibatch_transport_cost_approaches_the_wasserstein_distance():
    """For x ~ N(m, s^2 I) and z ~ N(0, I) the squared W2 distance is |m|^2 + d (s - 1)^2. W2^2 is
    jointly convex, so by Jensen the minibatch pairing's expected cost is above it, and it falls
    towards it as the batch grows; the independent pairing's is |m|^2 + d (s^2 + 1)."""
    d, m, s = 2, torch.tensor([1.5, -0.5], dtype=F64), 0.5
    w2 = float(m.square().sum()) + d * (s - 1) ** 2
    g = torch.Generator().manual_seed(4)

    def mean_cost(b, reps):
        total = 0.0
        for _ in range(reps):
            x = m + s * torch.randn(b, d, generator=g, dtype=F64)
            z = torch.randn(b, d, generator=g, dtype=F64)
            total += _cost(x, z[sg.ot_permutation(x, z)]) / b
        return total / reps

    small, large = mean_cost(8, 400), mean_cost(512, 4)
    assert small > 1.05 * w2 and large < small and abs(large - w2) < 0.05 * w2, (small, large, w2)
    independent = float(m.square().sum()) + d * (s**2 + 1)
    assert mean_cost(1, 2000) == pytest.approx(independent, rel=0.05)  # a batch of one is independent


def test_a_bad_coupling_is_refused_by_name():
    with pytest.raises(ArgumentError) as err:
        sg.DSMLoss(sg.VPSDE(), coupling="sinkhorn")
    assert err.value.name == "coupling" and err.value.value == "sinkhorn"
    with pytest.raises(ArgumentError) as err:
        sg.ot_permutation(torch.zeros(3, 2), torch.zeros(4, 2))
    assert err.value.name == "z"
