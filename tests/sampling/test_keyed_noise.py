"""Noise keyed per sample (sde_gen/noise.py): batch invariance bit for bit, and the normals' law.

Batch invariance: with ``generator=KeyedNoise(seed, offset=i)`` a sample's noise depends on its
global index, so 1,000 samples drawn at once equal those drawn 7 at a time (the last batch 6), for
every stochastic solver in ``SOLVERS``, the prior draw and ``generate_samples`` at any batch size.
The law: moments and a Kolmogorov-Smirnov test of the normals, and correlations across draws,
indices, elements and seeds, each within a few standard errors of 0 at the sizes used.
"""

import math

import pytest
import torch
from problems import OrnsteinUhlenbeck, mixture_2d
from scipy import stats
from scipy.special import ndtri
from solver_registry import STOCHASTIC

import sde_gen as sg
from sde_gen.sampling import noise as noise_mod
from sde_gen.sampling.noise import KeyedNoise
from sde_gen.sampling.solvers.base import noise_like

F64 = torch.float64
N, BS, SEED = 1000, 7, 2024

#: Every stochastic solver of the registry (tests/solver_registry.py): (name, factory).
SOLVERS = [(c.name, lambda c=c: c.make(4)) for c in STOCHASTIC]

#: VE (a built-in Gaussian prior with prior_std != 1) and a user's SDE with its own prior_sample.
SDES = [("ve", lambda: sg.VESDE(sigma_max=5.0)), ("user", OrnsteinUhlenbeck)]


def _chunked(draw, n=N, bs=BS):
    """``draw(size, offset)`` for batches of ``bs`` starting at ``offset``, concatenated."""
    return torch.cat([draw(min(bs, n - i), i) for i in range(0, n, bs)])


class PriorOnly(sg.Solver):
    """A solver that returns its start: ``sample`` with it returns the prior draw."""

    convergence_order = 0.0

    def solve(self, sde, score_fn, x, t_start, t_end, *, generator=None, callback=None):
        return x, x


# -- batch invariance --------------------------------------------------------------------------


@pytest.mark.parametrize("sde_name,make_sde", SDES, ids=[s[0] for s in SDES])
@pytest.mark.parametrize("name,make_solver", SOLVERS, ids=[s[0] for s in SOLVERS])
def test_solver_is_batch_invariant(name, make_solver, sde_name, make_sde):
    """1,000 samples in one batch equal 143 batches of 7 (the last of 6), bit for bit."""
    sde, mix, solver = make_sde(), mixture_2d(), make_solver()
    score = mix.score_fn(sde)

    def draw(size, offset):
        g = KeyedNoise(SEED, offset=offset)
        return sg.sample(sde, score, (size, 2), solver, generator=g, dtype=F64)

    whole = draw(N, 0)
    assert N % BS == 6 and torch.isfinite(whole).all()
    assert torch.equal(whole, _chunked(draw))
    # the noise matters: another seed gives other samples
    other = sg.sample(sde, score, (N, 2), solver, generator=KeyedNoise(SEED + 1), dtype=F64)
    assert (other != whole).all()


@pytest.mark.parametrize("sde_name,make_sde", SDES, ids=[s[0] for s in SDES])
def test_prior_draw_is_batch_invariant(sde_name, make_sde):
    """The prior draw alone: batch invariant, and what the scheme says it is."""
    sde = make_sde()
    score = mixture_2d().score_fn(sde)

    def draw(size, offset):
        return sg.sample(sde, score, (size, 3, 2), PriorOnly(), generator=KeyedNoise(SEED, offset), dtype=F64)

    whole = draw(N, 0)
    assert torch.equal(whole, _chunked(draw))
    g = KeyedNoise(SEED)
    if sde_name == "ve":  # built-in Gaussian prior: prior_std times the keyed normals of draw 0
        assert torch.equal(whole, sde.prior_std * g.normal((N, 3, 2), draw=0, dtype=F64))
        z = whole.flatten() / sde.prior_std
    else:  # the SDE's own prior_sample, once per sample with a generator seeded by row_seed
        for r in (0, 1, 500, N - 1):
            gen = torch.Generator().manual_seed(g.row_seed(r, 0))
            assert torch.equal(whole[r : r + 1], sde.prior_sample((1, 3, 2), generator=gen, dtype=F64))
        z = whole.flatten() / (sde.s / math.sqrt(2 * sde.theta))
    n = z.numel()  # 6,000: the standardised draw has mean 0 and variance 1 within 5 standard errors
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1.0) < 5 * math.sqrt(2 / n)


@pytest.mark.parametrize("bs", [N, 7, 64])
def test_generate_samples_keyed_is_batch_invariant(bs):
    """generate_samples(noise="keyed") gives sample(generator=KeyedNoise(seed)) of all N at once,
    whatever the batch size; the default per-chunk generators depend on the batch size."""
    sde, mix = sg.VPSDE(), mixture_2d()
    score, solver = mix.score_fn(sde), sg.PredictorCorrector(4, "ancestral", "langevin")
    ref = sg.sample(sde, score, (N, 2), solver, generator=KeyedNoise(SEED), dtype=F64)
    kw = dict(seed=SEED, batch_size=bs, dtype=F64)
    out = sg.generate_samples(sde, score, N, (2,), solver, noise="keyed", **kw)
    assert torch.equal(out["samples"], ref)
    assert out["nfe_per_chunk"] == [8] * math.ceil(N / bs)
    if bs == 64:
        per_chunk = sg.generate_samples(sde, score, N, (2,), solver, **kw)["samples"]
        assert not torch.equal(per_chunk[64:], ref[64:])


def test_sample_restarts_the_draws():
    """Every sample() call starts at draw 0 and leaves the caller's KeyedNoise as it was; draw 0
    is the prior's even when x_T is given, so passing the prior draw as x_T changes nothing."""
    sde, mix = sg.VPSDE(), mixture_2d()
    score, solver = mix.score_fn(sde), sg.EulerMaruyama(steps=5)
    g = KeyedNoise(SEED, offset=3)
    a = sg.sample(sde, score, (50, 2), solver, generator=g, dtype=F64)
    assert g.draw == 0
    assert torch.equal(a, sg.sample(sde, score, (50, 2), solver, generator=g, dtype=F64))
    x_T = g.normal((50, 2), draw=0, dtype=F64)  # VP's prior_std is 1
    assert torch.equal(a, sg.sample(sde, score, (50, 2), solver, generator=g, x_T=x_T))
    # used directly, noise_like counts the draws
    x = torch.zeros(4, 3, dtype=F64)
    z1, z2 = noise_like(x, g), noise_like(x, g)
    assert g.draw == 2 and torch.equal(z2, g.normal((4, 3), draw=1, dtype=F64)) and not torch.equal(z1, z2)


def test_torch_generator_path_unchanged():
    x = torch.zeros(5, 3, dtype=torch.float32)
    ref = torch.randn((5, 3), generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    assert torch.equal(noise_like(x, torch.Generator().manual_seed(7)), ref)


# -- the scheme --------------------------------------------------------------------------------


def test_hash_matches_python_reference():
    """The int64 tensor SplitMix64 (wrapping multiply, masked shifts) equals exact integer maths."""
    vals = [0, 1, -1, 2**63 - 1, -(2**63), 0x9E3779B97F4A7C15 - 2**64, 123456789123456789]
    got = noise_mod._mix_t(torch.tensor(vals, dtype=torch.int64)).tolist()
    assert got == [noise_mod._signed(noise_mod._mix(v % 2**64)) for v in vals]
    g = KeyedNoise(2**64 - 1, offset=2**40)
    keys = g._row_keys(5, 3, "cpu").tolist()
    assert keys == [noise_mod._signed(g.row_seed(r, 3)) for r in range(5)]
    # the scheme is part of the samples' reproducibility: pin one key
    assert KeyedNoise(0).row_seed(0, 0) == 12103184956288865414


def test_transform_is_the_inverse_normal_cdf():
    """z = Phi^{-1}(u), u = (2j + 1) / 2^53 from the top 52 bits: AS 241 against scipy's ndtri,
    including the extreme uniforms, exactly antisymmetric (u -> 1 - u gives -z), and the same bits
    whether the tails are computed on a subset (CPU) or everywhere (GPU)."""
    j = torch.randint(0, 2**52, (100_000,), generator=torch.Generator().manual_seed(0))
    j = torch.cat([j, torch.tensor([0, 1, 2**52 - 2, 2**52 - 1, 2**51 - 1, 2**51])])
    z = noise_mod._normal_from_bits(j << 12)
    ref = torch.from_numpy(ndtri(((2 * j + 1).double() * 2.0**-53).numpy()))
    assert float(((z - ref).abs() / ref.abs().clamp_min(1.0)).max()) < 4e-15  # measured 1.0e-15
    assert torch.equal(noise_mod._normal_from_bits((2**52 - 1 - j) << 12), -z)
    # the GPU's layout (tails computed on every entry, then selected) gives the same bits
    assert torch.equal(noise_mod._normal_from_bits(j << 12, subset=False), z)
    assert float(z.abs().max()) == pytest.approx(-ndtri(2.0**-53), rel=1e-14)  # 8.2095


def test_normals_are_standard_normal():
    """200 x 500 keyed normals: mean, variance, skewness, excess kurtosis within 5 standard errors
    of 0, 1, 0, 0; tail frequency beyond 3 within 5 binomial standard errors; KS p-value > 1e-4."""
    z = KeyedNoise(SEED).normal((200, 500), draw=1, dtype=F64).flatten()
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float(stats.skew(z.numpy()))) < 5 * math.sqrt(6 / n)
    assert abs(float(stats.kurtosis(z.numpy()))) < 5 * math.sqrt(24 / n)
    p3 = 2 * stats.norm.sf(3.0)
    assert abs(float((z.abs() > 3).double().mean()) - p3) < 5 * math.sqrt(p3 * (1 - p3) / n)
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-4


def _corr(a, b):
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_normals_are_independent():
    """Correlations of z and of z^2 between neighbouring draws, sample indices, elements and seeds
    (seeds one bit apart) all within 5 standard errors (1 / sqrt(pairs)) of 0."""
    g = KeyedNoise(SEED)
    z1 = g.normal((400, 101), draw=1, dtype=F64)
    z2 = g.normal((400, 101), draw=2, dtype=F64)
    zs = KeyedNoise(SEED ^ 1).normal((400, 101), draw=1, dtype=F64)
    pairs = {
        "draws": (z1, z2),
        "indices": (z1[:-1], z1[1:]),
        "elements": (z1[:, :-1], z1[:, 1:]),
        "seeds": (z1, zs),
    }
    for what, (a, b) in pairs.items():
        tol = 5 / math.sqrt(a.numel())
        assert abs(_corr(a, b)) < tol, what
        assert abs(_corr(a**2, b**2)) < tol, what
    # offsets address the same samples: rows 5.. of offset 0 are rows 0.. of offset 5
    assert torch.equal(KeyedNoise(SEED, offset=5).normal((395, 101), draw=1, dtype=F64), z1[5:])
    # another dtype is the float64 value rounded
    z32 = g.normal((400, 101), draw=1, dtype=torch.float32)
    assert torch.equal(z32, z1.float())


def test_bad_inputs():
    with pytest.raises(ValueError, match="seed"):
        KeyedNoise(-1)
    with pytest.raises(ValueError, match="seed"):
        KeyedNoise(2**64)
    with pytest.raises(TypeError, match="seed"):
        KeyedNoise(1.5)
    with pytest.raises(ValueError, match="offset"):
        KeyedNoise(0, offset=-3)
    with pytest.raises(ValueError, match="draw"):
        KeyedNoise(0).normal((2, 2), draw=-1)
    with pytest.raises(ValueError, match="offset"):
        KeyedNoise(0, offset=2**63 - 1).normal((2, 2), draw=0)
    sde, mix = sg.VPSDE(), mixture_2d()
    with pytest.raises(TypeError, match="KeyedNoise"):
        sg.sample(sde, mix.score_fn(sde), (2, 2), sg.EulerMaruyama(steps=2), generator=3)
    with pytest.raises(TypeError, match="dtype"):
        sg.sample(sde, mix.score_fn(sde), (2, 2), PriorOnly(), generator=KeyedNoise(0), dtype=torch.int64)
    with pytest.raises(ValueError, match="noise"):
        sg.generate_samples(
            sde, mix.score_fn(sde), 4, (2,), sg.EulerMaruyama(steps=2), seed=0, noise="per_row"
        )
