"""Fuzzing every file reader with damaged copies of valid files.

Each reader gets a valid file written here (MNIST IDX images and labels, plain and gzipped; a
CIFAR-10 batch pickled in the standard format, protocols 2 and 5; a trainer checkpoint written by
``Trainer.save_checkpoint``) and reads mutated copies of it: truncated at random lengths, 1 to 16
random bits flipped, the header overwritten with random bytes, garbage appended, and size fields
of the format (IDX sizes, gzip's CRC and length, pickle lengths, memo indices and integers, zip
sizes and offsets) set to huge values. 873 cases in all, about 5 s on one core.

Every case must end in the reader's own error naming the file (``sg.CheckpointError`` for
checkpoints; ``ValueError`` or ``TypeError`` for data files) or load a result that passes the
reader's validation (a flipped pixel is still an image); within ``MAX_CASE_CPU_S`` of CPU time
(CPU time, so other processes on the machine cannot make it flaky); with a traced allocation peak
(tracemalloc: Python and numpy, also memory never touched) under ``MAX_TRACED_MB`` over one
reader's cases, the process's peak memory (``ru_maxrss``) growing by less than
``MAX_LOOP_RSS_GROWTH_MB`` over one reader's cases and ``MAX_RSS_GROWTH_MB`` over the module.

Everything is seeded (one ``numpy.random.default_rng`` per reader): the same cases every run,
never flaky. Nothing here starts a process, so none can be left behind. Each test runs in an
empty working directory with an empty temporary directory of its own, and checks that reading
wrote no file: every path under ``tmp_path``, the working and temporary directories, and the
folder holding ``tmp_path`` list the same before and after the cases.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import pickle
import pickletools
import resource
import struct
import tempfile
import time
import tracemalloc
import zipfile
from collections import Counter

import numpy as np
import pytest
import torch

import sde_gen as sg
from sde_gen import data as D

SEED = 20_240_611
MAX_CASE_CPU_S = 1.0
MAX_RSS_GROWTH_MB = 200  # over the whole module, valid files and the trainer included
MAX_LOOP_RSS_GROWTH_MB = 64  # over one reader's cases
MAX_TRACED_MB = 16  # the traced peak over one reader's cases (the valid files hold < 200 kB)
N_TRUNCATE, N_FLIP, N_HEADER_FLIP, N_HEADER, N_APPEND, N_HUGE = 16, 32, 8, 8, 8, 16
DATA_ERRORS = (ValueError, TypeError)

# torch warns about a checkpoint whose pickle protocol byte was flipped, before refusing it
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")

_RSS_AT_START: list[int] = []  # ru_maxrss (KiB on Linux) when the module's first test started


@pytest.fixture(scope="module", autouse=True)
def rss_at_start():
    """The process's peak memory before the first test of this module (other modules' tests in
    the same session may have raised it before: the growth is measured from here)."""
    _RSS_AT_START[:] = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]


@pytest.fixture(autouse=True)
def own_directories(tmp_path, monkeypatch):
    """An empty working directory and temporary directory for each test (``run_cases`` checks
    that the readers write nothing there, nor anywhere else near ``tmp_path``)."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


def _listing(tmp_path) -> dict:
    """Every path under ``tmp_path`` (the test's files, its working and temporary directories),
    the working and temporary directories as the process sees them, and the folder holding
    ``tmp_path``."""
    return {
        "tmp_path": sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")),
        "cwd": sorted(os.listdir(os.getcwd())),
        "tempdir": sorted(os.listdir(tempfile.gettempdir())),
        "parent": sorted(os.listdir(tmp_path.parent)),
    }


# -- mutations -------------------------------------------------------------------------------------


def _put(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def _huge(width: int, rng) -> list[bytes]:
    """Huge values for a little-endian field of ``width`` bytes: all ones, the signed maximum, a
    random large one."""
    top = 2 ** (8 * width)
    big = int(rng.integers(top // 2, top - 1)) if width < 8 else int(rng.integers(2**62, 2**63 - 1))
    return [
        (top - 1).to_bytes(width, "little"),
        (top // 2 - 1).to_bytes(width, "little"),
        big.to_bytes(width, "little"),
    ]


def mutations(good: bytes, header: int, fields, rng) -> list[tuple[str, bytes]]:
    """Mutated copies of ``good``: ``fields`` are ``(offset, width, byteorder)`` size fields."""
    out = []
    cuts = {0, 1, header - 1, header, header + 1, len(good) - 1}
    cuts |= {int(k) for k in rng.integers(0, len(good), N_TRUNCATE)}
    out += [(f"truncate-{k}", good[:k]) for k in sorted(c for c in cuts if 0 <= c < len(good))]
    for i in range(N_FLIP + N_HEADER_FLIP):
        span = len(good) if i < N_FLIP else min(header, len(good))
        buf = bytearray(good)
        for bit in rng.choice(8 * span, size=int(rng.integers(1, 17)), replace=False):
            buf[bit // 8] ^= 1 << (bit % 8)
        out.append((f"flip-{i}", bytes(buf)))
    for i in range(N_HEADER):
        n = int(rng.integers(1, header + 1))
        out.append((f"header-{i}", rng.bytes(n) + good[n:]))
    for i in range(N_APPEND):
        out.append((f"append-{i}", good + rng.bytes(int(rng.integers(1, 4097)))))
    fields = list(fields)
    picks = rng.choice(len(fields), size=min(N_HUGE, len(fields)), replace=False) if fields else []
    for j in picks:
        offset, width, order = fields[j]
        for k, value in enumerate(_huge(width, rng)):
            value = value if order == "little" else value[::-1]
            out.append((f"huge-{offset}-{k}", _put(good, offset, value)))
    return out


#: Widths of the little-endian numeric arguments of pickle opcodes (lengths, memo indices, ints).
_ARG_WIDTHS = {
    **{"uint1": 1, "uint2": 2, "int4": 4, "uint4": 4, "uint8": 8, "long1": 1, "long4": 4},
    **{"string1": 1, "string4": 4, "bytes1": 1, "bytes4": 4, "bytes8": 8, "bytearray8": 8},
    **{"unicodestring1": 1, "unicodestring4": 4, "unicodestring8": 8},
}


def pickle_fields(data: bytes, base: int = 0) -> list[tuple[int, int, str]]:
    """The little-endian numeric fields of a pickle: the length prefix of every counted string,
    bytes or frame, every memo index and every binary integer (``base``: where the pickle starts)."""
    fields = []
    for op, _arg, pos in pickletools.genops(data):
        width = _ARG_WIDTHS.get(op.arg.name) if op.arg is not None else None
        if width:
            fields.append((base + pos + 1, width, "little"))
    return fields


def idx_fields(nd: int) -> list[tuple[int, int, str]]:
    return [(4 + 4 * i, 4, "big") for i in range(nd)]


def zip_fields(data: bytes) -> list[tuple[int, int, str]]:
    """Sizes, counts and offsets in a zip file's local headers, central directory and end record
    (and the ZIP64 ones), and the numeric fields of every stored pickle inside it."""
    fields = []
    layout = {
        b"PK\x03\x04": [(18, 4), (22, 4), (26, 2), (28, 2)],
        b"PK\x01\x02": [(20, 4), (24, 4), (28, 2), (30, 2), (32, 2), (42, 4)],
        b"PK\x05\x06": [(8, 2), (10, 2), (12, 4), (16, 4), (20, 2)],
        b"PK\x06\x06": [(4, 8), (24, 8), (32, 8), (40, 8), (48, 8)],
        b"PK\x06\x07": [(8, 8), (16, 4)],
    }
    for sig, offsets in layout.items():
        at = data.find(sig)
        while at >= 0:
            fields += [(at + o, w, "little") for o, w in offsets if at + o + w <= len(data)]
            at = data.find(sig, at + 1)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            if info.filename.endswith(".pkl") and info.compress_type == zipfile.ZIP_STORED:
                h = info.header_offset
                name_len, extra_len = struct.unpack("<HH", data[h + 26 : h + 30])
                start = h + 30 + name_len + extra_len
                fields += pickle_fields(data[start : start + info.file_size], base=start)
    return fields


# -- running the cases -----------------------------------------------------------------------------


def run_cases(name, tmp_path, good, cases, write, read, validate, errors):
    """Write each case with ``write(payload) -> path``, ``read()`` it and check the outcome: an
    allowed error naming the file, or a result that passes ``validate``; in bounded CPU time and
    memory; no file written but the case's own. Returns how many loaded and how many were refused."""
    assert len(cases) >= 60, f"{name}: only {len(cases)} cases"
    write(good)
    validate(read())  # the valid file loads
    before = _listing(tmp_path)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = Counter()
    tracemalloc.start()  # sees Python's and numpy's allocations, also those never touched
    try:
        for case, payload in cases:
            path = write(payload)
            start = time.process_time()
            try:
                result = read()
            except errors as e:
                assert str(path) in str(e), f"{name} {case}: the error does not name {path}: {e}"
                outcomes["refused"] += 1
            except Exception as e:  # noqa: BLE001 - any other type is the failure this test looks for
                pytest.fail(f"{name} {case}: {type(e).__name__} is not an allowed error: {e}")
            else:
                validate(result)
                outcomes["loaded"] += 1
                del result
            took = time.process_time() - start
            assert took < MAX_CASE_CPU_S, f"{name} {case}: {took:.2f} s of CPU time"
        traced_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert traced_mb < MAX_TRACED_MB, f"{name}: a case allocated {traced_mb:.0f} MB (traced peak)"
    assert _listing(tmp_path) == before, f"{name}: files appeared or vanished"
    loop_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert loop_mb < MAX_LOOP_RSS_GROWTH_MB, f"{name}: peak memory grew by {loop_mb:.0f} MB over the cases"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - _RSS_AT_START[0]) / 1024
    assert grown_mb < MAX_RSS_GROWTH_MB, f"peak memory grew by {grown_mb:.0f} MB since the module started"
    return outcomes


# -- MNIST IDX -------------------------------------------------------------------------------------


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _valid_mnist(d: D.ImageData):
    assert d.train.dtype == torch.uint8 and d.train.ndim == 4 and d.train.shape[1:] == d.test.shape[1:]
    assert d.train.shape[1] == 1 and min(d.train.shape) >= 1
    for x, y in ((d.train, d.train_labels), (d.test, d.test_labels)):
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert int(y.min()) >= 0 and int(y.max()) <= 9


@pytest.mark.parametrize("kind", ["images", "labels"])
@pytest.mark.parametrize("gz", [False, True])
def test_fuzz_mnist_idx(tmp_path, kind, gz):
    rng = np.random.default_rng([SEED, int(kind == "labels"), int(gz)])
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 40),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 2),
    }
    d = tmp_path / "mnist"
    d.mkdir()
    target = f"train-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for n, a in arrays.items():
        if n != target:
            (d / n).write_bytes(_idx(a))
    inner = _idx(arrays[target])
    nd = 3 if kind == "images" else 1
    if gz:
        path = d / (target + ".gz")
        good = gzip.compress(inner, mtime=0)
        # the gzip file (its 10-byte header, its CRC and length, the last 8 bytes), and the IDX
        # file inside mutated and compressed again
        cases = mutations(good, 10, [(len(good) - 4, 4, "little"), (len(good) - 8, 4, "little")], rng)
        inner_cases = mutations(inner, 4 + 4 * nd, idx_fields(nd), rng)
        cases += [(f"inner-{c}", gzip.compress(p, mtime=0)) for c, p in inner_cases]
    else:
        path = d / target
        cases = mutations(inner, 4 + 4 * nd, idx_fields(nd), rng)

    def write(payload):
        path.write_bytes(payload)
        return path

    name = f"mnist-{kind}{'-gz' if gz else ''}"
    out = run_cases(
        name,
        tmp_path,
        good if gz else inner,
        cases,
        write,
        lambda: D.load_mnist(d),
        _valid_mnist,
        DATA_ERRORS,
    )
    assert out["refused"] > 0 and out["loaded"] > 0, out  # flipped pixels or labels still load
    assert sorted(os.listdir(d)) == sorted(n if n != target else path.name for n in arrays)


# -- CIFAR-10 pickles ------------------------------------------------------------------------------


def _valid_cifar(d: D.ImageData):
    assert d.train.dtype == d.test.dtype == torch.uint8
    assert d.train.shape[1:] == d.test.shape[1:] == (3, 32, 32)
    for x, y in ((d.train, d.train_labels), (d.test, d.test_labels)):
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],) and x.shape[0] >= 1
        assert int(y.min()) >= 0 and int(y.max()) <= 9


@pytest.mark.parametrize("protocol", [2, 5])
def test_fuzz_cifar10_batch(tmp_path, protocol):
    rng = np.random.default_rng([SEED, protocol])
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in D.CIFAR10_FILES:  # the standard format: a dict of bytes keys (as tests/test_data.py)
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, 2).tolist(),
            b"data": rng.integers(0, 256, (2, 3072)).astype(np.uint8),
            b"filenames": [b"a.png", b"b.png"],
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    path = d / "test_batch"
    good = path.read_bytes()
    cases = mutations(good, 16, pickle_fields(good), rng)

    def write(payload):
        path.write_bytes(payload)
        return path

    read = lambda: D.load_cifar10(tmp_path)  # noqa: E731
    out = run_cases(f"cifar10-p{protocol}", tmp_path, good, cases, write, read, _valid_cifar, DATA_ERRORS)
    assert out["refused"] > 0 and out["loaded"] > 0, out
    assert sorted(os.listdir(d)) == sorted(D.CIFAR10_FILES)


# -- trainer checkpoints ---------------------------------------------------------------------------


def test_fuzz_checkpoint(tmp_path):
    rng = np.random.default_rng([SEED, 7])
    sde = sg.VPSDE()
    torch.manual_seed(0)
    model = sg.ScoreModel(sg.MLP(dim=2, hidden=8, depth=1, embed_dim=8), sde)
    data = sg.gmm8().sample(32, generator=torch.Generator().manual_seed(0)).float()
    trainer = sg.Trainer(model, sg.DSMLoss(sde), sg.Batches(data, 8, seed=0))
    trainer.fit(2)
    path = tmp_path / "ckpt" / "ckpt_00000002.pt"
    trainer.save_checkpoint(path)
    good = path.read_bytes()
    assert len(good) < 200_000
    cases = mutations(good, 64, zip_fields(good), rng)

    def write(payload):
        path.write_bytes(payload)
        return path

    def valid(state):
        assert isinstance(state, dict) and set(sg.files.checkpoint.CKPT_KEYS) <= set(state)

    read = lambda: sg.files.read_checkpoint(path)  # noqa: E731
    out = run_cases("checkpoint", tmp_path, good, cases, write, read, valid, sg.CheckpointError)
    assert out["refused"] > 0, out
    assert os.listdir(path.parent) == [path.name]


# -- model files ---------------------------------------------------------------------------------

#: Values a recipe field is set to: huge, negative, of the wrong type, long, deeply nested.
RECIPE_VALUES = [0, -1, 3, 2**31, 2**62, 2**63, 10**18, 10**400, -(10**9), 0.5, 1e308, float("inf")]
RECIPE_VALUES += [float("nan"), "x", "a" * 100_000, None, True, [], [1] * 10_000, [[1, 2]], {}, {"a": 1}]
RECIPE_VALUES += ["__DEEP__", [10**9] * 3, "sde_gen.UNet", "os.system"]
N_RECIPE_VALUES = 5  # values tried per field
DEEP = "[" * 100_000 + "]" * 100_000  # nesting no JSON parser should recurse into


def _with_recipe(good: bytes, recipe: dict | str) -> bytes:
    """``good``, a model file, with its recipe (a dict, or JSON text) replaced."""
    n = int.from_bytes(good[:8], "little")
    header = json.loads(good[8 : 8 + n])
    text = recipe if isinstance(recipe, str) else json.dumps(recipe).replace('"__DEEP__"', DEEP)
    header["__metadata__"]["sde_gen"] = text
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + good[8 + n :]


def recipe_mutations(
    good: bytes, rng, parts=("sde", "net", None), k=N_RECIPE_VALUES
) -> list[tuple[str, bytes]]:
    """Copies of the model file ``good`` whose recipe has one field (every argument of the SDE and
    the network, ``_target_``, every top-level key: ``None`` in ``parts``) set to ``k`` of
    ``RECIPE_VALUES``, an unknown key added, or its text replaced by deep nesting or a JSON scalar."""
    n = int.from_bytes(good[:8], "little")
    recipe = json.loads(json.loads(good[8 : 8 + n])["__metadata__"]["sde_gen"])
    fields = [(part, key) for part in parts for key in (recipe if part is None else recipe[part])]
    fields += [(part, "bogus") for part in parts]
    out = []
    for part, key in fields:
        for i in rng.choice(len(RECIPE_VALUES), size=k, replace=False):
            edited = copy.deepcopy(recipe)
            (edited if part is None else edited[part])[key] = RECIPE_VALUES[i]
            out.append((f"recipe-{part}-{key}-{i}", _with_recipe(good, edited)))
    out += [(f"recipe-text-{i}", _with_recipe(good, text)) for i, text in enumerate([DEEP, "1", "[]", "{"])]
    return out


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_fuzz_model_file(tmp_path, kind):
    """``sg.load_model`` on damaged model files and on recipes asking for anything: each loads a
    network that fits its file or is refused, within the CPU time and memory bounds above (about
    1 s for the MLP's 200 cases, 5 s for the U-Net's 70, tracemalloc included)."""
    rng = np.random.default_rng([SEED, 8, kind == "unet"])
    torch.manual_seed(0)
    unet = dict(in_channels=1, image_size=4, channels=4, channel_mult=(1, 2), num_res_blocks=1)
    net = (
        sg.MLP(2, hidden=8, depth=1, embed_dim=8) if kind == "mlp" else sg.UNet(**unet, attn_resolutions=(2,))
    )
    sde = sg.VPSDE(beta_min=0.2, beta_max=15.0, T=0.9)
    path = sg.save_model(tmp_path / "m.safetensors", sg.ScoreModel(net, sde), data={"shape": [2]})
    good = path.read_bytes()
    header = 8 + int.from_bytes(good[:8], "little")
    if kind == "mlp":  # the file's bytes and every field of the recipe
        cases = mutations(good, header, [(0, 8, "little")], rng) + recipe_mutations(good, rng)
    else:  # the U-Net's own fields (its sizes, its lists): a U-Net costs more to build
        cases = recipe_mutations(good, rng, parts=("net",), k=8)
    names = {k: v.shape for k, v in net.state_dict().items()}

    def write(payload):
        path.write_bytes(payload)
        return path

    def valid(model):
        assert isinstance(model, sg.ScoreModel) and type(model.net) is type(net)
        assert {k: v.shape for k, v in model.net.state_dict().items()} == names

    read = lambda: sg.load_model(path)  # noqa: E731
    out = run_cases(f"model file ({kind})", tmp_path, good, cases, write, read, valid, sg.CheckpointError)
    assert out["refused"] > 0 and (out["loaded"] > 0 or kind == "unet"), out  # a U-Net's sizes all matter
