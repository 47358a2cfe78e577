"""Denoising score matching: minimised by the exact score; importance sampling keeps the mean."""

from __future__ import annotations

import math

import pytest
import torch
from problems import SDES

import sde_gen as sg

D = 2


def _gaussian():
    return sg.GaussianMixture.isotropic(torch.tensor([[1.0, -0.5]], dtype=torch.float64), 0.6)


def _per_example(sde, score_fn, x, seed, **kw):
    return sg.dsm_loss(
        sde, score_fn, x, reduction="none", generator=torch.Generator().manual_seed(seed), **kw
    )


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve", "user"])
@pytest.mark.parametrize("weighting", ["std2", "likelihood"])
def test_exact_score_minimises_the_loss(sde_name, weighting):
    """DSM = explicit score matching + const (Vincent 2011), so with common random numbers
    L(s* + delta) - L(s*) estimates E[lambda(t)] ||delta||^2 / 2 with zero-mean noise from the
    cross term; and L(c s*) is smallest at c = 1."""
    sde, mix = SDES[sde_name](), _gaussian()
    x = mix.sample(100_000, generator=torch.Generator().manual_seed(0))
    exact = mix.score_fn(sde)
    base = _per_example(sde, exact, x, 1, weighting=weighting)
    delta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    shifted = _per_example(sde, lambda y, t: exact(y, t) + delta, x, 1, weighting=weighting)
    diff = shifted - base
    # E[lambda(t)] under t ~ U(eps, T), by quadrature.
    eps = 1e-5
    t = torch.linspace(eps, sde.T, 200_001, dtype=torch.float64)
    std = sde.marginal(torch.zeros(t.numel(), 1, dtype=torch.float64), t)[1]
    lam = std**2 if weighting == "std2" else sde.diffusion(t) ** 2
    expected = torch.trapezoid(lam, t) / (sde.T - eps) * delta.pow(2).sum() / 2
    se = diff.std() / math.sqrt(diff.numel())
    assert abs(diff.mean() - expected) < 4 * se + 1e-6 * expected, (diff.mean(), expected, se)
    assert diff.mean() > 0
    for c in (0.9, 1.1):
        scaled = _per_example(sde, lambda y, t, c=c: c * exact(y, t), x, 1, weighting=weighting)
        d = scaled - base
        assert d.mean() > 4 * d.std() / math.sqrt(d.numel())


def test_importance_sampler_normaliser_matches_closed_form_for_vp():
    """For VP, g^2/std^2 = beta/(1 - e^{-B}) = d/dt log(e^B - 1)."""
    sde, eps = sg.VPSDE(), 1e-5
    sampler = sg.ImportanceSampler(sde, eps)
    B = lambda t: sde.beta_integral(torch.tensor(t, dtype=torch.float64))
    Z = torch.log(torch.expm1(B(1.0))) - torch.log(torch.expm1(B(eps)))
    assert abs(sampler.Z / float(Z) - 1) < 1e-5


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve", "linear", "user"])
def test_importance_sampled_loss_has_the_same_mean_and_lower_variance(sde_name):
    sde, mix = SDES[sde_name](), _gaussian()
    eps = 1e-5
    x = mix.sample(200_000, generator=torch.Generator().manual_seed(0))
    exact = mix.score_fn(sde)
    score = lambda y, t: 0.8 * exact(y, t)  # an imperfect model, so the loss has signal
    plain = _per_example(sde, score, x, 1, weighting="likelihood", eps=eps)
    sampler = sg.ImportanceSampler(sde, eps)
    weighted = _per_example(sde, score, x, 2, weighting="likelihood", eps=eps, importance_sampler=sampler)
    se = math.sqrt(plain.var() / plain.numel() + weighted.var() / weighted.numel())
    assert abs(plain.mean() - weighted.mean()) < 4 * se, (plain.mean(), weighted.mean(), se)
    assert weighted.var() < 0.5 * plain.var(), (weighted.var(), plain.var())
    # The sampler's weights 1/(p(t) (T - eps)) have mean 1 under p: E_p[1/p] = T - eps.
    _, w = sampler.sample(200_000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert abs(w.mean() - 1) < 4 * w.std() / math.sqrt(w.numel())


def test_reduction_and_shapes():
    sde, mix = sg.VPSDE(), _gaussian()
    x = mix.sample(16, generator=torch.Generator().manual_seed(0)).reshape(16, 1, 2, 1)
    score = lambda y, t: -y
    per = sg.dsm_loss(sde, score, x, reduction="none", generator=torch.Generator().manual_seed(1))
    assert per.shape == (16,)
    mean = sg.dsm_loss(sde, score, x, generator=torch.Generator().manual_seed(1))
    total = sg.dsm_loss(sde, score, x, reduction="sum", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mean, per.mean())
    torch.testing.assert_close(total, per.sum())


def test_bad_loss_arguments():
    sde, x = sg.VPSDE(), torch.zeros(4, D)
    score = lambda y, t: y
    with pytest.raises(ValueError, match="weighting"):
        sg.dsm_loss(sde, score, x, weighting="foo")
    with pytest.raises(ValueError, match="reduction"):
        sg.dsm_loss(sde, score, x, reduction="avg")
    with pytest.raises(ValueError, match="importance_sampler"):
        sg.dsm_loss(sde, score, x, importance_sampler=sg.ImportanceSampler(sde, 1e-5))
    with pytest.raises(ValueError, match="eps"):
        sg.dsm_loss(sde, score, x, eps=0.0)


# -- the loss as an object: DSMLoss(sde, weighting, time_sampler)(model, x) -> (B,) -----------------


@pytest.mark.parametrize("sde_name", ["vp", "ve", "user"])
@pytest.mark.parametrize(
    "weighting,importance", [("std2", False), ("likelihood", False), ("likelihood", True)]
)
def test_dsm_loss_object_is_the_function(sde_name, weighting, importance):
    """``DSMLoss(...)(model, x)`` is ``dsm_loss(..., reduction="none")`` for the same generator, and
    ``draw`` then ``__call__(draws=)`` is the same computation split in two (data parallelism)."""
    sde, mix = SDES[sde_name](), _gaussian()
    x = mix.sample(64, generator=torch.Generator().manual_seed(0))
    score = mix.score_fn(sde)
    sampler = sg.ImportanceSampler(sde, 1e-5) if importance else None
    fn = _per_example(sde, score, x, 5, weighting=weighting, importance_sampler=sampler)
    loss = sg.DSMLoss(sde, weighting, importance_sampling=importance)
    obj = loss(score, x, generator=torch.Generator().manual_seed(5))
    assert obj.shape == (64,)
    torch.testing.assert_close(obj, fn, rtol=1e-12, atol=0)
    draws = loss.draw(x, generator=torch.Generator().manual_seed(5))
    halves = torch.cat(
        [
            loss(score, x[:32], draws=draws.shard(slice(0, 32))),
            loss(score, x[32:], draws=draws.shard(slice(32, 64))),
        ]
    )
    torch.testing.assert_close(halves, obj, rtol=0, atol=0)


def test_a_weighting_is_a_replaceable_callable():
    """A user's weighting ``(sde, t, std) -> lambda / std^2`` written as g^2 / std^2 is the built-in
    likelihood weighting, to rounding."""
    sde, mix = sg.SubVPSDE(), _gaussian()
    x = mix.sample(256, generator=torch.Generator().manual_seed(0))
    score = lambda y, t: 0.9 * mix.score_fn(sde)(y, t)
    mine = sg.DSMLoss(sde, weighting=lambda sde, t, std: sde.diffusion(t) ** 2 / std**2)
    built_in = sg.DSMLoss(sde, weighting="likelihood")
    a = mine(score, x, generator=torch.Generator().manual_seed(1))
    b = built_in(score, x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


class _PowerTime:
    """t = eps + (T - eps) u^2 (dense near eps), with the weights 1 / (p(t) (T - eps)) = 2 u
    (or none, ``weighted=False``: then the estimate is of another, biased, integral)."""

    def __init__(self, sde, eps, weighted=True):
        self.T, self.eps, self.weighted = sde.T, eps, weighted

    def sample(self, n, *, generator=None, dtype=torch.float32, device=None):
        u = torch.rand(n, generator=generator, dtype=dtype, device=device)
        return self.eps + (self.T - self.eps) * u**2, 2 * u if self.weighted else None


def test_a_time_sampler_is_replaceable_and_keeps_the_mean():
    """Any time distribution with its importance weights estimates the same integral: the loss
    under t = eps + (T - eps) u^2 matches uniform times within their standard errors."""
    sde, mix = sg.VPSDE(), _gaussian()
    eps = 1e-3
    x = mix.sample(200_000, generator=torch.Generator().manual_seed(0))
    score = lambda y, t: 0.8 * mix.score_fn(sde)(y, t)

    def loss(sampler, seed):
        return sg.DSMLoss(sde, time_sampler=sampler, eps=eps)(
            score, x, generator=torch.Generator().manual_seed(seed)
        )

    uniform = loss(None, 1)
    powered = loss(_PowerTime(sde, eps), 2)
    se = math.sqrt(uniform.var() / uniform.numel() + powered.var() / powered.numel())
    assert abs(uniform.mean() - powered.mean()) < 4 * se, (uniform.mean(), powered.mean(), se)
    # ... and the check has power: the same times without their weights are far off.
    assert abs(loss(_PowerTime(sde, eps, weighted=False), 2).mean() - uniform.mean()) > 20 * se


def test_bad_dsm_loss_object_arguments():
    sde = sg.VPSDE()
    names = r"\['edm', 'flow', 'likelihood', 'min_snr', 'sigmoid', 'std2'\]"
    with pytest.raises(ValueError, match=rf"^weighting must be one of {names}, got 'l1'"):
        sg.DSMLoss(sde, "l1")
    needs = r"^importance_sampling=True needs weighting='likelihood', got weighting="
    with pytest.raises(ValueError, match=needs + "'std2'$"):
        sg.DSMLoss(sde, "std2", importance_sampling=True)
    with pytest.raises(ValueError, match=r"got weighting='min_snr'$"):
        sg.DSMLoss(sde, sg.MinSNRWeighting(5.0), importance_sampling=True)
    with pytest.raises(TypeError, match=r"^time_sampler must have eps and sample"):
        sg.DSMLoss(sde, time_sampler=object())
    with pytest.raises(ValueError, match="not both"):
        sg.DSMLoss(sde, "likelihood", importance_sampling=True, time_sampler=sg.UniformTime(sde, 1e-3))
    with pytest.raises(ValueError, match=r"draws do not fit x of shape \(4, 2\)"):
        loss = sg.DSMLoss(sde)
        loss(lambda y, t: y, torch.zeros(4, 2), draws=loss.draw(torch.zeros(3, 2)))
