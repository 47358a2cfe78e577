"""Cascades (Ho et al. 2021) and latent models (Rombach et al. 2022): sampling stage by stage.

A cascade draws a low-resolution image with an unconditional model, then each super-resolution
stage draws the next resolution from its conditional score ``score_fn(x, t, low=..., low_noise=s)``
given the stage before, whose sample is first noise-augmented, ``low + s e`` (Ho et al.'s Gaussian
conditioning augmentation, which they found essential against compounding errors; ``s`` is what
the stage's network was told it was trained with). A latent model samples ``u = scale z`` with any
solver and decodes it (:func:`sample_latent`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .._checks import ArgumentTypeError, ArgumentValueError, check_int, check_real
from ..models.autoencoder import Autoencoder
from .loop import sample
from .solvers.base import Solver

__all__ = ["CascadeStage", "sample_cascade", "sample_latent"]


@dataclass
class CascadeStage:
    """One stage of a cascade: its SDE, score function, solver and the shape of one sample.
    ``low_noise``: the augmentation ``s`` of the stage before's sample (a super-resolution stage's
    only; the first stage has none and must keep 0)."""

    sde: object
    score_fn: Callable
    solver: Solver
    shape: tuple[int, ...]
    low_noise: float = 0.0


def sample_cascade(
    stages: Sequence[CascadeStage],
    n: int,
    *,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
    denoise: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    return_all: bool = False,
):
    """``n`` samples of the last stage of a cascade, drawn stage by stage (:func:`sde_gen.sample`
    for each, with ``denoise``); with ``return_all`` the list of every stage's samples.

    Stage ``i > 0`` is given ``low = x_{i-1} + s_i e`` and ``low_noise = s_i`` (shape ``(n,)``),
    ``e`` a standard normal drawn from ``generator`` before that stage's own draws."""
    if not isinstance(stages, Sequence) or not stages:
        raise ArgumentValueError("stages", stages, "stages must be a non-empty sequence of CascadeStage")
    for i, st in enumerate(stages):
        if not isinstance(st, CascadeStage):
            raise ArgumentTypeError(
                "stages", stages, f"stages[{i}] is a {type(st).__name__}, not a CascadeStage"
            )
        check_real(f"stages[{i}].low_noise", st.low_noise, low=0.0)
    if stages[0].low_noise != 0:
        raise ArgumentValueError(
            "stages", stages, "the first stage has no stage before it: low_noise must be 0"
        )
    n = check_int("n", n, low=1)
    out, x = [], None
    for st in stages:
        cond = None
        if x is not None:
            e = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            s = torch.full((n,), float(st.low_noise), dtype=x.dtype, device=x.device)
            cond = {"low": x + st.low_noise * e, "low_noise": s}
        x = sample(
            st.sde, st.score_fn, (n, *st.shape), st.solver, eps=eps, generator=generator,
            denoise=denoise, dtype=dtype, device=device, cond=cond,
        )  # fmt: skip
        out.append(x)
    return out if return_all else x


def sample_latent(
    autoencoder: Autoencoder,
    sde,
    score_fn: Callable,
    n: int,
    data_shape: tuple[int, ...],
    solver: Solver,
    **kwargs,
) -> torch.Tensor:
    """``n`` samples of a latent model in data space: latents ``u`` of shape
    ``autoencoder.latent_shape(data_shape)`` drawn by :func:`sde_gen.sample` (``kwargs``: ``eps``,
    ``generator``, ``denoise``, ``cond``, ...), decoded by ``autoencoder.from_latent`` (the decoder's
    mean at ``z = u / scale``)."""
    if not isinstance(autoencoder, Autoencoder):
        raise ArgumentTypeError(
            "autoencoder",
            autoencoder,
            f"autoencoder must be an sde_gen Autoencoder, got {type(autoencoder).__name__}",
        )
    u = sample(
        sde,
        score_fn,
        (check_int("n", n, low=1), *autoencoder.latent_shape(tuple(data_shape))),
        solver,
        **kwargs,
    )
    with torch.no_grad():
        return autoencoder.from_latent(u)
