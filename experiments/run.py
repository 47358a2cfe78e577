"""Train, sample and evaluate a score model, configured with Hydra (configs in conf/).

    python experiments/run.py sde=vp solver=pc                  # digits, < 10 min on 2 CPU cores
    python experiments/run.py experiment=gmm8 sde=ve solver=ode # a 2-D toy run
    python experiments/run.py -m sde=vp,subvp,ve solver=em,pc,ode logger=none

Outputs go to Hydra's run directory (``hydra.run.dir``); running the same command with the same
``hydra.run.dir`` resumes training from its checkpoints. See docs/usage.md.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

EXPERIMENTS = str(Path(__file__).resolve().parent)
sys.path.insert(0, EXPERIMENTS)
# Jobs started by submitit (hydra/launcher=slurm or local) unpickle this script's functions in a
# fresh interpreter that imports pipeline and logging_callbacks; it inherits this environment.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (EXPERIMENTS, os.environ.get("PYTHONPATH")) if p)

import pipeline  # noqa: E402

import sde_gen as sg  # noqa: E402

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# -- the typed schema ------------------------------------------------------------------------------
# Hydra checks every composed value against these types (``train.lr=abc`` fails while composing);
# ``validate`` adds the ranges and choices a type cannot say (``train.steps=-1``, ``solver.steps=0``).


class Mode(Enum):
    train = "train"
    sample = "sample"
    likelihood = "likelihood"
    all = "all"


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 5e-4
    warmup: int = 200
    cosine_decay: bool = True
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    weighting: str = "std2"
    importance_sampling: bool = False
    parameterization: str = "noise"
    eps: float = 1e-5
    ckpt_every: int | None = 500
    keep: int = 3
    nonfinite: str = "raise"
    max_skips: int = 10
    eval_every: int | None = None
    eval_n: int = 256


@dataclass
class SampleConfig:
    num: int = 64
    eps: float = 1e-3


@dataclass
class LikelihoodConfig:
    n: int | None = None
    divergence: str = "auto"
    num_probes: int = 1
    method: str = "dopri5"
    steps: int | None = None
    rtol: float = 1e-5
    atol: float = 1e-5
    eps: float = 1e-5
    repeats: int = 1
    batch_size: int = 500


@dataclass
class LoggerConfig:
    name: str = "wandb"
    project: str = "sde_gen"
    entity: str | None = None
    mode: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    log_every: int = 1


@dataclass
class Config:
    sde: Any = MISSING
    solver: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    mode: Mode = Mode.all
    seed: int = 0
    ckpt: str | None = None
    name: str = "run"
    threads: int | None = None
    progress: bool | None = None
    device: str = "auto"


ConfigStore.instance().store(name="schema", node=Config)


class ConfigError(ValueError):
    """A configuration value out of its range; the message names the key, the value and what is allowed."""


TOY = ("gmm8", "checkerboard", "moons", "swissroll", "rings")
TARGETS = {
    "sde": sg.SDE,
    "solver": sg.Solver,
    "model": torch.nn.Module,
}


def _bad(key: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Check ranges and choices before any work; raise :class:`ConfigError` naming key, value, allowed."""

    def integer(key, low, optional=False):
        v = OmegaConf.select(cfg, key)
        if v is None and optional:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise _bad(key, v, f"an integer >= {low}" + (" or null" if optional else ""))

    def positive(key, optional=False, below=None):
        v = OmegaConf.select(cfg, key)
        if v is None and optional:
            return
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        if not ok or (below is not None and v >= below):
            rng = "a finite number > 0" + (f" and < {below}" if below is not None else "")
            raise _bad(key, v, rng + (" or null" if optional else ""))

    def choice(key, allowed):
        v = OmegaConf.select(cfg, key)
        if v not in allowed:
            raise _bad(key, v, f"one of {list(allowed)}")

    for key in ("train.steps", "train.warmup"):
        integer(key, 0)
    for key in ("train.batch_size", "train.eval_n", "sample.num", "likelihood.num_probes"):
        integer(key, 1)
    for key in ("likelihood.repeats", "likelihood.batch_size", "logger.log_every", "train.keep"):
        integer(key, 1)
    integer("train.max_skips", 0)
    integer("seed", 0)
    for key in ("train.ckpt_every", "train.eval_every", "likelihood.n", "threads"):
        integer(key, 1, optional=True)
    for key in (
        "train.lr",
        "train.eps",
        "sample.eps",
        "likelihood.rtol",
        "likelihood.atol",
        "likelihood.eps",
    ):
        positive(key)
    positive("train.grad_clip", optional=True)
    T = cfg.sde.get("T", 1.0) if isinstance(cfg.sde, DictConfig) else 1.0
    T = T if isinstance(T, (int, float)) and T > 0 else None  # a bad T is the SDE's own error
    for key in ("train.eps", "sample.eps", "likelihood.eps"):  # the times run over [eps, T]
        positive(key, below=T)
    for section, schema in (
        ("train", TrainConfig),
        ("sample", SampleConfig),
        ("likelihood", LikelihoodConfig),
        ("logger", LoggerConfig),
    ):
        unknown = sorted(set(cfg[section]) - {f.name for f in fields(schema)})
        if unknown:
            raise _bad(
                f"{section}.{unknown[0]}",
                cfg[section][unknown[0]],
                f"a key of {section}: {[f.name for f in fields(schema)]}",
            )
    v = cfg.train.ema_decay
    if not 0.0 <= v < 1.0:
        raise _bad("train.ema_decay", v, "a number in [0, 1)")
    choice("train.weighting", list(sg.WEIGHTINGS))
    choice("train.parameterization", list(sg.PARAMETERIZATIONS))
    if cfg.train.importance_sampling and cfg.train.weighting != "likelihood":
        raise _bad(
            "train.importance_sampling",
            True,
            f"only with train.weighting=likelihood (got {cfg.train.weighting})",
        )
    choice("likelihood.divergence", ["auto", "exact", "hutchinson"])
    choice("train.nonfinite", list(sg.training.NONFINITE))
    choice("device", ["auto", "cpu", "cuda"])
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise _bad("device", "cuda", "auto or cpu: this machine has no CUDA device")
    methods = sorted(sg.solvers.ode.ADAPTIVE_METHODS) + sorted(sg.solvers.ode.FIXED_METHODS)
    choice("likelihood.method", methods)
    fixed = cfg.likelihood.method in sg.solvers.ode.FIXED_METHODS
    if fixed and cfg.likelihood.steps is None:
        raise _bad(
            "likelihood.steps",
            None,
            f"an integer >= 1 with the fixed-grid likelihood.method={cfg.likelihood.method}",
        )
    if not fixed and cfg.likelihood.steps is not None:
        raise _bad(
            "likelihood.steps",
            cfg.likelihood.steps,
            f"null with the adaptive likelihood.method={cfg.likelihood.method} "
            f"(fixed grids: {sorted(sg.solvers.ode.FIXED_METHODS)})",
        )
    integer("likelihood.steps", 1, optional=True)
    choice("logger.name", ["wandb", "none"])
    choice("logger.mode", [None, "offline", "online", "disabled"])
    for group in ("sde", "solver", "model", "data"):
        node = cfg[group]
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise _bad(group, node, f"a config with a _target_ (choose one of conf/{group}/*.yaml)")
    if "steps" in cfg.solver:
        integer("solver.steps", 1, optional=cfg.solver.get("_target_") == "sde_gen.ProbabilityFlow")
    if cfg.ckpt is not None and not Path(cfg.ckpt).is_file():
        raise _bad(
            "ckpt", cfg.ckpt, "the path of an existing checkpoint file (…/checkpoints/ckpt_XXXXXXXX.pt)"
        )


# -- building the objects --------------------------------------------------------------------------


def build(cfg: DictConfig):
    """Instantiate data, SDE, network, sampling solver and likelihood solver from ``cfg``."""
    data = instantiate(cfg.data)
    sde = instantiate(cfg.sde)
    solver = instantiate(cfg.solver, _convert_="all")
    model_cfg = cfg.model
    images = isinstance(data, sg.ImageData)
    if "dim" in model_cfg and model_cfg.dim is None:
        if images:
            raise _bad("model", model_cfg._target_, f"a model for images (data={data.name} is an image set)")
        model_cfg.dim = data.dim  # recorded in the config, so the logged config shows it
    elif "dim" in model_cfg and not images and model_cfg.dim != data.dim:
        raise _bad("model.dim", model_cfg.dim, f"null or {data.dim}, the dimension of data={data.name}")
    if not images and "image_size" in model_cfg:
        raise ConfigError(
            f"model={model_cfg._target_} is an image network but data={data.name} is vector data: "
            f"add model=mlp, or use experiment={data.name if data.name in TOY else 'gmm8'}"
        )
    net = instantiate(model_cfg, _convert_="all")
    if images and isinstance(net, sg.UNet):
        want = (net.in_channels, net.image_size, net.image_size)
        if tuple(data.shape) != want:
            raise ConfigError(
                f"model expects images of shape {want} but data={data.name} has {tuple(data.shape)}: "
                "choose a matching model (e.g. unet_digits for digits, unet_mnist for mnist)"
            )
    like = cfg.likelihood
    # likelihood.steps: a fixed grid, the same NFE for every batch and every rank.
    lik_solver = sg.ProbabilityFlow(method=like.method, rtol=like.rtol, atol=like.atol, steps=like.steps)
    for name, obj in (("sde", sde), ("solver", solver), ("model", net)):
        if not isinstance(obj, TARGETS[name]):
            raise ConfigError(
                f"{name}: _target_ built {type(obj).__name__}, expected a {TARGETS[name].__name__}"
            )
    return data, sde, net, solver, lik_solver


def heldout_loss_fn(sde, data, cfg: DictConfig, out_dir: Path | None = None):
    """``eval_fn`` for the trainer, run with the EMA weights every ``train.eval_every`` steps: the DSM
    loss on a fixed test batch of ``train.eval_n`` points, their test bits/dim (images, one
    dequantization, 1-probe Hutchinson) or NLL in nats (vector data) through the ODE at a loose
    tolerance (1e-3), and a picture of 64 probability-flow samples, ``samples_step<N>.png``."""
    n = min(cfg.train.eval_n, data.test.shape[0])
    images = isinstance(data, sg.ImageData)
    g = torch.Generator().manual_seed(cfg.seed + 20)
    if images:
        x = sg.LevelTransform(data.levels, -1.0, 1.0).dequantize(data.test[:n], g)
    else:
        x = data.test[:n]
    quick = sg.ProbabilityFlow(rtol=1e-3, atol=1e-3)

    def eval_fn(trainer):
        gen = torch.Generator().manual_seed(cfg.seed + 21)  # the same t and noise at every eval
        model = trainer.model
        with torch.no_grad():
            loss = sg.dsm_loss(sde, model, x, eps=cfg.train.eps, weighting=cfg.train.weighting, generator=gen)
        metrics = {"heldout_loss": float(loss)}
        lik = sg.log_likelihood(
            sde, model, x, solver=quick, divergence="hutchinson" if images else "exact", generator=gen
        )
        if images:
            bpd = sg.bits_per_dim(lik.log_prob.detach(), data.num_dims, levels=data.levels)
            metrics["eval_bpd"] = float(bpd.mean())
        else:
            metrics["eval_nll_nats"] = float(-lik.log_prob.detach().mean())
        if out_dir is not None and sg.distributed.is_main_process():  # the others go on to the next step
            with torch.no_grad():
                xs = sg.sample(sde, model, (64, *data.train.shape[1:]), quick, generator=gen, denoise=images)
            path = out_dir / f"samples_step{trainer.step:08d}.png"
            if images:
                sg.save_image_grid(xs, path)
            elif xs.shape[1] == 2:
                sg.save_samples_2d(xs, path, log_prob=data.log_prob, title=f"step {trainer.step}")
        return metrics

    return eval_fn


class ProgressPrinter(sg.Callback):
    """One line every ``every`` steps (loss, speed, time left): the progress report where no
    terminal shows tqdm's bar (output to a file, a cluster job)."""

    def __init__(self, total: int, every: int):
        self.total, self.every, self.start = total, every, None

    def on_train_start(self, trainer) -> None:
        self.start, self.first = time.perf_counter(), trainer.step

    def on_step(self, trainer, metrics: dict) -> None:
        step = metrics["step"]
        if step % self.every and step != self.total:
            return
        per_step = (time.perf_counter() - self.start) / max(1, step - self.first)
        left = per_step * (self.total - step) / 60
        print(
            f"step {step}/{self.total}  loss {metrics['loss']:.4g}  {per_step:.3f} s/step  "
            f"{left:.1f} min left",
            flush=True,
        )


# -- summaries -------------------------------------------------------------------------------------

SUMMARY_KEYS = (
    "test_bpd",
    "test_bpd_se",
    "test_nll_nats",
    "test_nll_nats_se",
    "kl_gap_nats",
    "likelihood_nfe",
    "sample_nfe",
    "final_loss",
    "train_seconds",
    "sample_seconds",
    "likelihood_seconds",
    "step",
)


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def summary_table(metrics: dict, title: str = "") -> str:
    """A two-column markdown table of the headline metrics."""
    rows = [(k, fmt(metrics[k])) for k in SUMMARY_KEYS if k in metrics]
    w = max([len(k) for k, _ in rows] + [6])
    u = max([len(v) for _, v in rows] + [5])
    lines = [title] if title else []
    lines += [f"| {'metric'.ljust(w)} | {'value'.ljust(u)} |", f"|{'-' * (w + 2)}|{'-' * (u + 2)}|"]
    lines += [f"| {k.ljust(w)} | {v.ljust(u)} |" for k, v in rows]
    return "\n".join(lines)


# -- the job ---------------------------------------------------------------------------------------


def hydra_info() -> tuple[Path, list[str], str | None]:
    """(run directory, this job's overrides, the sweep directory of a multirun or None)."""
    if not HydraConfig.initialized():
        return Path.cwd(), [], None
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    multirun = hc.mode is not None and hc.mode.name == "MULTIRUN"
    return out_dir, overrides, (hc.sweep.dir if multirun else None)


def wandb_identity(cfg: DictConfig, overrides: list[str], sweep_dir: str | None) -> dict:
    """W&B group, tags and name: multirun members share a group (``<experiment>-<sweep time>``)
    and are tagged and named by their overrides."""
    group = cfg.logger.group or (f"{cfg.name}-{Path(sweep_dir).name}" if sweep_dir else None)
    return {
        "group": group,
        "tags": list(cfg.logger.tags) + list(overrides),
        "name": ",".join(overrides) if overrides else None,
    }


def execute(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """Validate ``cfg``, build the objects, run the pipeline into ``out_dir``; return the metrics.

    Inside a ``torch.distributed`` process group (``torchrun``) every rank calls this: rank 0's
    run directory is used by all, training is data-parallel, evaluation is split over the ranks,
    and only rank 0 writes files and logs."""
    validate(cfg)
    hydra_dir, overrides, sweep_dir = hydra_info()
    out_dir = Path(out_dir) if out_dir is not None else hydra_dir
    out_dir = sg.distributed.broadcast_object(out_dir)
    main_process = sg.distributed.is_main_process()
    # auto and cuda (checked to exist): this process's GPU when CUDA is available, else the CPU.
    device = torch.device("cpu") if cfg.device == "cpu" else sg.distributed.local_device()
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = cfg.mode.value if isinstance(cfg.mode, Mode) else str(cfg.mode)
    ckpt_dir = out_dir / "checkpoints"
    if mode in ("sample", "likelihood") and cfg.ckpt is None:
        if not (ckpt_dir.is_dir() and any(ckpt_dir.glob("ckpt_*.pt"))):
            raise _bad("mode", mode, f"needs ckpt=PATH or a trained run in hydra.run.dir (no {ckpt_dir})")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data, sde, net, solver, lik_solver = build(cfg)
    images = isinstance(data, sg.ImageData)
    divergence = cfg.likelihood.divergence
    if divergence == "auto":
        divergence = "hutchinson" if images else "exact"

    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resolved["world_size"] = sg.distributed.get_world_size()
    if main_process:
        (out_dir / "config_resolved.json").write_text(json.dumps(resolved, indent=2))
    callbacks, logger = [], None
    if cfg.logger.name == "wandb" and main_process:
        from logging_callbacks import WandbCallback

        logger = WandbCallback(
            resolved,
            out_dir=out_dir,
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            mode=cfg.logger.mode,
            **wandb_identity(cfg, overrides, sweep_dir),
            log_every=cfg.logger.log_every,
        )
        callbacks.append(logger)

    if (
        cfg.progress is None
        and not sys.stderr.isatty()
        and cfg.mode in (Mode.train, Mode.all)
        and main_process
    ):
        callbacks.append(ProgressPrinter(cfg.train.steps, max(1, cfg.train.steps // 20)))
    previous = {}
    if (out_dir / "metrics.json").exists():
        previous = json.loads((out_dir / "metrics.json").read_text())
    try:
        metrics = pipeline.run(
            data,
            sde,
            net,
            out_dir=out_dir,
            mode=mode,
            parameterization=cfg.train.parameterization,
            steps=cfg.train.steps,
            batch_size=cfg.train.batch_size,
            lr=cfg.train.lr,
            warmup=cfg.train.warmup,
            cosine_decay=cfg.train.cosine_decay and cfg.train.steps > cfg.train.warmup,
            grad_clip=cfg.train.grad_clip,
            ema_decay=cfg.train.ema_decay,
            weighting=cfg.train.weighting,
            importance_sampling=cfg.train.importance_sampling,
            train_eps=cfg.train.eps,
            ckpt_every=cfg.train.ckpt_every,
            keep=cfg.train.keep,
            nonfinite=cfg.train.nonfinite,
            max_skips=cfg.train.max_skips,
            device=device,
            eval_every=cfg.train.eval_every,
            eval_fn=heldout_loss_fn(sde, data, cfg, out_dir) if cfg.train.eval_every else None,
            sample_solver=solver,
            sample_eps=cfg.sample.eps,
            num_samples=cfg.sample.num,
            likelihood_solver=lik_solver,
            likelihood_eps=cfg.likelihood.eps,
            likelihood_n=cfg.likelihood.n,
            divergence=divergence,
            num_probes=cfg.likelihood.num_probes,
            repeats=cfg.likelihood.repeats,
            eval_batch_size=cfg.likelihood.batch_size,
            seed=cfg.seed,
            ckpt=cfg.ckpt,
            callbacks=callbacks,
            progress=cfg.progress,
        )
        # metrics.json keeps what earlier modes in this directory measured (e.g. train, then sample).
        metrics = {**previous, **metrics, "mode": mode}
        if main_process:
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if logger is not None:
            logger.log_results(metrics, out_dir)
    finally:
        if logger is not None:
            logger.finish()
    what = f"{data.name} {type(sde).__name__} {type(solver).__name__}"
    if main_process:
        print(summary_table(metrics, f"\n{what}: {out_dir}"))
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    start = time.perf_counter()
    sg.distributed.init_from_env(backend="gloo" if cfg.device == "cpu" else None)
    try:
        metrics = execute(cfg)
    except ConfigError as e:
        print(f"run.py: invalid configuration: {e}", file=sys.stderr)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(2)
    except (sg.CheckpointError, FloatingPointError) as e:
        # A damaged checkpoint, or a NaN loss (the last good state is kept): the message says it all.
        print(f"run.py: {type(e).__name__}: {e}", file=sys.stderr)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(1)
    if sg.distributed.is_main_process():
        print(f"wall time {time.perf_counter() - start:.1f} s")
    return metrics


def quiet_other_ranks() -> None:
    """Ranks other than 0 use rank 0's run directory (broadcast in :func:`execute`) and write
    nothing into Hydra's: no ``.hydra/``, no log file, and, unless ``hydra.run.dir`` is given, a
    throw-away directory (a timestamped default could differ from rank 0's by a second)."""
    import atexit
    import shutil
    import tempfile

    sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    if not any(a.startswith(("hydra.run.dir=", "-m", "--multirun")) for a in sys.argv[1:]):
        scratch = tempfile.mkdtemp(prefix="sde_gen_rank_")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        sys.argv.append(f"hydra.run.dir={scratch}")


if __name__ == "__main__":
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) != "0":
        quiet_other_ranks()
    main()
