"""The checkpoint folder: when it writes, what it keeps, how it recovers from torn files, and
checkpoints of sde_gen 0.1 (the data order at the top level) resuming exactly."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_training import _params, _trainer

import sde_gen as sg
from sde_gen.files import list_checkpoints, read_checkpoint


def _state(step: int) -> dict:
    """The smallest dict read_checkpoint accepts as a trainer checkpoint."""
    return {
        "step": step,
        "model": {"w": torch.full((2,), float(step))},
        "ema": None,
        "optimizer": {},
        "data": {},
        "noise_gen": torch.zeros(1),
    }


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_due_every_n_steps():
    ckpts = sg.Checkpoints("unused", every=3)
    assert [s for s in range(1, 13) if ckpts.due(s)] == [3, 6, 9, 12]
    assert not any(sg.Checkpoints("unused", every=None).due(s) for s in range(1, 100))
    assert all(sg.Checkpoints("unused", every=1).due(s) for s in range(1, 10))


@pytest.mark.parametrize("kw, name", [({"every": 0}, "every"), ({"keep": 0}, "keep")])
def test_bad_arguments_name_themselves(kw, name):
    with pytest.raises(ValueError, match=name):
        sg.Checkpoints("unused", **kw)


def test_rotation_keeps_the_newest_keep(tmp_path):
    ckpts = sg.Checkpoints(tmp_path, every=1, keep=3)
    (tmp_path / "notes.txt").write_text("not a checkpoint")  # other files are left alone
    for step in (1, 2, 5, 10, 11, 123):
        path = ckpts.save(_state(step), step)
        assert path == tmp_path / f"ckpt_{step:08d}.pt"
        assert torch.equal(read_checkpoint(path)["model"]["w"], torch.full((2,), float(step)))
    # The newest 3 by step (not by name length or write time), other files untouched, no .tmp left.
    assert _names(tmp_path) == ["ckpt_00000010.pt", "ckpt_00000011.pt", "ckpt_00000123.pt", "notes.txt"]
    assert [p.name for p in list_checkpoints(tmp_path)] == _names(tmp_path)[:3]


def test_newest_skips_a_torn_newest_file_and_deletes_leftover_tmp_files(tmp_path):
    ckpts = sg.Checkpoints(tmp_path, every=1, keep=5)
    for step in (2, 4, 6):
        ckpts.save(_state(step), step)
    newest = tmp_path / "ckpt_00000006.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # torn
    leftover = tmp_path / ".ckpt_00000008.pt.k2j4.tmp"  # a save killed half-way
    leftover.write_bytes(b"half a checkpoint")
    loaded = []
    with pytest.warns(RuntimeWarning, match=r"ckpt_00000006\.pt cannot be read.*moved aside"):
        got = ckpts.newest(lambda state, path: loaded.append((state["step"], path)))
    assert got == tmp_path / "ckpt_00000004.pt"
    assert loaded == [(4, got)]  # called once, with the state of the file it returns
    assert not leftover.exists()
    assert (tmp_path / "ckpt_00000006.pt.corrupt").exists() and not newest.exists()
    assert _names(tmp_path) == ["ckpt_00000002.pt", "ckpt_00000004.pt", "ckpt_00000006.pt.corrupt"]
    # A second call finds the same one, now without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ckpts.newest(lambda state, path: None) == got


def test_newest_of_only_torn_files_or_of_an_empty_or_missing_folder_is_none(tmp_path):
    called = []
    assert sg.Checkpoints(tmp_path).newest(called.append) is None
    assert sg.Checkpoints(tmp_path / "missing").newest(called.append) is None
    (tmp_path / "ckpt_00000001.pt").write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="ckpt_00000001"):
        assert sg.Checkpoints(tmp_path).newest(called.append) is None
    assert called == []


def test_errors_of_load_itself_propagate(tmp_path):
    ckpts = sg.Checkpoints(tmp_path)
    ckpts.save(_state(3), 3)

    def load(state, path):
        raise sg.CheckpointError(f"checkpoint {path} was written for another model")

    with pytest.raises(sg.CheckpointError, match="another model"):
        ckpts.newest(load)
    assert _names(tmp_path) == ["ckpt_00000003.pt"]  # a readable file is not moved aside


def _to_0_1_layout(state: dict) -> dict:
    """A checkpoint as sde_gen 0.1 wrote it: the data order at the top level, and an EMA state
    without warm-up (only decay and shadow)."""
    old = {k: v for k, v in state.items() if k != "data"}
    old["data_gen"], old["perm"], old["pos"] = (state["data"][k] for k in ("generator", "perm", "pos"))
    old["ema"] = {"decay": state["ema"]["decay"], "shadow": state["ema"]["shadow"]}
    return old


def test_an_sde_gen_0_1_checkpoint_resumes_like_a_straight_run(tmp_path):
    """The 0.1 trainer had no EMA warm-up: its runs are the ema="plain" ones. A 0.1 checkpoint of
    step 7, loaded into a trainer built with today's defaults (EMA with warm-up), continues that
    plain average and ends, at step 20, bit-identical to a run that never stopped."""
    straight = _trainer(tmp_path / "straight", ema="plain")
    straight.fit(20)

    first = _trainer(tmp_path / "first", ema="plain")
    first.fit(7)
    new = read_checkpoint(tmp_path / "first" / "ckpt_00000007.pt")
    old = _to_0_1_layout(new)
    assert "data" not in old and "num_updates" not in old["ema"]
    torch.save(old, tmp_path / "old.pt")

    upgraded = read_checkpoint(tmp_path / "old.pt")
    assert upgraded.keys() == new.keys()
    for k in ("generator", "perm"):
        assert torch.equal(upgraded["data"][k], new["data"][k])
    assert upgraded["data"]["pos"] == new["data"]["pos"]

    resumed = _trainer(tmp_path / "resumed")  # EMA(model, 0.9) with warm-up, as built today
    resumed.load_checkpoint(tmp_path / "old.pt")
    assert resumed.step == 7
    assert (resumed.ema.warmup, resumed.ema.num_updates, resumed.ema.current_decay()) == (False, 7, 0.9)
    resumed.fit(20)
    a, b = _params(straight), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k]) for k in a)
    for i, st in straight.optimizer.state_dict()["state"].items():
        for k, v in st.items():
            assert torch.equal(v, resumed.optimizer.state_dict()["state"][i][k]), (i, k)
    assert torch.equal(straight.noise_gen.get_state(), resumed.noise_gen.get_state())
    assert torch.equal(straight.data.generator.get_state(), resumed.data.generator.get_state())


def test_a_current_checkpoint_in_the_0_1_layout_with_a_warmup_ema_resumes_exactly(tmp_path):
    """Only the data order in the old place (the layout read_checkpoint upgrades): with the EMA
    state of today, the resumed run equals the straight one, warm-up and all."""
    straight = _trainer(tmp_path / "straight")
    straight.fit(15)
    first = _trainer(tmp_path / "first")
    first.fit(6)
    state = read_checkpoint(tmp_path / "first" / "ckpt_00000006.pt")
    old = {k: v for k, v in state.items() if k != "data"}
    old.update(data_gen=state["data"]["generator"], perm=state["data"]["perm"], pos=state["data"]["pos"])
    torch.save(old, tmp_path / "old.pt")
    resumed = _trainer(None)
    resumed.load_checkpoint(tmp_path / "old.pt")
    assert resumed.ema.warmup and resumed.ema.num_updates == 6
    resumed.fit(15)
    a, b = _params(straight), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k]) for k in a)


class _KilledAfterCheckpoint(sg.Callback):
    """Stands for a SIGKILL that lands right after the checkpoint of step ``at`` is on disk."""

    def __init__(self, at: int):
        self.at = at

    def on_checkpoint(self, trainer, path) -> None:
        if trainer.step == self.at:
            raise KeyboardInterrupt


def test_a_kill_right_after_a_checkpoint_leaves_the_history_of_every_step_up_to_it(tmp_path):
    """The history file is written before each checkpoint, not after it: a process killed just after
    the checkpoint of step 10 landed (and before anything else ran) resumes from step 10 with every row
    up to 10 on disk, and ends with the history of a run that never stopped (the rows of steps 1-20,
    each once, with the same losses)."""
    straight = _trainer(tmp_path / "straight", ckpt_every=5)
    straight.fit(20)

    path = tmp_path / "history.json"
    killer = _KilledAfterCheckpoint(10)  # first: no callback runs after the checkpoint lands
    first = _trainer(tmp_path / "run", ckpt_every=5, callbacks=[killer, sg.HistoryFile(path)])
    with pytest.raises(KeyboardInterrupt):
        first.fit(20)
    assert [h["step"] for h in sg.read_history(path)] == [h["step"] for h in straight.history[:10]]

    history = sg.HistoryFile(path)
    resumed = _trainer(tmp_path / "run", ckpt_every=5, callbacks=[history])
    assert resumed.resume() and resumed.step == 10
    resumed.fit(20)
    history.finish(resumed)
    rows = sg.read_history(path)
    assert [h["step"] for h in rows] == [h["step"] for h in straight.history]
    assert [h["loss"] for h in rows] == [h["loss"] for h in straight.history]
