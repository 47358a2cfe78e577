"""Every stepping solver with its constructor cases: one entry per case, the one place a new solver
is added (tests/sampling/test_solver_contract.py then checks it against the protocol).

Each :class:`Case` names the solver, builds it for a number of grid steps (``make(n)``, small for
the tests), says whether it draws noise, the convergence order it declares and the Hydra config
under ``conf/solver/`` that builds it (``None``: no config builds that case).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sde_gen as sg


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[int], sg.SteppingSolver]  # the solver on a grid of n steps
    stochastic: bool
    order: float  # the declared convergence order
    config: str | None = None  # conf/solver/<config>.yaml


CASES = [
    Case("euler_maruyama", lambda n: sg.EulerMaruyama(n), True, 1.0, "em"),
    Case("pc", lambda n: sg.PredictorCorrector(n), True, 1.0, "pc"),
    Case("pc_ancestral_langevin", lambda n: sg.PredictorCorrector(n, "ancestral", "langevin"), True, 1.0),
    Case(
        "pc_euler_maruyama_annealed",
        lambda n: sg.PredictorCorrector(n, "euler_maruyama", sg.AnnealedLangevin(n_steps=2)),
        True,
        1.0,
    ),
    Case("ddim", lambda n: sg.DDIM(n), False, 1.0, "ddim"),
    Case("ddim_eta1", lambda n: sg.DDIM(n, eta=1.0), True, 1.0),
    Case("dpmpp_1", lambda n: sg.DPMSolverPlusPlus(n, order=1), False, 1.0),
    Case("dpmpp_2m", lambda n: sg.DPMSolverPlusPlus(n, order=2), False, 2.0, "dpmpp"),
    Case("dpmpp_3m", lambda n: sg.DPMSolverPlusPlus(n, order=3), False, 3.0),
    Case("sde_dpmpp_2m", lambda n: sg.DPMSolverPlusPlus(n, stochastic=True), True, 1.0),
    Case("unipc_1", lambda n: sg.UniPC(n, order=1), False, 2.0),
    Case("unipc_2", lambda n: sg.UniPC(n, order=2), False, 3.0, "unipc"),
    Case("unipc_2_bh1", lambda n: sg.UniPC(n, order=2, variant="bh1"), False, 3.0),
    Case("unipc_3", lambda n: sg.UniPC(n, order=3), False, 4.0),
    Case("ipndm", lambda n: sg.IPNDM(n), False, 2.0, "ipndm"),
    Case("ipndm_variable", lambda n: sg.IPNDM(n, coefficients="variable"), False, 2.0),
    Case("heun", lambda n: sg.Heun(2 * n), False, 2.0, "heun"),  # n intervals: 2n evaluations
    Case("heun_euler_last", lambda n: sg.Heun(2 * n - 1), False, 2.0),
    Case("heun_churn", lambda n: sg.Heun(2 * n, churn=10.0), True, 2.0),
]

BY_NAME = {c.name: c for c in CASES}
DETERMINISTIC = [c for c in CASES if not c.stochastic]
STOCHASTIC = [c for c in CASES if c.stochastic]
NAMES = [c.name for c in CASES]
