"""hydra/launcher=slurm and hydra/launcher=local (hydra-submitit-launcher, conf/hydra/launcher/): the
configs compose with our values and take the user's overrides, the SLURM launcher writes the sbatch
array it would submit (to a stand-in ``sbatch``; no cluster here), and a tiny sweep runs, and resumes,
through submitit's local executor."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e .[slurm]")
import submitit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
import test_run  # noqa: E402

from experiments import run as run_script  # noqa: E402, F401  (registers the config schema)

CONF = str(ROOT / "conf")
PLUGIN = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"
TINY = ["experiment=gmm8", "solver=em", "solver.steps=4", *test_run.TINY]


def hydra_cfg(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def _task(cfg):  # the task function a launcher is set up with; never run here
    raise AssertionError("not run")


# -- composing -------------------------------------------------------------------------------------


def test_slurm_launcher_composes_with_our_defaults(tmp_path):
    launcher = hydra_cfg("hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}").hydra.launcher
    assert launcher._target_ == f"{PLUGIN}.SlurmLauncher"
    expected = {
        "partition": None,
        "timeout_min": 240,
        "nodes": 1,
        "gpus_per_node": 1,
        "tasks_per_node": 1,
        "cpus_per_task": 8,
        "mem_gb": 32,
        "array_parallelism": 64,
        "signal_delay_s": 120,
        "max_num_timeout": 3,
        "setup": None,
    }
    assert {k: launcher[k] for k in expected} == expected
    assert launcher.submitit_folder == f"{tmp_path}/.submitit/%j"
    assert launcher.account is None and launcher.qos is None  # the plugin's keys stay available


def test_user_overrides_reach_the_slurm_launcher():
    launcher = hydra_cfg(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.tasks_per_node=4",
        "hydra.launcher.nodes=2",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.account=proj",
        "hydra.launcher.setup=[module load cuda]",
        "+hydra.launcher.additional_parameters.mail-type=END",
    ).hydra.launcher
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 4, 4)
    assert (launcher.nodes, launcher.timeout_min, launcher.account) == (2, 30, "proj")
    assert list(launcher.setup) == ["module load cuda"]
    assert dict(launcher.additional_parameters) == {"mail-type": "END"}
    assert launcher.cpus_per_task == 8  # what was not overridden keeps our value


def test_local_launcher_composes_and_the_default_launcher_is_unchanged(tmp_path):
    local = hydra_cfg("hydra/launcher=local", f"hydra.sweep.dir={tmp_path}").hydra.launcher
    assert local._target_ == f"{PLUGIN}.LocalLauncher"
    assert (local.gpus_per_node, local.tasks_per_node, local.cpus_per_task) == (0, 1, 1)
    assert local.submitit_folder == f"{tmp_path}/.submitit/%j"
    plain = hydra_cfg().hydra.launcher
    assert plain._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


# -- the SLURM launcher, up to sbatch --------------------------------------------------------------


def test_slurm_launcher_submits_one_sbatch_array_for_a_sweep(tmp_path, monkeypatch):
    # Stand-ins for SLURM's commands: submitit checks that srun exists; sbatch keeps the script.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bindir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" "{tmp_path}/sbatch.sh"\necho "Submitted batch job 4242"\n'
    )
    for f in bindir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    # The launcher waits for the jobs' results: answer at once instead of polling sacct.
    monkeypatch.setattr(submitit.SlurmJob, "results", lambda self: [f"result of {self.job_id}"])

    sweep = tmp_path / "sweep"
    cfg = hydra_cfg(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.tasks_per_node=4",
        "+hydra.launcher.additional_parameters.mail-type=END",
        f"hydra.sweep.dir={sweep}",
    )
    launcher = Plugins.instance().instantiate_launcher(hydra_context=None, task_function=_task, config=cfg)
    assert type(launcher).__name__ == "SlurmLauncher"
    jobs = [["sde=vp"], ["sde=subvp"], ["sde=ve"]]
    assert launcher.launch(jobs, initial_job_idx=0) == [f"result of 4242_{i}" for i in range(3)]

    script = (tmp_path / "sbatch.sh").read_text()
    logs = f"{sweep}/.submitit/%A_%a"
    for line in (
        "#SBATCH --array=0-2%3",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --nodes=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=240",
        "#SBATCH --mail-type=END",
        f"#SBATCH --output={logs}/%A_%a_0_log.out",
    ):
        assert line in script.splitlines(), f"{line!r} not in\n{script}"
    assert any(s.startswith("#SBATCH --signal=") and s.endswith("@120") for s in script.splitlines())
    srun = [s for s in script.splitlines() if s.startswith("srun ")]
    assert len(srun) == 1 and f"{logs}/%A_%a_%t_log.out" in srun[0] and "submitit.core._submit" in srun[0]
    # One pickle per member: this launcher with that member's overrides and job number.
    for i, overrides in enumerate(jobs):
        pickled = submitit.core.utils.DelayedSubmission.load(
            sweep / ".submitit" / f"4242_{i}" / f"4242_{i}_submitted.pkl"
        )
        assert type(pickled.function).__name__ == "SlurmLauncher"
        assert pickled.args[0] == overrides and pickled.args[2] == i


# -- a real sweep through submitit's local executor ------------------------------------------------


def _script(*args, cwd):
    # A bounded time limit: submitit's local jobs outlive their launcher if this test is interrupted.
    args = (*args, "hydra.launcher.timeout_min=5")
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    res = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if res.returncode != 0:
        raise AssertionError(f"run.py failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def test_a_sweep_runs_and_resumes_through_the_local_launcher(tmp_path):
    sweep = tmp_path / "sweep"
    res = _script("-m", "hydra/launcher=local", "sde=vp,ve", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "Submitit 'local' sweep output dir" in res.stdout + res.stderr
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["step"] == 3 and math.isfinite(metrics["test_nll_nats"])
    rows = [r for r in (sweep / "summary.md").read_text().splitlines() if r.startswith(("| 0", "| 1"))]
    assert len(rows) == 2 and "sde=vp" in rows[0] and "sde=ve" in rows[1]
    first = set((sweep / ".submitit").iterdir())
    assert len([d for d in first if d.name.isdigit()]) == 2  # a log folder per job (named by its id)

    # The same sweep directory again, with more steps: job 0 continues from its checkpoint.
    tiny = [o for o in TINY if not o.startswith("train.steps")]
    _script(
        "-m",
        "hydra/launcher=local",
        "sde=vp",
        *tiny,
        "train.steps=5",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    (new,) = set((sweep / ".submitit").iterdir()) - first
    log = (new / f"{new.name}_0_log.out").read_text()
    assert f"resumed from step 3 in {sweep / '0' / 'checkpoints'}" in log
    assert json.loads((sweep / "0" / "metrics.json").read_text())["step"] == 5
