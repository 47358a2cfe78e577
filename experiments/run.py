"""Train, sample and evaluate a score model, configured with Hydra (configs in conf/).

    python experiments/run.py sde=vp solver=pc                  # digits, < 10 min on 2 CPU cores
    python experiments/run.py experiment=gmm8 sde=ve solver=ode # a 2-D toy run
    python experiments/run.py -m sde=vp,subvp,ve solver=em,pc,ode logger=none

Hydra composes the config and builds every object from it (``_target_``): data, SDE, network,
solver, loss, optimiser, schedule, EMA, batches, checkpoints, trainer, sampling and likelihood
settings. Each object checks its own arguments; a value it refuses is reported with its config
key (:class:`ConfigError`). Outputs go to Hydra's run directory (``hydra.run.dir``); running the
same command with the same ``hydra.run.dir`` resumes training from its checkpoints. See
docs/usage.md.
"""

from __future__ import annotations

import json
import os
import re
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
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

import sde_gen as sg
from experiments import pipeline
from sde_gen.files.checkpoint import MAX_STEPS

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# -- the typed schema ------------------------------------------------------------------------------
# Types only: every default is written once, in the YAML under conf/. Hydra checks each composed
# value against these types (``train.lr=abc`` fails while composing) and refuses unknown keys.


class Mode(Enum):
    train = "train"
    sample = "sample"
    likelihood = "likelihood"
    all = "all"
    evaluate = "evaluate"


@dataclass
class TrainConfig:
    steps: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    warmup: int = MISSING
    cosine_decay: bool = MISSING
    grad_clip: float | None = MISSING
    accumulate: int = MISSING
    ema_decay: float = MISSING
    ema_warmup: bool = MISSING
    weighting: str = MISSING
    importance_sampling: bool = MISSING
    parameterization: str = MISSING
    eps: float = MISSING
    ckpt_every: int | None = MISSING
    keep: int = MISSING
    nonfinite: str = MISSING
    max_skips: int = MISSING
    eval_every: int | None = MISSING
    eval_n: int = MISSING
    p_uncond: float = MISSING


@dataclass
class SampleConfig:
    _target_: str = MISSING
    num: int = MISSING
    eps: float = MISSING
    w: float = MISSING
    interval: Any = MISSING


@dataclass
class LikelihoodConfig:
    _target_: str = MISSING
    n: int | None = MISSING
    divergence: str = MISSING
    num_probes: int = MISSING
    method: str = MISSING
    steps: int | None = MISSING
    rtol: float = MISSING
    atol: float = MISSING
    eps: float = MISSING
    repeats: int = MISSING
    batch_size: int = MISSING


@dataclass
class MetricsConfig:
    _target_: str = MISSING
    num: int | None = MISSING
    extractor: str = MISSING
    k: int = MISSING
    kid_subsets: int = MISSING
    enabled: bool = MISSING


@dataclass
class LoggerConfig:
    name: str = MISSING
    project: str = "sde_gen"
    entity: Any = None
    mode: Any = None
    group: Any = None
    tags: list[str] = field(default_factory=list)
    log_every: int = 1


@dataclass
class Config:
    sde: Any = MISSING
    solver: Any = MISSING
    model: Any = MISSING
    data: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    batches: Any = MISSING
    ema: Any = MISSING
    lr_schedule: Any = MISSING
    checkpoints: Any = MISSING
    trainer: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    mode: Mode = MISSING
    seed: int = MISSING
    ckpt: str | None = MISSING
    name: str = MISSING
    threads: int | None = MISSING
    progress: bool | None = MISSING
    device: str = MISSING


ConfigStore.instance().store(name="schema", node=Config)


class ConfigError(ValueError):
    """A configuration value that an object refused, or that run.py itself cannot use; the message
    names the config key and its value, then says what is allowed."""


def _bad(key: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not allowed: {allowed}")


# -- building the objects, with errors named by config key -----------------------------------------


def _source_key(node: DictConfig, key: str, name: str) -> str:
    """The config key the user sets for ``key.name``: the target of an interpolation
    (``${train.lr}`` -> ``train.lr``) or ``key.name`` itself."""
    raw = OmegaConf.to_container(node, resolve=False).get(name)
    m = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return m.group(1) if m else f"{key}.{name}"


def _refused_field(node: DictConfig, message: str) -> str | None:
    """The field of ``node`` an error message is about: the name it starts with (sde_gen's errors
    name their argument first), else the one field whose value the message quotes."""
    names = [k for k in node if not str(k).startswith("_")]
    first = re.match(r"\w+", message)
    if first and first.group(0) in names:
        return first.group(0)
    quoted = [
        k
        for k in names
        if node[k] is not None and not isinstance(node[k], DictConfig) and str(node[k]) in message
    ]
    return quoted[0] if len(quoted) == 1 else None


def _refusal(cfg: DictConfig, key: str, cause: Exception) -> ConfigError:
    """The :class:`ConfigError` for an argument that the object built from ``cfg[key]`` refused,
    naming the config key the user sets (``train.lr``, ``likelihood.eps``)."""
    message, node = str(cause), cfg[key]
    for name in node:  # a nested object (trainer.nonfinite) may be the one that refused it
        sub = node[name]
        if isinstance(sub, DictConfig) and "_target_" in sub and _refused_field(sub, message):
            key, node = f"{key}.{name}", sub
            break
    name = _refused_field(node, message)
    if name is None:
        return ConfigError(f"{key}: {message}")
    src = _source_key(node, key, name)
    return _bad(src, OmegaConf.select(cfg, src), message)


def _check_setting(cfg: DictConfig, key: str, check, **kwargs) -> None:
    """``check(name, value, **kwargs)`` on a setting run.py uses itself; a refusal names ``key``."""
    value = OmegaConf.select(cfg, key)
    try:
        check(key.rsplit(".", 1)[-1], value, **kwargs)
    except (ValueError, TypeError) as e:
        raise _bad(key, value, str(e)) from e


def build_node(cfg: DictConfig, key: str, **kwargs):
    """``instantiate(cfg[key], **kwargs)``; an argument the object refuses raises
    :class:`ConfigError` naming its config key."""
    node = cfg[key]
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise _bad(key, node, f"a config with a _target_ (choose one of conf/{key}/*.yaml)")
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        if not isinstance(e.__cause__, (ValueError, TypeError)):
            raise
        raise _refusal(cfg, key, e.__cause__) from e.__cause__


def build_optimizer(cfg: DictConfig, params) -> torch.optim.Optimizer:
    """The ``optimizer`` node (a partial) called on ``params``; its refusals name their key."""
    make = build_node(cfg, "optimizer")
    try:
        return make(params)
    except (ValueError, TypeError) as e:
        raise _refusal(cfg, "optimizer", e) from e


@dataclass
class Built:
    """What :func:`build` makes from a config."""

    data: Any
    sde: sg.SDE
    model: sg.ScoreModel
    solver: sg.Solver
    trainer: sg.Trainer | None  # None for ckpt=*.safetensors (sampling and evaluation only)
    sampling: pipeline.Sampling
    likelihood: pipeline.Likelihood
    heldout: pipeline.HeldoutEval
    quality: pipeline.SampleMetrics


TOY = ("gmm8", "checkerboard", "moons", "swissroll", "rings")


def _check_model_fits_data(cfg: DictConfig, data) -> None:
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


def build(cfg: DictConfig, out_dir: Path | None = None, device: torch.device | None = None) -> Built:
    """Build every object of a run from ``cfg`` before any work, so that a bad value fails at once."""
    for key, allowed in (("device", ["auto", "cpu", "cuda"]), ("logger.name", ["wandb", "none"])):
        if OmegaConf.select(cfg, key) not in allowed:
            raise _bad(key, OmegaConf.select(cfg, key), f"one of {allowed}")
    if cfg.logger.mode not in (None, "offline", "online", "disabled"):
        raise _bad("logger.mode", cfg.logger.mode, "one of [None, 'offline', 'online', 'disabled']")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise _bad("device", "cuda", "auto or cpu: this machine has no CUDA device")
    _check_setting(cfg, "seed", sg.checks.check_int, low=0)
    # What trainer.fit() is given: checked before any work.
    _check_setting(
        cfg, "train.steps", sg.checks.check_int, low=0, high=MAX_STEPS, why="checkpoint names hold 8 digits"
    )
    if cfg.ckpt is not None and not Path(cfg.ckpt).is_file():
        raise _bad(
            "ckpt", cfg.ckpt, "the path of an existing checkpoint file (…/checkpoints/ckpt_XXXXXXXX.pt)"
        )
    for section, schema in (
        ("train", TrainConfig),
        ("sample", SampleConfig),
        ("likelihood", LikelihoodConfig),
    ):
        known = {f.name for f in fields(schema)}
        unknown = sorted(set(cfg[section]) - known)  # keys appended with +section.key
        if unknown:
            allowed = sorted(known - {"_target_"})
            raise _bad(f"{section}.{unknown[0]}", cfg[section][unknown[0]], f"a key of {section}: {allowed}")
    device = device or torch.device("cpu")
    data = build_node(cfg, "data")
    n_test = data.test.shape[0]
    if cfg.likelihood.n is not None and cfg.likelihood.n > n_test:
        raise _bad(
            "likelihood.n", cfg.likelihood.n, f"at most {n_test}, the size of the test set of {data.name}"
        )
    sde = build_node(cfg, "sde")
    if not isinstance(sde, sg.SDE):
        raise _bad("sde", cfg.sde._target_, f"a target that builds an sde_gen.SDE, got {type(sde).__name__}")
    solver = build_node(cfg, "solver")
    if not isinstance(solver, sg.Solver):
        raise _bad(
            "solver",
            cfg.solver._target_,
            f"a target that builds an sde_gen.Solver, got {type(solver).__name__}",
        )
    if _is_exported(cfg.ckpt):
        return _build_exported(cfg, data, solver, device)
    _check_model_fits_data(cfg, data)
    net = build_node(cfg, "model")
    if not isinstance(net, torch.nn.Module):
        raise _bad(
            "model", cfg.model._target_, f"a target that builds a torch.nn.Module, got {type(net).__name__}"
        )
    if isinstance(data, sg.ImageData) and isinstance(net, sg.UNet):
        want = (net.in_channels, net.image_size, net.image_size)
        if tuple(data.shape) != want:
            raise ConfigError(
                f"model expects images of shape {want} but data={data.name} has {tuple(data.shape)}: "
                "choose a matching model (e.g. unet_digits for digits, unet_mnist for mnist)"
            )
    model = _build_score_model(cfg, net, sde).to(device)
    labels = _training_labels(cfg, data, model)
    transform = None
    if isinstance(data, sg.ImageData):
        levels = sg.LevelTransform(data.levels, -1.0, 1.0)
        transform = levels.dequantize
    ckpt_dir = (out_dir if out_dir is not None else Path(".")) / "checkpoints"
    trainer = build_node(
        cfg,
        "trainer",
        model=model,
        loss_fn=build_node(cfg, "loss", sde=sde),
        data=build_node(cfg, "batches", data=data.train, transform=transform, labels=labels),
        optimizer=build_optimizer(cfg, model.parameters()),
        lr_schedule=build_node(cfg, "lr_schedule"),
        ema=build_node(cfg, "ema", model=model),
        checkpoints=build_node(cfg, "checkpoints", directory=ckpt_dir),
    )
    heldout = pipeline.HeldoutEval(cfg.train.eval_every, cfg.train.eval_n)
    return Built(
        data=data,
        sde=sde,
        model=model,
        solver=solver,
        trainer=trainer,
        sampling=build_node(cfg, "sample", T=sde.T),
        likelihood=build_node(cfg, "likelihood", T=sde.T),
        heldout=heldout,
        quality=build_quality(cfg, data),
    )


def build_quality(cfg: DictConfig, data) -> pipeline.SampleMetrics:
    """The sample-quality settings; their feature network is built here, before any work (the
    digits classifier trains once and is cached; Inception needs its local weights file)."""
    quality = build_node(cfg, "metrics")
    mode = cfg.mode.value if isinstance(cfg.mode, Mode) else str(cfg.mode)
    scored = mode in ("sample", "all", "evaluate") or cfg.train.eval_every is not None
    if quality.enabled and isinstance(data, sg.ImageData) and scored:
        try:
            quality.features(data)
        except (FileNotFoundError, ValueError) as e:
            raise _bad(
                "metrics.extractor", cfg.metrics.extractor, f"{e} (metrics.enabled=false skips them)"
            ) from e
    return quality


def _is_exported(ckpt) -> bool:
    return ckpt is not None and Path(ckpt).suffix == ".safetensors"


def _build_exported(cfg: DictConfig, data, solver, device) -> Built:
    """``ckpt=model.safetensors``: the model and its SDE come from the file (:func:`sg.load_model`),
    the data, solver and evaluation settings from the config."""
    mode = cfg.mode.value if isinstance(cfg.mode, Mode) else str(cfg.mode)
    if mode not in ("sample", "likelihood", "evaluate"):
        raise _bad(
            "mode",
            mode,
            "sample, likelihood or evaluate with an exported model (ckpt=*.safetensors holds the EMA "
            "weights, not a training state; continue training from a checkpoints/ckpt_XXXXXXXX.pt)",
        )
    model = sg.load_model(cfg.ckpt, device=device)
    shape = model.recipe.get("data", {}).get("shape")
    if shape is not None and list(shape) != list(data.train.shape[1:]):
        raise _bad(
            "data",
            data.name,
            f"data of the exported model's shape {tuple(shape)} ({cfg.ckpt} was trained on "
            f"{model.recipe['data'].get('name', 'other data')}); got {tuple(data.train.shape[1:])}",
        )
    return Built(
        data=data,
        sde=model.sde,
        model=model,
        solver=solver,
        trainer=None,
        sampling=build_node(cfg, "sample", T=model.sde.T),
        likelihood=build_node(cfg, "likelihood", T=model.sde.T),
        heldout=pipeline.HeldoutEval(),
        quality=build_quality(cfg, data),
    )


def export_recipe(built: Built) -> dict:
    """What :func:`sg.save_model` records besides the weights: what a sample is."""
    data = built.data
    info = {"name": data.name, "shape": list(data.train.shape[1:])}
    if isinstance(data, sg.ImageData):
        info.update(levels=data.levels, low=-1.0, high=1.0)
    return {"data": info}


def _training_labels(cfg: DictConfig, data, model):
    """The training labels a class-conditional model (``model.num_classes``) needs, checked against
    the data; ``None`` for an unconditional model."""
    k = model.num_classes
    if k is None:
        if cfg.train.p_uncond > 0:
            raise _bad(
                "train.p_uncond", cfg.train.p_uncond, "0 for an unconditional model (set model.num_classes)"
            )
        return None
    labels = getattr(data, "train_labels", None)
    if labels is None:
        raise _bad("model.num_classes", k, f"null: data={data.name} has no labels")
    found = int(labels.max()) + 1
    if found > k:
        raise _bad("model.num_classes", k, f"at least {found}, the number of classes in data={data.name}")
    return labels


def _build_score_model(cfg: DictConfig, net, sde) -> sg.ScoreModel:
    try:
        return sg.ScoreModel(net, sde, cfg.train.parameterization)
    except ValueError as e:
        raise _bad("train.parameterization", cfg.train.parameterization, str(e)) from e


# -- summaries -------------------------------------------------------------------------------------

SUMMARY_KEYS = (
    "test_bpd",
    "test_bpd_se",
    "test_nll_nats",
    "test_nll_nats_se",
    "kl_gap_nats",
    "fd",
    "fd_reference",
    "kid",
    "precision",
    "recall",
    "class_accuracy",
    "energy_distance",
    "energy_distance_reference",
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


def hydra_info() -> tuple[Path, list[str], str | None, dict]:
    """(run directory, this job's overrides, the sweep directory of a multirun or None, the
    config group choices)."""
    if not HydraConfig.initialized():
        return Path.cwd(), [], None, {}
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    multirun = hc.mode is not None and hc.mode.name == "MULTIRUN"
    return out_dir, overrides, (hc.sweep.dir if multirun else None), dict(hc.runtime.choices)


def _preset_groups(preset: str) -> dict:
    """The config groups an ``experiment`` preset chooses, following the presets it includes."""
    path = CONF_DIR / "experiment" / f"{preset}.yaml"
    if not path.is_file():
        return {}
    own: dict = {}
    for entry in OmegaConf.load(path).get("defaults", []):
        if isinstance(entry, str):
            own.update(_preset_groups(entry))
        else:
            own.update({str(k).removeprefix("override /"): v for k, v in entry.items()})
    return own


def preset_notice(choices: dict) -> str | None:
    """A note when groups that the chosen ``experiment`` preset sets were chosen otherwise on the
    command line: the preset's other settings (training length, weighting, ...) still apply."""
    preset = choices.get("experiment")
    own = _preset_groups(preset) if preset else {}
    changed = {g: choices[g] for g, v in own.items() if g in choices and choices[g] != v}
    if not changed:
        return None
    mine = " ".join(f"{g}={own[g]}" for g in changed)
    theirs = " ".join(f"{g}={v}" for g, v in changed.items())
    return (
        f"note: experiment={preset} is the preset for {mine}; with {theirs} its other settings "
        f"(conf/experiment/{preset}.yaml) still apply. A preset for your data: experiment=NAME "
        "(conf/experiment/)."
    )


def wandb_identity(cfg: DictConfig, overrides: list[str], sweep_dir: str | None) -> dict:
    """W&B group, tags and name: multirun members share a group (``<experiment>-<sweep time>``)
    and are tagged and named by their overrides."""
    group = cfg.logger.group or (f"{cfg.name}-{Path(sweep_dir).name}" if sweep_dir else None)
    return {
        "group": group,
        "tags": list(cfg.logger.tags) + list(overrides),
        "name": ",".join(overrides) if overrides else None,
    }


def callbacks_for(cfg: DictConfig, built: Built, out_dir: Path, main_process: bool) -> list:
    """Progress reports and periodic evaluation (the logger is added by :func:`execute`)."""
    mode = cfg.mode.value if isinstance(cfg.mode, Mode) else str(cfg.mode)
    callbacks = []
    training = mode in ("train", "all")
    if main_process and training:
        if cfg.progress is None and not sys.stderr.isatty():
            callbacks.append(sg.ProgressPrinter(cfg.train.steps, max(1, cfg.train.steps // 20)))
        else:
            callbacks.append(sg.ProgressBar(cfg.train.steps, enabled=cfg.progress))
    periodic = built.heldout.callback(
        built.sde, built.data, built.trainer.loss_fn, seed=cfg.seed, out_dir=out_dir, quality=built.quality
    )
    if periodic is not None:
        callbacks.append(periodic)
    return callbacks


def execute(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """Build the objects from ``cfg``, run the pipeline into ``out_dir``; return the metrics.

    Inside a ``torch.distributed`` process group (``torchrun``) every rank calls this: rank 0's
    run directory is used by all, training is data-parallel, evaluation is split over the ranks,
    and only rank 0 writes files and logs."""
    hydra_dir, overrides, sweep_dir, choices = hydra_info()
    out_dir = Path(out_dir) if out_dir is not None else hydra_dir
    out_dir = sg.distributed.broadcast_object(out_dir)
    main_process = sg.distributed.is_main_process()
    # auto and cuda (checked to exist): this process's GPU when CUDA is available, else the CPU.
    device = torch.device("cpu") if cfg.device == "cpu" else sg.distributed.local_device()
    mode = cfg.mode.value if isinstance(cfg.mode, Mode) else str(cfg.mode)
    ckpt_dir = out_dir / "checkpoints"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    built = build(cfg, out_dir, device)
    if mode in ("sample", "likelihood", "evaluate") and cfg.ckpt is None:
        if not (ckpt_dir.is_dir() and any(ckpt_dir.glob("ckpt_*.pt"))):
            raise _bad("mode", mode, f"needs ckpt=PATH or a trained run in hydra.run.dir (no {ckpt_dir})")
    notice = preset_notice(choices)
    if notice and main_process:
        print(notice, file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resolved["world_size"] = sg.distributed.get_world_size()
    resolved["choices"] = choices
    resolved["overrides"] = overrides
    if main_process:
        (out_dir / "config_resolved.json").write_text(json.dumps(resolved, indent=2))
    if built.trainer is not None:
        built.trainer.add_callbacks(*callbacks_for(cfg, built, out_dir, main_process))
    logger = None
    if cfg.logger.name == "wandb" and main_process:
        from experiments.logging_callbacks import WandbCallback

        logger = WandbCallback(
            resolved,
            out_dir=out_dir,
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            mode=cfg.logger.mode,
            **wandb_identity(cfg, overrides, sweep_dir),
            log_every=cfg.logger.log_every,
        )
        if built.trainer is not None:
            built.trainer.add_callbacks(logger)
    previous = {}
    if (out_dir / "metrics.json").exists():
        previous = json.loads((out_dir / "metrics.json").read_text())
    common = dict(
        out_dir=out_dir,
        mode=mode,
        solver=built.solver,
        sampling=built.sampling,
        likelihood=built.likelihood,
        quality=built.quality,
        seed=cfg.seed,
    )
    try:
        if built.trainer is None:  # an exported model: sample or evaluate it as it is
            metrics = pipeline.evaluate(built.model, built.sde, built.data, device=device, **common)
        else:
            metrics = pipeline.run(
                built.trainer,
                built.sde,
                built.data,
                steps=cfg.train.steps,
                ckpt=cfg.ckpt,
                export=export_recipe(built),
                **common,
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
    what = f"{built.data.name} {type(built.sde).__name__} {type(built.solver).__name__}"
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


def exit_process_group() -> None:
    """End a torchrun member once everything is written: run the exit handlers (logging, the
    other ranks' scratch directories), flush, then ``os._exit(0)``. A normal interpreter exit can
    abort in gloo's worker threads while Python tears down (pytorch/pytorch issues 190489 and
    179291; ``destroy_process_group`` does not prevent it)."""
    if sg.distributed.is_distributed():
        import atexit

        sg.distributed.barrier()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) != "0":
        quiet_other_ranks()
    main()
    exit_process_group()
