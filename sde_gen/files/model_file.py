"""Score models as files to share: weights in safetensors, the recipe in its metadata.

A file written by :func:`save_model` holds the weights of a :class:`~sde_gen.ScoreModel`'s network
(the EMA weights, when an EMA is given) as safetensors, and in the header's metadata a JSON
recipe: the SDE and the network as ``{"_target_": ..., arguments}``, the parameterisation (its
name, or ``{"name": "edm", "sigma_data": ...}`` for one with settings), and what a sample is (its
shape, the data's levels and range). :func:`load_model` rebuilds a
ready-to-sample model from that file alone. A class-conditional network's ``num_classes`` is one of
its arguments, so it is in the recipe (``model.num_classes`` after loading); an unconditional
network's recipe does not name it, as before.

Nothing in such a file can run code (Hugging Face's safetensors format stores raw tensors and a
JSON header; we chose it over our own format for its bounded, audited parser), and the recipe can
only name the built-in classes of :data:`TARGETS`, with arguments their constructors check.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .._checks import ArgumentValueError
from ..models import MLP, SuperResolutionUNet, UNet
from ..models.parameterizations import PARAMETERIZATIONS
from ..models.parameterizations import parameterization as make_parameterization
from ..models.score import ScoreModel
from ..sampling.solvers.grids import check_schedule
from ..sdes.base import SDE, VESDE, VPSDE, SubVPSDE
from ..sdes.flows import RectifiedFlow
from ..sdes.schedules import EDMSDE, CosineVPSDE
from .checkpoint import CheckpointError
from .limits import Header, build_on_meta, check_arguments, check_fits, read_header, short_repr

__all__ = ["save_model", "load_model", "read_model_metadata", "TARGETS", "FORMAT"]

#: The classes a model file may name: nothing else is ever built from a file.
TARGETS = {
    "sde_gen.VPSDE": VPSDE,
    "sde_gen.SubVPSDE": SubVPSDE,
    "sde_gen.VESDE": VESDE,
    "sde_gen.CosineVPSDE": CosineVPSDE,
    "sde_gen.EDMSDE": EDMSDE,
    "sde_gen.RectifiedFlow": RectifiedFlow,
    "sde_gen.MLP": MLP,
    "sde_gen.UNet": UNet,
    "sde_gen.SuperResolutionUNet": SuperResolutionUNet,
}
#: Hydra configs name the presets; they are the same class with other defaults.
ALIASES = {
    f"sde_gen.UNet.{p}": "sde_gen.UNet" for p in ("digits", "mnist", "ddpmpp_cifar10", "ddpmpp_deep_cifar10")
}

FORMAT = "sde_gen.model/1"
MAX_METADATA = 1 << 20  # bytes of JSON recipe accepted


def _config_of(obj, what: str) -> dict:
    """``{"_target_": name, **arguments}`` read back from a built-in object's attributes."""
    name = next((n for n, cls in TARGETS.items() if type(obj) is cls), None)
    if name is None:
        raise TypeError(
            f"cannot export a {what} of type {type(obj).__name__}: a model file can only name "
            f"{sorted(TARGETS)}; pass {what}_config= with one of them"
        )
    config = {"_target_": name}
    for p in list(inspect.signature(type(obj).__init__).parameters.values())[1:]:
        value = getattr(obj, p.name, p.default)
        if isinstance(value, tuple):
            value = list(value)
        if value is p.default or value == p.default:
            continue
        if not isinstance(value, (int, float, str, bool, list, type(None))):
            raise TypeError(f"cannot export {what} argument {p.name}={value!r}: not a JSON value")
        config[p.name] = value
    return config


def _target(config, what: str, path: Path, hint: str = ""):
    """The allow-listed class a recipe names and its arguments, checked (:func:`check_arguments`)."""
    if not isinstance(config, dict) or not isinstance(config.get("_target_"), str):
        raise CheckpointError(
            f"model file {path}: its {what} must be a dict with a _target_, got {short_repr(config)}"
        )
    kwargs = dict(config)
    target = kwargs.pop("_target_")
    target = ALIASES.get(target, target)
    if target not in TARGETS:
        raise CheckpointError(
            f"model file {path} names {what} {short_repr(target)}; a model file can only name "
            f"{sorted(TARGETS)}{hint}"
        )
    check_arguments(kwargs, what, target, path)
    return target, TARGETS[target], kwargs


def save_model(
    path: str | os.PathLike,
    model: ScoreModel,
    *,
    ema=None,
    data: dict | None = None,
    sde_config: dict | None = None,
    net_config: dict | None = None,
    schedules: dict | None = None,
) -> Path:
    """Write ``model`` (with ``ema``'s weights if given) to a safetensors file with its recipe.

    Args:
        model: a :class:`ScoreModel` whose SDE and network are built-in classes (:data:`TARGETS`),
            or give their recipes as ``sde_config`` / ``net_config`` (``{"_target_": ..., ...}``,
            e.g. the Hydra config nodes).
        ema: a :class:`~sde_gen.EMA` of ``model``: its average is what is written.
        data: what a sample is, e.g. ``{"shape": [1, 8, 8], "levels": 17, "low": -1.0, "high":
            1.0, "name": "digits"}`` (JSON values only).
        schedules: tuned time grids to keep with the model, ``{sg.schedule_key(solver, eps): grid}``
            (:func:`~sde_gen.store_schedule` adds one to a written file).
    The file is written atomically (a temporary file renamed into place).
    """
    if not isinstance(model, ScoreModel):
        raise TypeError(f"model must be a sde_gen.ScoreModel, got {type(model).__name__}")
    if PARAMETERIZATIONS.get(model.param.name) is not type(model.param):
        raise TypeError(
            f"cannot export a parameterization of type {type(model.param).__name__}: a model file can "
            f"only name {sorted(PARAMETERIZATIONS)}"
        )
    recipe = {
        "format": FORMAT,
        "sde": dict(sde_config) if sde_config is not None else _config_of(model.sde, "sde"),
        "net": dict(net_config) if net_config is not None else _config_of(model.net, "net"),
        "parameterization": model.param.config(),  # a name, or a dict with the settings (edm)
        "data": dict(data or {}),
    }
    if schedules:
        recipe["schedules"] = {
            str(k): check_grid(v, f"schedules[{k!r}]").tolist() for k, v in schedules.items()
        }
    state = dict(model.state_dict()) if ema is None else {k: v for k, v in ema.shadow.items()}
    tensors = {
        k[len("net.") :]: v.detach().cpu().contiguous() for k, v in state.items() if k.startswith("net.")
    }
    return write_model_file(path, tensors, recipe)


def check_grid(value, name: str) -> torch.Tensor:
    """An explicit time grid (:func:`~sde_gen.sampling.solvers.grids.check_schedule`'s checks, as
    float64), not a schedule's name; raises naming ``name``."""
    if isinstance(value, str) or value is None:
        raise ArgumentValueError(name, value, f"{name} must be a grid of times, got {value!r}")
    try:
        return check_schedule(value)
    except ValueError as e:
        raise ArgumentValueError(name, value, f"{name}: {e}") from None


def write_model_file(path: str | os.PathLike, tensors: dict, recipe: dict) -> Path:
    """Write the tensors and the recipe (JSON values only) atomically: a temporary file renamed
    into place, so a reader sees the old file or the new one, never a torn one."""
    from safetensors.torch import save_file

    text = json.dumps(recipe)  # refuses non-JSON values
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"sde_gen": text})
    os.replace(tmp, path)
    return path


def read_model_metadata(path: str | os.PathLike) -> dict:
    """The recipe stored in a model file, read from its header alone (no tensor is loaded)."""
    return read_recipe(Path(path))[1]


def read_recipe(path: Path, fmt: str = FORMAT, kind: str = "model") -> tuple[Header, dict]:
    """The checked header of a ``kind`` file (``"model"``, ``"autoencoder"``) of format ``fmt`` and
    its recipe."""
    header = read_header(path)
    text = header.metadata.get("sde_gen")
    try:
        if not isinstance(text, str) or len(text) > MAX_METADATA:
            raise ValueError("no sde_gen recipe in its metadata")
        recipe = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(
            f"{kind} file {path} cannot be read ({type(e).__name__}: {short_repr(str(e))}): it is truncated, "
            f"corrupt or not a{'n' * kind.startswith('a')} {kind} exported by sde_gen"
        ) from e
    if not isinstance(recipe, dict) or recipe.get("format") != fmt:
        raise CheckpointError(f"{kind} file {path} is not a sde_gen {kind} file (format {fmt})")
    return header, recipe


def load_model(
    path: str | os.PathLike, *, sde: SDE | None = None, device: torch.device | str | None = None
) -> ScoreModel:
    """Rebuild the :class:`ScoreModel` saved by :func:`save_model`, in eval mode, from the file
    alone; ``model.recipe`` holds the file's recipe (``model.recipe["data"]`` says what a sample
    is). Nothing in the file is executed; a file that is not such a model raises
    :class:`~sde_gen.CheckpointError` naming it.

    A file cannot make this exhaust memory or time (:mod:`sde_gen.files.limits`): the network is
    built on the ``meta`` device and its tensors' names, shapes and dtypes are compared with the
    file's header before anything is allocated, so it never needs more memory than the file holds.

    Args:
        sde: the SDE to use instead of building the one the file's recipe names. A file can only
            build the built-in SDEs (:data:`TARGETS`), so an SDE of your own is passed here (its
            recipe, as given to ``save_model(sde_config=...)``, stays in ``model.recipe["sde"]``).
    """
    path = Path(path)
    header, recipe = read_recipe(path)
    if sde is None:
        name, cls, kwargs = _target(recipe.get("sde"), "sde", path, hint="; pass sde= for an SDE of your own")
        try:
            sde = cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise CheckpointError(
                f"model file {path}: its sde {name}({short_repr(kwargs)}) is refused: {short_repr(str(e))}"
            ) from e
    elif not isinstance(sde, SDE):
        raise TypeError(f"sde must be a sde_gen.SDE, got {type(sde).__name__}")
    name, cls, kwargs = _target(recipe.get("net"), "net", path)
    spec = recipe.get("parameterization")
    try:  # a name, or {"name": ..., settings} (what Parameterization.config() writes)
        if not isinstance(spec, (str, dict)):
            raise TypeError(f"a name or a dict with a name, got {type(spec).__name__}")
        parameterization = make_parameterization(spec)
    except (ValueError, TypeError, ArithmeticError) as e:
        why = str(e) if len(str(e)) <= 200 else f"{str(e)[:200]}..."  # the value may be huge
        raise CheckpointError(
            f"model file {path}: its parameterization {short_repr(spec)} is refused: {why}"
        ) from e
    net = build_on_meta(cls, kwargs, "net", name, header, path)  # no memory, bounded time
    dtypes = {dtype for dtype, _ in header.tensors.values() if dtype.is_floating_point}
    if len(dtypes) == 1:  # a float64 model comes back in float64
        net.to(dtype=dtypes.pop())
    check_fits(net, header, name, path)
    # Only now is memory allocated, as much as the file holds: copies of its tensors (never views of
    # the mapped file, which may change or shrink later), in the network's dtypes, become the
    # network's (no meta operation: some cost seconds the first time they run).
    try:
        with safe_open(str(path), "pt") as f:
            state = {k: f.get_tensor(k).to(device, v.dtype, copy=True) for k, v in net.state_dict().items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"model file {path} cannot be read ({type(e).__name__}: {e})") from e
    net.load_state_dict(state, assign=True)
    if any(t.is_meta for t in net.buffers()):  # a buffer that is not saved: build it for real
        net = cls(**kwargs).to(device)
        net.load_state_dict(state)
    model = ScoreModel(net, sde, parameterization).eval()
    model.recipe = recipe
    return model.to(device) if device is not None else model
