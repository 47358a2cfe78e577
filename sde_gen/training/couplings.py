"""How a batch of data is paired with its noise: independently, or by minibatch optimal transport.

Denoising score matching draws the noise ``z`` of each example independently of the data. Minibatch
optimal transport (Tong et al. 2023; Pooladian et al. 2023) pairs the ``B`` data points of a batch
with ``B`` independent noise draws by the permutation that minimises the total squared distance
``sum_i ||x_i - z_pi(i)||^2``: the exact assignment of the batch (``scipy.optimize
.linear_sum_assignment``, the Jonker-Volgenant algorithm). The noise is still a set of independent
standard normals, so the marginal of ``x_t`` at every ``t`` is unchanged; what changes is which
noise goes with which data point, and so the conditional paths, which become straighter and cross
less (the point of it for flows and few-step sampling).
"""

from __future__ import annotations

import torch

from .._checks import ArgumentValueError

__all__ = ["COUPLINGS", "ot_permutation"]

#: The couplings :class:`~sde_gen.DSMLoss` takes.
COUPLINGS = ("independent", "ot")


def ot_permutation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The permutation ``pi`` (a long tensor of shape ``(B,)``) minimising ``sum_i ||x_i -
    z_pi(i)||^2`` over the rows of ``x`` and ``z`` (both ``(B, ...)``), so that ``z[pi]`` is the
    noise paired with ``x`` by minibatch optimal transport. Exact, in float64 on the CPU."""
    from scipy.optimize import linear_sum_assignment

    if x.shape != z.shape:
        raise ArgumentValueError(
            "z", z, f"z must be shaped like x, got {tuple(z.shape)} for x of shape {tuple(x.shape)}"
        )
    a = x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64)
    b = z.detach().reshape(z.shape[0], -1).to("cpu", torch.float64)
    cost = torch.cdist(a, b) ** 2
    _, cols = linear_sum_assignment(cost.numpy())  # rows come back as 0..B-1, in order
    return torch.from_numpy(cols).to(z.device)
