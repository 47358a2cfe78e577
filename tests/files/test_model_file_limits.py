"""A model file cannot exhaust memory or time: whatever its recipe asks for, ``sg.load_model``
builds the network on the ``meta`` device, compares it with the file's header and refuses a
network larger than the file before allocating it (``sde_gen/files/limits.py``).

The memory is measured in a child process (torch's allocations bypass ``tracemalloc``): its peak
resident memory (``VmHWM``, reset through ``/proc/self/clear_refs`` once ``sde_gen`` and torch are
imported, since importing them peaks higher than what follows) over its resident memory then.
Time is not asserted (``benchmarks/hostile_model_file.py`` measures it; the figures are in
docs/security.md).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sde_gen as sg
from sde_gen.files import model_file

MAX_EXTRA_MB = 300  # peak memory of loading every hostile file, over the memory after the imports
BYTES = {"F64": 8, "F32": 4, "F16": 2, "I64": 8}

#: Loads each file named on the command line; prints the outcomes and the process's peak memory.
CHILD = """
import json, resource, sys, time
import pytest
import torch
import sde_gen as sg
from sde_gen.files import model_file

def status(field):  # kB, from /proc/self/status (Linux)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak resident memory (VmHWM) to the current one
rss_kb = status("VmRSS")
cases = {}
for path in sys.argv[1:]:
    start = time.perf_counter()
    try:
        sg.load_model(path)
        outcome = "loaded"
    except sg.CheckpointError as e:
        outcome = "refused: " + str(e)
    cases[path] = {"outcome": outcome, "seconds": time.perf_counter() - start}
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_kb": peak_kb, "extra_kb": status("VmHWM") - rss_kb, "cases": cases}))
"""


def write_model_file(path: Path, net: dict, tensors: dict | None = None, lie: dict | None = None) -> Path:
    """A model file written byte by byte: a recipe naming ``net``, and zero tensors of the
    ``{name: (dtype, shape)}`` given (none by default: a file of a few hundred bytes); ``lie``
    replaces header entries after the data is laid out."""
    recipe = {"format": "sde_gen.model/1", "sde": {"_target_": "sde_gen.VPSDE"}, "net": net}
    recipe |= {"parameterization": "noise", "data": {}}
    header, offset = {"__metadata__": {"sde_gen": json.dumps(recipe)}}, 0
    for name, (dtype, shape) in (tensors or {}).items():
        size = math.prod(shape) * BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header | (lie or {})).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(offset))
    return path


def header_of(net: torch.nn.Module) -> dict:
    """``{name: ("F32", shape)}`` for every tensor of ``net`` (built on ``meta``: no memory)."""
    return {k: ("F32", tuple(v.shape)) for k, v in net.state_dict().items()}


def hostile_files(folder: Path) -> dict[str, Path]:
    """Model files whose recipes ask for far more than they hold, by name."""
    mlp = {"_target_": "sde_gen.MLP", "dim": 2}
    with torch.device("meta"):
        small = header_of(sg.MLP(2, hidden=8, depth=1, embed_dim=8))
        unet = header_of(sg.UNet.digits(channels=8))
    unet_args = {"_target_": "sde_gen.UNet", "in_channels": 1, "image_size": 8, "channel_mult": [1, 2, 2]}
    unet_args |= {"num_res_blocks": 1, "attn_resolutions": [4], "time_embedding": "fourier"}
    files = {
        # 5e8 parameters (2 GB in float32) in a file of a few hundred bytes
        "mlp-5e8-params": write_model_file(folder / "a.safetensors", {**mlp, "hidden": 10_000, "depth": 6}),
        # the names of a small MLP's tensors, with a recipe 10^5 times wider
        "mlp-wide-named": write_model_file(
            folder / "b.safetensors", {**mlp, "hidden": 800_000, "depth": 1}, small
        ),
        "mlp-deep-1e12": write_model_file(folder / "c.safetensors", {**mlp, "depth": 10**12}, small),
        "mlp-embed-1e12": write_model_file(folder / "d.safetensors", {**mlp, "embed_dim": 10**12}, small),
        "unet-channels-1e6": write_model_file(
            folder / "e.safetensors", {**unet_args, "channels": 10**6}, unet
        ),
        "unet-blocks-1e9": write_model_file(folder / "f.safetensors", {**unet_args, "num_res_blocks": 10**9}),
        "unet-mult-1e4": write_model_file(
            folder / "g.safetensors", {**unet_args, "channels": 8, "channel_mult": [10**4] * 3}, unet
        ),
        "mlp-classes-1e12": write_model_file(folder / "i.safetensors", {**mlp, "num_classes": 10**12}, small),
    }
    # a header claiming a tensor of 40 GB in a file of a few hundred bytes
    lie = {"w": {"dtype": "F32", "shape": [10**10], "data_offsets": [0, 4 * 10**10]}}
    files["header-lies"] = write_model_file(folder / "h.safetensors", mlp, {"w": ("F32", (1,))}, lie)
    return files


def run_child(paths) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_hostile_model_files_are_refused_without_allocating(tmp_path):
    files = hostile_files(tmp_path)
    assert max(p.stat().st_size for p in files.values()) < 400_000  # a small U-Net's tensors
    hostile = run_child(files.values())
    for name, path in files.items():
        outcome = hostile["cases"][str(path)]["outcome"]
        assert outcome.startswith(f"refused: model file {path}"), f"{name}: {outcome}"
    extra_mb = hostile["extra_kb"] / 1024
    assert extra_mb < MAX_EXTRA_MB, f"loading the hostile files took {extra_mb:.0f} MB over the imports"


def test_refusals_say_what_the_recipe_asks_and_what_the_file_holds(tmp_path):
    files = hostile_files(tmp_path)
    with pytest.raises(
        sg.CheckpointError, match=r"needs 1,221,000,284,500,001 elements .* the 80,421 elements"
    ):
        sg.load_model(files["unet-channels-1e6"])
    with pytest.raises(sg.CheckpointError, match="needs far more tensors than the 9 the file holds"):
        sg.load_model(files["mlp-deep-1e12"])
    with pytest.raises(sg.CheckpointError, match="its tensors hold 40000000000 bytes, but 4 bytes follow"):
        sg.load_model(files["header-lies"])
    with torch.device("meta"):
        names = header_of(sg.MLP(2, hidden=8, depth=1, embed_dim=8))
    mlp = {"_target_": "sde_gen.MLP", "dim": 2, "hidden": 8, "depth": 1, "embed_dim": 8}
    wrong_dtype = write_model_file(tmp_path / "int.safetensors", mlp, names | {"out.bias": ("I64", (2,))})
    with pytest.raises(sg.CheckpointError, match=r"'out.bias' is torch.int64 in the file, the network's is"):
        sg.load_model(wrong_dtype)
    nested = write_model_file(tmp_path / "nested.safetensors", mlp | {"hidden": [[8]]}, names)
    with pytest.raises(sg.CheckpointError, match=r"argument 'hidden'=\[\[8\]\] is refused: an argument must"):
        sg.load_model(nested)
    assert sg.load_model(write_model_file(tmp_path / "zeros.safetensors", mlp, names)).net.hidden == 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_files_still_load_bit_identically(tmp_path, dtype):
    """The meta build changes nothing a legit file gives back: every tensor, its dtype, what is
    trainable, and the outputs, for a class-conditional U-Net and an MLP, in float32 and float64."""
    torch.manual_seed(0)
    for net in (sg.UNet.digits(channels=8, num_classes=3), sg.MLP(3, hidden=16, depth=2, out_dim=3)):
        net = net.to(dtype)
        for p in net.parameters():  # weights that are not their initial values
            p.data.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=dtype))
        model = sg.ScoreModel(net, sg.VESDE())
        back = sg.load_model(sg.save_model(tmp_path / "m.safetensors", model))
        want, got = net.state_dict(), back.net.state_dict()
        assert list(got) == list(want)
        assert all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in want)
        assert [p.requires_grad for p in back.net.parameters()] == [p.requires_grad for p in net.parameters()]
        assert all(not t.is_meta for t in back.net.state_dict().values())
        x = torch.randn(4, *((1, 8, 8) if isinstance(net, sg.UNet) else (3,)), dtype=dtype)
        t = torch.full((4,), 0.3, dtype=dtype)
        with torch.no_grad():
            assert torch.equal(back(x, t), model.eval()(x, t))


class _WithUnsavedBuffer(sg.MLP):
    """An MLP with a buffer that is not saved: it must be computed, not left empty."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("table", torch.ones(4), persistent=False)


def test_a_network_with_a_buffer_that_is_not_saved_is_built_for_real(tmp_path, monkeypatch):
    net = _WithUnsavedBuffer(2, hidden=8, depth=1, embed_dim=8)
    path = sg.save_model(
        tmp_path / "m.safetensors",
        sg.ScoreModel(net, sg.VPSDE()),
        net_config={"_target_": "sde_gen.MLP", "dim": 2, "hidden": 8, "depth": 1, "embed_dim": 8},
    )
    monkeypatch.setitem(model_file.TARGETS, "sde_gen.MLP", _WithUnsavedBuffer)
    back = sg.load_model(path)
    assert not back.net.table.is_meta and torch.equal(back.net.table, torch.ones(4))
    assert all(torch.equal(back.net.state_dict()[k], v) for k, v in net.state_dict().items())


def test_a_loaded_model_holds_copies_not_views_of_the_file(tmp_path):
    """Overwriting the file in place after loading changes nothing (a view of the mapped file
    would change, and would crash the process if the file shrank)."""
    net = sg.MLP(2, hidden=8, depth=1, embed_dim=8)
    path = sg.save_model(tmp_path / "m.safetensors", sg.ScoreModel(net, sg.VPSDE()))
    back = sg.load_model(path)
    data = bytearray(path.read_bytes())
    data[8 + int.from_bytes(data[:8], "little") :] = b"\xff" * (
        len(data) - 8 - int.from_bytes(data[:8], "little")
    )
    with open(path, "r+b") as f:  # in place: the same file, new bytes
        f.write(data)
    assert all(torch.equal(back.net.state_dict()[k], v) for k, v in net.state_dict().items())
