"""The EMA of the weights against its closed form, with and without the warm-up.

After N updates with decays beta_0 .. beta_{N-1}, the parameters being theta_{k+1} at update k
and theta_0 the initial weights, the shadow is the weighted average

    shadow_N = sum_{k=0}^{N} w_k theta_k,   w_0 = prod_{j<N} beta_j,
                                             w_k = (1 - beta_{k-1}) prod_{k <= j < N} beta_j  (k >= 1),

whose weights sum to 1 (a telescoping product). With the warm-up beta_n = min(decay, (1+n)/(10+n));
without it beta_n = decay.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

import sde_gen as sg


class Params(nn.Module):
    """A float64 model whose parameters the test sets by hand, with an integer buffer (copied by
    the EMA, not averaged)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros(2, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0))

    def set(self, values: dict) -> None:
        with torch.no_grad():
            for k, v in values.items():
                getattr(self, k).copy_(v)


def _thetas(n: int, seed: int = 0) -> list[dict]:
    """theta_0 .. theta_n: random parameter values, float64."""
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "weight": torch.randn(3, 2, generator=g, dtype=torch.float64),
            "bias": torch.randn(2, generator=g, dtype=torch.float64),
        }
        for _ in range(n + 1)
    ]


def _betas(decay: float, n: int, warmup: bool) -> list[float]:
    return [min(decay, (1 + k) / (10 + k)) if warmup else decay for k in range(n)]


def _weights(betas: list[float]) -> list[float]:
    """w_0 .. w_N of the closed form (module docstring)."""
    n = len(betas)
    w = [math.prod(betas)]
    for k in range(1, n + 1):
        w.append((1 - betas[k - 1]) * math.prod(betas[k:]))
    return w


def _run(decay: float, thetas: list[dict], warmup: bool = True) -> tuple[sg.EMA, Params]:
    model = Params()
    model.set(thetas[0])
    ema = sg.EMA(model, decay, warmup=warmup)
    for k, theta in enumerate(thetas[1:], start=1):
        model.set(theta)
        model.count.fill_(k)
        ema.update(model)
    return ema, model


@pytest.mark.parametrize("warmup", [True, False])
def test_shadow_is_the_closed_form_weighted_average(warmup):
    """decay 0.8 over 60 updates: with the warm-up, beta_n = (1+n)/(10+n) until n = 35, then 0.8."""
    decay, n = 0.8, 60
    thetas = _thetas(n)
    ema, model = _run(decay, thetas, warmup)
    betas = _betas(decay, n, warmup)
    if warmup:
        assert betas[34] < decay and betas[35] == decay  # both regimes are exercised
    w = _weights(betas)
    assert math.fsum(w) == pytest.approx(1.0, abs=1e-15)
    for key in ("weight", "bias"):
        expected = sum(wk * theta[key] for wk, theta in zip(w, thetas, strict=True))
        torch.testing.assert_close(ema.shadow[key], expected, rtol=0, atol=1e-13)
    assert ema.shadow["count"].item() == n  # integer buffers are copied
    assert ema.num_updates == n
    assert ema.current_decay() == (decay if not warmup or n >= 35 else (1 + n) / (10 + n))


def test_warmup_decay_sequence_and_the_weight_left_on_the_initial_weights():
    """Initial weights 1, every later value 0: the shadow is w_0 = prod beta_k itself."""
    model = Params()
    model.set({"weight": torch.ones(3, 2), "bias": torch.ones(2)})
    ema = sg.EMA(model, 0.999)
    model.set({"weight": torch.zeros(3, 2), "bias": torch.zeros(2)})
    seen = []
    for _ in range(30):
        seen.append(ema.current_decay())
        ema.update(model)
    assert seen == [(1 + k) / (10 + k) for k in range(30)]  # decay 0.999 is not reached yet
    # prod_{k<30} (1+k)/(10+k) = 30! 9! / 39! = 1 / C(39, 9)
    closed = 1 / math.comb(39, 9)
    assert closed < 1e-5
    torch.testing.assert_close(ema.shadow["weight"], torch.full((3, 2), closed, dtype=torch.float64))

    # Without the warm-up the initial weights keep decay^N: 13.5% after 2000 updates at 0.999.
    model.set({"weight": torch.ones(3, 2), "bias": torch.ones(2)})
    plain = sg.EMA(model, 0.999, warmup=False)
    model.set({"weight": torch.zeros(3, 2), "bias": torch.zeros(2)})
    for _ in range(2000):
        plain.update(model)
    assert 0.999**2000 == pytest.approx(0.1352, abs=1e-4)
    torch.testing.assert_close(
        plain.shadow["bias"], torch.full((2,), 0.999**2000, dtype=torch.float64), rtol=1e-12, atol=0
    )


def test_warmup_false_is_the_plain_ema():
    """shadow_n = d^n p_0 + (1 - d) sum_k d^(n-1-k) p_k, the EMA of sde_gen 0.1."""
    lin = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema, d = sg.EMA(lin, 0.9, warmup=False), 0.9
    values = [2.0, -1.0, 0.5]
    for v in values:
        assert ema.current_decay() == d
        with torch.no_grad():
            lin.weight.fill_(v)
        ema.update(lin)
    n = len(values)
    expected = d**n * 1.0 + (1 - d) * sum(d ** (n - 1 - i) * v for i, v in enumerate(values))
    assert ema.shadow["weight"].item() == pytest.approx(expected, abs=1e-15)


def test_state_dict_round_trip_continues_the_same_average_bit_for_bit():
    thetas = _thetas(25, seed=1)
    straight, model = _run(0.95, thetas)  # 25 updates in one go
    first, _ = _run(0.95, thetas[:11])  # 10 updates, saved, loaded into a fresh EMA
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    other = Params()
    resumed = sg.EMA(other, 0.5, warmup=False)  # its own settings are replaced by the state's
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    assert (resumed.decay, resumed.warmup, resumed.num_updates) == (0.95, True, 10)
    for k, theta in enumerate(thetas[11:], start=11):
        other.set(theta)
        other.count.fill_(k)
        resumed.update(other)
    assert resumed.num_updates == straight.num_updates == 25
    for key, v in straight.shadow.items():
        assert torch.equal(resumed.shadow[key], v), key
    # The loaded shadow is a copy: updating it leaves the state it came from alone.
    state = straight.state_dict()
    before = copy.deepcopy(state["shadow"])
    again = sg.EMA(Params(), 0.95)
    again.load_state_dict(state)
    other.set(thetas[0])
    again.update(other)
    assert not torch.equal(again.shadow["weight"], before["weight"])
    assert all(torch.equal(state["shadow"][k], v) for k, v in before.items())


def test_an_sde_gen_0_1_state_loads_as_the_plain_ema():
    """States written before the warm-up hold {"decay", "shadow"} only: the average they hold was
    made without warm-up, and it goes on that way."""
    model = Params()
    model.set({"weight": torch.full((3, 2), 3.0), "bias": torch.full((2,), 3.0)})
    old = {"decay": 0.9, "shadow": {k: v.clone() for k, v in Params().state_dict().items()}}  # zeros
    ema = sg.EMA(model, 0.999)
    ema.load_state_dict(old)
    assert (ema.decay, ema.warmup, ema.num_updates) == (0.9, False, 0)
    assert ema.current_decay() == 0.9  # not the warm-up's 0.1
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((3, 2), 0.1 * 3.0, dtype=torch.float64))


@pytest.mark.parametrize("decay", [1.0, 1.5, -0.1])
def test_decay_outside_0_1_is_refused_naming_it(decay):
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        sg.EMA(Params(), decay)


def test_decay_0_follows_the_weights():
    model = Params()
    ema = sg.EMA(model, 0.0)
    theta = _thetas(1)[1]
    model.set(theta)
    ema.update(model)
    assert torch.equal(ema.shadow["weight"], theta["weight"])
