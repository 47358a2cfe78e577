"""Train, sample and evaluate a score model, configured with Hydra (configs in conf/; docs/usage.md).

    python experiments/run.py sde=vp solver=pc                  # digits, < 5 min on 2 CPU cores
    python experiments/run.py experiment=gmm8 sde=ve solver=ode # a 2-D toy run
    python experiments/run.py -m sde=vp,subvp,ve solver=em,pc,ode logger=none

Hydra composes the config; this module types it (the schema), builds every object from it
(``_target_``) and runs the job. Each object checks its own arguments; a value it refuses is
reported with its config key (:class:`ConfigError`). Outputs go to ``hydra.run.dir``; running again
with the same directory resumes training from its checkpoints.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields, make_dataclass
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

import sde_gen as sg
from sde_gen.files.checkpoint import MAX_STEPS

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SAMPLING, LIKELIHOOD = ("sample", "all", "evaluate", "reflow"), ("likelihood", "all", "evaluate", "reflow")
TRAINING = ("train", "all", "reflow")  # reflow: mode=all on the pairs of ckpt=FILE's ODE (train.reflow_from)

# The typed schema: types only, every default is written once in conf/. Hydra checks each composed
# value against these types (``train.lr=abc`` fails while composing) and refuses unknown keys.

Mode = Enum("Mode", {m: m for m in ("train", "sample", "likelihood", "all", "evaluate", "reflow")})
Intn, Floatn = int | None, float | None


def _schema(name: str, **types) -> type:
    """A dataclass whose fields have these types and no default (``MISSING``)."""
    return make_dataclass(name, [(k, t, field(default=MISSING)) for k, t in types.items()])


TrainConfig = _schema(
    "TrainConfig", steps=int, batch_size=int, lr=float, warmup=int, cosine_decay=bool, grad_clip=Floatn,
    accumulate=int, ema_decay=float, ema_warmup=bool, parameterization=str, weighting=str, reflow_pairs=Intn,
    min_snr_gamma=float, sigmoid_bias=float, sigma_data=float, time_sampler=str, time_sampler_loc=Floatn,
    time_sampler_scale=Floatn, importance_sampling=bool, coupling=str, eps=float, ckpt_every=Intn, keep=int,
    nonfinite=str, max_skips=int, eval_every=Intn, eval_n=int, p_uncond=float, reflow_from=str | None,
)  # fmt: skip
SampleConfig = _schema("SampleConfig", _target_=str, num=int, eps=float, w=float, interval=Any)
LikelihoodConfig = _schema(
    "LikelihoodConfig", _target_=str, n=Intn, divergence=str, num_probes=int, method=str, steps=Intn,
    rtol=float, atol=float, eps=float, repeats=int, batch_size=int,
)  # fmt: skip
MetricsConfig = _schema("MetricsConfig", _target_=str, num=Intn, extractor=str, k=int, kid_subsets=int,
                        enabled=bool)  # fmt: skip
SCHEMAS = (TrainConfig, SampleConfig, LikelihoodConfig)  # the sections whose keys are checked
OBJECTS = ("sde", "solver", "model", "data", "loss", "optimizer", "batches", "ema", "lr_schedule")


@dataclass
class LoggerConfig:
    name: str = MISSING
    project: str = "sde_gen"
    entity: Any = None
    mode: Any = None
    group: Any = None
    tags: list[str] = field(default_factory=list)
    log_every: int = 1


Config = make_dataclass(
    "Config",
    [(k, Any, field(default=MISSING)) for k in (*OBJECTS, "checkpoints", "trainer", "pipeline")]
    + [(k, t, field(default_factory=t)) for k, t in (("train", TrainConfig), ("sample", SampleConfig),
       ("likelihood", LikelihoodConfig), ("metrics", MetricsConfig), ("logger", LoggerConfig))]
    + [(k, t, field(default=MISSING)) for k, t in (("mode", Mode), ("seed", int), ("ckpt", str | None),
       ("name", str), ("threads", Intn), ("progress", bool | None), ("device", str))],
)  # fmt: skip
ConfigStore.instance().store(name="schema", node=Config)


class ConfigError(ValueError):
    """A configuration value that an object refused, or that run.py itself cannot use; the message
    names the config key and its value, then says what is allowed."""


def _bad(key: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _source_key(cfg: DictConfig, key: str) -> str:
    """The config key the user sets for ``key``: the end of its chain of interpolations
    (``trainer.grad_clip: ${train.grad_clip}`` -> ``train.grad_clip``), or ``key`` itself."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    raw = OmegaConf.to_container(node, resolve=False).get(leaf) if isinstance(node, DictConfig) else None
    m = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return _source_key(cfg, m.group(1)) if m else key


def _refusal(cfg: DictConfig, key: str, cause: Exception) -> ConfigError:
    """The :class:`ConfigError` for an argument that ``cfg[key]``'s object (or one nested in it) refused:
    ``cause.name`` is looked up among the node's keys and followed to the key the user sets."""
    name = getattr(cause, "name", None)
    raw = OmegaConf.to_container(cfg[key], resolve=False)
    nested = [f"{key}.{k}" for k, v in raw.items() if isinstance(v, dict) and "_target_" in v]
    for path in [key, *nested]:
        if isinstance(name, str) and name in OmegaConf.select(cfg, path):
            path = f"{path}.{name}"
            node = OmegaConf.select(cfg, path)
            if isinstance(node, DictConfig):  # an object (trainer.nonfinite): its key holding the value
                value = getattr(cause, "value", None)
                held = [k for k in node if not str(k).startswith("_") and node[k] == value]
                path = f"{path}.{held[0]}" if len(held) == 1 else path
            src = _source_key(cfg, path)
            return _bad(src, OmegaConf.select(cfg, src), str(cause))
    return ConfigError(f"{key}: {cause}")


def _check_setting(cfg: DictConfig, key: str, check, **kwargs) -> None:
    """``check(name, value, **kwargs)`` on a setting run.py uses itself; a refusal names ``key``."""
    value = OmegaConf.select(cfg, key)
    try:
        check(key.rsplit(".", 1)[-1], value, **kwargs)
    except (ValueError, TypeError) as e:
        raise _bad(key, value, str(e)) from e


def build_node(cfg: DictConfig, key: str, **kwargs):
    """``instantiate(cfg[key], **kwargs)``; a refused argument raises :class:`ConfigError` naming its key."""
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
    """The ``optimizer`` node on ``params``; a refusal names the argument without which it builds."""
    make, params = build_node(cfg, "optimizer"), list(params)
    try:
        return make(params)
    except (ValueError, TypeError) as e:
        node = OmegaConf.to_container(cfg.optimizer, resolve=True)
        for k in [k for k in node if not k.startswith("_")] * (getattr(e, "name", None) is None):
            with contextlib.suppress(ValueError, TypeError):
                instantiate({n: v for n, v in node.items() if n != k}, _convert_="all")(params)
                e.name = k
                break
        raise _refusal(cfg, "optimizer", e) from e


Built = SimpleNamespace  # what build() makes: data, sde, model, solver, trainer (None: ckpt=*.safetensors)
TOY = ("gmm8", "checkerboard", "moons", "swissroll", "rings")


def _mode(cfg: DictConfig) -> str:
    return cfg.mode.value if isinstance(cfg.mode, Mode) else str(cfg.mode)  # an Enum, or a str in tests


def _built(cfg: DictConfig, key: str, kind: type, **kwargs):
    """``build_node`` for a group whose target must build a ``kind``."""
    obj = build_node(cfg, key, **kwargs)
    if not isinstance(obj, kind):
        what = "a torch.nn.Module" if kind is torch.nn.Module else f"an sde_gen.{kind.__name__}"
        raise _bad(key, cfg[key]._target_, f"a target that builds {what}, got {type(obj).__name__}")
    return obj


def _check_settings(cfg: DictConfig) -> None:
    """The settings run.py uses itself, checked before any work."""
    for key, allowed in (("device", ["auto", "cpu", "cuda"]), ("logger.name", ["wandb", "none"]),
                         ("logger.mode", [None, "offline", "online", "disabled"])):  # fmt: skip
        if OmegaConf.select(cfg, key) not in allowed:
            raise _bad(key, OmegaConf.select(cfg, key), f"one of {allowed}")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise _bad("device", "cuda", "auto or cpu: this machine has no CUDA device")
    _check_setting(cfg, "seed", sg.checks.check_int, low=0)
    why = "checkpoint names hold 8 digits"
    _check_setting(cfg, "train.steps", sg.checks.check_int, low=0, high=MAX_STEPS, why=why)
    if cfg.ckpt is not None and not Path(cfg.ckpt).is_file():
        allowed = "the path of an existing checkpoint file (…/checkpoints/ckpt_XXXXXXXX.pt)"
        raise _bad("ckpt", cfg.ckpt, allowed)
    for section, schema in zip(("train", "sample", "likelihood"), SCHEMAS, strict=True):
        known = {f.name for f in fields(schema)}
        unknown = sorted(set(cfg[section]) - known)  # keys appended with +section.key
        if unknown:
            raise _bad(f"{section}.{unknown[0]}", cfg[section][unknown[0]], f"a key of {section}: "
                       f"{sorted(known - {'_target_'})}")  # fmt: skip


def _check_model_fits_data(cfg: DictConfig, data) -> None:
    model_cfg, images = cfg.model, isinstance(data, sg.ImageData)  # the network's size from the data
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
    _check_settings(cfg)
    device = device or torch.device("cpu")
    data = build_node(cfg, "data")
    stage = build_node(cfg, "pipeline") if cfg.pipeline is not None else None  # a first stage, or None
    n_test = data.test.shape[0]
    if cfg.likelihood.n is not None and cfg.likelihood.n > n_test:
        allowed = f"at most {n_test}, the size of the test set of {data.name}"
        raise _bad("likelihood.n", cfg.likelihood.n, allowed)
    tuned = {"schedule": None} if OmegaConf.select(cfg, "solver.schedule") == "tuned" else {}  # run_job tunes
    sde = _built(cfg, "sde", sg.SDE)
    solver = _built(cfg, "solver", sg.SteppingSolver if tuned else sg.Solver, **tuned)
    if tuned and solver.steps > sg.MAX_TUNED_STEPS:  # a grid is tuned for few steps
        raise _bad("solver.schedule", "tuned", f"at most {sg.MAX_TUNED_STEPS} steps, not {solver.steps}")
    if _mode(cfg) == "reflow":  # ckpt is the first stage's model file, the pairs' ODE
        if cfg.ckpt is None or cfg.train.reflow_from is not None:
            raise _bad("mode", "reflow", "with ckpt=FILE (the first stage's model file) only")
        cfg.train.reflow_from, cfg.ckpt = cfg.ckpt, None
    shape, latents = stage.shape(data) if stage else tuple(data.train.shape[1:]), None  # what the model draws
    if stage is not None:  # trained, or read from the run's or the ckpt's directory (none: build() alone)
        home = Path(cfg.ckpt).parent if str(cfg.ckpt).endswith(".safetensors") else out_dir
        run = dict(sde=sde, loss_fn=build_loss(cfg, sde), parameterization=build_parameterization(cfg))
        latents, stage.metrics = stage.prepare(data, home, seed=cfg.seed, device=device, **run)
    if cfg.ckpt is not None and Path(cfg.ckpt).suffix == ".safetensors":  # model and SDE from the file
        model, trainer = _load_exported(cfg, data, device, shape), None
        sde = model.sde
    else:
        _check_model_fits_data(cfg, data)
        net = _built(cfg, "model", torch.nn.Module)
        if isinstance(data, sg.ImageData) and isinstance(net, sg.UNet):
            want = (net.in_channels, net.image_size, net.image_size)
            if shape != want:
                raise ConfigError(
                    f"model expects images of shape {want} but data={data.name} has {shape}: "
                    "choose a matching model (e.g. unet_digits for digits, unet_mnist for mnist)"
                )
        model = sg.ScoreModel(net, sde, build_parameterization(cfg)).to(device)
        labels = _training_labels(cfg, data, model)
        images = isinstance(data, sg.ImageData) and latents is None  # images to dequantize
        dequantize = sg.LevelTransform(data.levels, -1.0, 1.0).dequantize if images else None
        transform = dequantize or (stage and stage.transform)  # else a latent stage's draw, or none
        train, noise, loss = data.train if latents is None else latents, None, build_loss(cfg, sde)
        if cfg.train.reflow_from is not None:  # the pairs are continuous samples: no dequantization
            (train, noise), transform = _reflow_pairs(cfg, data, sde, labels, device), None
        ckpt_dir = (out_dir if out_dir is not None else Path(".")) / "checkpoints"
        trainer = build_node(
            cfg, "trainer", model=model, loss_fn=stage.wrap_loss(loss) if stage else loss,
            data=build_node(cfg, "batches", data=train, transform=transform, labels=labels, noise=noise),
            optimizer=build_optimizer(cfg, model.parameters()), lr_schedule=build_node(cfg, "lr_schedule"),
            ema=build_node(cfg, "ema", model=model),
            checkpoints=build_node(cfg, "checkpoints", directory=ckpt_dir),
        )  # fmt: skip
    heldout = sg.HeldoutEval(cfg.train.eval_every, cfg.train.eval_n) if trainer else sg.HeldoutEval()
    return Built(
        data=data, sde=sde, model=model, solver=solver, trainer=trainer, heldout=heldout, stage=stage,
        shape=shape, sampling=build_node(cfg, "sample", T=sde.T), quality=build_quality(cfg, data),
        likelihood=build_node(cfg, "likelihood", T=sde.T),
    )  # fmt: skip


def _train_refusal(cfg: DictConfig, cause: Exception, keys: dict, default: str) -> ConfigError:
    """The :class:`ConfigError` of a refused ``train.*`` argument: ``keys`` maps its name to its key."""
    key = f"train.{keys.get(getattr(cause, 'name', None), default)}"
    return _bad(key, OmegaConf.select(cfg, key), str(cause))


def build_loss(cfg: DictConfig, sde: sg.SDE) -> sg.DSMLoss:
    """The ``loss`` node (its weighting a nested node) for ``sde``, with :func:`build_time_sampler`'s."""
    t = cfg.train  # auto weighting and time sampler resolved first, in cfg (so the logged config names them)
    t.weighting, t.time_sampler = sg.objective_for(build_parameterization(cfg), t.weighting, t.time_sampler,
                                                   importance_sampling=t.importance_sampling)  # fmt: skip
    return build_node(cfg, "loss", sde=sde, **build_time_sampler(cfg, sde))


def build_parameterization(cfg: DictConfig) -> sg.Parameterization:
    """``train.parameterization`` (with ``train.sigma_data`` for ``edm``)."""
    name = cfg.train.parameterization
    try:
        return sg.parameterization(name, **({"sigma_data": cfg.train.sigma_data} if name == "edm" else {}))
    except (ValueError, TypeError) as e:
        raise _train_refusal(cfg, e, {"sigma_data": "sigma_data"}, "parameterization") from e


def build_time_sampler(cfg: DictConfig, sde: sg.SDE) -> dict:
    """``{"time_sampler": ...}``: ``train.time_sampler`` (its ``_loc``, ``_scale``) for ``sde``; ``{}`` for
    uniform times, drawn by the loss (with ``train.importance_sampling``: ``p(t) ~ g^2 / std^2``)."""
    t = cfg.train
    name = t.time_sampler
    given = {k: t[f"time_sampler_{k}"] for k in ("loc", "scale") if t[f"time_sampler_{k}"] is not None}
    if name == "uniform" and not given:
        return {}
    if name in ("uniform", "importance") and given:
        k = next(iter(given))
        allowed = f"null: time_sampler={name!r} has no {k} (log_normal and logit_normal have)"
        raise _bad(f"train.time_sampler_{k}", given[k], allowed)
    keys = {"p_mean": "time_sampler_loc", "loc": "time_sampler_loc", "p_std": "time_sampler_scale",
            "scale": "time_sampler_scale", "eps": "eps", "sigma_data": "sigma_data"}  # fmt: skip
    try:
        sampler = sg.time_sampler(name, sde, t.eps, **given, sigma_data=t.sigma_data)
    except (ValueError, TypeError) as e:
        raise _train_refusal(cfg, e, keys, "time_sampler") from e
    if t.importance_sampling:
        allowed = (f"false with train.time_sampler={name!r}: importance sampling draws the times itself "
                   "(from p(t) ~ g^2/std^2, the sampler time_sampler=importance)")  # fmt: skip
        raise _bad("train.importance_sampling", True, allowed)
    return {"time_sampler": sampler}


def build_quality(cfg: DictConfig, data) -> sg.SampleQuality:
    """The sample-quality settings, with their feature network built before any work."""
    quality = build_node(cfg, "metrics")
    scored = _mode(cfg) in SAMPLING or cfg.train.eval_every is not None
    if quality.enabled and isinstance(data, sg.ImageData) and scored:
        try:
            quality.features(data)
        except (FileNotFoundError, ValueError) as e:
            extractor = cfg.metrics.extractor
            raise _bad("metrics.extractor", extractor, f"{e} (metrics.enabled=false skips them)") from e
    return quality


def _load_exported(cfg: DictConfig, data, device, want: tuple) -> sg.ScoreModel:
    """``ckpt=model.safetensors`` (:func:`sg.load_model`), for modes that do not train."""
    if _mode(cfg) not in ("sample", "likelihood", "evaluate"):
        raise _bad("mode", _mode(cfg), "sample, likelihood or evaluate with an exported model (ckpt="
                   "*.safetensors holds the EMA weights, not a training state; continue training from a "
                   "checkpoints/ckpt_XXXXXXXX.pt)")  # fmt: skip
    model = sg.load_model(cfg.ckpt, device=device)
    shape = model.recipe.get("data", {}).get("shape")
    if shape is not None and list(shape) != list(want):
        trained_on = model.recipe["data"].get("name", "other data")
        raise _bad("data", data.name, f"data of the exported model's shape {tuple(shape)} ({cfg.ckpt} was "
                   f"trained on {trained_on}); got {tuple(want)}")  # fmt: skip
    return model


def _reflow_pairs(cfg: DictConfig, data, sde: sg.SDE, labels, device) -> tuple:
    """``train.reflow_from``: ``train.reflow_pairs`` (null: as many as the training set) pairs of that
    model file's probability-flow ODE (dopri5, from ``seed``) for an unconditional run of its SDE."""
    try:
        teacher = sg.load_model(path := cfg.train.reflow_from, device=device)
    except (OSError, sg.CheckpointError) as e:
        raise _bad("train.reflow_from", path, f"a model file written by sg.save_model ({e})") from e
    if labels is not None or repr(teacher.sde) != repr(sde):
        raise _bad("train.reflow_from", path, f"a model of this run's SDE {sde!r}, not of {teacher.sde!r}, "
                   "for an unconditional model")  # fmt: skip
    g, num = torch.Generator(device=device).manual_seed(cfg.seed), cfg.train.reflow_pairs or len(data.train)
    with torch.no_grad():
        return sg.reflow_pairs(sde, teacher.eval(), num, tuple(data.train.shape[1:]), generator=g,
                               batch_size=cfg.likelihood.batch_size, device=device)  # fmt: skip


def export_recipe(built: Built) -> dict:
    """What :func:`sg.save_model` records besides the weights: what a sample is."""
    d = built.data
    levels = dict(levels=d.levels, low=-1.0, high=1.0) if isinstance(d, sg.ImageData) else {}
    return {"data": {"name": d.name, "shape": list(built.shape), **levels}}


def _training_labels(cfg: DictConfig, data, model):
    """The labels a class-conditional model needs, checked against the data (unconditional: None)."""
    k = model.num_classes
    if k is None and cfg.train.p_uncond > 0:
        raise _bad("train.p_uncond", cfg.train.p_uncond, "0 for an unconditional model (model.num_classes)")
    if k is None:
        return None
    if (labels := getattr(data, "train_labels", None)) is None:
        raise _bad("model.num_classes", k, f"null: data={data.name} has no labels")
    if (found := int(labels.max()) + 1) > k:
        raise _bad("model.num_classes", k, f"at least {found}, the number of classes in data={data.name}")
    return labels


def hydra_info() -> tuple[Path, list[str], str | None, dict]:
    """(run directory, overrides, the sweep directory of a multirun or None, group choices)."""
    if not HydraConfig.initialized():
        return Path.cwd(), [], None, {}
    hc = HydraConfig.get()
    sweep_dir = hc.sweep.dir if hc.mode is not None and hc.mode.name == "MULTIRUN" else None
    return Path(hc.runtime.output_dir), list(hc.overrides.task), sweep_dir, dict(hc.runtime.choices)


def _preset_groups(preset: str) -> dict:
    """The config groups an ``experiment`` preset chooses, following the presets it includes."""
    path, own = CONF_DIR / "experiment" / f"{preset}.yaml", {}
    for entry in OmegaConf.load(path).get("defaults", []) if path.is_file() else []:
        own.update(_preset_groups(entry) if isinstance(entry, str) else
                   {str(k).removeprefix("override /"): v for k, v in entry.items()})  # fmt: skip
    return own


def preset_notice(choices: dict) -> str | None:
    """A note when groups that the ``experiment`` preset sets were chosen otherwise (its rest applies)."""
    preset = choices.get("experiment")
    own = _preset_groups(preset) if preset else {}
    changed = {g: choices[g] for g, v in own.items() if g in choices and choices[g] != v}
    if not changed:
        return None
    mine = " ".join(f"{g}={own[g]}" for g in changed)
    theirs = " ".join(f"{g}={v}" for g, v in changed.items())
    return (f"note: experiment={preset} is the preset for {mine}; with {theirs} its other settings "
            f"(conf/experiment/{preset}.yaml) still apply. A preset for your data: experiment=NAME "
            "(conf/experiment/).")  # fmt: skip


def wandb_identity(cfg: DictConfig, overrides: list[str], sweep_dir: str | None) -> dict:
    """W&B group (``<experiment>-<sweep time>`` for a multirun), tags and name (the overrides)."""
    group = cfg.logger.group or (f"{cfg.name}-{Path(sweep_dir).name}" if sweep_dir else None)
    return {"group": group, "tags": [*cfg.logger.tags, *overrides], "name": ",".join(overrides) or None}


def callbacks_for(cfg: DictConfig, built: Built, out_dir: Path, main_process: bool) -> list:
    """Progress reports and periodic evaluation (the logger is added by :func:`execute`)."""
    callbacks, steps = [], cfg.train.steps
    if main_process and _mode(cfg) in TRAINING:
        quiet, every, on = cfg.progress is None and not sys.stderr.isatty(), max(1, steps // 20), cfg.progress
        callbacks.append(sg.ProgressPrinter(steps, every) if quiet else sg.ProgressBar(steps, enabled=on))
    kw = dict(seed=cfg.seed, out_dir=out_dir, quality=built.quality)
    periodic = built.heldout.callback(built.sde, built.data, built.trainer.loss_fn, **kw)
    return callbacks + [periodic] * (periodic is not None)


def execute(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """Build the objects from ``cfg``, run the job into ``out_dir``; return the metrics. Under
    ``torchrun`` every rank calls this: training is data-parallel, evaluation is split over the
    ranks, and only rank 0 (whose run directory all use) writes files and logs."""
    hydra_dir, overrides, sweep_dir, choices = hydra_info()
    out_dir = sg.distributed.broadcast_object(Path(out_dir) if out_dir is not None else hydra_dir)
    main_process, mode, ckpt_dir = sg.distributed.is_main_process(), _mode(cfg), out_dir / "checkpoints"
    # auto and cuda (checked to exist): this process's GPU when CUDA is available, else the CPU.
    device = torch.device("cpu") if cfg.device == "cpu" else sg.distributed.local_device()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    built = build(cfg, out_dir, device)
    if mode in ("sample", "likelihood", "evaluate") and not (cfg.ckpt or any(ckpt_dir.glob("ckpt_*.pt"))):
        raise _bad("mode", mode, f"needs ckpt=PATH or a trained run in hydra.run.dir (no {ckpt_dir})")
    if main_process and (notice := preset_notice(choices)):
        print(notice, file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resolved.update(world_size=sg.distributed.get_world_size(), choices=choices, overrides=overrides)
    if main_process:
        (out_dir / "config_resolved.json").write_text(json.dumps(resolved, indent=2))
    if built.trainer is not None:
        built.trainer.add_callbacks(*callbacks_for(cfg, built, out_dir, main_process))
    logger, log = None, cfg.logger
    if log.name == "wandb" and main_process:
        ident = wandb_identity(cfg, overrides, sweep_dir)
        logger = sg.WandbLogger(resolved, out_dir=out_dir, project=log.project, entity=log.entity,
                                mode=log.mode, log_every=log.log_every, **ident)  # fmt: skip
        if built.trainer is not None:
            built.trainer.add_callbacks(logger)
    previous = json.loads(mfile.read_text()) if (mfile := out_dir / "metrics.json").exists() else {}
    try:
        metrics = run_job(cfg, built, out_dir, device)
        # metrics.json keeps what earlier modes in this directory measured (e.g. train, then sample).
        metrics = {**previous, **metrics, "mode": mode}
        if main_process:
            mfile.write_text(json.dumps(metrics, indent=2))
        if logger is not None:
            logger.log_results(metrics, out_dir)
    finally:
        if logger is not None:
            logger.finish()
    if main_process:
        what = f"{built.data.name} {type(built.sde).__name__} {type(built.solver).__name__}"
        print(sg.metrics_table(metrics, f"\n{what}: {out_dir}"))
    return metrics


def train(trainer: sg.Trainer, steps: int, out_dir: Path, export: dict) -> dict:
    """Train to ``steps`` (from where the trainer resumed); rank 0 writes ``history.json``,
    ``loss.png`` and ``model.safetensors`` (the EMA model to share: weights and recipe)."""
    trainer.add_callbacks(history := sg.HistoryFile(out_dir / "history.json"))
    start = time.perf_counter()
    trainer.fit(steps)
    metrics = {"train_seconds": time.perf_counter() - start, "skipped_steps": trainer.skipped}
    metrics.update(history.finish(trainer, curve=out_dir / "loss.png"))
    if sg.distributed.is_main_process():
        try:
            sg.save_model(out_dir / "model.safetensors", trainer.model, ema=trainer.ema, **export)
        except TypeError as e:  # a network or SDE that a model file cannot name
            print(f"model.safetensors not written: {e}", flush=True)
    return metrics


def run_job(cfg: DictConfig, built: Built, out_dir: Path, device) -> dict:
    """Train (modes train, all; resuming from ``out_dir``'s checkpoints or from ``ckpt``), then
    evaluate with the EMA weights (:func:`sde_gen.evaluate_model`); returns the metrics."""
    mode, trainer, metrics = _mode(cfg), built.trainer, {}
    if trainer is not None:  # None: an exported model, evaluated as it is
        metrics["train_steps"] = cfg.train.steps
        if cfg.ckpt is not None:
            trainer.load_checkpoint(cfg.ckpt)
        elif trainer.resume() and sg.distributed.is_main_process():
            print(f"resumed from step {trainer.step} in {trainer.checkpoints.dir}", flush=True)
        if mode in TRAINING:
            metrics.update(train(trainer, cfg.train.steps, out_dir, export_recipe(built)))
        metrics["step"] = trainer.step
    ema = trainer.ema.applied(built.model) if trainer is not None and trainer.ema is not None else None
    with ema or contextlib.nullcontext():
        metrics |= _tune(cfg, built, out_dir, mode) | (built.stage.metrics if built.stage else {})
        metrics |= sg.evaluate_model(
            built.model, built.sde, built.data, built.solver, out_dir=out_dir, seed=cfg.seed, device=device,
            plan=built.sampling if mode in SAMPLING else None, quality=built.quality,
            likelihood=built.likelihood if mode in LIKELIHOOD else None, batch_size=cfg.likelihood.batch_size,
            stage=built.stage,
        )  # fmt: skip
    return metrics


def _tune(cfg: DictConfig, built: Built, out_dir: Path, mode: str) -> dict:
    """``solver.schedule=tuned``: the grid the model file keeps, else tuned (pilot 256) and kept there."""
    if cfg.solver.get("schedule") != "tuned" or mode not in SAMPLING:
        return {}
    path = cfg.ckpt if str(cfg.ckpt).endswith(".safetensors") else out_dir / "model.safetensors"
    grid, res = sg.tuned_schedule(built.model, built.solver, (256, *built.shape), sde=built.sde,
                                  path=path, eps=built.sampling.eps, generator=cfg.seed)  # fmt: skip
    built.solver = built.solver.with_schedule(grid)
    return {"schedule": "stored" if res is None else res.method, "schedule_nfe": res.nfe if res else 0}


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    start = time.perf_counter()
    sg.distributed.init_from_env(backend="gloo" if cfg.device == "cpu" else None)
    try:
        metrics = execute(cfg)
    except (ConfigError, sg.CheckpointError, FloatingPointError) as e:
        # A refused setting (exit 2), a damaged checkpoint or a NaN loss (the last good state is kept).
        bad = isinstance(e, ConfigError)
        print(f"run.py: {'invalid configuration' if bad else type(e).__name__}: {e}", file=sys.stderr)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(2 if bad else 1)
    if sg.distributed.is_main_process():
        print(f"wall time {time.perf_counter() - start:.1f} s")
    return metrics


def quiet_other_ranks() -> None:
    """Ranks other than 0 use rank 0's run directory and write nothing into Hydra's: no ``.hydra/``,
    no log, and a throw-away directory unless ``hydra.run.dir`` is given."""
    sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    if not any(a.startswith(("hydra.run.dir=", "-m", "--multirun")) for a in sys.argv[1:]):
        scratch = tempfile.mkdtemp(prefix="sde_gen_rank_")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        sys.argv.append(f"hydra.run.dir={scratch}")


if __name__ == "__main__":
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) != "0":
        quiet_other_ranks()
    main()
    sg.distributed.exit_process_group()  # torchrun: after all is written
