"""What the command-line tests share: the config folder, the overrides of a tiny run, composing a
config as ``experiments/run.py`` does (tests/experiments/, tests/training/, tests/files/ use it)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
TINY = [
    "train.steps=3",
    "train.warmup=0",
    "train.ckpt_every=2",
    "sample.num=16",
    "likelihood.n=4",
    "likelihood.rtol=1e-3",
    "likelihood.atol=1e-3",
    "logger=none",
    "progress=false",
    "threads=1",
]


def cfg_of(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))
