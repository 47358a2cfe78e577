"""Predictor-corrector samplers (Song et al. 2021, Sec. 4.2 and Algorithms 1-5).

Every predictor and corrector is written against the generic :class:`~sde_gen.SDE` interface:
the exact transition kernel between two times is read off ``sde.marginal``, so nothing here
checks the type of the SDE, and a user's SDE works unchanged.
"""

from __future__ import annotations

import abc

import torch

from ..._checks import ArgumentTypeError, ArgumentValueError, check_int, check_positive
from ..._utils import batch_broadcast, time_vector
from ...sdes.base import transition_between
from .base import StepOutput, SteppingSolver, noise_like
from .euler_maruyama import euler_maruyama_step

__all__ = [
    "Predictor",
    "EulerMaruyamaPredictor",
    "ReverseDiffusionPredictor",
    "AncestralPredictor",
    "Corrector",
    "Langevin",
    "AnnealedLangevin",
    "NoCorrector",
    "PredictorCorrector",
]


class Predictor(abc.ABC):
    """One step of a reverse-time solver from ``t`` to ``t_next < t``; returns ``(x, x_mean)``."""

    @abc.abstractmethod
    def __call__(self, sde, score_fn, x, t: float, t_next: float, generator=None): ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EulerMaruyamaPredictor(Predictor):
    """Euler-Maruyama on the reverse SDE (Eq. 6)."""

    def __call__(self, sde, score_fn, x, t, t_next, generator=None):
        return euler_maruyama_step(sde, score_fn, x, t, t_next, generator)


class ReverseDiffusionPredictor(Predictor):
    """Reverse diffusion (Song et al. Eq. 46-47): ``x_mean = x - f_i(x) + G_i^2 s``, ``x = x_mean + G_i z``.

    The forward discretisation ``x_t = x_s + f_i(x_s) + G_i z`` is the exact kernel from
    ``s = t_next`` to ``t``: ``f_i(x) = (a - 1) x + b`` and ``G_i^2 = c^2``. For VP this is
    DDPM's ``sqrt(1 - beta_i)``, ``sqrt(beta_i)``; for VE, SMLD's ``sigma_i^2 - sigma_{i-1}^2``.
    """

    def __call__(self, sde, score_fn, x, t, t_next, generator=None):
        tv, sv = time_vector(t, x), time_vector(t_next, x)
        a, b, c2 = sde.transition(sv, tv, x)
        x_mean = x - ((a - 1.0) * x + b) + c2 * score_fn(x, tv)
        return x_mean + c2.sqrt() * noise_like(x, generator), x_mean


class AncestralPredictor(Predictor):
    """Ancestral sampling (DDPM, Ho et al. 2020 Eq. 6-7) for any Gaussian kernel.

    Draws ``x_s ~ q(x_s | x_t, x_0 = x0_hat)``, the exact posterior of the forward kernel, at
    Tweedie's ``x0_hat = E[x_0 | x_t]``. With ``x_t = a x_s + b + c z``:
    ``mean = (c^2 / std_t^2)(scale_s x0_hat + shift_s) + (a std_s^2 / std_t^2)(x_t - b)``,
    ``var = c^2 std_s^2 / std_t^2``. For VE it is SMLD's ancestral sampler exactly.
    """

    def __call__(self, sde, score_fn, x, t, t_next, generator=None):
        tv, sv = time_vector(t, x), time_vector(t_next, x)
        ks, kt = sde.kernel(sv, x), sde.kernel(tv, x)
        a, b, c2 = transition_between(ks, kt)
        var_s, var_t = batch_broadcast(ks.std**2, x), batch_broadcast(kt.std**2, x)
        x0_hat = kt.tweedie(x, score_fn(x, tv))
        x_mean = (c2 / var_t) * (ks.scale * x0_hat + ks.shift) + (a * var_s / var_t) * (x - b)
        std = (c2 * var_s / var_t).sqrt()
        return x_mean + std * noise_like(x, generator), x_mean


class Corrector(abc.ABC):
    """MCMC steps at a fixed time ``t`` that leave p_t invariant; returns ``(x, x_mean)``.

    ``t_next`` is the time the predictor goes to next; correctors use it for the step size.
    """

    @abc.abstractmethod
    def __call__(self, sde, score_fn, x, t: float, t_next: float, generator=None): ...


class NoCorrector(Corrector):
    """Leaves x unchanged."""

    def __call__(self, sde, score_fn, x, t, t_next, generator=None):
        return x, x

    def __repr__(self) -> str:
        return "NoCorrector()"


class _LangevinBase(Corrector):
    def __init__(self, snr: float = 0.16, n_steps: int = 1):
        self.snr = check_positive("snr", snr)
        self.n_steps = check_int("n_steps", n_steps, low=1)

    @abc.abstractmethod
    def step_size_at(self, x, score, noise, alpha, std):
        """Per-sample step size, shape broadcastable to ``x``."""

    def __call__(self, sde, score_fn, x, t, t_next, generator=None):
        tv = time_vector(t, x)
        kt = sde.kernel(tv, x)
        # alpha_i of Algorithm 5: the squared kernel scale over one step (1 - beta_i for VP, 1 for
        # VE), read off the kernel so that it holds for any SDE.
        a, _, _ = transition_between(sde.kernel(time_vector(min(t_next, t), x), x), kt)
        alpha = a**2
        std = batch_broadcast(kt.std, x)
        x_mean = x
        for _ in range(self.n_steps):
            score = score_fn(x, tv)
            noise = noise_like(x, generator)
            step = self.step_size_at(x, score, noise, alpha, std)
            x_mean = x + step * score
            x = x_mean + torch.sqrt(2.0 * step) * noise
        return x, x_mean

    def __repr__(self) -> str:
        return f"{type(self).__name__}(snr={self.snr!r}, n_steps={self.n_steps!r})"


class Langevin(_LangevinBase):
    """Langevin corrector with the signal-to-noise step size of Song et al. Algorithms 4-5.

    Algorithm 5 sets ``step = 2 alpha (snr ||z|| / ||s||)^2``. Here each norm is replaced by its
    expectation under the transition kernel, ``E||z||^2 = d`` and ``E||grad log p_0t||^2 =
    d / std(t)^2``, giving ``step = 2 alpha (snr std(t))^2``. This is deliberate:

    - a step that depends on the sample's own ``||s(x)||`` makes the chain target ``p_t(x) /
      step(x)`` instead of ``p_t`` (the Fokker-Planck equation of ``dx = h(x) s dt + sqrt(2 h(x))
      dW``), which inflates the spread around modes, where ``||s||`` vanishes, by O(1), however
      small ``snr`` is; and a step that scales with ``||z||^2`` inflates the stationary variance
      by ``(d + 2) / d`` (2x in 2-D);
    - the reference code averages both norms over the batch, so a sample depends on its batch.

    The step here depends on ``t`` only: a sample's result never depends on its batch, the chain
    has O(step) bias, and it is stable in any dimension.
    """

    def step_size_at(self, x, score, noise, alpha, std):
        return 2.0 * alpha * (self.snr * std) ** 2


class AnnealedLangevin(_LangevinBase):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1):
    ``step = step_size * std(t)^2 / sigma_ref^2``, with NCSN's defaults ``step_size = 2e-5`` at
    ``sigma_ref = 0.01``."""

    def __init__(self, step_size: float = 2e-5, sigma_ref: float = 0.01, n_steps: int = 1):
        self.step_size = check_positive("step_size", step_size)
        self.sigma_ref = check_positive("sigma_ref", sigma_ref)
        self.n_steps = check_int("n_steps", n_steps, low=1)

    def step_size_at(self, x, score, noise, alpha, std):
        return self.step_size * (std / self.sigma_ref) ** 2

    def __repr__(self) -> str:
        return (
            f"AnnealedLangevin(step_size={self.step_size!r}, sigma_ref={self.sigma_ref!r}, "
            f"n_steps={self.n_steps!r})"
        )


class PredictorCorrector(SteppingSolver):
    """Predictor-corrector sampling (Song et al. Algorithm 1): at each of ``steps`` times, the
    corrector's ``n_steps`` Langevin steps, then one predictor step to the next time.

    ``predictor`` and ``corrector`` are instances or registered names (``PREDICTORS``,
    ``CORRECTORS``); ``corrector=None`` is ``"none"``. Defaults: reverse-diffusion predictor,
    :class:`Langevin` corrector with ``snr=0.16``, ``n_steps=1``. ``schedule`` as in
    :class:`~sde_gen.SteppingSolver`. Score evaluations: ``steps * (1 + corrector.n_steps)``.
    Weak order 1 (the predictor's).
    """

    convergence_order = 1.0
    stochastic = True

    def __init__(
        self,
        steps: int = 1000,
        predictor: Predictor | str = "reverse_diffusion",
        corrector: Corrector | str | None = "langevin",
        schedule=None,
    ):
        super().__init__(steps, schedule)
        self.predictor = _resolve("predictor", predictor, PREDICTORS, Predictor)
        self.corrector = _resolve(
            "corrector", "none" if corrector is None else corrector, CORRECTORS, Corrector
        )

    def nfe(self, steps: int) -> int:
        """One predictor evaluation per step and one per corrector step."""
        return steps * (1 + getattr(self.corrector, "n_steps", 0))

    def update(self, sde, score_fn, x, state, *, generator=None):
        t, t_next = state.t, state.t_next
        x, _ = self.corrector(sde, score_fn, x, t, t_next, generator)
        x, x_mean = self.predictor(sde, score_fn, x, t, t_next, generator)
        return StepOutput(x, x_mean)


PREDICTORS = {
    "euler_maruyama": EulerMaruyamaPredictor,
    "reverse_diffusion": ReverseDiffusionPredictor,
    "ancestral": AncestralPredictor,
}
CORRECTORS = {"langevin": Langevin, "annealed_langevin": AnnealedLangevin, "none": NoCorrector}


def _resolve(name, value, registry, base):
    """An instance of ``base``, or the default instance of a registered name."""
    if isinstance(value, str):
        if value not in registry:
            raise ArgumentValueError(
                name, value, f"{name} must be one of {sorted(registry)} or a {base.__name__}, got {value!r}"
            )
        return registry[value]()
    if not isinstance(value, base):
        raise ArgumentTypeError(
            name, value, f"{name} must be a {base.__name__} or one of {sorted(registry)}, got {value!r}"
        )
    return value
