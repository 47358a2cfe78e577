"""Autoencoders as files to share: weights in safetensors, the recipe in its metadata.

A file written by :func:`save_autoencoder` holds every tensor of the autoencoder's state (the
latent scale factor ``scale`` and the decoder's ``log_sigma`` included) and a JSON recipe naming
its class, one of :data:`AUTOENCODER_TARGETS`, and its arguments. :func:`load_autoencoder` rebuilds
it from the file alone, with the guards of :func:`~sde_gen.load_model` (:mod:`sde_gen.files.limits`):
nothing in the file runs, the recipe's arguments are bounded JSON values, and the autoencoder is
built on the ``meta`` device and compared with the file's header before any memory is allocated.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .._checks import ArgumentTypeError, ArgumentValueError, check_int
from ..models.autoencoder import LinearAutoencoder
from ..models.autoencoder_kl import AutoencoderKL
from .checkpoint import CheckpointError
from .limits import Header, build_on_meta, check_arguments, check_fits, short_repr
from .model_file import read_recipe, write_model_file

__all__ = ["save_autoencoder", "load_autoencoder", "AUTOENCODER_TARGETS", "AUTOENCODER_FORMAT"]

AUTOENCODER_FORMAT = "sde_gen.autoencoder/1"


def _linear(data_shape: list, k: int) -> LinearAutoencoder:
    """A :class:`LinearAutoencoder` of ``k`` latents for samples of shape ``data_shape``, all zeros:
    the file's tensors replace them."""
    if not isinstance(data_shape, list) or not data_shape:
        raise ArgumentValueError("data_shape", data_shape, "data_shape must be a non-empty list of sizes")
    shape = tuple(check_int("data_shape", n, low=1) for n in data_shape)
    k = check_int("k", k, low=1)
    D = math.prod(shape)
    return LinearAutoencoder(torch.zeros(k, D), torch.zeros(D, k), torch.zeros(D), shape)


#: The classes an autoencoder file may name, and what builds each from its recipe's arguments.
AUTOENCODER_TARGETS = {"sde_gen.AutoencoderKL": AutoencoderKL, "sde_gen.LinearAutoencoder": _linear}


def _recipe_of(model) -> dict:
    if type(model) is AutoencoderKL:
        return {"_target_": "sde_gen.AutoencoderKL", **model.config()}
    if type(model) is LinearAutoencoder:
        k = model.encoder.shape[0]
        return {"_target_": "sde_gen.LinearAutoencoder", "data_shape": list(model.data_shape), "k": k}
    raise ArgumentTypeError(
        "model",
        model,
        f"model must be a sde_gen.AutoencoderKL or a sde_gen.LinearAutoencoder (the classes an "
        f"autoencoder file can hold), got {type(model).__name__}",
    )


def save_autoencoder(path: str | os.PathLike, model, *, ema=None) -> Path:
    """Write ``model`` (an :class:`~sde_gen.AutoencoderKL` or :class:`~sde_gen.LinearAutoencoder`)
    to a safetensors file with its recipe, atomically.

    Args:
        ema: a :class:`~sde_gen.EMA` of ``model``: its average of the weights is what is written,
            except the latent scale factor ``scale``, which is the model's (it is set after
            training by :meth:`~sde_gen.Autoencoder.fit_scale`, not trained, so an average holds
            a stale one).
    """
    autoencoder = {**_recipe_of(model)}
    state = dict(model.state_dict())
    if ema is not None:
        shadow = getattr(ema, "shadow", None)
        if not isinstance(shadow, dict) or set(shadow) != set(state):
            raise ArgumentValueError(
                "ema", ema, "ema must be a sde_gen.EMA of this model (its shadow holds other tensors)"
            )
        state = {k: (state[k] if k == "scale" else v) for k, v in shadow.items()}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return write_model_file(path, tensors, {"format": AUTOENCODER_FORMAT, "autoencoder": autoencoder})


def _read_recipe(path: Path) -> tuple[Header, dict]:
    """The checked header of an autoencoder file and the recipe in its metadata."""
    return read_recipe(path, AUTOENCODER_FORMAT, "autoencoder")


def load_autoencoder(
    path: str | os.PathLike, *, device: torch.device | str | None = None
) -> AutoencoderKL | LinearAutoencoder:
    """Rebuild the autoencoder saved by :func:`save_autoencoder`, in eval mode, from the file alone.

    A file that is missing, unreadable, not an autoencoder file, that names a class outside
    :data:`AUTOENCODER_TARGETS`, or whose tensors do not fit the autoencoder its recipe describes
    raises :class:`~sde_gen.CheckpointError` naming it, before anything is allocated. The tensors
    keep the file's floating dtype (a float64 autoencoder comes back in float64).
    """
    path = Path(path)
    header, recipe = _read_recipe(path)
    config = recipe.get("autoencoder")
    if not isinstance(config, dict) or not isinstance(config.get("_target_"), str):
        raise CheckpointError(
            f"autoencoder file {path}: its autoencoder must be a dict with a _target_, "
            f"got {short_repr(config)}"
        )
    kwargs = dict(config)
    name = kwargs.pop("_target_")
    if name not in AUTOENCODER_TARGETS:
        raise CheckpointError(
            f"autoencoder file {path} names the class {short_repr(name)}; an autoencoder file can only "
            f"name {sorted(AUTOENCODER_TARGETS)}"
        )
    check_arguments(kwargs, "autoencoder", name, path)
    model = build_on_meta(AUTOENCODER_TARGETS[name], kwargs, "autoencoder", name, header, path)
    dtypes = {dtype for dtype, _ in header.tensors.values() if dtype.is_floating_point}
    if len(dtypes) == 1:
        model.to(dtype=dtypes.pop())
    check_fits(model, header, name, path)
    try:  # copies of the file's tensors (never views of the mapped file), in the model's dtypes
        with safe_open(str(path), "pt") as f:
            state = {k: f.get_tensor(k).to(device, v.dtype, copy=True) for k, v in model.state_dict().items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"autoencoder file {path} cannot be read ({type(e).__name__}: {e})") from e
    model.load_state_dict(state, assign=True)
    return model.eval()
