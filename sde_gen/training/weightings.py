"""How denoising score matching weighs the noise levels, each written once in noise units.

A weighting is a callable ``weighting(sde, t, std) -> w(t)`` of shape ``(B,)``: the weight of the
squared error in noise units, ``w(t) ||eps_theta - z||^2 / 2 = lambda(t) ||s_theta - grad log
p_0t||^2 / 2`` with ``w = lambda / std^2`` in Song et al.'s ``lambda(t)``. With ``sigma =
sigma_hat(t)``, ``SNR = 1 / sigma^2`` and the log-SNR ``l = -2 log sigma``:

- ``std2``: ``lambda = std^2`` (Song et al. 2021); ``w = 1``.
- ``likelihood``: ``lambda = g^2`` (Song, Durkan et al. 2021); ``w = g^2 / std^2 = -dl/dt``.
- ``min_snr``: ``min(SNR, gamma)`` on the data error (Hang et al. 2023); ``w = min(SNR, gamma) / SNR``.
- ``edm``: ``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` on the data error (Karras et al. 2022);
  ``w = (sigma^2 + sigma_data^2) / sigma_data^2``.
- ``sigmoid``: ``sigmoid(bias - l)`` per unit of log-SNR (Kingma & Gao 2023);
  ``w = sigmoid(bias - l) (-dl/dt)``.
- ``flow``: weight 1 on the error of the straight path's velocity ``z - x_0`` at the same noise
  level (flow matching, Lipman et al. 2023); ``w = (1 + sigma)^2``. On ``sg.RectifiedFlow`` with
  uniform times and the ``"flow"`` parameterisation the loss is flow matching's
  ``||v_theta - (z - x_0)||^2 / 2`` exactly: over the log-SNR ``e^(-l/2) / 2``, Kingma & Gao's
  weighting of rectified flow.

The data error is ``sigma^2`` times the noise error, the v error ``1 + sigma^2`` times
(:meth:`sde_gen.Parameterization.unit`), so min-SNR reads ``min(SNR, gamma) / (SNR + 1)`` on the v
error, as Hang et al.'s Eq. 9 has it. :func:`weighting` builds one by name.
"""

from __future__ import annotations

import torch

from .._checks import ArgumentTypeError, check_choice, check_positive, check_real

__all__ = [
    "Weighting",
    "std2_weighting",
    "likelihood_weighting",
    "MinSNRWeighting",
    "EDMWeighting",
    "SigmoidWeighting",
    "flow_weighting",
    "WEIGHTINGS",
    "weighting",
]


class Weighting:
    """A weighting of noise levels: ``weighting(sde, t, std)`` is its weight in noise units."""

    name = "custom"

    def __call__(self, sde, t: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _Std2(Weighting):
    """``lambda = std^2``: weight 1 in noise units (the reference's default)."""

    name = "std2"

    def __call__(self, sde, t, std):
        return torch.ones_like(t)


class _Likelihood(Weighting):
    """``lambda = g^2`` (Song, Durkan et al. 2021): ``g(t)^2 / std(t)^2`` in noise units, which is
    ``-d(log SNR)/dt``: the ELBO's weighting, flat over the log-SNR (Kingma & Gao 2023)."""

    name = "likelihood"

    def __call__(self, sde, t, std):
        return sde.diffusion(t) ** 2 / std**2


#: ``lambda = std^2`` (weight 1 in noise units).
std2_weighting = _Std2()
#: ``lambda = g^2``: the likelihood weighting.
likelihood_weighting = _Likelihood()


class MinSNRWeighting(Weighting):
    """Min-SNR-gamma (Hang et al. 2023): ``min(SNR, gamma)`` on the data error, ``min(SNR, gamma) /
    SNR = min(1, gamma sigma^2)`` in noise units."""

    name = "min_snr"

    def __init__(self, gamma: float = 5.0):
        self.gamma = check_positive("min_snr_gamma", gamma)

    def __call__(self, sde, t, std):
        return torch.clamp(self.gamma * sde.sigma_hat(t) ** 2, max=1.0)

    def __repr__(self) -> str:
        return f"MinSNRWeighting(gamma={self.gamma})"


class EDMWeighting(Weighting):
    """EDM's ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` on the data error
    (Karras et al. 2022, Table 1): ``(sigma^2 + sigma_data^2) / sigma_data^2`` in noise units, which
    makes the EDM-preconditioned network's squared error weigh 1 at every level."""

    name = "edm"

    def __init__(self, sigma_data: float = 0.5):
        self.sigma_data = check_positive("sigma_data", sigma_data)

    def __call__(self, sde, t, std):
        return (sde.sigma_hat(t) ** 2 + self.sigma_data**2) / self.sigma_data**2

    def __repr__(self) -> str:
        return f"EDMWeighting(sigma_data={self.sigma_data})"


class SigmoidWeighting(Weighting):
    """Kingma & Gao's (2023) sigmoid weighting ``sigmoid(bias - l)`` over the log-SNR ``l``: times
    ``-dl/dt = g^2 / std^2`` in noise units per unit of ``t``. ``bias`` moves the weight to lower
    (more negative) or higher log-SNR; the paper tunes it per data set."""

    name = "sigmoid"

    def __init__(self, bias: float = 0.0):
        self.bias = check_real("sigmoid_bias", bias)

    def __call__(self, sde, t, std):
        log_snr = -2 * torch.log(sde.sigma_hat(t))
        return torch.sigmoid(self.bias - log_snr) * sde.diffusion(t) ** 2 / std**2

    def __repr__(self) -> str:
        return f"SigmoidWeighting(bias={self.bias})"


class _Flow(Weighting):
    """Flow matching's weighting: ``(1 + sigma)^2`` in noise units, the squared slope of the straight
    path's velocity ``z - x_0 = (1 + sigma) z - xhat`` per unit of noise error at noise level
    ``sigma`` (``xhat = x_0 + sigma z``)."""

    name = "flow"

    def __call__(self, sde, t, std):
        return (1 + sde.sigma_hat(t)) ** 2


#: Flow matching's weighting, ``(1 + sigma)^2`` in noise units.
flow_weighting = _Flow()


#: The weightings by name, with their default settings (:func:`weighting` for others).
WEIGHTINGS = {
    "std2": std2_weighting,
    "likelihood": likelihood_weighting,
    "min_snr": MinSNRWeighting(),
    "edm": EDMWeighting(),
    "sigmoid": SigmoidWeighting(),
    "flow": flow_weighting,
}


def weighting(
    name, *, min_snr_gamma: float = 5.0, sigmoid_bias: float = 0.0, sigma_data: float = 0.5
) -> Weighting:
    """The weighting ``name`` (a key of :data:`WEIGHTINGS`) with its setting: ``min_snr_gamma`` for
    ``"min_snr"``, ``sigmoid_bias`` for ``"sigmoid"``, ``sigma_data`` for ``"edm"``; the settings
    of the other weightings are not used (the command line passes all of them). A
    :class:`Weighting` or another callable is returned as it is."""
    if not isinstance(name, str):
        if callable(name):
            return name
        raise ArgumentTypeError("weighting", name, f"weighting must be a name or a callable, got {name!r}")
    check_choice("weighting", name, set(WEIGHTINGS))
    if name == "min_snr":
        return MinSNRWeighting(min_snr_gamma)
    if name == "edm":
        return EDMWeighting(sigma_data)
    if name == "sigmoid":
        return SigmoidWeighting(sigmoid_bias)
    return WEIGHTINGS[name]
