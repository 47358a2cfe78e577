"""What a network predicts: each parameterisation is an affine map between the network's output and
the score, written in the variables every Gaussian-kernel SDE shares (docs/maths.md): with the
kernel ``x_t = a x_0 + b + s z``, ``xhat = (x_t - b) / a = x_0 + sigma z`` has the noise level
``sigma = s / a`` (``sigma_hat``), and the denoiser ``D = E[x_0 | x_t]`` and the score are tied by
Tweedie's formula, ``score = a (D - xhat) / s^2``. So every parameterisation works for every SDE,
a user's included.

=========  ===========================================  ============================================
name       the network's output ``F``                   ``D`` from ``F``
=========  ===========================================  ============================================
noise      ``z`` (epsilon; Ho et al. 2020)              ``xhat - sigma F``
score      ``s * score`` (Song & Ermon 2020)            ``xhat + sigma F``
data       ``x_0`` (Ho et al. 2020, "x_0-prediction")    ``F``
v          ``(z - sigma x_0) / sqrt(1 + sigma^2)``      ``xhat / (1 + sigma^2) - sigma F / sqrt(1 + sigma^2)``
flow       ``dx/dt = f(x, t) - g(t)^2 score / 2``       Tweedie's formula of ``score = 2 (f - F) / g^2``
edm        EDM's ``F_theta`` (Karras et al. 2022)       ``c_skip xhat + c_out F``
=========  ===========================================  ============================================

``v`` is Salimans & Ho's (2022) ``alpha z - sigma_VP x_0`` of a variance-preserving process,
generalised through ``sigma_hat`` (on VP, ``alpha = 1 / sqrt(1 + sigma^2)``). ``flow`` is the
velocity of the probability-flow ODE, which on the straight path of flow matching is the velocity
``z - x_0`` that flow matching regresses on. ``edm`` also scales what the network sees: it is called
as ``net(c_in xhat, c_noise)`` with ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)``, ``c_noise = log(sigma)
/ 4``, and ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``, ``c_out = sigma sigma_data /
sqrt(sigma^2 + sigma_data^2)`` (EDM, Table 1); the others are called as ``net(x_t, t)``.

:meth:`Parameterization.output` is the inverse map: the output that gives a score. Fed the
per-example score ``-z / s`` of denoising score matching it is the network's regression target
(:meth:`Parameterization.target`), and its slope is :meth:`Parameterization.unit` , the factor
by which the squared error in the network's units exceeds the squared error in noise units. The
loss (``sde_gen.DSMLoss``) is written once, in noise units, for every parameterisation.
"""

from __future__ import annotations

import torch

from .._checks import ArgumentTypeError, check_choice, check_positive
from .._utils import batch_broadcast

__all__ = [
    "Parameterization",
    "NoisePrediction",
    "ScorePrediction",
    "DataPrediction",
    "VPrediction",
    "FlowPrediction",
    "EDMPreconditioning",
    "PARAMETERIZATIONS",
    "parameterization",
    "objective_for",
]


def _sigma(k, x: torch.Tensor) -> torch.Tensor:
    """``sigma_hat = s / a``, shaped like ``x``."""
    return batch_broadcast(k.std, x) / k.scale


class Parameterization:
    """The map between a network's output ``F`` and the score, for any Gaussian-kernel SDE.

    A subclass gives :meth:`denoise` (``D`` from ``F``) and :meth:`output` (``F`` from a score), or
    :meth:`score` and :meth:`output`; the other follows by Tweedie's formula. Every method takes
    the network's output (or a score) shaped like ``x``, the point ``x`` ``(B, ...)``, the times
    ``t`` ``(B,)``, the kernel ``k = sde.kernel(t, x)`` and the SDE.
    """

    name = "custom"
    #: The objective ``(weighting, time_sampler)`` that ``"auto"`` trains this parameterisation with
    #: (:func:`objective_for`): denoising score matching's ``std2`` at uniform times (Song et al.
    #: 2021, Ho et al. 2020) unless a subclass measured better with another (docs/objectives.md).
    objective: tuple[str, str] = ("std2", "uniform")

    def inputs(self, x: torch.Tensor, t: torch.Tensor, k, sde) -> tuple[torch.Tensor, torch.Tensor]:
        """What the network is called with: ``(x_t, t)`` unless a parameterisation scales them."""
        return x, t

    def score(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor, k, sde) -> torch.Tensor:
        """The score ``a (D - xhat) / s^2`` of the output ``out``."""
        s2 = batch_broadcast(k.std, x) ** 2
        return (k.scale * self.denoise(out, x, t, k, sde) + k.shift - x) / s2

    def denoise(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor, k, sde) -> torch.Tensor:
        """``D = E[x_0 | x_t = x]`` of the output ``out``: Tweedie's formula of :meth:`score`."""
        return k.tweedie(x, self.score(out, x, t, k, sde))

    def output(self, score: torch.Tensor, x: torch.Tensor, t: torch.Tensor, k, sde) -> torch.Tensor:
        """The output that :meth:`score` maps to ``score`` (the inverse map)."""
        raise NotImplementedError

    def target(self, x0: torch.Tensor, z: torch.Tensor, t: torch.Tensor, sde) -> torch.Tensor:
        """The network's regression target for ``x_t = a x0 + b + s z``: :meth:`output` of the
        per-example score ``-z / s`` (e.g. ``z`` for noise, ``x0`` for data, ``z - x0`` for flow on
        the straight path)."""
        k = sde.kernel(t, x0)
        x = k.scale * x0 + k.shift + batch_broadcast(k.std, x0) * z
        return self.output(-z / batch_broadcast(k.std, x0), x, t, k, sde)

    def unit(self, t: torch.Tensor, sde, like: torch.Tensor) -> torch.Tensor:
        """``|dF / dz|^2`` shaped like ``like``: a squared error in the network's units is this factor
        times the squared error in noise units (``sigma^2`` for data, ``1 + sigma^2`` for v, ...).
        Read off :meth:`output` (affine in the score), so it holds for every subclass."""
        k = sde.kernel(t, like)
        x = k.shift.clone()
        s = batch_broadcast(k.std, like)
        one = self.output(-torch.ones_like(like) / s, x, t, k, sde) - self.output(
            torch.zeros_like(like), x, t, k, sde
        )
        return one**2

    def config(self) -> str | dict:
        """What a model file stores: the name, or the name and the settings."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.config() == self.config()

    def __hash__(self) -> int:
        return hash((type(self), str(self.config())))


class NoisePrediction(Parameterization):
    """``F = z``: ``score = -F / s`` (Ho et al. 2020; the reference's choice for VP and sub-VP)."""

    name = "noise"

    def score(self, out, x, t, k, sde):
        return -out / batch_broadcast(k.std, x)

    def output(self, score, x, t, k, sde):
        return -batch_broadcast(k.std, x) * score


class ScorePrediction(Parameterization):
    """``F = s * score`` (Song & Ermon 2020, technique 3; the reference's choice for VE)."""

    name = "score"

    def score(self, out, x, t, k, sde):
        return out / batch_broadcast(k.std, x)

    def output(self, score, x, t, k, sde):
        return batch_broadcast(k.std, x) * score


class DataPrediction(Parameterization):
    """``F = x_0``: the network is the denoiser."""

    name = "data"
    # EDM's weighting at uniform times: x_0 prediction fails the 8 Gaussians' KL gap under EDM's
    # log-normal noise levels and sits on the line under std2 (docs/objectives.md).
    objective = ("edm", "uniform")

    def denoise(self, out, x, t, k, sde):
        return out

    def output(self, score, x, t, k, sde):
        return k.tweedie(x, score)


class VPrediction(Parameterization):
    """``F = (z - sigma x_0) / sqrt(1 + sigma^2)`` (Salimans & Ho 2022, through ``sigma_hat``)."""

    name = "v"
    objective = ("edm", "log_normal")

    def denoise(self, out, x, t, k, sde):
        sigma = _sigma(k, x)
        return (x - k.shift) / k.scale / (1 + sigma**2) - sigma * out / torch.sqrt(1 + sigma**2)

    def output(self, score, x, t, k, sde):
        sigma = _sigma(k, x)
        xhat = (x - k.shift) / k.scale
        return (xhat / (1 + sigma**2) - k.tweedie(x, score)) * torch.sqrt(1 + sigma**2) / sigma


class FlowPrediction(Parameterization):
    """``F = f(x, t) - g(t)^2 score / 2``: the probability-flow ODE's velocity ``dx/dt``."""

    name = "flow"
    # std2 at uniform times (the base's): EDM's log-normal noise levels almost never draw the high
    # noise levels where the ODE starts, and a velocity network has no skip to fall back on there.

    def score(self, out, x, t, k, sde):
        g2 = batch_broadcast(sde.diffusion(t), x) ** 2
        return 2 * (sde.drift(x, t) - out) / g2

    def output(self, score, x, t, k, sde):
        g2 = batch_broadcast(sde.diffusion(t), x) ** 2
        return sde.drift(x, t) - 0.5 * g2 * score


class EDMPreconditioning(Parameterization):
    """EDM's preconditioning (Karras et al. 2022, Table 1) in ``(xhat, sigma_hat)``:
    ``D = c_skip xhat + c_out net(c_in xhat, c_noise)``, so that the network's input and its ideal
    output have unit variance at every noise level for data of standard deviation ``sigma_data``."""

    name = "edm"
    objective = ("edm", "log_normal")

    def __init__(self, sigma_data: float = 0.5):
        self.sigma_data = check_positive("sigma_data", sigma_data)

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(c_skip, c_out, c_in, c_noise)`` at the noise levels ``sigma``."""
        sd2 = self.sigma_data**2
        root = torch.sqrt(sigma**2 + sd2)
        return sd2 / (sigma**2 + sd2), sigma * self.sigma_data / root, 1 / root, torch.log(sigma) / 4

    def inputs(self, x, t, k, sde):
        sigma = _sigma(k, x)
        _, _, c_in, _ = self.coefficients(sigma)
        return c_in * (x - k.shift) / k.scale, torch.log(k.std / k.scale.reshape(len(x), -1)[:, 0]) / 4

    def denoise(self, out, x, t, k, sde):
        c_skip, c_out, _, _ = self.coefficients(_sigma(k, x))
        return c_skip * (x - k.shift) / k.scale + c_out * out

    def output(self, score, x, t, k, sde):
        c_skip, c_out, _, _ = self.coefficients(_sigma(k, x))
        return (k.tweedie(x, score) - c_skip * (x - k.shift) / k.scale) / c_out

    def config(self) -> dict:
        return {"name": self.name, "sigma_data": self.sigma_data}

    def __repr__(self) -> str:
        return f"EDMPreconditioning(sigma_data={self.sigma_data})"


#: The parameterisations by name.
PARAMETERIZATIONS = {
    cls.name: cls
    for cls in (
        NoisePrediction,
        ScorePrediction,
        DataPrediction,
        VPrediction,
        FlowPrediction,
        EDMPreconditioning,
    )
}


def parameterization(spec, **settings) -> Parameterization:
    """A :class:`Parameterization` from an object (returned as is), a name in
    :data:`PARAMETERIZATIONS` with its settings (``parameterization("edm", sigma_data=0.5)``), or a
    model file's config (``{"name": "edm", "sigma_data": 0.5}``)."""
    if isinstance(spec, Parameterization):
        if settings:
            raise ArgumentTypeError("parameterization", spec, "settings go with a name, not an object")
        return spec
    if isinstance(spec, dict):
        settings = {**{k: v for k, v in spec.items() if k != "name"}, **settings}
        spec = spec.get("name")
    if not isinstance(spec, str):
        raise ArgumentTypeError(
            "parameterization",
            spec,
            f"parameterization must be a name ({', '.join(PARAMETERIZATIONS)}) or a "
            f"sde_gen.Parameterization, got {type(spec).__name__}",
        )
    cls = PARAMETERIZATIONS[check_choice("parameterization", spec, set(PARAMETERIZATIONS))]
    if cls is EDMPreconditioning:
        return cls(**settings)
    if settings:
        raise ArgumentTypeError(
            "parameterization", spec, f"parameterization {spec!r} takes no settings, got {sorted(settings)}"
        )
    return cls()


def objective_for(
    spec, weighting: str = "auto", time_sampler: str = "auto", *, importance_sampling: bool = False
):
    """The names ``(weighting, time_sampler)`` that a parameterisation trains with, ``"auto"``
    resolved (the command line's ``train.weighting=auto train.time_sampler=auto``, its default).

    ``"auto"`` is the parameterisation's :attr:`Parameterization.objective`, with two exceptions
    that keep a named choice's meaning: with ``importance_sampling`` the weighting is ``likelihood``
    and the times uniform (likelihood importance sampling draws the times itself, Song, Durkan et al.
    2021), and a weighting other than the parameterisation's own goes with uniform times, because a
    sampler such as EDM's log-normal is part of the objective it came with. Names other than
    ``"auto"`` are returned unchanged (the weighting and time-sampler factories check them)."""
    for key, value in (("weighting", weighting), ("time_sampler", time_sampler)):
        if not isinstance(value, str):
            raise ArgumentTypeError(key, value, f"{key} must be a name or 'auto', got {type(value).__name__}")
    own_weighting, own_sampler = parameterization(spec).objective
    if weighting == "auto":
        weighting = "likelihood" if importance_sampling else own_weighting
    if time_sampler == "auto":
        time_sampler = own_sampler if weighting == own_weighting and not importance_sampling else "uniform"
    return weighting, time_sampler
