"""Classical baselines for test bits/dim on the digits split (1,497 train / 300 test, 17 levels).

- independent per-pixel categorical, fitted by counts with add-alpha smoothing (alpha=0.5 or 1);
- a 10-component full-covariance Gaussian mixture (scikit-learn) fitted to uniformly dequantized
  training data and evaluated on dequantized test data, converted with ``sg.bits_per_dim``.

    python benchmarks/digits_baselines.py
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

import sde_gen as sg


def categorical_bpd(train: np.ndarray, test: np.ndarray, levels: int, alpha: float) -> float:
    counts = np.stack([(train == k).sum(0) for k in range(levels)])  # (levels, d)
    probs = (counts + alpha) / (train.shape[0] + alpha * levels)
    logp = np.log2(probs[test, np.arange(test.shape[1])])  # (n_test, d)
    return float(-logp.mean())


def main() -> None:
    data = sg.load_dataset("digits")
    train = data.train.reshape(len(data.train), -1).numpy().astype(np.int64)
    test = data.test.reshape(len(data.test), -1).numpy().astype(np.int64)
    L, d = data.levels, train.shape[1]
    print(f"digits: {len(train)} train / {len(test)} test, {d} dims, {L} levels")
    for alpha in (0.5, 1.0):
        print(f"per-pixel categorical (add-{alpha}): {categorical_bpd(train, test, L, alpha):.3f} bits/dim")
    tr = sg.LevelTransform(L, -1.0, 1.0)
    g = torch.Generator().manual_seed(0)
    ytrain = torch.cat([tr.dequantize(data.train, g, torch.float64) for _ in range(5)]).reshape(-1, d)
    gmm = GaussianMixture(10, covariance_type="full", reg_covar=1e-4, random_state=0, max_iter=500)
    gmm.fit(ytrain.numpy())
    bpds = []
    for _ in range(10):
        ytest = tr.dequantize(data.test, g, torch.float64).reshape(-1, d).numpy()
        bpds.append(sg.bits_per_dim(torch.from_numpy(gmm.score_samples(ytest)), d, levels=L))
    per_image = torch.stack(bpds).mean(0)
    se = float(per_image.std() / math.sqrt(len(per_image)))
    print(f"10-component full-covariance GMM, dequantized: {per_image.mean():.3f} +- {se:.3f} bits/dim")


if __name__ == "__main__":
    main()
