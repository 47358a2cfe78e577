"""A cascade's super-resolution stage (issue 23): what its loss hands the network, and that the exact
conditional score of the cascade oracle is what the loss rewards."""

from __future__ import annotations

import math

import pytest
import torch
from problems import mixture_16d

import sde_gen as sg

DT = torch.float64
SHAPE = (1, 4, 4)


class _Recorder:
    """A loss_fn that records what it is given and returns zeros."""

    def __call__(self, model, x, *, generator=None, **cond):
        self.x, self.cond = x, cond
        return torch.zeros(x.shape[0], dtype=x.dtype)


def test_the_low_image_is_the_pooled_image_plus_its_augmentation():
    """low = A x + s e with s ~ U(0, max_noise), e standard normal: (low - A x) / s has mean 0 and
    variance 1 within their standard errors, s fills [0, max_noise] uniformly, and the same
    generator seed gives the same draws."""
    rec = _Recorder()
    loss = sg.SuperResolutionLoss(rec, factor=2, max_noise=0.4)
    x = torch.randn(20_000, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=DT)
    loss(None, x, generator=torch.Generator().manual_seed(1), y=None)
    low, s = rec.cond["low"], rec.cond["low_noise"]
    assert "y" in rec.cond and rec.x is x
    pooled = sg.SuperResolution(2)(x)
    assert low.shape == pooled.shape == (20_000, 1, 2, 2)
    r = (low - pooled) / s.reshape(-1, 1, 1, 1)
    n = r.numel()
    assert abs(float(r.mean())) < 4 / math.sqrt(n) and abs(float(r.var()) - 1) < 4 * math.sqrt(2 / n)
    assert 0 <= float(s.min()) and float(s.max()) <= 0.4
    assert abs(float(s.mean()) - 0.2) < 4 * 0.4 / math.sqrt(12 * 20_000)
    again = _Recorder()
    sg.SuperResolutionLoss(again, factor=2, max_noise=0.4)(
        None, x, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(again.cond["low"], low)


def test_the_exact_conditional_score_is_what_the_loss_rewards():
    """DSM on p_t(x | low): the cascade oracle's conditional score has a lower mean loss than the exact
    unconditional score (which ignores low) by many standard errors, and the gap all but closes as
    the augmentation drowns the low image (levels up to 50: low says next to nothing but for the
    few draws of s near 0), without turning negative."""
    mix = mixture_16d()
    image = sg.GaussianMixture(mix.weights, mix.means, mix.covs, event_shape=SHAPE)
    oracle = sg.CascadeOracle(image, sg.SuperResolution(2))
    sde = sg.VPSDE()
    x = image.sample(4000, generator=torch.Generator().manual_seed(0))

    def gap(max_noise):
        def mean_and_se(score_fn):
            loss = sg.SuperResolutionLoss(sg.DSMLoss(sde), factor=2, max_noise=max_noise)
            v = loss(score_fn, x, generator=torch.Generator().manual_seed(1))
            return v.mean(), v

        cond, v1 = mean_and_se(oracle.score_fn(sde))
        uncond, v2 = mean_and_se(lambda x, t, low=None, low_noise=None: image.score(x, t, sde))
        d = v2 - v1  # the same draws: a paired difference
        return float(d.mean()), float(d.std() / math.sqrt(d.numel()))

    informative, se = gap(0.2)
    assert informative > 10 * se, (informative, se)
    drowned, se_d = gap(50.0)
    assert -4 * se_d < drowned < 0.05 * informative, (drowned, se_d, informative)


def test_the_network_sees_the_noisy_image_the_upsampled_low_image_and_the_level():
    """The U-Net's input is cat(x, A^+ low, s) with A^+ the pseudo-inverse of average pooling
    (nearest upsampling), and its output has the image's shape."""
    torch.manual_seed(0)
    net = sg.SuperResolutionUNet(in_channels=1, image_size=8, factor=2, channels=8, channel_mult=(1, 2),
                                 num_res_blocks=1, attn_resolutions=())  # fmt: skip
    seen = {}
    net.unet.register_forward_pre_hook(lambda m, args: seen.update(inp=args[0]))
    x, low, s = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 4, 4), torch.tensor([0.0, 0.1, 0.3])
    out = net(x, torch.rand(3), low=low, low_noise=s)
    assert out.shape == x.shape
    inp = seen["inp"]
    assert torch.equal(inp[:, :1], x)
    assert torch.allclose(inp[:, 1:2], sg.SuperResolution(2).pinv(low))
    assert torch.equal(inp[:, 2], s.reshape(3, 1, 1).expand(3, 8, 8))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: sg.SuperResolutionLoss("no", 2), "loss_fn"),
        (lambda: sg.SuperResolutionLoss(_Recorder(), 0), "factor"),
        (lambda: sg.SuperResolutionLoss(_Recorder(), 2, max_noise=-1.0), "max_noise"),
        (lambda: sg.SuperResolutionLoss(_Recorder(), 3)(None, torch.zeros(2, 1, 4, 4)), "x"),
        (lambda: sg.SuperResolutionUNet(image_size=28, factor=3), "factor"),
        (lambda: sg.SuperResolutionUNet(image_size=8, channel_mult=(1, 2), attn_resolutions=())(
            torch.zeros(1, 1, 8, 8), torch.ones(1), low=torch.zeros(1, 1, 2, 2), low_noise=0.0), "low"),
        (lambda: sg.SuperResolutionUNet(image_size=8, channel_mult=(1, 2), attn_resolutions=())(
            torch.zeros(1, 1, 8, 8), torch.ones(1)), "low"),
    ],
)  # fmt: skip
def test_bad_super_resolution_inputs_are_refused_by_name(call, name):
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    assert getattr(e.value, "name", None) == name, e.value
