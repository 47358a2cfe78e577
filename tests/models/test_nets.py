"""Networks ``net(x, t)``: shapes, but above all behaviour: zero initial output, time conditioning,
per-sample independence, float64, exact Jacobians, trainability, paper-sized presets."""

from __future__ import annotations

import math

import pytest
import torch

import sde_gen as sg
from sde_gen.models import MLP, TIME_EMBEDDINGS, GaussianFourierEmbedding, SinusoidalEmbedding, UNet
from sde_gen.models.score import ScoreModel

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def unzero(net: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Give the zero-initialised parameters random values, so that the output depends on everything."""
    g = gen(seed)
    for p in net.parameters():
        if (p == 0).all():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return net


def small_unet(in_channels=1, image_size=8, **kw) -> UNet:
    levels = kw.pop("levels", 2)
    kw.setdefault("channels", 16)
    kw.setdefault("channel_mult", (1, 2, 2)[:levels])
    kw.setdefault("num_res_blocks", 1)
    kw.setdefault("attn_resolutions", (image_size // 2,))
    kw.setdefault("dropout", 0.1)
    torch.manual_seed(0)
    return UNet(in_channels=in_channels, image_size=image_size, **kw)


def small_mlp(dim, **kw) -> MLP:
    torch.manual_seed(0)
    return MLP(dim, hidden=32, depth=2, embed_dim=16, **kw)


# name -> (constructor, input shape)
NETS = {
    "mlp_2": (lambda: small_mlp(2), (5, 2)),
    "mlp_16_sinusoidal": (lambda: small_mlp(16, time_embedding="sinusoidal"), (5, 16)),
    "mlp_1x4x4": (lambda: small_mlp(16), (5, 1, 4, 4)),
    "unet_1x8x8": (lambda: small_unet(), (3, 1, 8, 8)),
    "unet_1x8x8_plain": (lambda: small_unet(resblock_updown=False, skip_rescale=False), (3, 1, 8, 8)),
    "unet_1x28x28": (lambda: small_unet(image_size=28, levels=3, attn_resolutions=(7,)), (2, 1, 28, 28)),
    "unet_3x32x32_fourier": (
        lambda: small_unet(in_channels=3, image_size=32, levels=3, time_embedding="fourier"),
        (2, 3, 32, 32),
    ),
}


def inputs(shape, dtype=torch.float32, seed=0):
    x = torch.randn(shape, generator=gen(seed), dtype=dtype)
    t = torch.rand(shape[0], generator=gen(seed + 1), dtype=dtype)
    return x, t


# -- time embeddings ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TIME_EMBEDDINGS))
def test_embedding_shape_range_and_injectivity(kind):
    emb = TIME_EMBEDDINGS[kind](32)
    t = torch.linspace(0, 1, 11)
    e = emb(t)
    assert e.shape == (11, 32)
    assert e.abs().max() <= 1
    # sin^2 + cos^2 = 1 for each frequency: the features are [sin, cos] pairs
    torch.testing.assert_close(e[:, :16] ** 2 + e[:, 16:] ** 2, torch.ones(11, 16))
    # distinct times get distinct features
    assert torch.cdist(e, e).add(torch.eye(11)).min() > 1e-2


def test_sinusoidal_embedding_matches_ddpm_formula():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    e = SinusoidalEmbedding(8).double()(t)
    freqs = 10000.0 ** (-torch.arange(4, dtype=F64) / 3)  # 1, ..., 1/10000
    arg = 1000 * t[:, None] * freqs
    torch.testing.assert_close(e, torch.cat([arg.sin(), arg.cos()], dim=1))


def test_fourier_embedding_is_fixed_and_saved():
    a, b = GaussianFourierEmbedding(64), GaussianFourierEmbedding(64)
    torch.testing.assert_close(a.W, b.W)  # the same architecture always gets the same frequencies
    assert "W" in a.state_dict() and not list(a.parameters())
    assert 8 < a.W.std() < 24  # scale 16 (Song et al. 2021)


# -- shapes, zero initialisation, dtype -----------------------------------------------------------


@pytest.mark.parametrize("name", list(NETS))
def test_output_shaped_like_input_and_initially_zero(name):
    make, shape = NETS[name]
    net = make()
    x, t = inputs(shape)
    out = net(x, t)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, torch.zeros_like(x))  # zero-initialised last layer
    assert torch.isfinite(unzero(net)(x, t)).all()


@pytest.mark.parametrize("name", ["mlp_1x4x4", "unet_1x8x8", "unet_1x28x28"])
def test_float64_matches_float32(name):
    make, shape = NETS[name]
    net = unzero(make()).eval()
    x, t = inputs(shape, F64)
    out64 = net.double()(x, t)
    assert out64.dtype == F64
    out32 = net.float()(x.float(), t.float())
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-4)
    assert out32.abs().mean() > 1e-2  # the comparison is not between zeros


@pytest.mark.parametrize("name", ["mlp_2", "unet_1x8x8"])
def test_gradcheck_float64(name):
    make, shape = NETS[name]
    net = unzero(make()).double().eval()
    x, t = inputs((1,) + shape[1:], F64)
    assert torch.autograd.gradcheck(lambda x_: net(x_, t), (x.requires_grad_(),))


# -- behaviour ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NETS))
def test_time_conditioning_matters(name):
    make, shape = NETS[name]
    net = unzero(make()).eval()
    x, _ = inputs(shape)
    outs = [net(x, torch.full((shape[0],), s)) for s in (0.1, 0.5, 0.9)]
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        rel = (outs[a] - outs[b]).norm() / outs[a].norm()
        assert rel > 1e-2, f"outputs at different t hardly differ ({rel:.2e})"
    # and a scalar t is the same as a full vector
    torch.testing.assert_close(net(x, torch.tensor(0.5)), outs[1])


@pytest.mark.parametrize("name", list(NETS))
def test_samples_do_not_interact(name):
    make, shape = NETS[name]
    net = unzero(make()).double().eval()
    x, t = inputs(shape, F64)
    torch.testing.assert_close(net(x, t)[:1], net(x[:1], t[:1]), rtol=1e-10, atol=1e-12)
    # also in training mode (where BatchNorm would mix the batch), with dropout switched off
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    net.train()
    torch.testing.assert_close(net(x, t)[:1], net(x[:1], t[:1]), rtol=1e-10, atol=1e-12)
    net.eval()
    # the Jacobian of sample 0's output with respect to the other samples is exactly zero
    x.requires_grad_(True)
    net(x, t)[0].sum().backward()
    assert x.grad[0].abs().sum() > 0
    assert torch.equal(x.grad[1:], torch.zeros_like(x.grad[1:]))


def test_dropout_active_only_in_training():
    net = unzero(small_unet(dropout=0.5))
    x, t = inputs((2, 1, 8, 8))
    net.train()
    torch.manual_seed(1)
    a = net(x, t)
    torch.manual_seed(2)
    assert not torch.allclose(a, net(x, t))
    net.eval()
    torch.testing.assert_close(net(x, t), net(x, t), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["mlp_2", "unet_1x8x8"])
def test_trains_from_zero_init(name):
    """Gradients reach every layer through the zero-initialised ones: Adam fits a fixed batch."""
    make, shape = NETS[name]
    net = make().eval()
    x, t = inputs(shape)
    target = torch.randn(shape, generator=gen(7))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = (net(x, t) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_score_model_wraps_a_net():
    sde = sg.VPSDE()
    model = ScoreModel(unzero(small_mlp(2)), sde)
    x, t = inputs((4, 2))
    std = sde.marginal(torch.zeros(4, 1), t)[1]
    torch.testing.assert_close(model(x, t), -model.net(x, t) / std[:, None])


def test_out_channels():
    net = unzero(small_unet(in_channels=3, out_channels=6))
    x, t = inputs((2, 3, 8, 8))
    assert net(x, t).shape == (2, 6, 8, 8)


# -- presets --------------------------------------------------------------------------------------


def test_digits_preset_size_and_forward():
    net = UNet.digits()
    assert 1_000_000 <= n_params(net) <= 2_000_000
    x, t = inputs((4, 1, 8, 8))
    assert net(x, t).shape == x.shape


def test_mnist_preset_forward():
    net = unzero(UNet.mnist()).eval()
    x, t = inputs((2, 1, 28, 28))
    with torch.no_grad():
        out = net(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_deep_cifar10_preset_size():
    with torch.device("meta"):  # counts parameters without allocating 107M of them
        net = UNet.ddpmpp_deep_cifar10()
    assert abs(n_params(net) / 107e6 - 1) < 0.1


def test_ddpmpp_cifar10_paper_size_runs():
    """DDPM++ cont. (VP), Song et al. 2021, Table 3: 62M parameters."""
    torch.manual_seed(0)
    net = UNet.ddpmpp_cifar10().eval()
    assert abs(n_params(net) / 62e6 - 1) < 0.1
    x, t = inputs((1, 3, 32, 32))
    with torch.no_grad():
        out = net(x, t)
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(x))


# -- bad arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(image_size=30, channel_mult=(1, 2, 2), attn_resolutions=()), "image_size"),
        (dict(image_size=28, channel_mult=(1, 2, 2, 2), attn_resolutions=()), "image_size"),
        (dict(time_embedding="gaussian"), "time_embedding"),
        (dict(attn_resolutions=(5,)), "attn_resolutions"),
        (dict(channel_mult=()), "channel_mult"),
        (dict(channel_mult=(1, 0)), "channel_mult"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(channels=15), "channels"),
        (dict(num_res_blocks=0), "num_res_blocks"),
    ],
)
def test_unet_bad_arguments(kwargs, name):
    base = dict(in_channels=1, image_size=8, channels=16, channel_mult=(1, 2), attn_resolutions=(4,))
    with pytest.raises(ValueError, match=name):
        UNet(**{**base, **kwargs})


def test_bad_arguments_mlp_and_embeddings():
    with pytest.raises(ValueError, match="time_embedding"):
        MLP(2, time_embedding="learned")
    with pytest.raises(ValueError, match="depth"):
        MLP(2, depth=0)
    with pytest.raises(TypeError, match="hidden"):
        MLP(2, hidden=3.5)
    with pytest.raises(ValueError, match="dim"):
        GaussianFourierEmbedding(7)


def test_bad_inputs_at_call():
    mlp, unet = small_mlp(2), small_unet()
    with pytest.raises(ValueError, match="dim"):
        mlp(torch.zeros(3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="x must have shape"):
        unet(torch.zeros(3, 1, 16, 16), torch.zeros(3))
    with pytest.raises(ValueError, match="x must have shape"):
        unet(torch.zeros(3, 64), torch.zeros(3))
    with pytest.raises(ValueError, match="t must have shape"):
        unet(torch.zeros(3, 1, 8, 8), torch.zeros(2))
    with pytest.raises(TypeError, match="x"):
        mlp(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3))
    assert math.isclose(mlp(torch.zeros(3, 2), 0.5).abs().sum().item(), 0.0)  # a float t is broadcast
