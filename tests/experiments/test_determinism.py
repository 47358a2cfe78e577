"""Determinism on CPU: the same seed gives the same samples and the same bits/dim, a different seed
different ones; in the library (every solver, the Hutchinson likelihood, bits/dim of images) and end
to end through experiments/run.py.

Every random draw of the library comes from the ``generator`` it is given, so the library tests also
reset torch's global generator to a different state between the two runs: nothing may depend on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli import TINY
from hydra import compose, initialize_config_dir
from problems import mixture_2d
from solver_registry import CASES

import sde_gen as sg

ROOT = Path(__file__).resolve().parents[2]
from experiments import run as run_script  # noqa: E402

torch.set_num_threads(1)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_same(a: dict, b: dict) -> None:
    """Equal keys; floats and ints equal exactly, tensors bit for bit."""
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], (k, a[k], b[k])


def twice(fn, seed: int):
    """``fn(generator)`` for ``seed`` twice, with torch's global generator in different states."""
    torch.manual_seed(1)
    a = fn(gen(seed))
    torch.manual_seed(2)
    torch.rand(7)  # and advanced differently
    b = fn(gen(seed))
    return a, b


# -- the library -----------------------------------------------------------------------------------

#: every stepping solver of the registry (tests/solver_registry.py), and the probability flow
SOLVERS = {c.name: (lambda c=c: c.make(4)) for c in CASES}
SOLVERS["probability_flow"] = lambda: sg.ProbabilityFlow(rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("name", list(SOLVERS))
def test_sample_same_seed_same_samples(name, sde_name):
    sde = {"vp": sg.VPSDE, "ve": sg.VESDE}[sde_name]()
    score = mixture_2d().score_fn(sde)

    def draw(g, denoise=False):
        res = sg.sample(
            sde, score, (64, 2), SOLVERS[name](), generator=g, dtype=F64, denoise=denoise, return_result=True
        )
        return res.x, res.nfe

    (xa, nfe_a), (xb, nfe_b) = twice(draw, 0)
    assert torch.isfinite(xa).all() and xa.shape == (64, 2)
    assert torch.equal(xa, xb) and nfe_a == nfe_b  # bit for bit, not merely close
    xc, _ = draw(gen(1))
    assert not torch.allclose(xa, xc), "a different seed gave the same samples"
    # With Tweedie denoising as well (one more score evaluation, no randomness of its own).
    (da, _), (db, _) = twice(lambda g: draw(g, denoise=True), 0)
    assert torch.equal(da, db)


def test_log_likelihood_hutchinson_same_seed_same_value():
    sde, mix = sg.VPSDE(), mixture_2d()
    x = mix.sample_marginal(16, 1e-3, sde, generator=gen(5))
    solver = sg.ProbabilityFlow(rtol=1e-5, atol=1e-5)

    def lik(g):
        return sg.log_likelihood(
            sde,
            mix.score_fn(sde),
            x,
            eps=1e-3,
            solver=solver,
            divergence="hutchinson",
            num_probes=3,
            generator=g,
        )

    a, b = twice(lik, 0)
    assert torch.isfinite(a.log_prob).all()
    for field in ("log_prob", "prior_log_prob", "delta_log_prob", "z", "std_error"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.nfe == b.nfe
    c = lik(gen(1))
    assert not torch.equal(a.log_prob, c.log_prob), "a different seed drew the same probes"


def test_evaluate_bpd_of_digits_same_seed_same_value():
    data = sg.load_dataset("digits")
    transform = sg.LevelTransform(data.levels)
    # An exact score without training: a mixture of isotropic Gaussians at 5 training images.
    means = transform.centers(data.train[:5], dtype=F64).reshape(5, -1)
    mix = sg.GaussianMixture.isotropic(means, 0.6, event_shape=data.shape)
    sde = sg.VPSDE()
    images = data.test[:6]
    solver = sg.ProbabilityFlow(rtol=1e-3, atol=1e-3)

    def bpd(g, divergence="hutchinson", n=6):
        return sg.evaluate_bpd(
            sde,
            mix.score_fn(sde),
            images[:n],
            transform,
            repeats=2,
            solver=solver,
            batch_size=4,  # two batches: the generator runs on across them
            generator=g,
            divergence=divergence,
        )

    a, b = twice(bpd, 0)
    assert 0 < a["bpd"] < 20 and a["bpd_se"] > 0 and a["nfe"] > 0
    assert_same(a, b)
    c = bpd(gen(1))
    assert c["bpd"] != a["bpd"]
    # The exact divergence (64 backward passes an evaluation: 2 images): only the dequantization is random.
    a, b = twice(lambda g: bpd(g, "exact", n=2), 3)
    assert_same(a, b)


# -- end to end: experiments/run.py ------------------------------------------------------------------

TINY_DIGITS = [
    "experiment=digits_quick",
    "solver=pc",
    "solver.steps=3",
    *(o for o in TINY if not o.startswith(("sample.num=", "likelihood.n="))),
    "sample.num=8",
    "likelihood.n=3",
]


def cfg_of(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    if "device" in cfg:  # where run.py can choose a device: the CPU, the subject of this test
        cfg.device = "cpu"
    return cfg


def test_run_py_same_seed_same_samples_and_bits_per_dim(tmp_path):
    def job(name, seed):
        out = tmp_path / name
        torch.manual_seed(100 + len(name))  # execute() must seed everything itself
        metrics = run_script.execute(cfg_of(*TINY_DIGITS, f"seed={seed}"), out_dir=out)
        assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
        ckpt = torch.load(out / "checkpoints" / "ckpt_00000003.pt", weights_only=False)
        return metrics, torch.load(out / "samples.pt"), ckpt["model"], out

    ma, sa, pa, da = job("a", 7)
    mb, sb, pb, db = job("bb", 7)
    # One draw: the preset's 100 scored samples (metrics.num), whose first sample.num=8 make the picture.
    assert sa.shape == (100, 1, 8, 8) and torch.isfinite(sa).all()
    assert torch.equal(sa, sb)
    assert (da / "samples.pt").read_bytes() == (db / "samples.pt").read_bytes()
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    for key in ("test_bpd", "test_bpd_se", "likelihood_nfe", "sample_nfe", "final_loss", "step", "fd", "kid"):
        assert ma[key] == mb[key], (key, ma[key], mb[key])
    assert 0.5 < ma["test_bpd"] < 30
    assert (da / "history.json").read_text() == (db / "history.json").read_text()

    mc, sc, pc, _ = job("ccc", 8)
    assert not torch.allclose(sa, sc), "seed=8 gave the samples of seed=7"
    assert mc["test_bpd"] != ma["test_bpd"]
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)
