"""The stages' losses under data parallelism (issue 23): ``AutoencoderLoss`` and ``SuperResolutionLoss``
draw for the global batch, and every share of it, computed on its own from ``draws.shard``, gives the
per-example losses of the whole batch (float64, to rounding: a matrix product over fewer rows may
sum in another order); drawing ahead changes nothing for one process (exactly). Two processes under
torchrun against one: tests/training/test_distributed.py."""

from __future__ import annotations

import math

import pytest
import torch

import sde_gen as sg
from sde_gen.models import AutoencoderKL, LinearAutoencoder
from sde_gen.training import AutoencoderLoss

F64 = torch.float64


def same(a, b):
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


SHARDS = (slice(0, 3), slice(3, 7), slice(7, 12))  # uneven shares, as no rank sees but the test can


def _autoencoders():
    torch.manual_seed(0)
    kl = AutoencoderKL(image_size=8, channels=8, channel_mult=(1, 2)).double()
    with torch.no_grad():
        for p in kl.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    linear = LinearAutoencoder(
        torch.randn(3, 64, generator=g, dtype=F64),
        torch.randn(64, 3, generator=g, dtype=F64),
        torch.randn(64, generator=g, dtype=F64),
        (1, 8, 8),
        logvar=torch.randn(3, generator=g, dtype=F64),
        log_sigma=0.3,
    )
    return {"kl": kl, "linear": linear}


def _images(n=12, seed=3):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("which", ["kl", "linear"])
def test_autoencoder_loss_shares_give_the_whole_batchs_losses(which):
    model, loss = _autoencoders()[which], AutoencoderLoss(kl_weight=0.3)
    x = _images()
    draws = loss.draw(x, torch.Generator().manual_seed(5))
    whole = loss(model, x, draws=draws)
    shares = torch.cat([loss(model, x[i], draws=draws.shard(i)) for i in SHARDS])
    same(shares, whole)
    # Drawing ahead is what a call with the generator does; a share of a share is a share.
    assert torch.equal(loss(model, x, generator=torch.Generator().manual_seed(5)), whole)
    same(loss(model, x[4:6], draws=draws.shard(slice(3, 7)).shard(slice(1, 3))), whole[4:6])
    # Another seed, another draw.
    assert not torch.equal(loss(model, x, generator=torch.Generator().manual_seed(6)), whole)


def test_autoencoder_draws_are_standard_normal_and_new_each_batch():
    """The noise of the posterior draws: mean 0 and variance 1 within their standard errors, and two
    batches drawn from one generator in turn have unrelated noise (correlation within 4 standard
    errors of 0)."""
    loss, gen = AutoencoderLoss(), torch.Generator().manual_seed(0)
    x = torch.zeros(500, 1, 8, 8, dtype=F64)
    a, b = (loss.draw(x, gen).noise((4, 4, 4), dtype=F64, device="cpu") for _ in range(2))
    n = a.numel()
    for z in (a, b):
        assert abs(float(z.mean())) < 4 / math.sqrt(n) and abs(float(z.var()) - 1) < 4 * math.sqrt(2 / n)
    assert abs(float((a * b).mean())) < 4 / math.sqrt(n)


def test_super_resolution_shares_give_the_whole_batchs_losses():
    sde = sg.VPSDE()
    torch.manual_seed(0)
    net = sg.SuperResolutionUNet(
        image_size=8, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0
    ).double()
    model = sg.ScoreModel(net, sde)
    loss = sg.SuperResolutionLoss(sg.DSMLoss(sde, "likelihood", importance_sampling=True), 2, 0.5)
    x = _images()
    draws = loss.draw(x, torch.Generator().manual_seed(5))
    whole = loss(model, x, draws=draws)
    same(torch.cat([loss(model, x[i], draws=draws.shard(i)) for i in SHARDS]), whole)
    # One process draws what it drew before draws existed: s, e, then the DSM loss's own draws.
    assert torch.equal(loss(model, x, generator=torch.Generator().manual_seed(5)), whole)


def test_a_wrapped_loss_without_draws_keeps_super_resolution_single_process():
    def plain(model, x, *, generator=None, **cond):
        return x.flatten(1).sum(1)

    loss = sg.SuperResolutionLoss(plain)
    assert loss.draw is None
    assert sg.SuperResolutionLoss(sg.DSMLoss(sg.VPSDE())).draw is not None


def test_draws_that_do_not_fit_the_batch_are_refused_by_name():
    model, loss = _autoencoders()["linear"], AutoencoderLoss()
    x = _images()
    with pytest.raises(ValueError, match="draws") as e:
        loss(model, x[:5], draws=loss.draw(x))
    assert e.value.name == "draws"
    with pytest.raises(ValueError, match="noise") as e:
        model(x, noise=torch.zeros(12, 2, dtype=F64))
    assert e.value.name == "noise"
    sr = sg.SuperResolutionLoss(sg.DSMLoss(sg.VPSDE()))
    with pytest.raises(ValueError, match="draws") as e:
        sr(None, x[:5], draws=sr.draw(x))
    assert e.value.name == "draws"
