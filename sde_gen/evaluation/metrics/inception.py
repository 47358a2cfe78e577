"""Inception-v3 pool3 features (2048-D), the network of FID, from a local weights file.

The network is the FID variant of Inception-v3 (Szegedy et al. 2016) that TensorFlow's reference
FID code (Heusel et al. 2017) used, ``inception-2015-12-05``, as pytorch-fid ports it: torchvision's
``Inception3`` layout with 1008 classes, no auxiliary head, and four patches (the average pools of
the A, C and first E blocks do not count padding; the last E block max-pools). The module names
below are torchvision's: the state-dict keys equal those of pytorch-fid's model, into which its file
``pt_inception-2015-12-05-6726825d.pth`` loads strictly (the file itself was not available to test).
Written here because pytorch-fid and torch-fidelity both import torchvision.

Nothing is downloaded: the file is looked for locally (see :class:`InceptionFeatures`).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..._checks import check_int
from ...data.transforms import LevelTransform
from .features import FeatureExtractor, check_images

__all__ = ["InceptionFeatures", "FIDInceptionV3", "FID_WEIGHTS_FILE", "FID_WEIGHTS_URL"]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
_FID_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the name ends in the start of the file's SHA-256


class _Conv(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU: torchvision's ``BasicConv2d``."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):  # TensorFlow's average pool leaves the zero padding out of the mean
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):  # 35x35, torchvision's InceptionA
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1 = _Conv(cin, 48, 1)
        self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class _BlockB(nn.Module):  # 35x35 -> 17x17, torchvision's InceptionB
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _BlockC(nn.Module):  # 17x17, torchvision's InceptionC
    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, **row)
        self.branch7x7_3 = _Conv(c7, 192, **col)
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, **col)
        self.branch7x7dbl_3 = _Conv(c7, c7, **row)
        self.branch7x7dbl_4 = _Conv(c7, c7, **col)
        self.branch7x7dbl_5 = _Conv(c7, 192, **row)
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool(x))], 1)


class _BlockD(nn.Module):  # 17x17 -> 8x8, torchvision's InceptionD
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _Conv(cin, 192, 1)
        self.branch3x3_2 = _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _BlockE(nn.Module):  # 8x8, torchvision's InceptionE; FID's last one max-pools
    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        p = _avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 up to pool3: ``(N, 3, 299, 299)`` in ``[-1, 1]`` -> ``(N, 2048)``.

    Parameter names are torchvision's (``Conv2d_1a_3x3.conv.weight``, ``Mixed_7c.branch_pool.bn
    .running_var``, ``fc.weight`` ...); ``fc`` (1008 classes) is kept so the file loads whole, and is
    not used for features.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, "avg")
        self.Mixed_7c = _BlockE(2048, "max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))  # adaptive average pool to 1x1: pool3


def _search_paths(weights_path) -> list[Path]:
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        return [p / FID_WEIGHTS_FILE] if p.is_dir() else [p]
    out = []
    if os.environ.get("SDE_GEN_FID_WEIGHTS"):
        p = Path(os.environ["SDE_GEN_FID_WEIGHTS"]).expanduser()
        out.append(p / FID_WEIGHTS_FILE if p.is_dir() else p)
    cache = Path(os.environ.get("SDE_GEN_CACHE") or "~/.cache/sde_gen").expanduser()
    out.append(cache / FID_WEIGHTS_FILE)
    torch_home = Path(os.environ.get("TORCH_HOME") or "~/.cache/torch").expanduser()
    out.append(torch_home / "hub" / "checkpoints" / FID_WEIGHTS_FILE)  # where pytorch-fid downloads it
    return out


def find_fid_weights(weights_path=None) -> Path:
    """The local FID weights file: ``weights_path`` (a file, or a folder holding
    ``pt_inception-2015-12-05-6726825d.pth``) if given; else ``$SDE_GEN_FID_WEIGHTS``, then
    ``$SDE_GEN_CACHE`` (default ``~/.cache/sde_gen``), then torch hub's checkpoint folder (where
    pytorch-fid saves its download). ``FileNotFoundError`` naming every place looked at otherwise."""
    paths = _search_paths(weights_path)
    for p in paths:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"InceptionFeatures: the FID Inception weights file {FID_WEIGHTS_FILE} was not found; looked for "
        f"{', '.join(str(p) for p in paths)}"
        f"{'' if weights_path is not None else ' (set $SDE_GEN_FID_WEIGHTS or pass weights_path=)'}. "
        f"Nothing is downloaded at run time: get the file (pytorch-fid's port of TensorFlow's "
        f"inception-2015-12-05) from {FID_WEIGHTS_URL} and pass its path or folder as weights_path, or "
        "set $SDE_GEN_FID_WEIGHTS to it."
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class InceptionFeatures(FeatureExtractor):
    """Inception-v3 pool3 features (``dim = 2048``) of RGB or grey images, as FID uses them.

    Args:
        weights_path: ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's file) or a folder
            holding it; default: looked for in ``$SDE_GEN_FID_WEIGHTS``, ``$SDE_GEN_CACHE`` and
            torch hub's checkpoints (:func:`find_fid_weights`). Never downloaded.
        check_hash: warn unless the file's SHA-256 starts with ``6726825d`` (torch hub's naming
            convention, which the standard file's name follows; a file of the same layout but other
            weights gives FIDs that are not comparable); ``False`` skips the check.
        levels: the number of levels of integer images given to ``__call__`` (256 for 8-bit).
        batch_size, device: of the forward passes (features come back on the CPU, float32).

    Images ``(N, C, H, W)``, ``C`` 1 or 3 (grey is repeated to RGB), either integer levels
    ``0..levels-1`` or floats in ``[-1, 1]`` as the sampler returns them. Floats are first quantized
    to 8 bits as saving them to PNG would (``LevelTransform(256).to_levels``), so a sample set and
    its PNG files give the same features. Then, as pytorch-fid does: scale to ``[0, 1]`` (``k / 255``),
    resize bilinearly to 299x299 (``F.interpolate``, ``align_corners=False``), map to ``[-1, 1]``.

    What this is and is not: the layer layout, the four FID patches, the input pipeline and the key
    names follow pytorch-fid exactly, and with the same weights the features equal pytorch-fid's
    ``InceptionV3([3])`` (checked on random weights of this layout; the real file could not be
    tested offline). As with pytorch-fid, FIDs are close to those of TensorFlow's original code but
    not bit for bit the same: PyTorch's bilinear resize differs from TF 1.x's.
    """

    dim = 2048

    def __init__(
        self,
        weights_path=None,
        *,
        check_hash: bool = True,
        levels: int = 256,
        batch_size: int = 50,
        device: torch.device | str = "cpu",
    ):
        self.levels = check_int("levels", levels, low=2)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.device = torch.device(device)
        self.path = find_fid_weights(weights_path)
        if check_hash and not (digest := _sha256(self.path)).startswith(_FID_SHA256_PREFIX):
            warnings.warn(
                f"{self.path}: SHA-256 {digest[:16]}... does not start with {_FID_SHA256_PREFIX}: it is "
                f"probably not {FID_WEIGHTS_FILE}, and FIDs computed with it may not be comparable with "
                "published ones (check_hash=False silences this)",
                stacklevel=2,
            )
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated file, or one needing code to unpickle
            raise ValueError(
                f"{self.path}: cannot read the Inception weights ({type(e).__name__}: {e})"
            ) from e
        self.net = FIDInceptionV3()
        _load_exact(self.net, state, self.path)
        self.net.eval().requires_grad_(False).to(self.device)

    def __repr__(self) -> str:
        return f"InceptionFeatures({str(self.path)!r})"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = check_images("images", images, channels=(1, 3))
        out = []
        for s in range(0, images.shape[0], self.batch_size):
            x = images[s : s + self.batch_size].to(self.device)
            if x.is_floating_point():
                x = LevelTransform(256).to_levels(x).float() / 255
            else:
                x = x.float() / (self.levels - 1)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.net(2 * x - 1).float().cpu())
        return torch.cat(out)


def _load_exact(net: nn.Module, state, path: Path) -> None:
    """Load ``state`` into ``net`` requiring every key and shape to match (``num_batches_tracked``,
    unused at evaluation, may be absent, as in files saved by old PyTorch)."""
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in own
        if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{what} {len(keys)} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise ValueError(
            f"{path}: not the FID Inception-v3 weights ({FID_WEIGHTS_FILE} layout): keys {'; '.join(parts)}"
        )
    full = {k: state.get(k, own[k]) for k in own}
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in full.items()})
