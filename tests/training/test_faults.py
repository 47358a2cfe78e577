"""Faults in training: torn or foreign checkpoints, non-finite losses and gradients.

The SIGKILL-and-restart test with a real subprocess is tests/test_kill_resume.py.
"""

from __future__ import annotations

import pytest
import torch
from test_training import _params, _trainer

import sde_gen as sg


def _state(trainer):
    s = trainer.state_dict()
    return {"model": s["model"], "ema": s["ema"]["shadow"], "adam": s["optimizer"]["state"]}


def _assert_same(a, b):
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for i in a["adam"]:
        for k in a["adam"][i]:
            assert torch.equal(a["adam"][i][k], b["adam"][i][k]), ("adam", i, k)


# -- checkpoints that cannot be used ----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not_a_trainer"])
def test_unreadable_checkpoint_names_the_file_and_changes_nothing(tmp_path, damage):
    trainer = _trainer(tmp_path, keep=5)
    trainer.fit(2)
    path = trainer.save_checkpoint(tmp_path / "ckpt_00000099.pt")
    raw = path.read_bytes()
    path.write_bytes(
        {
            "truncated": raw[: len(raw) // 2],
            "garbage": b"\x00\x13 not a checkpoint" * 10,
            "empty": b"",
            "not_a_trainer": b"",
        }[damage]
    )
    if damage == "not_a_trainer":
        torch.save({"weights": torch.zeros(3)}, path)
    before = _state(trainer)
    with pytest.raises(sg.CheckpointError, match=r"checkpoint .*ckpt_00000099\.pt"):
        trainer.load_checkpoint(path)
    _assert_same(before, _state(trainer))
    assert trainer.step == 2


def test_checkpoint_of_another_model_is_refused_before_loading(tmp_path):
    from test_training import TinyNet

    trainer = _trainer(tmp_path)
    trainer.fit(1)
    other = sg.ScoreModel(TinyNet(hidden=16), sg.VPSDE())
    torch.save({**trainer.state_dict(), "model": other.state_dict()}, tmp_path / "other.pt")
    before = _state(trainer)
    with pytest.raises(sg.CheckpointError, match=r"other\.pt was written for another model.*body"):
        trainer.load_checkpoint(tmp_path / "other.pt")
    _assert_same(before, _state(trainer))


def test_resume_passes_over_a_torn_newest_checkpoint_to_the_previous_good_one(tmp_path):
    """keep=N leaves N checkpoints; a torn newest one is moved aside (not deleted), the previous one
    is loaded, and the run ends exactly where a run that never broke ends."""
    reference = _trainer(tmp_path / "ref")
    reference.fit(10)

    broken = _trainer(tmp_path / "run", ckpt_every=2, keep=3)
    broken.fit(6)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["ckpt_00000002.pt", "ckpt_00000004.pt", "ckpt_00000006.pt"]
    newest = tmp_path / "run" / "ckpt_00000006.pt"
    newest.write_bytes(newest.read_bytes()[:1000])

    resumed = _trainer(tmp_path / "run", ckpt_every=2, keep=3)
    with pytest.warns(RuntimeWarning, match=r"ckpt_00000006\.pt cannot be read.*moved aside"):
        assert resumed.resume()
    assert resumed.step == 4
    assert (tmp_path / "run" / "ckpt_00000006.pt.corrupt").exists()
    resumed.fit(10)
    for k, v in _params(reference).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


# -- non-finite losses and gradients ------------------------------------------------------------------


class NaNAt:
    """A transform that poisons one value of the batches drawn at the given calls (0-based)."""

    def __init__(self, calls):
        self.calls, self.n = set(calls), 0

    def __call__(self, batch, generator):
        batch = batch + 0.01 * torch.rand(batch.shape, generator=generator, dtype=batch.dtype)
        if self.n in self.calls:
            batch[0, 0] = float("nan")
        self.n += 1
        return batch


def test_nan_batch_stops_with_step_and_cause_after_keeping_the_last_good_state(tmp_path):
    trainer = _trainer(tmp_path, transform=NaNAt({6}), accumulate=1, ckpt_every=100)
    trainer.fit(6)
    good = _state(trainer)
    with pytest.raises(FloatingPointError, match=r"loss is not finite.*at step 7.*batch contains NaN") as e:
        trainer.fit(10)
    assert "ckpt_00000006.pt" in str(e.value)
    assert trainer.step == 6
    _assert_same(good, _state(trainer))  # the failed step changed nothing

    # The checkpoint is the state before the failed step, random streams included: resuming from it
    # draws the same poisoned batch again, and with nonfinite="skip" the run goes past it.
    again = _trainer(tmp_path, transform=NaNAt(set()), accumulate=1, nonfinite="skip")
    assert again.resume() and again.step == 6
    _assert_same(good, _state(again))
    reference = _trainer(tmp_path / "ref", transform=NaNAt(set()), accumulate=1)
    reference.fit(6)
    x_ref = reference.data.next(reference.device, reference.noise_gen)
    x_again = again.data.next(again.device, again.noise_gen)
    assert torch.equal(x_ref, x_again)


def test_infinite_gradient_with_finite_loss_names_the_backward_pass(tmp_path):
    trainer = _trainer(tmp_path, accumulate=1)
    trainer.fit(3)
    param = next(trainer.model.parameters())
    handle = param.register_hook(lambda g: g * float("inf"))
    with pytest.raises(FloatingPointError, match=r"gradient norm is not finite.*at step 4.*backward pass"):
        trainer.fit(5)
    handle.remove()
    assert trainer.step == 3 and (tmp_path / "ckpt_00000003.pt").exists()


def test_skip_mode_skips_exactly_the_poisoned_batches_and_counts_them(tmp_path):
    poisoned = {3, 7, 8}  # calls 3, 7 and 8 are steps 4, 8 and 9
    trainer = _trainer(tmp_path, transform=NaNAt(poisoned), accumulate=1, nonfinite="skip", ckpt_every=5)
    states = {}

    class Watch(sg.Callback):
        def on_step(self, t, metrics):
            states[metrics["step"]] = (_state(t), metrics)

    trainer.add_callbacks(Watch())
    trainer.fit(12)
    assert trainer.skipped == 3
    assert sorted(s for s, (_, m) in states.items() if m["skipped"]) == [4, 8, 9]
    for s in (4, 8, 9):  # a skipped step leaves the weights, the EMA and Adam's moments as they were
        _assert_same(states[s - 1][0], states[s][0])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    # The count is checkpointed with the rest.
    resumed = _trainer(tmp_path, transform=NaNAt(set()), accumulate=1, nonfinite="skip")
    assert resumed.resume() and resumed.skipped == 3


def test_skip_mode_gives_up_after_max_skips_in_a_row(tmp_path):
    trainer = _trainer(
        tmp_path,
        transform=NaNAt(range(2, 100)),
        accumulate=1,
        nonfinite=sg.NonFinite("skip", max_skips=3),
        ckpt_every=100,
    )
    with pytest.raises(FloatingPointError, match=r"for 4 batches in a row \(max_skips=3\) at step 6"):
        trainer.fit(20)
    assert trainer.skipped == 3 and trainer.step == 5


@pytest.mark.parametrize(
    "nonfinite, match",
    [("ignore", "nonfinite"), (lambda: sg.NonFinite("skip", max_skips=-1), "max_skips")],
)
def test_bad_fault_options(tmp_path, nonfinite, match):
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, nonfinite=nonfinite() if callable(nonfinite) else nonfinite)


# -- through experiments/run.py ------------------------------------------------------------------------


@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_run_py_nonfinite_option(tmp_path, monkeypatch, nonfinite):
    """``train.nonfinite`` and ``train.keep`` reach the trainer: a NaN row in the training data
    stops the run naming the step (raise) or is skipped and counted in metrics.json (skip)."""
    from cli import TINY, cfg_of

    from experiments import run as run_script

    build = run_script.build

    def poisoned(*args, **kwargs):
        built = build(*args, **kwargs)
        built.trainer.data.data[::7] = float("nan")  # the training set: every batch of 64 holds some
        return built

    monkeypatch.setattr(run_script, "build", poisoned)
    cfg = cfg_of(
        "experiment=gmm8", "model.hidden=16", "model.depth=1", "train.batch_size=64", *TINY,
        "train.steps=6", "train.keep=2", "train.ckpt_every=1", f"train.nonfinite={nonfinite}",
        "train.max_skips=100", "mode=train",
    )  # fmt: skip
    if nonfinite == "raise":
        with pytest.raises(
            FloatingPointError, match=r"at step 1: likely cause: the training batch contains NaN"
        ):
            run_script.execute(cfg, out_dir=tmp_path)
        assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["ckpt_00000000.pt"]
    else:
        metrics = run_script.execute(cfg, out_dir=tmp_path)
        assert metrics["skipped_steps"] == 6 and metrics["step"] == 6
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
            "ckpt_00000005.pt",
            "ckpt_00000006.pt",
        ]
