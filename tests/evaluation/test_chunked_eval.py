"""Chunked, chunk-seeded evaluation and sampling, on one process and on two (gloo, CPU).

Everything runs on the exact score of the 2-D mixture in problems.py, in float64. One process
computes every figure once (``_compute``); two more processes compute the same under a process
group of two, launched with torchrun (this file is their script), and their results must be
bit-identical: chunk i draws its noise from ``chunk_generator(seed, i, stream)`` wherever it runs.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from problems import mixture_2d

import sde_gen as sg

EPS = 1e-3
N, BS = 45, 12  # 4 chunks, the last of 9 points: 2 chunks per rank of two
SEED = 2024
RK4_STEPS = 40  # 4 * 40 = 160 score evaluations per chunk; ~9e-5 nats from the exact flow


def _problem():
    sde, mix = sg.VPSDE(), mixture_2d()
    x = mix.sample_marginal(N, EPS, sde, generator=torch.Generator().manual_seed(0))
    return sde, mix, x


def _image_problem():
    """A 4-D mixture shaped as (1, 2, 2) images in [-1, 1), and 12 integer images of 17 levels."""
    g = torch.Generator().manual_seed(5)
    means = 0.5 * torch.randn(2, 4, generator=g, dtype=torch.float64)
    mix = sg.GaussianMixture.isotropic(means, 0.25, event_shape=(1, 2, 2))
    transform = sg.LevelTransform(17)
    levels = transform.to_levels(mix.sample(12, generator=g).clamp(-1.0, 0.999))
    return sg.VPSDE(), mix, transform, levels


def _compute(outdir: Path) -> dict:
    """Every figure the tests compare, as this process (rank r of W) sees it."""
    sde, mix, x = _problem()
    score = mix.score_fn(sde)
    rk4 = sg.ProbabilityFlow("rk4", steps=RK4_STEPS)
    r = {"world_size": sg.distributed.get_world_size(), "rank": sg.distributed.get_rank()}
    r["rk4"] = sg.evaluate_nll(sde, score, x, eps=EPS, solver=rk4, batch_size=BS)
    r["hutchinson"] = sg.evaluate_nll(
        sde, score, x, eps=EPS, solver=rk4, batch_size=BS, divergence="hutchinson", num_probes=2, seed=SEED
    )
    dopri5 = sg.ProbabilityFlow(rtol=1e-5, atol=1e-5)
    r["dopri5"] = sg.evaluate_nll(sde, score, x, eps=EPS, solver=dopri5, batch_size=BS)
    isde, imix, transform, levels = _image_problem()
    r["bpd"] = sg.evaluate_bpd(
        isde,
        imix.score_fn(isde),
        levels,
        transform,
        repeats=2,
        eps=EPS,
        solver=sg.ProbabilityFlow("rk4", steps=10),
        batch_size=4,
        seed=SEED,
        divergence="hutchinson",
        dtype=torch.float64,
    )
    em = sg.EulerMaruyama(steps=100)
    kw = dict(seed=SEED, batch_size=BS, eps=EPS, dtype=torch.float64)
    r["samples"] = sg.generate_samples(sde, score, N, (2,), em, **kw)
    mm = sg.generate_samples(sde, score, N, (2,), em, out=outdir / "samples.npy", **kw)
    r["memmap"] = {k: v for k, v in mm.items() if k != "samples"}
    r["memmap_on_this_rank"] = None if mm["samples"] is None else torch.from_numpy(np.array(mm["samples"]))
    # Fewer chunks than ranks: rank 1 has nothing to do and still returns the whole result.
    euler = sg.ProbabilityFlow("euler", steps=2)
    r["one_chunk"] = sg.evaluate_nll(sde, score, x[:5], eps=EPS, solver=euler, batch_size=BS)
    r["one_chunk_samples"] = sg.generate_samples(sde, score, 3, (2,), euler, seed=SEED, eps=EPS)
    # One generator stream cannot be split over ranks: refused there, accepted on one process.
    try:
        sg.evaluate_nll(
            sde, score, x[:4], eps=EPS, solver=sg.ProbabilityFlow("euler", steps=2), divergence="hutchinson",
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        r["generator_refused"] = None
    except ValueError as e:
        r["generator_refused"] = str(e)
    return r


# -- one process ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _compute(tmp_path_factory.mktemp("single"))


def test_nll_equals_analytic_density(single):
    """The mathematics: per-point NLL from the fixed grid against the closed-form model density.

    The model is the flow of the prior N(0, I), so its exact log-density is
    ``log p_eps(x) - log p_T(z) + log prior(z)`` with z = x carried to T (the oracle knows p_eps
    and p_T). Measured: at most 8.8e-5 nats with rk4 and 40 steps.
    """
    sde, mix, x = _problem()
    z = sg.encode(sde, mix.score_fn(sde), x, eps=EPS, solver=sg.ProbabilityFlow("rk4", steps=RK4_STEPS))
    model = mix.log_prob(x, EPS, sde) - mix.log_prob(z, sde.T, sde) + sde.prior_log_prob(z)
    r = single["rk4"]
    assert r["per_point"].shape == (N,) and r["per_point"].dtype == torch.float64
    assert (r["per_point"] + model).abs().max() < 1e-3
    assert r["nll"] == pytest.approx(float(r["per_point"].mean()), abs=0.0)
    assert r["nll_se"] == pytest.approx(float(r["per_point"].std() / math.sqrt(N)), rel=1e-12)
    # dopri5 at 1e-5 is also within its tolerance of the same density
    assert (single["dopri5"]["per_point"] + model).abs().max() < 1e-3
    # Hutchinson with chunk-seeded probes is unbiased: its mean error against the exact
    # divergence is within 5 standard errors (seeded, so deterministic)
    diff = single["hutchinson"]["per_point"] - r["per_point"]
    assert diff.abs().max() > 1e-6  # the probes do add noise
    assert abs(float(diff.mean())) < 5 * float(diff.std()) / math.sqrt(N)


def test_chunking_changes_nothing_on_a_fixed_grid(single):
    """Chunks of 12 against one chunk of 45: the fixed grid computes each point alone (measured:
    bit-identical), while dopri5 controls its error over the whole chunk, so chunking moves each
    point within the tolerance and each chunk takes its own number of steps."""
    sde, mix, x = _problem()
    score = mix.score_fn(sde)
    rk4 = sg.ProbabilityFlow("rk4", steps=RK4_STEPS)
    chunked = single["rk4"]
    whole = sg.evaluate_nll(sde, score, x, eps=EPS, solver=rk4, batch_size=N)
    assert (chunked["per_point"] - whole["per_point"]).abs().max() <= 1e-12
    assert chunked["nfe_per_chunk"] == [4 * RK4_STEPS] * 4 and whole["nfe_per_chunk"] == [4 * RK4_STEPS]
    dopri5 = sg.ProbabilityFlow(rtol=1e-5, atol=1e-5)
    chunked = single["dopri5"]
    whole = sg.evaluate_nll(sde, score, x, eps=EPS, solver=dopri5, batch_size=N)
    gap = (chunked["per_point"] - whole["per_point"]).abs().max()
    assert 1e-9 < gap < 1e-3  # measured 6e-4; each is within ~3e-4 of the analytic density
    assert len(set(chunked["nfe_per_chunk"])) > 1


def test_chunk_i_uses_its_own_generator(single):
    """generate_samples' chunk i is sample() with chunk_generator(seed, i, "samples")."""
    sde, mix, _ = _problem()
    em = sg.EulerMaruyama(steps=100)
    out = single["samples"]["samples"]
    assert out.shape == (N, 2) and out.dtype == torch.float64 and out.device.type == "cpu"
    for i in (0, 3):
        size = min(BS, N - i * BS)
        g = sg.chunk_generator(SEED, i, "samples")
        ref = sg.sample(sde, mix.score_fn(sde), (size, 2), em, eps=EPS, generator=g, dtype=torch.float64)
        assert torch.equal(out[i * BS : i * BS + size], ref)
    assert single["samples"]["nfe_per_chunk"] == [100] * 4
    # the seed scheme is part of the results' reproducibility: pin it
    assert sg.chunk_seed(0, 0, "samples") == 12865742008072950574
    seeds = {sg.chunk_seed(SEED, i, s) for i in range(1000) for s in sg.evaluation.STREAMS}
    assert len(seeds) == 3000


def test_memmap_equals_in_memory(single, tmp_path):
    mm = single["memmap"]
    assert torch.equal(single["memmap_on_this_rank"], single["samples"]["samples"])
    assert mm["path"].exists() and not Path(str(mm["path"]) + ".partial").exists()
    assert mm["nfe"] == single["samples"]["nfe"]
    # 3 chunks of 1, written one at a time, into a folder that does not exist yet
    sde, mix, _ = _problem()
    r = sg.generate_samples(
        sde, mix.score_fn(sde), 3, (1, 2), sg.ProbabilityFlow("euler", steps=3), seed=1, batch_size=1,
        out=tmp_path / "a" / "b.npy",
    )  # fmt: skip
    assert r["samples"].shape == (3, 1, 2) and np.load(tmp_path / "a" / "b.npy").shape == (3, 1, 2)
    assert r["nfe_per_chunk"] == [3, 3, 3]


def test_generator_path_is_one_stream_as_before(single):
    """``generator=`` keeps the single-process behaviour: one stream through the chunks in order."""
    assert single["generator_refused"] is None
    sde, mix, x = _problem()
    solver = sg.ProbabilityFlow("euler", steps=4)
    kw = dict(eps=EPS, solver=solver, divergence="hutchinson")
    r = sg.evaluate_nll(
        sde, mix.score_fn(sde), x, batch_size=20, generator=torch.Generator().manual_seed(3), **kw
    )
    g = torch.Generator().manual_seed(3)
    ref = torch.cat(
        [
            -sg.log_likelihood(sde, mix.score_fn(sde), x[s : s + 20], generator=g, **kw).log_prob
            for s in (0, 20, 40)
        ]
    )
    assert torch.equal(r["per_point"], ref)
    isde, imix, transform, levels = _image_problem()
    kw = dict(eps=EPS, solver=solver, batch_size=5, dtype=torch.float64, repeats=2)
    a = sg.evaluate_bpd(
        isde, imix.score_fn(isde), levels, transform, generator=torch.Generator().manual_seed(4), **kw
    )
    b = sg.evaluate_bpd(
        isde, imix.score_fn(isde), levels, transform, generator=torch.Generator().manual_seed(4), **kw
    )
    assert torch.equal(a["per_point"], b["per_point"]) and a["bpd"] == float(a["per_point"].mean())
    assert a["nfe_per_chunk"] == [2 * 4] * 3  # two repeats of 4 Euler steps per chunk


def test_old_argument_order_is_deprecated_and_identical():
    """``evaluate_nll(score_fn, sde, ...)`` and ``evaluate_bpd(score_fn, sde, ...)``, the order before
    ``(sde, score_fn)``, give bit-identical results (noise included) with a DeprecationWarning."""
    sde, mix, x = _problem()
    isde, imix, transform, levels = _image_problem()
    solver = sg.ProbabilityFlow("euler", steps=3)
    nll_kw = dict(eps=EPS, solver=solver, batch_size=BS, divergence="hutchinson", seed=SEED)
    bpd_kw = dict(eps=EPS, solver=solver, batch_size=5, repeats=2, seed=SEED, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the new order warns of nothing
        new_nll = sg.evaluate_nll(sde, mix.score_fn(sde), x, **nll_kw)
        new_bpd = sg.evaluate_bpd(isde, imix.score_fn(isde), levels, transform, **bpd_kw)
    with pytest.warns(DeprecationWarning, match=r"evaluate_nll\(sde, score_fn, \.\.\.\)"):
        old_nll = sg.evaluate_nll(mix.score_fn(sde), sde, x, **nll_kw)
    with pytest.warns(DeprecationWarning, match=r"evaluate_bpd\(sde, score_fn, \.\.\.\)"):
        old_bpd = sg.evaluate_bpd(imix.score_fn(isde), isde, levels, transform, **bpd_kw)
    for new, old in ((new_nll, old_nll), (new_bpd, old_bpd)):
        assert torch.equal(new["per_point"], old["per_point"])
        assert {k: v for k, v in new.items() if k != "per_point"} == {
            k: v for k, v in old.items() if k != "per_point"
        }


# -- two processes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("two_ranks")
    tests = os.path.dirname(os.path.dirname(__file__))  # problems.py
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=tests)
    # --standalone: torchrun binds its rendezvous store to a free port itself (no port races with
    # other jobs on the machine) and sets RANK, WORLD_SIZE, MASTER_ADDR/PORT for the workers.
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        str(outdir),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return [torch.load(outdir / f"rank{r}.pt", weights_only=False) for r in range(2)], outdir


def test_two_ranks_bit_identical_to_one(single, two_ranks):
    ranks, outdir = two_ranks
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:  # every rank returns the whole, gathered result
        for key in ("rk4", "hutchinson", "dopri5", "bpd", "one_chunk"):
            assert torch.equal(r[key]["per_point"], single[key]["per_point"]), key
            assert (
                r[key]["nfe"] == single[key]["nfe"]
                and r[key]["nfe_per_chunk"] == single[key]["nfe_per_chunk"]
            )
        assert torch.equal(r["samples"]["samples"], single["samples"]["samples"])
        assert torch.equal(r["one_chunk_samples"]["samples"], single["one_chunk_samples"]["samples"])
        assert r["one_chunk"]["nfe_per_rank"] == [2, 0] and r["one_chunk_samples"]["nfe_per_rank"] == [2, 0]
        assert "seed=" in r["generator_refused"] and "2 ranks" in r["generator_refused"]
    # rank 0 wrote the memory-mapped file, equal to the samples in memory; rank 1 got only the path
    assert torch.equal(ranks[0]["memmap_on_this_rank"], single["samples"]["samples"])
    assert ranks[1]["memmap_on_this_rank"] is None and ranks[1]["memmap"]["path"] == outdir / "samples.npy"
    assert torch.equal(torch.from_numpy(np.load(outdir / "samples.npy")), single["samples"]["samples"])
    # a fixed grid costs every rank the same (2 chunks of 160); dopri5 does not
    assert ranks[0]["rk4"]["nfe_per_rank"] == [2 * 4 * RK4_STEPS] * 2
    assert ranks[0]["rk4"]["nfe_rank_max"] == ranks[0]["rk4"]["nfe_rank_min"]
    assert ranks[0]["samples"]["nfe_per_rank"] == [200, 200]
    d = ranks[0]["dopri5"]
    assert sum(d["nfe_per_rank"]) == d["nfe"] and d["nfe_rank_max"] > d["nfe_rank_min"]
    # evaluate_bpd: 3 chunks of 4 images, 2 on rank 0 and 1 on rank 1
    assert ranks[0]["bpd"]["nfe_per_rank"] == [2 * 2 * 40, 2 * 40]


# -- bad arguments -------------------------------------------------------------------------------


def test_bad_arguments_name_themselves():
    sde, mix, x = _problem()
    score = mix.score_fn(sde)
    em = sg.EulerMaruyama(steps=2)
    isde, imix, transform, levels = _image_problem()
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        sg.evaluate_nll(sde, score, x, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        sg.evaluate_bpd(isde, score, levels, transform, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        sg.generate_samples(sde, score, 4, (2,), em, seed=0, batch_size=0)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        sg.generate_samples(sde, score, 0, (2,), em, seed=0)
    with pytest.raises(ValueError, match=r"either seed= .* or generator= .* not both"):
        sg.evaluate_nll(sde, score, x, divergence="hutchinson", seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"either seed= .* or generator= .* not both"):
        sg.evaluate_bpd(isde, score, levels, transform, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        sg.evaluate_nll(sde, score, x, seed=-1)
    with pytest.raises(TypeError, match="seed must be an int, got None"):
        sg.generate_samples(sde, score, 4, (2,), em, seed=None)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
        sg.chunk_seed(2**64, 0)
    with pytest.raises(ValueError, match="stream must be one of"):
        sg.chunk_generator(0, 0, "noise")
    with pytest.raises(ValueError, match="shape must be the shape of one sample"):
        sg.generate_samples(sde, score, 4, (2, 0), em, seed=0)
    with pytest.raises(TypeError, match="out must be a path"):
        sg.generate_samples(sde, score, 4, (2,), em, seed=0, out=3)
    with pytest.raises(TypeError, match="numpy has no dtype for torch.bfloat16"):
        sg.generate_samples(sde, score, 4, (2,), em, seed=0, dtype=torch.bfloat16, out="x.npy")
    with pytest.raises(ValueError, match="x must have shape"):
        sg.evaluate_nll(sde, score, x[:0])
    with pytest.raises(ValueError, match="divergence must be one of"):
        sg.evaluate_nll(sde, score, x, divergence="trace")


# -- the two-process worker: torchrun runs this file -------------------------------------------


def _worker(outdir: Path) -> None:
    torch.set_num_threads(1)
    sg.distributed.init_from_env(backend="gloo")
    try:
        r = _compute(outdir)
        torch.save(r, outdir / f"rank{r['rank']}.pt")
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
