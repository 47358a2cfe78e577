"""Checkpoints never run code from a file (issue 10).

Every checkpoint is read with ``torch.load(weights_only=True)``. A file carrying a pickle that runs
code is refused through every way in (``load_checkpoint``, ``resume``, ``run.py ckpt=``) and its
code never runs; a trusted old file is converted once with ``python -m sde_gen.files.convert``
into one that loads safely and resumes bit-identically.
"""

from __future__ import annotations

import copy
import fractions
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sde_gen as sg
from sde_gen.files import convert as cc
from sde_gen.files.checkpoint import TRAINER_KEYS, UnsafeCheckpointError, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
DATA = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))


def _trainer(directory=None, *, ema=0.99, accumulate=2, importance=True, every=1):
    """A tiny trainer with Adam, an EMA, gradient accumulation and importance-sampled times."""
    torch.manual_seed(0)
    sde = sg.VPSDE()
    model = sg.ScoreModel(sg.MLP(2, hidden=8, depth=1), sde)
    loss = sg.DSMLoss(sde, "likelihood", importance_sampling=True) if importance else sg.DSMLoss(sde)
    return sg.Trainer(
        model,
        loss,
        sg.Batches(DATA, batch_size=16, seed=5),
        lambda p: torch.optim.Adam(p, lr=1e-2),
        lr_schedule=sg.WarmupCosine(2, 20),
        ema=ema,
        accumulate=accumulate,
        checkpoints=None if directory is None else sg.Checkpoints(directory, every=every),
    )


def assert_identical(a, b, where="state"):
    """``a`` and ``b`` equal bit for bit: tensors (dtype and values), numbers, containers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


# -- what the trainer writes loads with weights_only=True -------------------------------------------------


def test_the_trainer_writes_exactly_the_keys_the_converter_keeps():
    assert set(_trainer().state_dict()) == set(TRAINER_KEYS)


@pytest.mark.parametrize(
    "setting",
    [dict(ema=None, accumulate=1, importance=False), dict(ema=0.99, accumulate=2, importance=True)],
    ids=["plain", "ema-accumulate-importance"],
)
def test_trainer_checkpoint_loads_weights_only_and_resumes_bit_identically(tmp_path, setting):
    reference = _trainer(**setting)
    reference.fit(6)

    first = _trainer(tmp_path, **setting)
    first.fit(3)
    path = tmp_path / "ckpt_00000003.pt"
    saved = torch.load(path, map_location="cpu", weights_only=True)  # raises if it needed unpickling
    assert_identical(first.state_dict(), saved)

    resumed = _trainer(tmp_path, **setting)
    assert resumed.resume() and resumed.step == 3
    resumed.fit(6)
    assert_identical(reference.state_dict(), resumed.state_dict())


# -- a checkpoint that runs code -----------------------------------------------------------------------


class Payload:
    """Unpickles into a call that writes ``sentinel``: the shell (``os.system``) or Python (``exec``)."""

    def __init__(self, how: str, sentinel: Path):
        self.how, self.sentinel = how, str(sentinel)

    def __reduce__(self):
        if self.how == "os.system":
            return (os.system, (f"touch '{self.sentinel}'",))
        return (exec, (f"open({self.sentinel!r}, 'w').write('ran')",))


@pytest.fixture(params=["os.system", "exec"])
def evil(request, tmp_path):
    """``(path, sentinel)``: a complete trainer checkpoint plus a payload that writes ``sentinel``.
    The fixture checks the payload is live: full unpickling does write the sentinel."""
    sentinel = tmp_path / "SENTINEL"
    trainer = _trainer()
    trainer.fit(1)
    path = tmp_path / "evil" / "ckpt_00000004.pt"
    path.parent.mkdir()
    torch.save({**trainer.state_dict(), "payload": Payload(request.param, sentinel)}, path)
    torch.load(path, weights_only=False)
    assert sentinel.exists(), "the payload must run when fully unpickled, or the tests below prove nothing"
    sentinel.unlink()
    return path, sentinel


REFUSED = r"cannot be read safely: it refers to (posix\.system|builtins\.exec).*never unpickles code"


def test_load_checkpoint_refuses_a_code_running_pickle_and_runs_nothing(evil):
    path, sentinel = evil
    trainer = _trainer()
    trainer.fit(2)
    before = copy.deepcopy(trainer.state_dict())
    with pytest.raises(sg.CheckpointError, match=REFUSED) as info:
        trainer.load_checkpoint(path)
    assert isinstance(info.value, UnsafeCheckpointError)
    msg = str(info.value)
    assert str(path) in msg and f"python -m sde_gen.files.convert {path} NEW.pt" in msg
    assert "\n" not in msg
    assert not sentinel.exists()
    assert_identical(before, trainer.state_dict())


def test_resume_stops_at_a_code_running_pickle_instead_of_passing_over_it(evil, recwarn):
    """A hostile newest checkpoint is no torn file: resume raises, leaves it in place, loads nothing
    older and moves nothing aside."""
    path, sentinel = evil
    good = _trainer(path.parent, every=2)
    good.fit(2)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["ckpt_00000002.pt", "ckpt_00000004.pt"]

    trainer = _trainer(path.parent, every=2)
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        trainer.resume()
    assert trainer.step == 0
    assert sorted(p.name for p in path.parent.iterdir()) == names
    assert not [w for w in recwarn if "moved aside" in str(w.message)]
    assert not sentinel.exists()


def test_run_py_refuses_a_code_running_checkpoint_with_one_line(evil, tmp_path):
    path, sentinel = evil
    proc = subprocess.run(
        [sys.executable, "experiments/run.py", "experiment=gmm8", "mode=sample", f"ckpt={path}"]
        + ["logger=none", "sample.num=4", "solver=em", "solver.steps=2", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("run.py:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"run.py: UnsafeCheckpointError: checkpoint {path} cannot be read safely")
    assert "python -m sde_gen.files.convert" in errors[0]
    assert not sentinel.exists()


def test_refusal_names_the_global_without_torchs_scanner(evil, monkeypatch):
    """torch < 2.5 has no get_unsafe_globals_in_checkpoint: torch's message names the global (it
    writes builtins without their module)."""
    path, sentinel = evil
    monkeypatch.delattr(torch.serialization, "get_unsafe_globals_in_checkpoint", raising=False)
    with pytest.raises(UnsafeCheckpointError, match=REFUSED.replace(r"builtins\.exec", "exec")) as info:
        read_checkpoint(path)
    assert info.value.refers in (["posix.system"], ["exec"])
    assert not sentinel.exists()


def test_torn_and_garbage_files_keep_their_message_without_torchs_advice(tmp_path):
    """Garbage also fails torch's weights-only check, but it is no file to convert: the old message,
    on one line, without torch's advice to reload with weights_only=False."""
    path = tmp_path / "ckpt_00000001.pt"
    path.write_bytes(b"\x00\x13 not a checkpoint" * 10)
    with pytest.raises(sg.CheckpointError) as info:
        read_checkpoint(path)
    msg = str(info.value)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert msg.startswith(f"checkpoint {path} cannot be read (UnpicklingError: ")
    assert msg.endswith("it is truncated, corrupt or not a sde_gen checkpoint")
    assert "weights_only" not in msg and "\n" not in msg


# -- converting a trusted old checkpoint -------------------------------------------------------------------


def _old_style(trainer, path):
    """``trainer``'s checkpoint as an older writer might have left it: sde_gen 0.1's data order at
    the top level with numpy values, numpy scalars, a tuple, and a key the trainer does not write."""
    state = copy.deepcopy(trainer.state_dict())
    data = state.pop("data")
    state.update(data_gen=data["generator"], perm=data["perm"].numpy(), pos=np.int64(data["pos"]))
    state["step"] = np.int64(state["step"])
    state["skipped"] = np.int32(state["skipped"])
    state["torch_rng_ranks"] = tuple(state["torch_rng_ranks"])
    state["optimizer"]["param_groups"][0]["lr"] = np.float64(state["optimizer"]["param_groups"][0]["lr"])
    state["notes"] = np.arange(3)
    torch.save(state, path)
    return path


def test_convert_a_trusted_old_checkpoint_then_resume_bit_identically(tmp_path, capsys):
    original = _trainer()
    original.fit(3)
    state = copy.deepcopy(original.state_dict())
    old = _old_style(original, tmp_path / "old.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"numpy") as info:
        read_checkpoint(old)
    assert any(name.startswith("numpy") for name in info.value.refers)

    new = tmp_path / "new.pt"
    assert cc.main([str(old), str(new), "--yes"]) == 0
    assert "dropped keys a trainer checkpoint does not hold: ['notes']" in capsys.readouterr().err
    safe = torch.load(new, map_location="cpu", weights_only=True)
    assert set(safe) == set(TRAINER_KEYS)

    resumed = _trainer()
    resumed.load_checkpoint(new)
    assert_identical(state, resumed.state_dict())
    original.fit(6)
    resumed.fit(6)
    assert_identical(original.state_dict(), resumed.state_dict())


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stdin", ["not a terminal", "n\n", "\n", "maybe\n"])
def test_convert_refuses_without_yes_and_writes_nothing(evil, tmp_path, monkeypatch, capsys, stdin):
    path, sentinel = evil
    new = tmp_path / "new.pt"
    monkeypatch.setattr(
        sys, "stdin", io.StringIO("y\n") if stdin == "not a terminal" else FakeTerminal(stdin)
    )
    assert cc.main([str(path), str(new)]) == 1
    err = capsys.readouterr().err
    assert "WARNING: loading" in err and "runs any code it contains" in err
    assert "posix.system" in err or "builtins.exec" in err
    assert "nothing written" in err
    assert not new.exists() and not sentinel.exists()
    assert sorted(p.name for p in new.parent.iterdir()) == ["evil"]


def test_convert_asks_a_person_and_converts_on_yes(tmp_path, monkeypatch, capsys):
    trainer = _trainer()
    trainer.fit(1)
    old = _old_style(trainer, tmp_path / "old.pt")
    monkeypatch.setattr(sys, "stdin", FakeTerminal("yes\n"))
    assert cc.main([str(old), str(tmp_path / "new.pt")]) == 0
    assert "Load it with full unpickling? [y/N]" in capsys.readouterr().err
    resumed = _trainer()
    resumed.load_checkpoint(tmp_path / "new.pt")
    assert_identical(trainer.state_dict(), resumed.state_dict())


def test_convert_refuses_what_it_cannot_convert_and_writes_nothing(tmp_path, capsys):
    trainer = _trainer()
    trainer.fit(1)
    state = trainer.state_dict()
    state["data"]["pos"] = fractions.Fraction(1, 3)
    torch.save(state, tmp_path / "old.pt")
    assert cc.main([str(tmp_path / "old.pt"), str(tmp_path / "new.pt"), "--yes"]) == 1
    err = capsys.readouterr().err
    assert "cannot convert" in err and "['data']['pos']" in err and "fractions.Fraction" in err
    assert not (tmp_path / "new.pt").exists()

    torch.save({"weights": np.zeros(3)}, tmp_path / "foreign.pt")  # no trainer checkpoint at all
    assert cc.main([str(tmp_path / "foreign.pt"), str(tmp_path / "new.pt"), "--yes"]) == 1
    assert "is not a sde_gen trainer checkpoint" in capsys.readouterr().err
    assert cc.main([str(tmp_path / "old.pt"), str(tmp_path / "old.pt"), "--yes"]) == 1
    assert "NEW must differ from OLD" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.pt", "old.pt"]


def test_convert_command_line_refuses_when_stdin_is_not_a_terminal(evil, tmp_path):
    path, sentinel = evil
    new = tmp_path / "new.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "sde_gen.files.convert", str(path), str(new)],
        cwd=ROOT,
        input="y\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "pass --yes" in proc.stderr and "nothing written" in proc.stderr
    assert not new.exists() and not sentinel.exists()
