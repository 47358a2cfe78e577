"""Time grids as data: the times a stepping solver visits, decreasing from ``t_start`` to ``t_end``.

A schedule is a name or an explicit 1-D tensor of times. The named schedules are defined through
the SDE's noise level ``sigma_hat(t) = std(t) / scale(t)`` (``SDE.sigma_hat``), so they mean the
same thing for VP, sub-VP, VE and any SDE a user writes:

- ``"time_uniform"``: uniform in ``t``.
- ``"time_quadratic"``: uniform in ``sqrt(t)``, denser near the data (DPM-Solver, Lu et al. 2022,
  Sec. 3.3, "time_quadratic").
- ``"log_snr"``: uniform in the half log-SNR ``lambda = -log sigma_hat`` (Lu et al. 2022, Sec. 3.3).
- ``"edm"``: ``sigma_hat_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho`` with
  ``rho = 7`` (Karras et al. 2022, Eq. 5).
- ``"vp_uniform"``: the noise levels that Song et al.'s VP SDE (``beta_min = 0.1``, ``beta_max =
  20``, :data:`VP_REFERENCE`) has at uniform times, between this SDE's own end levels: uniform in
  ``r(sigma_hat)``, the time at which that VP SDE reaches ``sigma_hat`` (``sigma_hat^2 = exp(B(r))
  - 1``, ``B(r) = 0.1 r + 9.95 r^2``). On that VP SDE it is ``"time_uniform"``; on any other it
  puts the same noise levels, so a solver that steps in ``(xhat, sigma_hat)`` (iPNDM) takes the
  steps measured best on VP, whatever the SDE's clock (docs/samplers.md).

A solver given no schedule (``schedule=None``, the default of the stepping solvers and of Heun)
takes the one the SDE recommends for it, :meth:`SDE.schedule_for <sde_gen.SDE.schedule_for>`:
the solver's own ``default_schedule`` unless the SDE's ``recommended_schedules`` names another
(measured per SDE, docs/samplers.md); :func:`resolve_schedule` does the lookup.
"""

from __future__ import annotations

import torch

from ..._checks import ArgumentTypeError, ArgumentValueError

__all__ = ["SCHEDULES", "time_grid", "check_schedule", "resolve_schedule"]

SCHEDULES = ("time_uniform", "time_quadratic", "log_snr", "edm", "vp_uniform")
EDM_RHO = 7.0
#: ``(beta_min, beta_max)`` of the VP SDE whose clock ``"vp_uniform"`` is uniform in.
VP_REFERENCE = (0.1, 20.0)


def _vp_time(sigma: torch.Tensor) -> torch.Tensor:
    """The time at which the reference VP SDE reaches the noise level ``sigma`` (float64)."""
    b0, b1 = VP_REFERENCE
    b = torch.log1p(sigma.to(torch.float64) ** 2)  # B(r) = b0 r + (b1 - b0) r^2 / 2
    return 2.0 * b / (b0 + torch.sqrt(b0**2 + 2.0 * (b1 - b0) * b))


def _vp_sigma(r: torch.Tensor) -> torch.Tensor:
    """The reference VP SDE's noise level ``sqrt(exp(B(r)) - 1)`` at times ``r``."""
    b0, b1 = VP_REFERENCE
    return torch.sqrt(torch.expm1(b0 * r + 0.5 * (b1 - b0) * r**2))


def check_schedule(schedule):
    """A schedule name from :data:`SCHEDULES`, an explicit grid (a strictly decreasing 1-D
    tensor or sequence of at least two finite times, stored as float64), or ``None`` (the SDE's
    recommendation, :func:`resolve_schedule`). Raises naming it."""
    if schedule is None:
        return None
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ArgumentValueError(
                "schedule",
                schedule,
                f"schedule must be one of {list(SCHEDULES)} or a 1-D tensor of times, got {schedule!r}",
            )
        return schedule
    try:
        grid = torch.as_tensor(schedule, dtype=torch.float64).detach().cpu().clone()  # not the caller's
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentTypeError(
            "schedule",
            schedule,
            f"schedule must be one of {list(SCHEDULES)} or a 1-D tensor of times, "
            f"got {type(schedule).__name__}",
        ) from None
    if grid.ndim != 1 or grid.numel() < 2:
        raise ArgumentValueError(
            "schedule",
            schedule,
            f"an explicit schedule must be a 1-D tensor of at least 2 times, got shape {tuple(grid.shape)}",
        )
    if not torch.isfinite(grid).all():
        raise ArgumentValueError(
            "schedule", schedule, f"an explicit schedule must hold finite times, got {grid.tolist()}"
        )
    steps = grid[1:] - grid[:-1]
    if not (steps < 0).all():
        i = int(torch.nonzero(steps >= 0)[0])
        raise ArgumentValueError(
            "schedule",
            schedule,
            f"an explicit schedule must decrease strictly (from T towards 0), but time {i + 1} "
            f"({grid[i + 1].item():g}) is not below time {i} ({grid[i].item():g})",
        )
    return grid


def resolve_schedule(sde, solver):
    """The schedule ``solver`` runs on ``sde``: its own ``solver.schedule``, or where that is
    ``None`` the name ``sde.schedule_for(solver)`` gives (``solver.default_schedule`` for an SDE
    that recommends nothing)."""
    return solver.schedule if solver.schedule is not None else check_schedule(sde.schedule_for(solver))


def time_grid(sde, schedule, steps: int | None, t_start: float, t_end: float) -> torch.Tensor:
    """``steps + 1`` times (float64, on the CPU) from ``t_start`` down to ``t_end`` (an explicit
    grid is returned as a copy after checking that it runs from ``t_start`` to ``t_end`` to 1e-6
    relative, float32's rounding of the ends included, which are then set to ``t_start`` and
    ``t_end`` exactly: a grid that started below ``T`` would step from a prior drawn at ``T`` as if
    drawn there)."""
    given, schedule = schedule, check_schedule(schedule)
    if not isinstance(schedule, str):
        first, last = schedule[0].item(), schedule[-1].item()
        if not (_close(first, t_start) and _close(last, t_end)):
            raise ArgumentValueError(
                "schedule",
                given,
                f"an explicit schedule must run from t_start={t_start:g} (T) down to t_end={t_end:g} (the "
                f"end time, eps), to 1e-6 relative; got times from {first:g} to {last:g}",
            )
        grid = schedule.clone()
        grid[0], grid[-1] = t_start, t_end
        return grid
    f64 = dict(dtype=torch.float64)
    u = torch.linspace(0.0, 1.0, steps + 1, **f64)
    ends = torch.tensor([t_start, t_end], **f64)
    if schedule == "time_uniform":
        grid = ends[0] + (ends[1] - ends[0]) * u
    elif schedule == "time_quadratic":
        r = ends.sqrt()
        grid = (r[0] + (r[1] - r[0]) * u) ** 2
    elif schedule == "log_snr":
        lam = sde.half_log_snr(ends)
        grid = sde.t_from_half_log_snr(lam[0] + (lam[1] - lam[0]) * u)
    elif schedule == "edm":
        r = sde.sigma_hat(ends) ** (1.0 / EDM_RHO)
        grid = sde.t_from_sigma_hat((r[0] + (r[1] - r[0]) * u) ** EDM_RHO)
    else:  # "vp_uniform"
        r = _vp_time(sde.sigma_hat(ends))
        grid = sde.t_from_sigma_hat(_vp_sigma(r[0] + (r[1] - r[0]) * u))
    grid = grid.to(**f64)
    grid[0], grid[-1] = t_start, t_end  # exact ends, whatever the rounding of the inverse
    return grid


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))
