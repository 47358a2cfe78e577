"""Tuned time grids that travel with a model: kept in its model file's recipe under the key
:func:`schedule_key` gives (the solver's kind and settings, its steps and the end time), so that a
grid tuned once by :func:`~sde_gen.optimize_schedule` is found again by whoever loads the file.

- :func:`stored_schedule`: the grid kept for a solver, or ``None``;
- :func:`store_schedule`: add one to a written model file (weights unchanged, written atomically);
- :func:`tuned_schedule`: the stored grid where there is one, else tune it now and store it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .._checks import ArgumentTypeError, ArgumentValueError, check_eps
from ..distributed import is_main_process
from ..models.score import ScoreModel
from ..sampling.solvers.base import SteppingSolver
from ..sampling.tuning import TunedSchedule, optimize_schedule
from .checkpoint import CheckpointError
from .model_file import check_grid, read_recipe, write_model_file

__all__ = ["schedule_key", "stored_schedule", "store_schedule", "tuned_schedule"]


def schedule_key(solver: SteppingSolver, eps: float = 1e-3) -> str:
    """The key a tuned grid for ``solver`` is kept under: the solver's constructor call without its
    grid (its kind, settings and steps) and the end time, e.g. ``"DPMSolverPlusPlus(steps=10,
    order=2, schedule=None, stochastic=False, lower_order_final=True)|eps=0.001"``."""
    if not isinstance(solver, SteppingSolver):
        raise ArgumentTypeError(
            "solver",
            solver,
            f"solver must be a stepping solver (whose grid is tuned), got {type(solver).__name__}",
        )
    return f"{solver.with_schedule(None)!r}|eps={float(eps)!r}"


def stored_schedule(source, solver: SteppingSolver, *, eps: float = 1e-3) -> torch.Tensor | None:
    """The grid kept for ``solver`` and ``eps`` in ``source`` (a model file's path, or a model from
    :func:`~sde_gen.load_model`, which keeps its file's recipe), or ``None`` if there is none."""
    if isinstance(source, ScoreModel):
        recipe = getattr(source, "recipe", None) or {}
        where = "the model's recipe"
    else:
        recipe, where = read_recipe(Path(source))[1], f"model file {source}"
    kept = recipe.get("schedules") or {}
    if not isinstance(kept, dict):
        raise CheckpointError(f"{where}: its schedules must be a dict of grids, got {type(kept).__name__}")
    key = schedule_key(solver, eps)
    if key not in kept:
        return None
    try:
        return check_grid(kept[key], f"schedules[{key!r}]")
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


def store_schedule(path: str | os.PathLike, solver: SteppingSolver, grid, *, eps: float = 1e-3) -> Path:
    """Keep ``grid`` for ``solver`` and ``eps`` in the model file at ``path`` (replacing one kept
    under the same key); the weights are copied unchanged and the file is replaced atomically."""
    path = Path(path)
    key = schedule_key(solver, eps)
    grid = check_grid(grid, "grid")
    if grid.numel() - 1 != solver.steps:
        raise ArgumentValueError(
            "grid", grid, f"grid has {grid.numel() - 1} steps but the solver takes {solver.steps}"
        )
    _, recipe = read_recipe(path)
    try:
        with safe_open(str(path), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"model file {path} cannot be read ({type(e).__name__}: {e})") from e
    recipe["schedules"] = {**(recipe.get("schedules") or {}), key: grid.tolist()}
    return write_model_file(path, tensors, recipe)


def tuned_schedule(
    model,
    solver: SteppingSolver,
    shape,
    *,
    sde=None,
    path: str | os.PathLike | None = None,
    eps: float = 1e-3,
    generator: torch.Generator | int | None = None,
    cond: dict | None = None,
    method: str = "minimize",
    **kwargs,
) -> tuple[torch.Tensor, TunedSchedule | None]:
    """The grid for ``solver`` on ``model``: the one kept in the model file ``path`` (or in the
    loaded model's recipe) where there is one, with ``None``; else tuned now by
    :func:`~sde_gen.optimize_schedule` (pilot ``shape``, ``method``, ``generator``, ``cond`` and
    ``kwargs`` as there; ``sde`` defaults to the model's) and kept in ``path`` when that file
    exists (by rank 0 only, in a process group), with its :class:`~sde_gen.TunedSchedule`.

    The pilot is drawn on the model's device, and ``generator`` may be an int: the seed of a
    generator there. A class-conditional model (``model.num_classes``) given no ``cond`` is tuned
    on labels drawn uniformly from that generator."""
    eps = check_eps(eps, (sde or model.sde).T)
    param = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    kwargs.setdefault("device", None if param is None else param.device)
    if isinstance(generator, int) and not isinstance(generator, bool):
        generator = torch.Generator(device=kwargs["device"] or "cpu").manual_seed(generator)
    classes = getattr(model, "num_classes", None)
    if cond is None and classes:
        cond = {"y": torch.randint(classes, (shape[0],), generator=generator, device=kwargs["device"])}
    path = Path(path) if path is not None and Path(path).is_file() else None
    source = path if path is not None else model if isinstance(model, ScoreModel) else None
    kept = None if source is None else stored_schedule(source, solver, eps=eps)
    if kept is not None:
        return kept, None
    result = optimize_schedule(
        sde or model.sde, model, solver, shape, eps=eps, generator=generator, cond=cond, method=method,
        return_result=True, **kwargs,
    )  # fmt: skip
    if path is not None and is_main_process():  # one writer in a process group
        store_schedule(path, solver, result.grid, eps=eps)
    return result.grid, result
