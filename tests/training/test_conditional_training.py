"""Training for controllable generation: class-conditional networks (a label embedding with a null
label), label dropout for classifier-free guidance (Ho & Salimans 2021) and a noise-conditional
classifier p(y | x_t, t), checked against the labelled Gaussian mixture's exact conditional scores
and its exact (Bayes) classifier."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from problems import OrnsteinUhlenbeck, mixture_2d

import sde_gen as sg
from sde_gen.models.classifier import ConvClassifier, NoisyClassifier
from sde_gen.training.classifier_loss import ClassifierLoss, classifier_accuracy

F64 = torch.float64
K = 3  # components of mixture_2d, the labels


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def labelled(mix: sg.GaussianMixture, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws of ``(x_0, y)`` from the mixture, ``y`` the component that drew ``x_0``."""
    g = gen(seed)
    y = torch.multinomial(mix.weights, n, replacement=True, generator=g)
    L = torch.linalg.cholesky(mix.covs)
    x = mix.means[y] + (L[y] @ torch.randn(n, mix.dim, 1, generator=g, dtype=mix.means.dtype))[..., 0]
    return x, y


def _fit(model, loss, x, y, steps):
    """Adam at 3e-3 with a cosine decay, batch 256, no EMA and no clipping: the short fits of the
    labelled-mixture tests."""
    sg.Trainer(
        model,
        loss,
        sg.Batches(x, 256, seed=0, labels=y),
        functools.partial(torch.optim.Adam, lr=3e-3),
        lr_schedule=sg.WarmupCosine(0, steps),
        ema=None,
        grad_clip=None,
    ).fit(steps)


def mlp(num_classes=None, *, hidden=32, embed_dim=16, **kw) -> sg.MLP:
    torch.manual_seed(0)
    return sg.MLP(2, hidden=hidden, depth=2, embed_dim=embed_dim, num_classes=num_classes, **kw).double()


def small_unet(num_classes=None, **kw) -> sg.UNet:
    torch.manual_seed(0)
    kw = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), **kw)
    return sg.UNet(1, 8, num_classes=num_classes, **kw).double()


@torch.no_grad()
def unzero(net: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random values for the zero-initialised layers, so that the output depends on everything."""
    g = gen(seed)
    for p in net.parameters():
        if bool((p == 0).all()):
            p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


# -- class-conditional networks ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_label_embedding_has_a_null_row_and_y_none_is_the_null_label(kind):
    if kind == "mlp":
        net, x, emb = unzero(mlp(num_classes=K)), torch.randn(5, 2, generator=gen(0), dtype=F64), 16
    else:
        net = unzero(small_unet(dropout=0.0, num_classes=K))
        x, emb = torch.randn(5, 1, 8, 8, generator=gen(0), dtype=F64), 4 * 8
    assert net.label_embed.weight.shape == (K + 1, emb)  # row K is the null label
    t = torch.rand(5, generator=gen(1), dtype=F64)
    y = torch.tensor([0, 1, 2, 3, 1])
    out = net(x, t, y=y)
    assert out.shape == x.shape
    torch.testing.assert_close(net(x, t), net(x, t, y=torch.full((5,), K)), rtol=0, atol=0)
    # each row sees its own label only: row i of a batch equals the row computed alone
    for i in range(5):
        torch.testing.assert_close(net(x[i : i + 1], t[i : i + 1], y=y[i : i + 1]), out[i : i + 1])
    # the label matters: every class gives another output at the same (x, t)
    outs = torch.stack([net(x, t, y=torch.full((5,), k)) for k in range(K + 1)])
    gaps = (outs[:, None] - outs[None]).flatten(2).abs().amax(-1)
    assert bool((gaps + torch.eye(K + 1, dtype=F64) > 1e-6).all())


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_unconditional_networks_are_unchanged(kind):
    """num_classes=None builds the same parameters (keys, values from the same seed) and outputs
    as before; the conditional net only adds the embedding, created last, and with that embedding
    at zero it is the unconditional net exactly."""
    if kind == "mlp":
        build, x = mlp, torch.randn(4, 2, generator=gen(0), dtype=F64)
    else:
        build = functools.partial(small_unet, dropout=0.0)
        x = torch.randn(4, 1, 8, 8, generator=gen(0), dtype=F64)
    t = torch.rand(4, generator=gen(1), dtype=F64)
    old, none, cond = build(), build(num_classes=None), build(num_classes=K)
    assert list(old.state_dict()) == list(none.state_dict())
    assert "label_embed" not in dict(old.named_children()) and old.num_classes is None
    assert list(cond.state_dict()) == list(old.state_dict()) + ["label_embed.weight"]
    for k, v in old.state_dict().items():
        assert torch.equal(v, none.state_dict()[k]) and torch.equal(v, cond.state_dict()[k]), k
    n_old = sum(p.numel() for p in old.parameters())
    assert sum(p.numel() for p in cond.parameters()) == n_old + cond.label_embed.weight.numel()
    for net in (old, none, cond):
        unzero(net)
    with torch.no_grad():
        cond.label_embed.weight.zero_()
    ref = old(x, t)
    assert torch.equal(none(x, t), ref)
    assert torch.equal(cond(x, t, y=torch.tensor([0, 1, 2, 3])), ref)
    with pytest.raises(TypeError, match=r"unconditional \(num_classes=None\)"):
        old(x, t, y=torch.zeros(4, dtype=torch.long))


def test_bad_labels_are_named():
    net, x, t = mlp(num_classes=K), torch.zeros(4, 2, dtype=F64), torch.full((4,), 0.5, dtype=F64)
    with pytest.raises(TypeError, match="integer labels"):
        net(x, t, y=torch.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(4,\)"):
        net(x, t, y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels in \[0, 3\].*got \[4\]"):
        net(x, t, y=torch.tensor([0, 1, 4, 2]))
    with pytest.raises(ValueError, match=r"got \[-1\]"):
        net(x, t, y=torch.tensor([0, -1, 1, 2]))
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        sg.MLP(2, num_classes=0)
    with pytest.raises(ValueError, match=r"p_uncond must be in \[0, 1\]"):
        sg.DSMLoss(sg.VPSDE(), p_uncond=1.5, null_label=K)
    with pytest.raises(ValueError, match="needs null_label"):
        sg.DSMLoss(sg.VPSDE(), p_uncond=0.1)
    loss = sg.DSMLoss(sg.VPSDE(), p_uncond=0.1, null_label=K)
    with pytest.raises(ValueError, match=r"needs integer labels y of shape \(4,\)"):
        loss(sg.ScoreModel(net, sg.VPSDE()), x)
    with pytest.raises(TypeError, match="labels must hold integer"):
        sg.Batches(x, 2, labels=torch.zeros(4))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(4,\)"):
        sg.Batches(x, 2, labels=torch.zeros(5, dtype=torch.long))
    clf = NoisyClassifier(mlp(out_dim=K), sg.VPSDE())
    with pytest.raises(ValueError, match=r"labels in \[0, 2\]"):
        clf.log_prob(x, t, torch.tensor([0, 1, 2, 3]))  # the null label is no class of a classifier
    with pytest.raises(ValueError, match="needs the labels"):
        ClassifierLoss(sg.VPSDE())(clf, x)


# -- label dropout ---------------------------------------------------------------------------


class Recorder(torch.nn.Module):
    """A score model that records the labels it is called with (its output: ``w * x``)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones((), dtype=F64))
        self.seen: list[torch.Tensor] = []

    def forward(self, x, t, y=None):
        self.seen.append(y)
        return self.w * x


def test_label_dropout_fraction_is_p_uncond_and_comes_from_the_generator():
    p, n, sde = 0.2, 20_000, sg.VPSDE()
    loss = sg.DSMLoss(sde, p_uncond=p, null_label=K)
    x = torch.randn(n, 2, generator=gen(0), dtype=F64)
    y = torch.randint(0, K, (n,), generator=gen(1))
    model = Recorder()
    loss(model, x, y=y, generator=gen(2))
    seen = model.seen[-1]
    dropped = seen == K
    frac, se = float(dropped.double().mean()), math.sqrt(p * (1 - p) / n)
    assert abs(frac - p) < 3 * se, (frac, p, se)
    assert torch.equal(seen[~dropped], y[~dropped])  # the kept labels are untouched
    # the mask is the loss's draw: t, z, then u < p_uncond, from the generator alone
    torch.manual_seed(123)  # the global RNG plays no part
    draws = loss.draw(x, gen(2))
    assert torch.equal(draws.drop, dropped)
    g = gen(2)
    t = 1e-5 + (1 - 1e-5) * torch.rand(n, generator=g, dtype=F64)
    z = torch.randn(x.shape, generator=g, dtype=F64)
    assert torch.equal(draws.t, t) and torch.equal(draws.z, z)
    assert torch.equal(draws.drop, torch.rand(n, generator=g) < p)
    assert not torch.equal(loss.draw(x, gen(3)).drop, dropped)
    # without dropout the draws and the loss are those of unconditional training, bit for bit
    plain, zero = sg.DSMLoss(sde), sg.DSMLoss(sde, p_uncond=0.0, null_label=K)
    a, b = plain.draw(x, gen(4)), zero.draw(x, gen(4))
    assert b.drop is None and torch.equal(a.t, b.t) and torch.equal(a.z, b.z)
    score = lambda x, t: -x  # noqa: E731
    assert torch.equal(plain(score, x, generator=gen(4)), zero(score, x, generator=gen(4)))


def test_label_dropout_shards_like_one_process():
    """Data parallelism: the draws of the global batch, sharded with the labels, give every rank
    the single-process losses and labels (as for DSMLoss's t and z)."""
    loss = sg.DSMLoss(sg.VPSDE(), "likelihood", importance_sampling=True, p_uncond=0.3, null_label=K)
    x = torch.randn(64, 2, generator=gen(0), dtype=F64)
    y = torch.randint(0, K, (64,), generator=gen(1))
    net = sg.ScoreModel(unzero(mlp(num_classes=K)), sg.VPSDE())
    draws = loss.draw(x, generator=gen(5))
    whole = loss(net, x, y=y, draws=draws)
    shards = [slice(0, 16), slice(16, 48), slice(48, 64)]
    parts = torch.cat([loss(net, x[s], y=y[s], draws=draws.shard(s)) for s in shards])
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss(net, x, y=y, generator=gen(5)), whole, rtol=0, atol=0)


def test_trainer_hands_each_rank_the_labels_of_its_examples():
    """Two 'ranks' (the trainer's shard set by hand) see together the examples and labels, dropped
    as one process drops them; Batches keep their data order with labels."""
    x, y = labelled(mixture_2d(), 40, seed=0)
    loss = sg.DSMLoss(sg.VPSDE(), p_uncond=0.5, null_label=K)

    def run(shard):
        model = Recorder()
        trainer = sg.Trainer(model, loss, sg.Batches(x, 8, seed=3, labels=y), ema=None)
        trainer._shard = shard
        trainer.fit(3)
        return torch.cat(model.seen)

    one = run(slice(0, 8))
    ranks = [run(slice(0, 4)), run(slice(4, 8))]
    assert torch.equal(torch.cat([r.reshape(3, 4) for r in ranks], 1).flatten(), one)
    assert 0 < int((one == K).sum()) < one.numel()
    plain, with_labels = sg.Batches(x, 8, seed=3), sg.Batches(x, 8, seed=3, labels=y)
    for _ in range(7):  # across epochs
        a = plain.next()
        b, cond = with_labels.next(with_cond=True)
        assert torch.equal(a, b)
        rows = (b[:, None, :] == x[None]).all(-1).double().argmax(1)
        assert torch.equal(cond["y"], y[rows])
    assert plain.state_dict().keys() == with_labels.state_dict().keys()
    assert torch.equal(plain.state_dict()["perm"], with_labels.state_dict()["perm"])


# -- the conditional score and the classifier against the mixture's closed forms ------------------


def test_conditional_mlp_learns_the_conditional_and_the_unconditional_score():
    """A conditional MLP trained with p_uncond = 0.2 has, with the true label, a score far closer
    to the exact conditional score than to the exact unconditional one, and with the null label
    the other way round."""
    torch.set_num_threads(1)
    mix, sde, steps = mixture_2d(), sg.VPSDE(), 600
    x, y = labelled(mix, 4000, seed=0)
    model = sg.ScoreModel(mlp(num_classes=K, hidden=64, embed_dim=128), sde)
    _fit(model, sg.DSMLoss(sde, eps=1e-3, p_uncond=0.2, null_label=K), x, y, steps)
    x0, y0 = labelled(mix, 2000, seed=5)
    g = gen(6)
    d = {k: 0.0 for k in ("cond_cond", "cond_uncond", "null_uncond", "null_cond", "exact")}
    with torch.no_grad():
        for s in (0.3, 0.5, 0.7):  # where the classes overlap and the two scores differ
            t = torch.full((2000,), s, dtype=F64)
            mean, std = sde.marginal(x0, t)
            xt = mean + std[:, None] * torch.randn(x0.shape, generator=g, dtype=F64)
            sc, su = mix.conditional_score(xt, t, sde, y0), mix.score(xt, t, sde)
            lc, lu = model(xt, t, y=y0), model(xt, t, y=torch.full_like(y0, K))

            pairs = {"cond_cond": (lc, sc), "cond_uncond": (lc, su), "null_uncond": (lu, su)}
            pairs.update(null_cond=(lu, sc), exact=(sc, su))
            for k, (a, b) in pairs.items():  # the noise-prediction error, E || std (a - b) ||^2
                d[k] += float(((std[:, None] * (a - b)) ** 2).sum(1).mean())
    assert d["exact"] > 0.5  # the two exact scores are far apart here
    assert d["cond_cond"] < 0.05 * d["cond_uncond"], d
    assert d["null_uncond"] < 0.5 * d["null_cond"], d


@pytest.mark.parametrize("sde_name", ["vp", "user"])
def test_noisy_classifier_reaches_the_bayes_accuracy_at_every_t(sde_name):
    """Trained with ClassifierLoss through the Trainer for a few hundred steps, the classifier's
    held-out accuracy at each t is the exact Bayes classifier's (the responsibilities) within 0.02,
    falls with t, and at T is the prior's, max_k w_k."""
    torch.set_num_threads(1)
    mix, steps = mixture_2d(), 400
    sde = sg.VPSDE() if sde_name == "vp" else OrnsteinUhlenbeck()
    x, y = labelled(mix, 4000, seed=0)
    clf = NoisyClassifier(mlp(hidden=64, embed_dim=128, out_dim=K), sde)
    _fit(clf, ClassifierLoss(sde, eps=1e-3), x, y, steps)
    xh, yh = labelled(mix, 4000, seed=9)
    times = [0.02, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]
    learned = classifier_accuracy(clf, sde, xh, yh, times, generator=gen(3))
    bayes = classifier_accuracy(mix.classifier_fn(sde), sde, xh, yh, times, num_classes=K, generator=gen(3))
    gap = (learned.accuracy - bayes.accuracy).abs()
    assert float(gap.max()) < 0.02, (learned.accuracy, bayes.accuracy)
    assert float(bayes.accuracy[0]) > 0.99 and float(learned.accuracy[0]) > 0.98
    assert bool((learned.accuracy.diff() < 0.01).all()), learned.accuracy  # falls with t
    assert float(learned.accuracy[0] - learned.accuracy[-1]) > 0.4
    prior = float(mix.weights.max())  # at T, x_T carries (almost) nothing about y
    assert abs(float(learned.accuracy[-1]) - prior) < 3 * float(learned.stderr[-1]) + 0.01
    # log_prob is a normalised log p(y | x_t), differentiable in x (for classifier guidance)
    xt = xh[:8].clone().requires_grad_(True)
    t = torch.full((8,), 0.3, dtype=F64)
    logp = torch.stack([clf.log_prob(xt, t, torch.full((8,), k)) for k in range(K)], 1)
    torch.testing.assert_close(logp.logsumexp(1), torch.zeros(8, dtype=F64))
    (grad,) = torch.autograd.grad(logp[:, 0].sum(), xt)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0


def test_noisy_classifier_preconditioning_and_conv_classifier():
    """For VP with sigma_data = 1 the input scaling is the identity (alpha^2 + std^2 = 1); for VE
    it divides by sqrt(sigma^2 + 1). ConvClassifier starts uniform: log p(y | x) = -log K."""
    net = unzero(mlp(out_dim=K))
    x, t = torch.randn(6, 2, generator=gen(0), dtype=F64), torch.rand(6, generator=gen(1), dtype=F64)
    torch.testing.assert_close(NoisyClassifier(net, sg.VPSDE())(x, t), net(x, t))
    ve = sg.VESDE()
    sigma = ve.marginal(x, t)[1]
    torch.testing.assert_close(NoisyClassifier(net, ve)(x, t), net(x / (sigma[:, None] ** 2 + 1).sqrt(), t))
    torch.manual_seed(0)
    conv = ConvClassifier(1, 8, num_classes=10, channels=8, channel_mult=(1, 2), attn_resolutions=(4,))
    clf = NoisyClassifier(conv.double(), ve)
    xi = torch.randn(4, 1, 8, 8, generator=gen(2), dtype=F64)
    logp = clf.log_prob(xi, torch.full((4,), 0.5, dtype=F64), torch.tensor([0, 3, 9, 5]))
    torch.testing.assert_close(logp, torch.full((4,), -math.log(10), dtype=F64))
    unzero(conv)
    logits = clf(xi, torch.full((4,), 0.5, dtype=F64))
    assert logits.shape == (4, 10) and float(logits.detach().std()) > 0
    for i in range(4):  # samples do not interact
        torch.testing.assert_close(clf(xi[i : i + 1], torch.full((1,), 0.5, dtype=F64)), logits[i : i + 1])


# -- saving and loading ------------------------------------------------------------------------


def test_conditional_model_round_trips_through_files(tmp_path):
    """A conditional MLP and U-Net come back from save_model/load_model with num_classes in the
    recipe and the same outputs for every label; a trainer checkpoint resumes the same run."""
    x2 = torch.randn(4, 2, generator=gen(0), dtype=F64)
    xi = torch.randn(4, 1, 8, 8, generator=gen(0), dtype=F64)
    t = torch.rand(4, generator=gen(1), dtype=F64)
    y = torch.tensor([0, 1, 2, 3])
    for net, x in ((unzero(mlp(num_classes=K)), x2), (unzero(small_unet(num_classes=K)), xi)):
        model = sg.ScoreModel(net, sg.VPSDE()).eval()
        path = sg.save_model(tmp_path / f"{type(net).__name__}.safetensors", model)
        back = sg.load_model(path)
        assert back.recipe["net"]["num_classes"] == K and back.num_classes == K
        torch.testing.assert_close(back(x, t, y=y), model(x, t, y=y), rtol=0, atol=0)
        torch.testing.assert_close(back(x, t), model(x, t), rtol=0, atol=0)
    # an unconditional model's recipe does not name num_classes (old files are unchanged)
    path = sg.save_model(tmp_path / "plain.safetensors", sg.ScoreModel(mlp(), sg.VPSDE()))
    assert "num_classes" not in sg.read_model_metadata(path)["net"]

    x, y = labelled(mixture_2d(), 64, seed=0)

    def trainer():
        torch.manual_seed(0)
        return sg.Trainer(
            sg.ScoreModel(mlp(num_classes=K), sg.VPSDE()),
            sg.DSMLoss(sg.VPSDE(), p_uncond=0.2, null_label=K),
            sg.Batches(x, 16, seed=1, labels=y),
            ema=0.9,
        )

    straight = trainer()
    straight.fit(6)
    first = trainer()
    first.fit(3)
    first.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = trainer()
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    resumed.fit(6)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
