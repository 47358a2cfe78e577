"""Noise-conditional classifiers ``p(y | x_t, t)`` for classifier guidance (Song et al. 2021, Sec. 5
and App. I.4; Dhariwal & Nichol 2021, Sec. 4): a convolutional encoder with a time embedding for
images, and :class:`NoisyClassifier`, which turns any network with ``K`` outputs into
``log p(y | x_t)`` for any SDE."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import ArgumentTypeError, ArgumentValueError, check_choice, check_int, check_real, check_tensor
from .._utils import batch_broadcast
from ..sdes.base import check_sde
from .embeddings import TIME_EMBEDDINGS, check_image, check_time
from .unet import AttnBlock, ResBlock, conv_layer, group_norm, linear_layer, set_encoder_args, time_mlp

__all__ = ["ConvClassifier", "NoisyClassifier"]


class ConvClassifier(nn.Module):
    """``net(x, t) -> logits (B, num_classes)`` for images ``x`` ``(B, in_channels, image_size,
    image_size)``: the down half of :class:`~sde_gen.UNet` (residual blocks taking the time
    embedding, BigGAN down-sampling, attention at ``attn_resolutions``), then GroupNorm, SiLU, global
    average pooling and a zero-initialised linear layer (the initial prediction is uniform), as the
    encoder classifier of Dhariwal & Nichol 2021 (App. A, with mean pooling).
    ``image_size`` must be divisible by ``2^(len(channel_mult) - 1)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        num_classes: int = 10,
        channels: int = 32,
        channel_mult: Iterable[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attn_resolutions: Iterable[int] = (),
        dropout: float = 0.0,
        time_embedding: str = "fourier",
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, low=1)
        self.num_classes = check_int("num_classes", num_classes, low=2)
        set_encoder_args(self, image_size, channels, channel_mult, num_res_blocks, attn_resolutions, dropout)
        self.time_embedding = check_choice("time_embedding", time_embedding, set(TIME_EMBEDDINGS))
        attn = self.attn_resolutions
        mult = self.channel_mult
        resolutions = [image_size // 2**i for i in range(len(mult))]

        nf, emb_dim = channels, 4 * channels
        self.embed = time_mlp(time_embedding, nf, emb_dim)
        self.conv_in = conv_layer(in_channels, nf)
        blocks: list[nn.Module] = []
        ch = nf
        for i, (m, r) in enumerate(zip(mult, resolutions, strict=True)):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, nf * m, emb_dim, self.dropout))
                ch = nf * m
                if r in attn:
                    blocks.append(AttnBlock(ch))
            if i < len(mult) - 1:
                blocks.append(ResBlock(ch, ch, emb_dim, self.dropout, resample="down"))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = group_norm(ch)
        self.out = linear_layer(ch, self.num_classes, zero=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_channels, self.image_size, self.conv_in.weight)
        emb = F.silu(self.embed(check_time(t, x)))
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.norm_out(h)).mean(dim=(2, 3)))

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, image_size={self.image_size}, "
            f"num_classes={self.num_classes}, channels={self.channels}, "
            f"channel_mult={self.channel_mult}, num_res_blocks={self.num_res_blocks}"
        )


class NoisyClassifier(nn.Module):
    """``p(y | x_t, t)`` for data noised by any SDE: ``model(x, t) -> logits (B, K)`` and
    ``model.log_prob(x, t, y) -> (B,)``, the ``log_prob_fn`` of classifier guidance.

    ``net(x_in, t) -> (B, K)`` is any network with ``K`` outputs (:class:`ConvClassifier`, or
    :class:`~sde_gen.MLP` with ``out_dim=K``). With ``precondition=True`` it sees ``x_in = xhat /
    sqrt(sigma_hat^2 + sigma_data^2)``, ``xhat = (x - shift) / scale = x_0 + sigma_hat z`` (EDM's
    ``c_in``, Karras et al. 2022, Table 1), an input of about unit scale at every ``t`` for every SDE
    (for VP and ``sigma_data = 1`` it is ``x`` itself); otherwise ``x_in = x``. Train it with
    :class:`~sde_gen.ClassifierLoss`.
    """

    def __init__(self, net: nn.Module, sde, *, sigma_data: float = 1.0, precondition: bool = True):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ArgumentTypeError(
                "net", net, f"net must be a torch.nn.Module returning logits (B, K), got {type(net).__name__}"
            )
        self.net = net
        self.sde = check_sde(sde)
        self.sigma_data = check_real("sigma_data", sigma_data)
        if self.sigma_data <= 0:
            raise ArgumentValueError("sigma_data", sigma_data, f"sigma_data must be > 0, got {sigma_data!r}")
        if not isinstance(precondition, bool):
            raise ArgumentTypeError(
                "precondition", precondition, f"precondition must be a bool, got {precondition!r}"
            )
        self.precondition = precondition

    @property
    def num_classes(self) -> int | None:
        """``K`` where the network says it (``num_classes`` or ``out_dim``), else ``None``."""
        k = getattr(self.net, "num_classes", None)
        return k if k is not None else getattr(self.net, "out_dim", None)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The logits ``(B, K)`` of ``p(y | x_t = x)`` at times ``t`` ``(B,)``."""
        x = check_tensor("x", x)
        t = check_time(t, x)
        if self.precondition:
            k = self.sde.kernel(t, x)
            sigma_hat = batch_broadcast(k.std, x) / k.scale
            x = (x - k.shift) / k.scale / (sigma_hat**2 + self.sigma_data**2).sqrt()
        logits = self.net(x, t)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"net must return logits of shape (B, K) = ({x.shape[0]}, K), got {got}")
        return logits

    def log_prob(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p(y | x_t = x)`` ``(B,)`` for labels ``y`` ``(B,)`` in ``[0, K)``, differentiable
        in ``x``: the ``log_prob_fn`` of :func:`~sde_gen.classifier_guidance`."""
        logp = torch.log_softmax(self(x, t), dim=1)
        y = check_class_labels(y, x.shape[0], logp.shape[1]).to(logp.device)
        return logp.gather(1, y[:, None])[:, 0]

    def extra_repr(self) -> str:
        return f"sde={self.sde!r}, precondition={self.precondition}, sigma_data={self.sigma_data}"


def check_class_labels(y, batch: int, num_classes: int) -> torch.Tensor:
    """Labels ``y``: an integer tensor ``(batch,)`` with entries in ``[0, num_classes)`` (no null label)."""
    if not isinstance(y, torch.Tensor):
        raise ArgumentTypeError(
            "y", y, f"y must be a LongTensor of labels of shape (B,), got {type(y).__name__}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ArgumentTypeError("y", y, f"y must hold integer labels (e.g. torch.long), got dtype {y.dtype}")
    if tuple(y.shape) != (batch,):
        raise ArgumentValueError(
            "y", y, f"y must have shape (B,) = ({batch},), one label per sample, got {tuple(y.shape)}"
        )
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        raise ArgumentValueError(
            "y",
            y,
            f"y must hold labels in [0, {num_classes - 1}] (K={num_classes}), got {y[bad][:5].tolist()}",
        )
    return y.long()
