"""Crash safety of training: `python experiments/run.py mode=train ...` killed with SIGKILL at random
moments (during start-up, mid-training, while a checkpoint is being written) and started again with
exactly the same command resumes from its newest checkpoint, loses at most the steps since that
checkpoint, and ends with the model, EMA, optimiser and random-number states bit-identical to those of
a run that was never killed (CPU, same seed).

Real subprocesses, real SIGKILL: the run's stdout is read by a thread so that kills can be timed
against its progress lines (``step k/N ...``, printed every N/20 steps when stderr is not a terminal).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from sde_gen.files import CKPT_PATTERN

ROOT = Path(__file__).resolve().parents[2]

STEPS = 1500  # ~3 s of training on one core, after ~2.5 s of start-up
CKPT_EVERY = 5  # a checkpoint write every few milliseconds: kills land on writes too
KEEP = 3  # the Trainer's default keep (run.py does not expose it)
PROGRESS = re.compile(r"^step (\d+)/(\d+)\s")
RESUMED = re.compile(r"^resumed from step (\d+) in ")


def command(run_dir: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "experiments" / "run.py"),
        "mode=train",
        "experiment=gmm8",
        "logger=none",
        "threads=1",
        f"hydra.run.dir={run_dir}",
        f"train.steps={STEPS}",
        "train.batch_size=64",
        "train.warmup=20",  # then the cosine decay to 0 at STEPS: the schedule must resume too
        f"train.ckpt_every={CKPT_EVERY}",
        "model.hidden=32",
        "model.depth=2",
        "model.embed_dim=16",
    ]


class Job:
    """One run of the command; a thread collects its output lines as they come."""

    def __init__(self, run_dir: Path, cwd: Path):
        # CPU only (no device is visible to the run), one thread, output unbuffered.
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
        env["CUDA_VISIBLE_DEVICES"] = ""
        env.pop("WANDB_SWEEP_ID", None)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            command(run_dir),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # a pipe, not a terminal: the progress lines are printed
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self.first_progress = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if PROGRESS.match(line):
                self.first_progress.set()
        self.first_progress.set()  # end of output: nobody waits for a line that will not come

    def wait(self, timeout: float = 120) -> int:
        rc = self.proc.wait(timeout)
        self.reader.join(10)
        return rc

    def kill(self) -> bool:
        """SIGKILL; returns whether the process was still running when it was sent."""
        alive = self.proc.poll() is None
        if alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        rc = self.wait(30)
        if alive:
            assert rc == -signal.SIGKILL, self.output()
        return alive

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def progress_steps(self) -> list[int]:
        return [int(m.group(1)) for m in map(PROGRESS.match, self.lines) if m]

    def resumed_from(self) -> int | None:
        found = [int(m.group(1)) for m in map(RESUMED.match, self.lines) if m]
        assert len(found) <= 1, self.output()
        return found[0] if found else None


@pytest.fixture
def jobs():
    started: list[Job] = []
    yield started
    for job in started:  # a failed assertion must not leave a run behind
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait(30)


def checkpoints(run_dir: Path) -> tuple[dict[int, Path], list[str]]:
    """{step: path} of the files the Trainer takes for checkpoints, and the names of all others."""
    d = run_dir / "checkpoints"
    if not d.is_dir():
        return {}, []
    ckpts, others = {}, []
    for p in d.iterdir():
        m = CKPT_PATTERN.match(p.name)
        if m:
            ckpts[int(m.group(1))] = p
        else:
            others.append(p.name)
    return ckpts, sorted(others)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_identical(a, b, where: str = "checkpoint") -> None:
    """Equal structure, equal Python values, tensors equal bit for bit (dtype and shape included)."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert a.keys() == b.keys(), (where, sorted(a, key=str), sorted(b, key=str))
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), (
            f"{where} differs by up to {(a.double() - b.double()).abs().max().item():.3g}"
        )
    else:
        assert a == b, (where, a, b)


def test_sigkill_at_random_moments_then_resume_is_exact(tmp_path, jobs):
    rng = random.Random(20240607)

    # The run that is never killed.
    ref_dir = tmp_path / "reference"
    job = Job(ref_dir, tmp_path)
    jobs.append(job)
    assert job.wait() == 0, job.output()
    assert job.resumed_from() is None and job.progress_steps()[-1] == STEPS
    train_seconds = float(json.loads((ref_dir / "metrics.json").read_text())["train_seconds"])
    ref_ckpts, ref_others = checkpoints(ref_dir)
    assert sorted(ref_ckpts) == [STEPS - 2 * CKPT_EVERY, STEPS - CKPT_EVERY, STEPS] and ref_others == []
    param_names = load(ref_ckpts[STEPS])["model"].keys()

    # The same command in another directory, killed three times, then let run to the end.
    run_dir = tmp_path / "killed"
    kinds = ["training", "start-up", "writing"]
    newest: int | None = None  # the newest checkpoint on disk: where the next start must resume
    mid_write = 0
    for kind in kinds:
        job = Job(run_dir, tmp_path)
        jobs.append(job)
        stale_tmp = set(checkpoints(run_dir)[1])
        if kind == "start-up":
            time.sleep(rng.uniform(0.2, 1.5))  # importing, composing the config, loading the checkpoint
        else:
            assert job.first_progress.wait(120), job.output()
            if kind == "training":
                time.sleep(rng.uniform(0.05, 0.25) * train_seconds)
            else:  # kill as soon as a checkpoint is seen being written (a temporary file exists)
                time.sleep(rng.uniform(0.0, 0.1) * train_seconds)
                deadline = time.monotonic() + 5
                ckpt_dir = run_dir / "checkpoints"
                while time.monotonic() < deadline and job.proc.poll() is None:
                    names = os.listdir(ckpt_dir) if ckpt_dir.is_dir() else []
                    if {n for n in names if n.endswith(".tmp")} - stale_tmp:
                        break
        assert job.kill(), f"the run ended before the {kind} kill:\n{job.output()}"

        # Resumed (or started afresh) from the checkpoint that was newest at its start.
        resumed, printed = job.resumed_from(), job.progress_steps()
        if newest is None:
            assert resumed is None, job.output()
        elif printed:  # it got as far as training, so it said where it resumed from
            assert resumed == newest, (kind, resumed, newest, job.output())
        elif resumed is not None:
            assert resumed == newest, (kind, resumed, newest, job.output())
        if printed and newest is not None:
            assert min(printed) > newest, job.output()  # it continued, it did not start over

        # What the kill left: every file named like a checkpoint is a whole one; only temporary
        # files besides (a write cut short), which the Trainer's name pattern does not take.
        ckpts, others = checkpoints(run_dir)
        for step, path in ckpts.items():
            state = load(path)  # not torn
            assert state["step"] == step and state["model"].keys() == param_names
        for name in others:
            assert name.startswith(".ckpt_") and name.endswith(".tmp"), others
        mid_write += bool(set(others) - stale_tmp)
        assert len(ckpts) <= KEEP + 1, sorted(ckpts)  # a kill between a write and the pruning: one more
        if ckpts:
            assert newest is None or max(ckpts) >= newest
            # Lost work: at most the steps since the newest checkpoint, fewer than CKPT_EVERY + 1
            # (the progress line of step k is printed just before checkpoint k is written).
            if printed:
                assert max(printed) - max(ckpts) <= CKPT_EVERY, (max(printed), sorted(ckpts))
            newest = max(ckpts)
        else:
            assert not printed and newest is None, job.output()
        print(
            f"{kind} kill: steps printed {printed[-1:] or '-'}, newest checkpoint {newest}, others {others}"
        )

    assert newest is not None and 0 < newest < STEPS  # some kills landed mid-training
    print(f"kills that left a checkpoint half-written: {mid_write} of {len(kinds)}")

    # The same command once more, to the end.
    job = Job(run_dir, tmp_path)
    jobs.append(job)
    assert job.wait() == 0, job.output()
    assert job.resumed_from() == newest, job.output()
    assert min(job.progress_steps()) > newest and job.progress_steps()[-1] == STEPS
    ckpts, others = checkpoints(run_dir)
    assert sorted(ckpts) == sorted(ref_ckpts), (sorted(ckpts), sorted(ref_ckpts))
    assert len(ckpts) <= KEEP
    assert others == []  # the half-written files of killed saves were cleared on resume
    # Bit-identical to the run that was never killed: model, EMA, Adam's moments and step counts,
    # the learning rate, the data order and every generator's state, in every checkpoint kept.
    for step in sorted(ref_ckpts):
        a, b = load(ref_ckpts[step]), load(ckpts[step])
        assert {"model", "ema", "optimizer"} <= a.keys()
        assert_identical(a, b, f"ckpt_{step:08d}")
    # The loss curve survives the kills: history.json is rewritten with every checkpoint, and a
    # resumed run keeps it up to the checkpoint it resumed from.
    ref_history = json.loads((ref_dir / "history.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    assert history == ref_history
