"""Latent models against closed forms (issue 23): a linear autoencoder maps a Gaussian mixture to a
Gaussian mixture, so the latent law, the decoded law and the likelihood bound are all exact.

- The negative ELBO under the exact posterior of probabilistic PCA is -log p(x) at every draw; under
  another encoder it exceeds -log p(x) by KL(q || posterior), which is closed form too.
- The bound with the latent density from the probability-flow ODE equals the bound with the exact
  latent density, to the ODE's tolerance.
- Latents sampled with the exact latent score and decoded have the data's law (full rank) or the law
  of decode(encode(x)) (fewer components), at the noise floor.
"""

from __future__ import annotations

import math

import pytest
import torch
from problems import SDES, ComponentW2, mixture_16d

import sde_gen as sg

DT = torch.float64


def _ppca(D=6, k=3, sigma=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    P, _ = torch.linalg.qr(torch.randn(D, k, generator=g, dtype=DT))
    W = P * torch.tensor([2.0, 1.2, 0.7], dtype=DT)[:k]  # orthogonal columns, different lengths
    m = torch.randn(D, generator=g, dtype=DT)
    return W, m, sigma


def _gaussian_log_prob(u, var):
    d = u[0].numel()
    return -0.5 * (d * math.log(2 * math.pi * var) + u.reshape(u.shape[0], -1).pow(2).sum(1) / var)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_under_the_exact_posterior_every_draw_is_the_log_likelihood(scale):
    """x = m + W z + sigma e, z ~ N(0, I): with the encoder at the exact posterior and the latent
    density of u = scale z, each draw's bound is -log N(x; m, W W^T + sigma^2 I), to roundoff."""
    W, m, sigma = _ppca()
    ae = sg.LinearAutoencoder.ppca(W, m, (6,), log_sigma=math.log(sigma))
    ae.scale.fill_(scale)
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1), dtype=DT) * 2
    exact = -torch.distributions.MultivariateNormal(m, W @ W.T + sigma**2 * torch.eye(6, dtype=DT)).log_prob(
        x
    )
    b = sg.latent_nll_bound(ae, lambda u: _gaussian_log_prob(u, scale**2), x, samples=4,
                            generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert torch.allclose(b.nll_bound, exact, rtol=1e-11, atol=1e-11)
    assert float(b.std_error.max()) < 1e-9
    entropy = torch.distributions.Normal(torch.zeros(3, dtype=DT), torch.exp(0.5 * ae.logvar)).entropy().sum()
    assert torch.allclose(b.entropy, entropy.expand(40), rtol=1e-12)


def test_another_encoder_is_above_by_its_kl_to_the_posterior():
    """The gap of the bound is KL(q(z | x) || p(z | x)) (both Gaussian here, closed form): an encoder
    with twice the posterior's variance and 0.8 times its mean (the same decoder and prior) is above
    -log p(x) by exactly that, within the Monte-Carlo error of 4,000 draws."""
    W, m, sigma = _ppca()
    exact_ae = sg.LinearAutoencoder.ppca(W, m, (6,), log_sigma=math.log(sigma))
    ae = sg.LinearAutoencoder(0.8 * exact_ae.encoder, W, m, (6,), logvar=exact_ae.logvar + math.log(2.0),
                              log_sigma=math.log(sigma))  # fmt: skip
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=DT)
    exact = -torch.distributions.MultivariateNormal(m, W @ W.T + sigma**2 * torch.eye(6, dtype=DT)).log_prob(
        x
    )
    b = sg.latent_nll_bound(ae, lambda u: _gaussian_log_prob(u, 1.0), x, samples=4000,
                            generator=torch.Generator().manual_seed(3))  # fmt: skip
    q_mean, q_logvar = ae.encode(x)
    p_mean, p_logvar = exact_ae.encode(x)
    q = torch.distributions.Normal(q_mean, torch.exp(0.5 * q_logvar))
    p = torch.distributions.Normal(p_mean, torch.exp(0.5 * p_logvar))
    kl = torch.distributions.kl_divergence(q, p).sum(1)
    assert bool((kl > 0.1).all())
    assert torch.allclose(b.nll_bound - exact, kl, atol=float(4 * b.std_error.max()))


def test_the_ode_latent_likelihood_gives_the_bound_of_the_exact_latent_density():
    """A mixture prior on the latents: the bound with sg.log_likelihood of the exact latent score
    (dopri5, tolerance 1e-7; VP with beta_max = 40, so that the prior the ODE starts from is p_T to
    1e-4) equals the bound with the exact latent log-density on the same draws,
    and it is above the exact -log p(x) of the data (a mixture of m + W mu_k, W S_k W^T + s^2 I)."""
    W, m, sigma = _ppca()
    ae = sg.LinearAutoencoder.ppca(W, m, (6,), log_sigma=math.log(sigma))
    ae.scale.fill_(1.5)
    means = torch.tensor([[1.5, 0.0, 0.0], [-1.0, 1.0, 0.5]], dtype=DT)
    z_mix = sg.GaussianMixture(
        torch.tensor([0.6, 0.4], dtype=DT), means, 0.3 * torch.eye(3, dtype=DT).expand(2, 3, 3)
    )
    u_mix = z_mix.linear_map(1.5 * torch.eye(3, dtype=DT))
    sde = sg.VPSDE(beta_max=40.0)  # p_T within 1e-4 of the prior N(0, I), which the ODE starts from
    ode = sg.ProbabilityFlow(rtol=1e-7, atol=1e-7)
    x = z_mix.sample(8, generator=torch.Generator().manual_seed(4)) @ W.T + m

    def ode_log_prob(u):
        return sg.log_likelihood(sde, u_mix.score_fn(sde), u, solver=ode).log_prob

    def exact_log_prob(u):
        return u_mix.log_prob(u, torch.full((u.shape[0],), 1e-5, dtype=DT), sde)

    by_ode = sg.latent_nll_bound(ae, ode_log_prob, x, generator=torch.Generator().manual_seed(5))
    exact_u = sg.latent_nll_bound(ae, exact_log_prob, x, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(by_ode.nll_bound, exact_u.nll_bound, atol=1e-4)
    data = sg.GaussianMixture(
        z_mix.weights, means @ W.T + m, W @ z_mix.covs @ W.T + sigma**2 * torch.eye(6, dtype=DT)
    )
    many = sg.latent_nll_bound(
        ae, lambda u: u_mix.log_prob(u), x, samples=2000, generator=torch.Generator().manual_seed(6)
    )
    assert bool((many.nll_bound > -data.log_prob(x) - 4 * many.std_error).all())


@pytest.mark.parametrize("k", [16, 8])
def test_latent_samples_decode_to_the_law_of_the_autoencoded_data(k):
    """PCA of 20,000 draws of a 16-D mixture with k components, latents scaled to unit variance: the
    latent law is the mixture mapped by scale E; latents drawn with its exact score (DPM-Solver++,
    40 steps) and decoded match exact draws of decode(encode(x)) at the noise floor (energy distance),
    which for k = 16 is the data's law."""
    mix = mixture_16d()
    g = torch.Generator().manual_seed(0)
    ae = sg.LinearAutoencoder.pca(mix.sample(20_000, generator=g), k)
    scale = ae.fit_scale(mix.sample(20_000, generator=g))
    assert 0.9 < float(ae.to_latent(mix.sample(20_000, generator=g)).std()) * 1.0 < 1.1  # unit variance
    E, W, c = ae.encoder, ae.decoder, ae.offset
    u_law = mix.linear_map(scale * E, -scale * E @ c)
    sde, n, eps = SDES["vp"](), 2000, 1e-5
    x = sg.sample_latent(ae, sde, u_law.score_fn(sde), n, (16,), sg.DPMSolverPlusPlus(steps=40), eps=eps,
                         generator=torch.Generator().manual_seed(7), dtype=DT)  # fmt: skip
    assert x.shape == (n, 16)

    def exact(m):  # decode(encode(x)) of exact draws: the projection onto the k components
        return c + (mix.sample(m, generator=g) - c) @ E.T @ W.T

    ref = exact(n)
    floor = torch.tensor([sg.energy_distance(exact(n), ref) for _ in range(6)])
    err = sg.energy_distance(x, ref)
    assert err < floor.mean() + 4 * floor.std(), (err, floor)
    if k == 16:  # the full-rank autoencoder is invertible: the data's own law, per component
        fig = ComponentW2(mix, sde, eps, n, 50_000, 6)
        w2, chi2 = fig(x)
        assert w2 < 1.4 * fig.floor[0] and chi2 < 16.3 / n, (w2, chi2, fig.floor)


def test_bad_latent_inputs_are_refused_by_name():
    W, m, sigma = _ppca()
    ae = sg.LinearAutoencoder.ppca(W, m, (6,), log_sigma=math.log(sigma))
    with pytest.raises(TypeError, match="autoencoder"):
        sg.latent_nll_bound("not one", lambda u: u.sum(1), torch.zeros(2, 6, dtype=DT))
    with pytest.raises(ValueError, match="samples"):
        sg.latent_nll_bound(ae, lambda u: u.sum(1), torch.zeros(2, 6, dtype=DT), samples=0)
    with pytest.raises(ValueError, match="latent_log_prob"):
        sg.latent_nll_bound(ae, lambda u: u.sum(), torch.zeros(2, 6, dtype=DT))
    with pytest.raises(ValueError, match="orthogonal"):
        sg.LinearAutoencoder.ppca(torch.ones(6, 3, dtype=DT), m, (6,), log_sigma=0.0)
    with pytest.raises(ValueError, match="data_shape"):
        sg.sample_latent(ae, sg.VPSDE(), lambda x, t: x, 4, (7,), sg.DDIM(5))
