"""Time grids tuned for the model at hand: :func:`optimize_schedule`.

A stepping solver's error at a few score evaluations depends on where its steps fall, and the best
places differ by SDE, solver and data (docs/samplers.md). :func:`optimize_schedule` chooses them
for one score function from a pilot batch, against a teacher: the same pilot prior draw carried
to ``eps`` by DPM-Solver++ 2M on a fine grid uniform in the half log-SNR (``teacher_steps``
steps). Two methods:

- ``"dp"`` (after GITS, Chen et al. 2024): the candidate times are every ``teacher_steps /
  fine_steps``-th teacher time; the cost of a step from candidate ``i`` to ``j`` is the error of one
  step of the solver started from the teacher's state at ``i``, against the teacher's state at
  ``j``, and dynamic programming finds the ``steps``-step path of least total cost. The error is
  measured in ``xhat`` and weighted by ``sigma_d^2 / (sigma_d^2 + sigma_hat_j^2)``, the factor by
  which the probability-flow map of Gaussian data of variance ``sigma_d^2`` (the teacher's final
  variance) shrinks a squared error made at ``sigma_hat_j`` by the time it reaches the data. A
  multistep solver's history is filled by replaying up to three earlier steps of the same span,
  each from the teacher's state (a step from the start has none, as in the solve itself); costs
  are of a step inside the solve, not of the lower-order last steps.
- ``"minimize"``: the final error of the whole solve, minimised over the grid directly (Powell's
  method, scipy) in the log-widths of its steps in the half log-SNR, from the best on the pilot of
  the solver's own grid, the named ones (:data:`~sde_gen.sampling.solvers.grids.SCHEDULES`) and,
  for solvers that evaluate the score at most once per step (DDIM, DPM-Solver++, iPNDM: no
  evaluation beyond the teacher's; UniPC: its corrector's, about 3,600 at 10 steps; not Heun), the
  ``"dp"`` grid; at most ``max_evals`` solves besides those.

The error of a deterministic solver is the mean squared difference from the teacher, sample by
sample; of a stochastic one (which draws the same noise for every candidate grid), the squared
2-Wasserstein distance between diagonal Gaussians fitted to its samples and the teacher's, since
the reverse SDE and the probability-flow ODE share their marginals, not their paths. The grid
returned is the better, on the pilot, of the tuned grid and the solver's own.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from .._checks import (
    ArgumentTypeError,
    ArgumentValueError,
    ScoreCheck,
    check_cond,
    check_eps,
    check_int,
)
from ..sdes.base import check_sde, check_shape
from .solvers.base import SolverState, SteppingSolver
from .solvers.exponential import DPMSolverPlusPlus
from .solvers.grids import SCHEDULES, time_grid
from .solvers.variables import kernel_at

__all__ = ["optimize_schedule", "TunedSchedule", "TUNING_METHODS"]

TUNING_METHODS = ("dp", "minimize")
#: earlier steps "dp" replays from the teacher to fill a multistep solver's history
HISTORY_DEPTH = 3
#: the most steps a grid is tuned for (each is a free time)
MAX_TUNED_STEPS = 100


@dataclass(frozen=True)
class TunedSchedule:
    """What :func:`optimize_schedule` found, with ``return_result=True``.

    - ``grid``: the times (float64, CPU, ``steps + 1`` from ``T`` down to ``eps``);
    - ``method``: how it was found (``"dp"`` or ``"minimize"``), or ``"default"`` where the solver's
      own grid was better on the pilot and is returned instead;
    - ``error`` and ``default_error``: the final error against the teacher of the grid returned and
      of the solver's own grid (mean squared difference per coordinate, or for stochastic solvers
      the squared W2 of diagonal Gaussian fits, per coordinate);
    - ``nfe``: score evaluations spent, each over the pilot batch (teacher, costs or solves, and
      the two final checks); ``seconds``: the wall time.
    """

    grid: torch.Tensor
    method: str
    solver: str
    steps: int
    error: float
    default_error: float
    nfe: int
    seconds: float


def optimize_schedule(
    sde,
    score_fn,
    solver: SteppingSolver,
    shape,
    *,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
    cond: dict | None = None,
    method: str = "minimize",
    fine_steps: int | None = None,
    teacher_steps: int | None = None,
    max_evals: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    return_result: bool = False,
):
    """A time grid for ``solver`` (its kind and ``solver.steps``) tuned for ``score_fn`` on ``sde``.

    Args:
        shape: ``(B, ...)``, the pilot batch drawn from the prior with ``generator`` (e.g. 1,024
            points of the data's shape); a larger pilot costs more and overfits less.
        eps: the end time, as in :func:`~sde_gen.sample`.
        generator: a ``torch.Generator`` for the pilot (and, for stochastic solvers, the seed of
            the noise every candidate draws alike): the same generator state gives the same grid.
        cond: conditioning for every evaluation, ``score_fn(x, t, **cond)`` (one row per pilot item).
        method: ``"minimize"`` (default: the more accurate on the oracle, docs/samplers.md) or
            ``"dp"`` (cheaper); the module docstring defines them.
        fine_steps: ``"dp"``'s candidate intervals (default ``max(64, 4 steps)``); the costs take
            ``fine_steps (fine_steps + 1) / 2`` single steps, with one score evaluation each beyond
            the first stage (none for one-stage solvers, whose first evaluation is the teacher's).
        teacher_steps: the teacher's steps (default ``4 fine_steps``; a multiple of ``fine_steps``).
        max_evals: ``"minimize"``'s budget of whole solves (default ``30 steps``).
        return_result: return a :class:`TunedSchedule` (with the cost and the errors) instead of
            the grid alone.

    Returns the grid, a float64 CPU tensor from ``sde.T`` down to ``eps`` with ``solver.steps``
    intervals, to pass as ``schedule=`` to a solver of the same kind and settings.
    """
    check_sde(sde)
    if not isinstance(solver, SteppingSolver):
        raise ArgumentTypeError(
            "solver",
            solver,
            "solver must be a stepping solver (DDIM, DPMSolverPlusPlus, UniPC, IPNDM, Heun, EulerMaruyama, "
            f"PredictorCorrector, ...) whose steps the grid places, got {type(solver).__name__}",
        )
    if method not in TUNING_METHODS:
        raise ArgumentValueError(
            "method", method, f"method must be one of {list(TUNING_METHODS)}, got {method!r}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(
            "generator",
            generator,
            f"generator must be a torch.Generator or None, got {type(generator).__name__}",
        )
    eps = check_eps(eps, sde.T)
    shape = check_shape(shape)
    steps = solver.steps
    if steps > MAX_TUNED_STEPS:
        raise ArgumentValueError(
            "solver",
            solver,
            f"optimize_schedule tunes few-step grids (at most {MAX_TUNED_STEPS} steps), but the solver takes "
            f"steps={steps}; at that many steps the named grids serve",
        )
    fine = check_int("fine_steps", fine_steps, low=steps) if fine_steps is not None else max(64, 4 * steps)
    teacher = check_int("teacher_steps", teacher_steps, low=fine) if teacher_steps is not None else 4 * fine
    if teacher % fine:
        raise ArgumentValueError(
            "teacher_steps", teacher_steps, f"teacher_steps={teacher} must be a multiple of fine_steps={fine}"
        )
    evals = check_int("max_evals", max_evals, low=1) if max_evals is not None else 30 * steps

    started = time.perf_counter()
    x_T = sde.prior_sample(shape, generator=generator, dtype=dtype, device=device)
    cond = {k: v.to(x_T.device) for k, v in check_cond(cond, shape[0]).items()}
    score = ScoreCheck(score_fn, cond=cond)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if solver.stochastic else 0
    problem = _Problem(sde, score, solver, x_T, eps, seed)

    states = problem.teacher(time_grid(sde, "log_snr", teacher, sde.T, eps), teacher // fine)
    default_grid = solver.grid(sde, sde.T, eps)
    if method == "dp":
        tuned = problem.dynamic_programming(states, time_grid(sde, "log_snr", fine, sde.T, eps), steps)
    else:
        starts = [default_grid, *(time_grid(sde, name, steps, sde.T, eps) for name in SCHEDULES)]
        fine_grid = time_grid(sde, "log_snr", fine, sde.T, eps)
        if (dp := problem.dynamic_programming(states, fine_grid, steps, free_only=True)) is not None:
            starts.append(dp)  # one evaluation a step at most: cheap (free for one-stage solvers)
        start = min(starts, key=lambda grid: problem.error(grid, states[-1]))
        tuned = problem.minimize(states[-1], start, evals)
    error, default_error = problem.error(tuned, states[-1]), problem.error(default_grid, states[-1])
    if default_error < error:
        tuned, error, method = default_grid, default_error, "default"
    result = TunedSchedule(
        grid=tuned,
        method=method,
        solver=type(solver).__name__,
        steps=steps,
        error=error,
        default_error=default_error,
        nfe=score.nfe,
        seconds=time.perf_counter() - started,
    )
    return result if return_result else result.grid


def best_path(cost: torch.Tensor, steps: int) -> list[int]:
    """The path ``0 = p_0 < p_1 < ... < p_steps = m`` of least ``sum_k cost[p_k, p_(k+1)]`` through
    an ``(m + 1, m + 1)`` matrix of step costs (``inf`` where a step is not allowed), by dynamic
    programming over the number of steps taken: ``O(steps m^2)``."""
    m = cost.shape[0] - 1
    best = torch.full((m + 1,), float("inf"), dtype=cost.dtype)
    best[0] = 0.0
    back = []
    for _ in range(steps):
        best, arg = (best[:, None] + cost).min(dim=0)  # reach i, then step from i to j
        back.append(arg)
    path = [m]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    return path[::-1]


class _Problem:
    """The pilot, the solver and the counted score function one tuning shares."""

    def __init__(self, sde, score, solver, x_T, eps, seed):
        self.sde, self.score, self.solver, self.x_T, self.eps, self.seed = sde, score, solver, x_T, eps, seed
        self._errors: dict[bytes, float] = {}  # a grid's error, solved once (the target is fixed)

    def noise(self) -> torch.Generator | None:
        """The same noise for every candidate grid (common random numbers) for stochastic solvers."""
        if not self.solver.stochastic:
            return None
        return torch.Generator(device=self.x_T.device).manual_seed(self.seed)

    def teacher(self, grid: torch.Tensor, every: int) -> list[torch.Tensor]:
        """The teacher's states at every ``every``-th time of ``grid`` (the first is the pilot)."""
        ref = DPMSolverPlusPlus(order=2, schedule=grid)
        x, state = self.x_T, ref.init(self.sde, self.x_T, self.sde.T, self.eps)
        states = [x]
        with torch.no_grad():
            while not state.done:
                x, state = ref.step(self.sde, self.score, x, state)
                if state.index % every == 0:
                    states.append(x)
        return states

    def solve(self, grid: torch.Tensor) -> torch.Tensor:
        """The pilot carried to ``eps`` by the solver on ``grid``."""
        run = self.solver.with_schedule(grid)
        x, state, noise = self.x_T, run.init(self.sde, self.x_T, self.sde.T, self.eps), self.noise()
        with torch.no_grad():
            while not state.done:
                x, state = run.step(self.sde, self.score, x, state, generator=noise)
        return x

    def discrepancy(self, x: torch.Tensor, ref: torch.Tensor) -> float:
        """Per coordinate: mean squared difference (deterministic solvers) or squared W2 between
        diagonal Gaussian fits (stochastic ones)."""
        if not self.solver.stochastic:
            return float((x - ref).double().pow(2).mean())
        a, b = x.reshape(x.shape[0], -1).double(), ref.reshape(ref.shape[0], -1).double()
        return float(((a.mean(0) - b.mean(0)).pow(2) + (a.std(0) - b.std(0)).pow(2)).mean())

    def error(self, grid: torch.Tensor, final: torch.Tensor) -> float:
        """The discrepancy of the solve on ``grid`` from ``final`` (the teacher's, the same for one
        tuning), remembered per grid: the start, the default and the tuned grid are each solved once."""
        key = grid.numpy().tobytes()
        if key not in self._errors:
            self._errors[key] = self.discrepancy(self.solve(grid), final)
        return self._errors[key]

    def dynamic_programming(self, states, fine: torch.Tensor, steps: int, free_only: bool = False):
        """GITS-style: least total weighted one-step error over ``steps``-step paths of ``fine``;
        with ``free_only``, ``None`` as soon as a cost needs more score evaluations than steps (a
        solver with more than one stage)."""
        sde, m = self.sde, fine.numel() - 1
        sigma = sde.sigma_hat(fine)
        var_d = float(states[-1].double().var(0).mean())  # the data's variance, from the teacher
        weight = var_d / (var_d + sigma**2)
        scale = [kernel_at(sde, float(fine[j]), states[0]).scale for j in range(m + 1)]
        cost = torch.full((m + 1, m + 1), float("inf"), dtype=torch.float64)
        memo, solver = _Memo(self.score), copy.copy(self.solver)
        if getattr(solver, "lower_order_final", False):
            solver.lower_order_final = False  # a cost is for a step inside the solve, not the last
        depth = HISTORY_DEPTH if solver.keeps_history else 0
        with torch.no_grad():
            for i in range(m):
                for j in range(i + 1, m + 1):
                    # earlier steps of the same span from the teacher's states fill the history
                    nodes = sorted({max(i - r * (j - i), 0) for r in range(depth, 0, -1)} | {i, j})
                    state = SolverState(fine[nodes], x_mean=states[nodes[0]])
                    noise = self.noise()
                    before = self.score.nfe
                    for node in nodes[:-1]:
                        x, state = solver.step(sde, memo, states[node], state, generator=noise)
                    if free_only and self.score.nfe > before + len(nodes) - 1:
                        return None
                    err = self.discrepancy(x / scale[j], states[j] / scale[j])
                    cost[i, j] = float(weight[j]) * err
        return fine[best_path(cost, steps)].clone()

    def minimize(self, final: torch.Tensor, start: torch.Tensor, evals: int) -> torch.Tensor:
        """Powell's method on the log-widths of the steps in the half log-SNR, from ``start``."""
        from scipy.optimize import minimize

        lam_start = self.sde.half_log_snr(start)
        lam0, lam1 = float(lam_start[0]), float(lam_start[-1])
        theta0 = (lam_start[1:] - lam_start[:-1]).log().numpy()
        seen: dict[bytes, float] = {}
        best = [float("inf"), start]

        def grid_of(theta) -> torch.Tensor:
            w = torch.softmax(torch.as_tensor(theta, dtype=torch.float64), 0)
            lam = lam0 + (lam1 - lam0) * torch.cat([torch.zeros(1, dtype=torch.float64), w.cumsum(0)])
            grid = self.sde.t_from_half_log_snr(lam).double()
            grid[0], grid[-1] = start[0], start[-1]
            return grid

        def objective(theta) -> float:
            key = theta.tobytes()
            if key not in seen:
                if len(seen) >= evals:
                    return best[0] + 1.0  # budget spent: nothing better is accepted
                grid = grid_of(theta)
                ok = bool((grid[1:] < grid[:-1]).all())
                seen[key] = self.error(grid, final) if ok else float("inf")
                if seen[key] < best[0]:
                    best[:] = [seen[key], grid]
            return seen[key]

        minimize(objective, theta0, method="Powell", options={"maxfev": evals, "xtol": 1e-3, "ftol": 1e-4})
        return best[1]


class _Memo:
    """The counted score function, remembering its value at each teacher state it has seen (the
    one-step costs of ``"dp"`` start from the same few states again and again)."""

    def __init__(self, score: ScoreCheck):
        self.score = score
        self.values: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def offers_denoise(self) -> bool:
        return self.score.offers_denoise

    def _get(self, fn, kind: str, x: torch.Tensor, t: torch.Tensor, cond: dict):
        key = (kind, id(x), float(t.reshape(-1)[0]))
        if cond or key not in self.values or self.values[key][0] is not x:
            out = fn(x, t, **cond)
            if cond:
                return out
            self.values[key] = (x, out)  # keeps x alive, so its id is not reused
        return self.values[key][1]

    def __call__(self, x, t, **cond):
        return self._get(self.score, "score", x, t, cond)

    def denoise(self, x, t, **cond):
        return self._get(self.score.denoise, "denoise", x, t, cond)
