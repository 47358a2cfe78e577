"""Reflow (Liu et al. 2022): the pairs of the probability-flow ODE against its closed form for
Gaussian data, the shared start, the paired noise carried by Batches, used by DSMLoss and handed
through the Trainer, and the straight paths the pairs train.

Gaussian data N(m, s^2 I) on the straight path x_t = (1 - t) x_0 + t z has the marginals
N((1 - t) m, sig(t)^2 I), sig(t)^2 = (1 - t)^2 s^2 + t^2, and its probability-flow map is affine:
x_eps = mean_eps + sig(eps) / sig(T) (x_T - mean_T). So the reflow pairs are x = A + B z exactly
(z = x_T / T the noise), a deterministic coupling: the straight path between a pair,
x_t = (1 - t) A + c(t) z with c(t) = (1 - t) B + t, determines z from x_t, and the score
s_2(x, t) = -(x - (1 - t) A) / (t c(t)) has DSM loss 0 on the pairs (the 2-rectified flow).
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import sde_gen as sg
from sde_gen._checks import ArgumentError

F64 = torch.float64
EPS = 1e-3
M, S = torch.tensor([1.0, -2.0, 0.5], dtype=F64), 0.5  # the Gaussian data N(M, S^2 I)
TIGHT = sg.ProbabilityFlow("dopri5", rtol=1e-9, atol=1e-9)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian() -> sg.GaussianMixture:
    return sg.GaussianMixture.isotropic(M[None], S)


def sig(t: float) -> float:
    """The std of the Gaussian data's marginal on the straight path."""
    return ((1 - t) ** 2 * S**2 + t**2) ** 0.5


def affine_map(T: float) -> tuple[torch.Tensor, float]:
    """``(A, B)`` with ``x = A + B z`` the probability-flow map of ``x_T = T z`` down to EPS."""
    B = sig(EPS) / sig(T) * T
    A = (1 - EPS) * M - sig(EPS) / sig(T) * (1 - T) * M
    return A, B


class RectifiedScore(nn.Module):
    """``gain * s_2(x, t)``: with ``gain = 1`` the exact score of the straight paths between the
    Gaussian's reflow pairs (module docstring); one parameter, so that a Trainer can train it."""

    def __init__(self, T: float, gain: float = 1.0):
        super().__init__()
        self.A, self.B = affine_map(T)
        self.gain = nn.Parameter(torch.tensor(gain, dtype=F64))

    def forward(self, x, t):
        c = (1 - t) * self.B + t
        return -self.gain * (x - (1 - t)[:, None] * self.A) / (t * c)[:, None]


# -- the pairs ------------------------------------------------------------------------------------


def test_pairs_are_the_closed_form_ode_map_of_their_noise():
    """For Gaussian data the pairs are the affine flow map of noise * std(T), to the ODE's
    tolerance: 1e-9 with a tight dopri5, 1e-4 with the default solver (tolerances 1e-5)."""
    sde = sg.RectifiedFlow()
    score = gaussian().score_fn(sde)
    A, B = affine_map(sde.T)
    x, z = sg.reflow_pairs(sde, score, 200, (3,), solver=TIGHT, generator=gen(0), dtype=F64)
    assert x.shape == z.shape == (200, 3) and x.dtype == z.dtype == F64
    torch.testing.assert_close(x, A + B * z, rtol=0, atol=1e-8)
    x5, z5 = sg.reflow_pairs(sde, score, 200, 3, generator=gen(0), dtype=F64, batch_size=64)
    assert torch.equal(z5, z)
    torch.testing.assert_close(x5, A + B * z, rtol=0, atol=1e-4)
    assert (x5 - A - B * z).abs().max() > 1e-8  # the default is the looser solver


def test_pairs_share_their_start_and_reproduce():
    """On VP (std(T)^2 = 1 - e^{-B(1)}, not the prior's 1) noise * std(T) is the prior draw of the
    same seed, x is sample() from exactly that start, encode() takes x back to it, and the pairs
    depend on the seed only (the batch size changes x by the solver's tolerance)."""
    sde, mix = sg.VPSDE(), sg.gmm8()
    score = mix.score_fn(sde)
    x, z = sg.reflow_pairs(sde, score, 48, (2,), solver=TIGHT, generator=gen(3), dtype=F64)
    std_T = float(sde.marginal(torch.zeros(1, 2, dtype=F64), torch.tensor([sde.T], dtype=F64))[1])
    assert 0.99 < std_T < 1.0
    x_T = sde.prior_sample((48, 2), generator=gen(3), dtype=F64)
    torch.testing.assert_close(z * std_T, x_T, rtol=1e-15, atol=0)
    torch.testing.assert_close(sg.sample(sde, score, (48, 2), TIGHT, eps=EPS, x_T=x_T), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(sg.encode(sde, score, x, eps=EPS, solver=TIGHT), x_T, rtol=0, atol=1e-6)
    again, z_again = sg.reflow_pairs(sde, score, 48, (2,), solver=TIGHT, generator=gen(3), dtype=F64)
    assert torch.equal(again, x) and torch.equal(z_again, z)
    batched, z_batched = sg.reflow_pairs(
        sde, score, 48, (2,), solver=TIGHT, generator=gen(3), dtype=F64, batch_size=10
    )
    assert torch.equal(z_batched, z)
    torch.testing.assert_close(batched, x, rtol=0, atol=1e-6)
    other, _ = sg.reflow_pairs(sde, score, 48, (2,), solver=TIGHT, generator=gen(4), dtype=F64)
    assert (other - x).abs().max() > 0.5


def test_in_one_dimension_the_pairs_are_the_optimal_transport_coupling():
    """ODE paths cannot cross, so in 1-D the flow map is increasing and its pairs are the monotone
    (optimal transport) coupling: ot_permutation keeps them as they are. Their mean squared
    distance is far below the independent coupling's (Liu et al. 2022, Thm. 3.5: rectifying does
    not raise a convex transport cost); here E|x|^2 + E|z|^2 = 4 + 0.09 + 1."""
    mix = sg.GaussianMixture.isotropic(torch.tensor([[-2.0], [2.0]], dtype=F64), 0.3)
    sde = sg.RectifiedFlow()
    x, z = sg.reflow_pairs(sde, mix.score_fn(sde), 300, (1,), solver=TIGHT, generator=gen(5), dtype=F64)
    order = z[:, 0].argsort()
    assert bool((x[order, 0].diff() > 0).all())
    assert torch.equal(sg.ot_permutation(x, z), torch.arange(300))
    cost = float(((x - z) ** 2).sum(1).mean())
    assert cost < 0.5 * (4 + 0.09 + 1), cost


def test_conditioning_is_split_with_the_batches():
    """With the exact class-conditional score of gmm8 and labels y, every sample lands in the
    component of its own label, batch after batch."""
    mix, sde = sg.gmm8(), sg.RectifiedFlow()
    y = torch.arange(40) % 8
    x, _ = sg.reflow_pairs(
        sde, mix.conditional_score_fn(sde), 40, (2,), generator=gen(6), dtype=F64, batch_size=7, cond={"y": y}
    )
    nearest = torch.cdist(x, mix.means).argmin(1)
    assert torch.equal(nearest, y)


# -- paired noise in training ---------------------------------------------------------------------


def test_batches_carry_each_items_own_noise_across_epochs():
    """Item i holds i in its data and -i - 0.5 in its noise (and label i): every batch, across
    epochs and a batch that spans two, returns the noise (and label) of its own items, in the
    order the same Batches without noise gives; the order's state is the same and resumes."""
    n = 13
    data = torch.arange(n, dtype=F64)[:, None].repeat(1, 3)
    noise = -data - 0.5
    labels = torch.arange(n)
    plain = sg.Batches(data, 5, seed=4)
    paired = sg.Batches(data, 5, seed=4, noise=noise, labels=labels)
    for _ in range(8):  # 40 items: three epochs and a bit
        a = plain.next()
        b, cond = paired.next(with_cond=True)
        assert torch.equal(a, b) and set(cond) == {"y", "noise"}
        assert torch.equal(cond["noise"], -b - 0.5)
        assert torch.equal(cond["y"], b[:, 0].long())
    assert torch.equal(paired.next(), plain.next())  # without cond: the data only
    state = paired.state_dict()
    assert state.keys() == plain.state_dict().keys() and torch.equal(
        state["perm"], plain.state_dict()["perm"]
    )
    expected = paired.next(with_cond=True)
    resumed = sg.Batches(data, 5, seed=4, noise=noise, labels=labels)
    resumed.load_state_dict(state)
    again = resumed.next(with_cond=True)
    assert torch.equal(again[0], expected[0]) and torch.equal(again[1]["noise"], expected[1]["noise"])


@pytest.mark.parametrize("weighting", ["std2", "likelihood"])
def test_the_loss_uses_exactly_the_given_noise(weighting):
    """DSMLoss(model, x, noise=z) against the formula by hand: VP's kernel exp(-B/2) x + sqrt(1 -
    e^{-B}) z at the times drawn first from the generator, as without noise (importance weights
    included)."""
    sde = sg.VPSDE()
    loss = sg.DSMLoss(sde, weighting, importance_sampling=weighting == "likelihood", eps=EPS)
    x = torch.randn(16, 3, generator=gen(0), dtype=F64)
    z = torch.randn(16, 3, generator=gen(1), dtype=F64)

    def net(x_t, t):
        return -x_t * (1 + t[:, None]) + 0.3

    got = loss(net, x, generator=gen(7), noise=z)
    plain = loss.draw(x, gen(7))
    draws = loss.draw(x, gen(7), noise=z)
    assert torch.equal(draws.t, plain.t) and torch.equal(draws.z, z)
    t = plain.t
    b = sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2
    std = torch.sqrt(1 - torch.exp(-b))
    x_t = torch.exp(-b / 2)[:, None] * x + std[:, None] * z
    by_hand = 0.5 * ((std[:, None] * net(x_t, t) + z) ** 2).sum(1)
    if weighting == "likelihood":
        by_hand = by_hand * sde.diffusion(t) ** 2 / std**2 * plain.inv_p
    torch.testing.assert_close(got, by_hand, rtol=1e-12, atol=0)
    assert (loss(net, x, generator=gen(7)) - got).abs().max() > 1e-3  # independent noise differs


def test_reflow_pairs_train_straight_paths():
    """On the Gaussian's reflow pairs the 2-rectified score s_2 has DSM loss 0 with the paired
    noise (the coupling is deterministic), and far from 0 with independent noise; its
    probability-flow ODE is straight, so one Euler step carries (1 - T) A + c(T) z to
    (1 - eps) A + c(eps) z exactly, where the original score's one step misses by far."""
    sde = sg.RectifiedFlow()
    x, z = sg.reflow_pairs(sde, gaussian().score_fn(sde), 64, (3,), solver=TIGHT, generator=gen(2), dtype=F64)
    s2 = RectifiedScore(sde.T)
    loss = sg.DSMLoss(sde, eps=EPS)
    with torch.no_grad():
        assert float(loss(s2, x, generator=gen(8), noise=z).max()) < 1e-12
        assert float(loss(s2, x, generator=gen(8)).mean()) > 0.1
    A, B = s2.A, s2.B
    start = (1 - sde.T) * A + (sde.T * (1 - B) + B) * z
    end = (1 - EPS) * A + (EPS * (1 - B) + B) * z
    one_step = sg.ProbabilityFlow("euler", steps=1)
    with torch.no_grad():
        straight = sg.sample(sde, s2, (64, 3), one_step, eps=EPS, x_T=start)
        curved = sg.sample(sde, gaussian().score_fn(sde), (64, 3), one_step, eps=EPS, x_T=start)
    torch.testing.assert_close(straight, end, rtol=0, atol=1e-10)
    assert (curved - end).abs().max() > 0.1


def test_the_trainer_hands_the_loss_each_batchs_own_noise():
    """Trainer on Batches(x, noise=z) of reflow pairs: with s_2 the loss is 0 at every step (each
    example met its own noise, over accumulated micro-batches and epochs), and with another gain
    the first step's loss is the hand computation from the same batch and noise generator."""
    sde = sg.RectifiedFlow()
    x, z = sg.reflow_pairs(sde, gaussian().score_fn(sde), 64, (3,), solver=TIGHT, generator=gen(2), dtype=F64)

    def trainer(model, batches):
        sgd = functools.partial(torch.optim.SGD, lr=0.0)
        return sg.Trainer(
            model, sg.DSMLoss(sde, eps=EPS), batches, sgd, ema=None, grad_clip=None, accumulate=2
        )

    history = trainer(RectifiedScore(sde.T), sg.Batches(x, 16, seed=5, noise=z)).fit(5)
    assert max(h["loss"] for h in history) < 1e-12
    assert trainer(RectifiedScore(sde.T), sg.Batches(x, 16, seed=5)).fit(1)[0]["loss"] > 0.1

    model = RectifiedScore(sde.T, gain=0.7)
    first = trainer(model, sg.Batches(x, 16, seed=5, noise=z)).fit(1)[0]["loss"]
    batches, noise_gen = sg.Batches(x, 16, seed=5, noise=z), gen(6)  # the trainer's: seed + 1
    by_hand = 0.0
    with torch.no_grad():
        for _ in range(2):
            xb, cond = batches.next(generator=noise_gen, with_cond=True)
            by_hand += float(sg.DSMLoss(sde, eps=EPS)(model, xb, generator=noise_gen, **cond).mean()) / 2
    assert first == pytest.approx(by_hand, rel=1e-12) and first > 0.01


# -- bad inputs -----------------------------------------------------------------------------------


def _score(x, t):
    return -x


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"num": 0}, "num"),
        ({"num": 2.0}, "num"),
        ({"shape": ()}, "shape"),
        ({"shape": (0, 2)}, "shape"),
        ({"shape": "2"}, "shape"),
        ({"solver": sg.EulerMaruyama(steps=10)}, "solver"),
        ({"solver": "dopri5"}, "solver"),
        ({"eps": 0.0}, "eps"),
        ({"batch_size": 0}, "batch_size"),
        ({"generator": 3}, "generator"),
        ({"dtype": torch.int64}, "dtype"),
        ({"cond": {"y": torch.zeros(3, dtype=torch.long)}}, "cond"),
        ({"score_fn": 3}, "score_fn"),
        ({"sde": "vp"}, "sde"),
    ],
)
def test_reflow_pairs_refuses_bad_arguments_by_name(kw, name):
    args = {"sde": sg.VPSDE(), "score_fn": _score, "num": 4, "shape": (2,), **kw}
    with pytest.raises(ArgumentError) as err:
        sg.reflow_pairs(args.pop("sde"), args.pop("score_fn"), args.pop("num"), args.pop("shape"), **args)
    assert err.value.name == name and name in str(err.value)


def test_paired_noise_refuses_bad_inputs_by_name():
    data = torch.zeros(5, 2, dtype=F64)
    for noise, kind in [
        (torch.zeros(5, 3), ValueError),
        (torch.zeros(4, 2), ValueError),
        (torch.tensor([[float("nan"), 0.0]] + [[0.0, 0.0]] * 4), ValueError),
        (torch.zeros(5, 2, dtype=torch.long), TypeError),
        ([[0.0, 0.0]] * 5, TypeError),
    ]:
        with pytest.raises(kind) as err:
            sg.Batches(data, noise=noise)
        assert err.value.name == "noise" and "noise" in str(err.value)
    x = torch.randn(8, 2, dtype=F64)
    with pytest.raises(ArgumentError) as err:
        sg.DSMLoss(sg.VPSDE(), coupling="ot").draw(x, noise=torch.zeros_like(x))
    assert err.value.name == "coupling"
    with pytest.raises(ArgumentError) as err:
        sg.DSMLoss(sg.VPSDE())(_score, x, noise=torch.zeros(8, 3, dtype=F64))
    assert err.value.name == "noise" and "(8, 3)" in str(err.value)
    loss = sg.DSMLoss(sg.VPSDE())
    with pytest.raises(ArgumentError) as err:
        loss(_score, x, draws=loss.draw(x), noise=torch.zeros_like(x))
    assert err.value.name == "noise"

    model = RectifiedScore(0.999)

    def no_draw(model, batch, generator=None):
        return (model(batch, torch.full((batch.shape[0],), 0.5, dtype=F64)) ** 2).sum(1)

    for loss_fn in (no_draw, sg.ClassifierLoss(sg.VPSDE())):
        with pytest.raises(ArgumentError) as err:
            sg.Trainer(model, loss_fn, sg.Batches(torch.zeros(8, 3, dtype=F64), noise=torch.zeros(8, 3)))
        assert err.value.name == "loss_fn" and "noise" in str(err.value)
