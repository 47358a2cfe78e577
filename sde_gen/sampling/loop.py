"""``sample``: the one sampling loop, for every SDE and every solver."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._checks import (
    ArgumentTypeError,
    ArgumentValueError,
    ScoreCheck,
    check_cond,
    check_eps,
    check_finite,
    check_tensor,
)
from .._utils import time_vector
from ..sdes.base import GaussianPriorMixin, check_sde, check_shape
from .noise import KeyedNoise
from .solvers.base import Solver, StepInfo
from .solvers.ode import ProbabilityFlow

__all__ = ["sample", "encode", "SampleResult"]


@dataclass
class SampleResult:
    """Samples at ``t = eps`` (or their denoised means), the score evaluations used, and the time
    grid the solver stepped on (float64, from ``T`` to ``eps``; ``None`` for adaptive solvers)."""

    x: torch.Tensor
    nfe: int
    grid: torch.Tensor | None = None


def sample(
    sde,
    score_fn: Callable,
    shape,
    solver: Solver,
    *,
    eps: float = 1e-3,
    generator: torch.Generator | KeyedNoise | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    x_T: torch.Tensor | None = None,
    denoise: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    return_result: bool = False,
    progress: bool = False,
    cond: dict | None = None,
):
    """Draw samples of p_eps by integrating the reverse dynamics from ``T`` to ``eps``.

    Args:
        shape: ``(B, ...)``, the shape of the samples.
        solver: :class:`EulerMaruyama`, :class:`PredictorCorrector`, :class:`ProbabilityFlow`
            or any :class:`Solver`.
        eps: the final time, in ``(0, T)``.
        generator: the source of all randomness (prior draw and solver noise): a
            ``torch.Generator``, or a :class:`KeyedNoise`, with which each sample's noise depends on
            its index and the seed only, not on the batch (see :func:`_keyed_prior`).
        callback: called after every step with a :class:`StepInfo`.
        x_T: start here instead of a prior draw (shape ``shape``); e.g. to decode latents.
        denoise: return Tweedie's ``E[x_0 | x_eps]`` instead of the sample of p_eps.
        dtype, device: of the prior draw, as in torch (default: torch's defaults).
        return_result: return a :class:`SampleResult` with the NFE instead of a tensor.
        progress: show a progress bar (tqdm) over the solver's steps.
        cond: conditioning passed to every evaluation as ``score_fn(x, t, **cond)``: a dict of
            tensors with one row per sample (first dimension ``B``), e.g. ``{"y": labels}`` with
            integer class labels; moved to the samples' device. ``None``: ``score_fn(x, t)``.

    Returns a tensor of shape ``shape`` (or a :class:`SampleResult`). Raises
    ``FloatingPointError`` naming the samples that came out non-finite.
    """
    check_sde(sde)
    if not isinstance(solver, Solver):
        raise ArgumentTypeError(
            "solver",
            solver,
            f"solver must be an sde_gen Solver (e.g. EulerMaruyama(steps=1000)), got {solver!r}",
        )
    eps = check_eps(eps, sde.T)
    shape = check_shape(shape)
    cond = check_cond(cond, shape[0])
    if callback is not None and not callable(callback):
        raise ArgumentTypeError(
            "callback", callback, f"callback must be callable as callback(info) or None, got {callback!r}"
        )
    if generator is not None and not isinstance(generator, (torch.Generator, KeyedNoise)):
        kind = type(generator).__name__
        raise ArgumentTypeError(
            "generator",
            generator,
            f"generator must be a torch.Generator or None, got {kind} (or an sde_gen.KeyedNoise, "
            "for noise keyed per sample)",
        )
    keyed = isinstance(generator, KeyedNoise)
    if keyed:
        generator = generator.restarted()  # a fresh count of draws for every call
    if x_T is None and keyed:
        x = _keyed_prior(sde, shape, generator, dtype, device)
    elif x_T is None:
        x = sde.prior_sample(shape, generator=generator, dtype=dtype, device=device)
    else:
        x = check_tensor("x_T", x_T)
        if tuple(x.shape) != shape:
            raise ArgumentValueError("x_T", x_T, f"x_T has shape {tuple(x.shape)}, but shape is {shape}")
        if dtype is not None and x.dtype != dtype:
            raise ArgumentTypeError(
                "x_T", x_T, f"x_T has dtype {x.dtype}, but dtype={dtype}; pass one or make them agree"
            )
        if device is not None and x.device != torch.device(device):
            raise ArgumentValueError(
                "x_T", x_T, f"x_T is on {x.device}, but device={device}; pass one or make them agree"
            )
    if isinstance(generator, torch.Generator) and generator.device.type != x.device.type:
        raise ArgumentValueError(
            "generator", generator, f"generator is on {generator.device}, but the samples are on {x.device}"
        )
    if keyed:
        generator.draw = 1  # draw 0 is the prior's, whether or not x_T is given
    score = ScoreCheck(score_fn, cond={k: v.to(x.device) for k, v in cond.items()})
    grid = solver.grid(sde, sde.T, eps) if hasattr(solver, "grid") else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # one update per callback, i.e. per step of the grid (Heun's steps are score evaluations)
        total = None if grid is None else grid.numel() - 1
        bar = tqdm(total=total, desc="sample", dynamic_ncols=True)
        user_callback = callback

        def callback(info):
            bar.update(1)
            if user_callback is not None:
                user_callback(info)

    try:
        x, _ = solver.solve(sde, score, x, sde.T, eps, generator=generator, callback=callback)
    finally:
        if bar is not None:
            bar.close()
    if denoise:
        t = time_vector(eps, x)
        with torch.no_grad():
            x = sde.tweedie(x, t, score(x, t))
    check_finite("sample", x)
    if not return_result:
        return x
    return SampleResult(x, score.nfe, grid)


def _keyed_prior(sde, shape, noise: KeyedNoise, dtype, device) -> torch.Tensor:
    """The prior draw with keyed noise (draw 0): ``prior_std * z`` with keyed normals for the
    built-in Gaussian priors; an SDE with its own ``prior_sample`` is called once per sample with a
    ``torch.Generator`` seeded by :meth:`KeyedNoise.row_seed` (a Python loop over rows, slower; its
    values then depend on the generator's device type, CPU or CUDA)."""
    if isinstance(sde, GaussianPriorMixin) and type(sde).prior_sample is GaussianPriorMixin.prior_sample:
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ArgumentTypeError(
                "dtype",
                dtype,
                f"dtype must be a floating-point torch.dtype (e.g. torch.float32) or None, got {dtype!r}",
            )
        return sde.prior_std * noise.normal(shape, draw=0, dtype=dtype, device=device)
    dev = torch.empty(0, device=device).device
    rows = [
        sde.prior_sample(
            (1,) + shape[1:],
            generator=torch.Generator(device=dev).manual_seed(noise.row_seed(r, 0)),
            dtype=dtype,
            device=device,
        )
        for r in range(shape[0])
    ]
    return torch.cat(rows)


def encode(
    sde,
    score_fn: Callable,
    x: torch.Tensor,
    *,
    eps: float = 1e-5,
    solver: ProbabilityFlow | None = None,
    cond: dict | None = None,
):
    """Map data ``x`` at ``t = eps`` to its latent at ``T`` with the probability-flow ODE.

    ``sample(..., solver, x_T=encode(...), eps=eps)`` with the same ``ProbabilityFlow`` (and the
    same ``cond``, as in :func:`sample`) decodes it.
    """
    check_sde(sde)
    x = check_tensor("x", x)
    cond = {k: v.to(x.device) for k, v in check_cond(cond, x.shape[0]).items()}
    eps = check_eps(eps, sde.T)
    solver = ProbabilityFlow() if solver is None else solver
    if not isinstance(solver, ProbabilityFlow):
        raise ArgumentTypeError(
            "solver", solver, f"solver must be a ProbabilityFlow (encoding is deterministic), got {solver!r}"
        )
    z, _ = solver.solve(sde, ScoreCheck(score_fn, cond=cond), x, eps, sde.T)
    check_finite("encoded latent", z)
    return z
