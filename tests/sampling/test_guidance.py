"""Conditioning and guidance against the labelled Gaussian mixture (label = component), whose
conditional scores ``grad log p_t(x | y)`` and classifier ``p(y | x_t)`` are exact at every t.

(1) sampling with the exact conditional score, or with classifier guidance at scale 1 from the
exact unconditional score and classifier, reproduces ``p_eps(x | y)`` at the noise floor;
(2) classifier-free guidance is linear in w, the conditional model at w = 0 and the unconditional
at w = -1, and concentrates samples on their class as w grows; (3) NFE counts networks;
(4) conditioning travels with its samples through chunks; (5) bad input is refused clearly.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from problems import SDES, mixture_2d

import sde_gen as sg
from sde_gen.sampling.guidance import classifier_free_guidance, classifier_guidance

F64 = torch.float64
EPS = 1e-3
K = 3  # mixture_2d's components
PER_CLASS = 400


def _labels(per_class: int = PER_CLASS) -> torch.Tensor:
    return torch.arange(K).repeat_interleave(per_class)


@functools.cache
def _reference(sde_name: str):
    """Exact draws of p_eps(x | y) per class, and the energy-distance noise floor of each class."""
    sde, mix = SDES[sde_name](), mixture_2d()
    g = torch.Generator().manual_seed(11)
    refs, floors = [], []
    for k in range(K):
        y = torch.full((PER_CLASS,), k)
        ref = mix.sample_marginal_conditional(y, EPS, sde, generator=g)
        reps = [mix.sample_marginal_conditional(y, EPS, sde, generator=g) for _ in range(6)]
        refs.append(ref)
        floors.append(torch.tensor([sg.energy_distance(r, ref) for r in reps]))
    return sde, mix, refs, floors


SAMPLERS = {
    "dpmpp": lambda: sg.DPMSolverPlusPlus(50),
    "pc": lambda: sg.PredictorCorrector(500),
}


@pytest.mark.parametrize("mode", ["conditional", "classifier"])
@pytest.mark.parametrize("solver_name", list(SAMPLERS))
@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve", "user"])
def test_sampling_reproduces_the_class_conditional_law(sde_name, solver_name, mode):
    sde, mix, refs, floors = _reference(sde_name)
    if mode == "conditional":
        score = mix.conditional_score_fn(sde)
    else:  # Bayes: grad log p_t(x) + grad log p(y | x_t) = grad log p_t(x | y)
        score = classifier_guidance(mix.score_fn(sde), mix.classifier_fn(sde), 1.0)
    y = _labels()
    x = sg.sample(
        sde, score, (y.numel(), 2), SAMPLERS[solver_name](), eps=EPS, cond={"y": y},
        generator=torch.Generator().manual_seed(3), dtype=F64,
    )  # fmt: skip
    for k in range(K):
        xk, ref, floor = x[y == k], refs[k], floors[k]
        ed = sg.energy_distance(xk, ref)
        assert ed < floor.mean() + 5 * floor.std(), (k, ed, floor)
        # the class mean, far more sensitive: a two-sample z-score
        z = (xk.mean(0) - ref.mean(0)) / torch.sqrt((xk.var(0) + ref.var(0)) / PER_CLASS)
        assert z.abs().max() < 5, (k, z)


def test_the_figure_sees_a_score_that_ignores_the_label():
    """Sensitivity: the unconditional score's samples miss every class by far (measured energy
    distances 1.4, 2.5, 2.0 against thresholds of 3e-3 .. 1e-2)."""
    sde, mix, refs, floors = _reference("vp")
    s0 = mix.score_fn(sde)
    y = _labels()
    x = sg.sample(
        sde, lambda x, t, y=None: s0(x, t), (y.numel(), 2), sg.DPMSolverPlusPlus(50), eps=EPS,
        cond={"y": y}, generator=torch.Generator().manual_seed(3), dtype=F64,
    )  # fmt: skip
    for k in range(K):
        floor = floors[k]
        assert sg.energy_distance(x[y == k], refs[k]) > 100 * (floor.mean() + 5 * floor.std())


# -- (2) classifier-free guidance ------------------------------------------------------------------


def _points(sde, mix, n=64, seed=5):
    """Points of p_t at assorted times, with labels in 0..K-1."""
    g = torch.Generator().manual_seed(seed)
    t = EPS + (1 - EPS) * torch.rand(n, generator=g, dtype=F64)
    y = torch.randint(0, K, (n,), generator=g)
    x0 = mix.sample_conditional(y, generator=g)
    mean, std = sde.marginal(x0, t)
    return mean + std[:, None] * torch.randn(x0.shape, generator=g, dtype=F64), t, y


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("sde_name", ["vp", "ve", "user"])
def test_cfg_is_linear_in_w_and_ends_at_the_conditional_and_unconditional_scores(sde_name, batch):
    sde, mix = SDES[sde_name](), mixture_2d()
    x, t, y = _points(sde, mix)
    cond_score = mix.conditional_score_fn(sde)
    s_c, s_u = cond_score(x, t, y=y), mix.score(x, t, sde)
    assert not torch.allclose(s_c, s_u)
    guided = {
        w: classifier_free_guidance(cond_score, w, null=K, batch=batch)(x, t, y=y) for w in (-1, 0, 0.5, 3)
    }
    assert torch.equal(guided[0], s_c)  # w = 0: the conditional model, exactly
    assert torch.equal(guided[-1], s_u)  # w = -1: the unconditional model, exactly
    for w in (0.5, 3):  # s_w = s_c + w (s_c - s_u)
        torch.testing.assert_close(guided[w], s_c + w * (s_c - s_u), rtol=1e-12, atol=1e-12)
    # the null label given as a dict, and read from the score function's null_label
    by_dict = classifier_free_guidance(cond_score, 3, null={"y": K}, batch=batch)(x, t, y=y)
    by_attr = classifier_free_guidance(cond_score, 3, batch=batch)(x, t, y=y)
    assert torch.equal(by_dict, guided[3]) and torch.equal(by_attr, guided[3])
    # null={"y": None} drops the keyword: score_fn(x, t) is the unconditional model
    dropped = classifier_free_guidance(cond_score, 3, null={"y": None}, batch=batch)(x, t, y=y)
    torch.testing.assert_close(dropped, guided[3], rtol=0, atol=0)


def test_growing_w_concentrates_samples_on_their_class():
    """Mean exact log p(y | x_eps) of guided samples rises with w, and the within-class spread
    shrinks (same prior draws for every w). The classes overlap (mixture_2d's means scaled by 0.4)
    so that p(y | x) is far from 1 without guidance."""
    sde, base = sg.VPSDE(), mixture_2d()
    mix = sg.GaussianMixture(base.weights, 0.4 * base.means, base.covs)
    cond_score, clf = mix.conditional_score_fn(sde), mix.classifier_fn(sde)
    y = _labels(200)
    log_p, spread = [], []
    for w in (0.0, 1.0, 3.0, 6.0):
        x = sg.sample(
            sde, classifier_free_guidance(cond_score, w, null=K), (y.numel(), 2), sg.DPMSolverPlusPlus(50),
            eps=EPS, cond={"y": y}, generator=torch.Generator().manual_seed(8), dtype=F64,
        )  # fmt: skip
        log_p.append(float(clf(x, torch.full((y.numel(),), EPS, dtype=F64), y).mean()))
        spread.append(sum(float(x[y == k].var(0).sum()) for k in range(K)) / K)
    print("mean log p(y | x) per w:", log_p, "within-class variance:", spread)
    # w = 0 is the conditional law: its figure matches that of exact draws of p_eps(x | y)
    exact = clf(mix.sample_marginal_conditional(y, EPS, sde, generator=torch.Generator().manual_seed(9)),
                torch.full((y.numel(),), EPS, dtype=F64), y)  # fmt: skip
    se = float(exact.std()) * (2 / y.numel()) ** 0.5
    assert abs(log_p[0] - float(exact.mean())) < 5 * se, (log_p[0], float(exact.mean()), se)
    assert all(a < b for a, b in zip(log_p[:-1], log_p[1:], strict=True)), log_p
    assert all(a > b for a, b in zip(spread[:-1], spread[1:], strict=True)), spread


# -- (3) NFE counts network evaluations ----------------------------------------------------------


def test_nfe_counts_networks_through_guidance_and_its_interval():
    sde, mix = sg.VPSDE(), mixture_2d()
    cond_score = mix.conditional_score_fn(sde)
    y = _labels(5)
    kw = dict(
        eps=EPS, cond={"y": y}, dtype=F64, return_result=True, generator=torch.Generator().manual_seed(0)
    )
    steps = 20
    times = []

    def recording(x, t, y=None):
        times.append(float(t[0]))
        return cond_score(x, t, y)

    plain = sg.sample(sde, recording, (y.numel(), 2), sg.DPMSolverPlusPlus(steps), **kw)
    assert plain.nfe == steps
    for batch in (True, False):  # one call on 2B rows or two calls: 2 networks either way
        cfg = classifier_free_guidance(cond_score, 2.0, null=K, batch=batch)
        res = sg.sample(sde, cfg, (y.numel(), 2), sg.DPMSolverPlusPlus(steps), **kw)
        assert res.nfe == cfg.network_calls == 2 * steps
    # Guidance only where sigma_hat(t) is in (0.5, 5]: 2 evaluations there, 1 elsewhere.
    sigma = sde.sigma_hat(torch.tensor(times, dtype=F64))
    inside = int(((sigma > 0.5) & (sigma <= 5.0)).sum())
    assert 0 < inside < steps
    cfg = classifier_free_guidance(cond_score, 2.0, null=K, interval=(0.5, 5.0), sde=sde)
    res = sg.sample(sde, cfg, (y.numel(), 2), sg.DPMSolverPlusPlus(steps), **kw)
    assert res.nfe == steps + inside
    # Classifier guidance counts the score network only; the classifier separately.
    cg = classifier_guidance(mix.score_fn(sde), mix.classifier_fn(sde), 1.0)
    res = sg.sample(sde, cg, (y.numel(), 2), sg.DPMSolverPlusPlus(steps), **kw)
    assert res.nfe == steps and cg.classifier_calls == steps
    # Nested wrappers add up: classifier guidance on top of CFG is 2 networks per call.
    nested = classifier_guidance(
        classifier_free_guidance(cond_score, 1.0, null=K), mix.classifier_fn(sde), 0.5
    )
    res = sg.sample(sde, nested, (y.numel(), 2), sg.DPMSolverPlusPlus(steps), **kw)
    assert res.nfe == 2 * steps


def test_guidance_interval_switches_per_noise_level():
    """Inside the interval the guided score, outside the conditional one, row by row."""
    sde, mix = sg.VPSDE(), mixture_2d()
    x, t, y = _points(sde, mix)
    cond_score = mix.conditional_score_fn(sde)
    full = classifier_free_guidance(cond_score, 2.0, null=K)(x, t, y=y)
    cut = classifier_free_guidance(cond_score, 2.0, null=K, interval=(0.3, 2.0), sde=sde)(x, t, y=y)
    sigma = sde.sigma_hat(t)
    inside = (sigma > 0.3) & (sigma <= 2.0)
    assert 0 < int(inside.sum()) < t.numel()
    assert torch.equal(cut[inside], full[inside])
    assert torch.equal(cut[~inside], cond_score(x, t, y=y)[~inside])


# -- (4) conditioning travels with its samples ------------------------------------------------------


def test_generate_samples_splits_labels_with_their_samples():
    """Keyed noise: batch sizes 7 and 1000 give the very samples of one sample() call of all n,
    each drawn with its own label; the labels come back as given."""
    sde, mix = sg.VPSDE(), mixture_2d()
    n, seed = 45, 77
    y = torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(1))
    score, solver = mix.conditional_score_fn(sde), sg.PredictorCorrector(5, "ancestral", "langevin")
    ref = sg.sample(sde, score, (n, 2), solver, generator=sg.KeyedNoise(seed), dtype=F64, cond={"y": y})
    for bs in (7, 1000):
        out = sg.generate_samples(
            sde, score, n, (2,), solver, seed=seed, batch_size=bs, dtype=F64, noise="keyed", cond={"y": y}
        )
        assert torch.equal(out["samples"], ref), bs
        assert torch.equal(out["cond"]["y"], y)
    # the labels matter: other labels, other samples (with the same noise)
    other = sg.generate_samples(
        sde,
        score,
        n,
        (2,),
        solver,
        seed=seed,
        batch_size=7,
        dtype=F64,
        noise="keyed",
        cond={"y": (y + 1) % K},
    )
    assert not torch.equal(other["samples"], ref)


def _component_log_prob(mix, sde, x, y, t):
    """Exact log N(x; m_y(t), C_y(t)) = log p_t(x | y)."""
    means, covs = mix.marginal_params(sde, torch.full((x.shape[0],), t, dtype=F64))
    dist = torch.distributions.MultivariateNormal(means[0, y], covs[0, y])
    return dist.log_prob(x)


def test_conditional_likelihood_is_the_class_density_at_any_chunking():
    """log_likelihood with cond, exact divergence (batched backward passes): log p_eps(x | y) of the
    mixture's component y, to the ODE tolerance; evaluate_nll splits the labels with the points."""
    sde, mix = sg.VPSDE(), mixture_2d()
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2, 0])
    x = mix.sample_marginal_conditional(y, EPS, sde, generator=torch.Generator().manual_seed(4))
    score = mix.conditional_score_fn(sde)
    solver = sg.ProbabilityFlow(rtol=1e-7, atol=1e-7)
    res = sg.log_likelihood(sde, score, x, eps=EPS, solver=solver, cond={"y": y})
    exact = _component_log_prob(mix, sde, x, y, EPS)
    # with the exact p_T(. | y) in place of the prior, the flow's change of density is exact
    flow = res.delta_log_prob + _component_log_prob(mix, sde, res.z, y, sde.T)
    assert (flow - exact).abs().max() < 1e-5, flow - exact
    assert (mix.log_prob(x, EPS, sde) - exact).abs().max() > 1e-2  # the unconditional density differs
    rk4 = sg.ProbabilityFlow("rk4", steps=40)
    one = sg.evaluate_nll(sde, score, x, eps=EPS, solver=rk4, batch_size=100, cond={"y": y})["per_point"]
    split = sg.evaluate_nll(sde, score, x, eps=EPS, solver=rk4, batch_size=3, cond={"y": y})["per_point"]
    torch.testing.assert_close(split, one, rtol=0, atol=1e-10)
    assert (one + res.log_prob).abs().max() < 1e-4


@pytest.mark.parametrize("seeded", [True, False])
def test_evaluate_bpd_gives_each_image_its_label(seeded):
    """Per-image bits/dim with mixed labels equal those of runs where every image has one label."""
    g = torch.Generator().manual_seed(5)
    mix = sg.GaussianMixture.isotropic(
        0.5 * torch.randn(3, 4, generator=g, dtype=F64), 0.25, event_shape=(1, 2, 2)
    )
    sde, transform = sg.VPSDE(), sg.LevelTransform(17)
    y = torch.randint(0, 3, (10,), generator=g)
    levels = transform.to_levels(mix.sample_conditional(y, generator=g).clamp(-1.0, 0.999))
    score = mix.conditional_score_fn(sde)

    def bpd(labels):
        rng = dict(seed=3) if seeded else dict(generator=torch.Generator().manual_seed(3))
        return sg.evaluate_bpd(
            sde, score, levels, transform, eps=EPS, solver=sg.ProbabilityFlow("rk4", steps=8), batch_size=4,
            repeats=2, dtype=F64, cond={"y": labels}, **rng,
        )["per_point"]  # fmt: skip

    mixed = bpd(y)
    for k in range(3):
        same = bpd(torch.full_like(y, k))
        torch.testing.assert_close(mixed[y == k], same[y == k], rtol=0, atol=1e-10)
    assert (mixed - bpd(torch.full_like(y, 3))).abs().max() > 1e-3  # the null label: another density


def _split_figures() -> dict:
    """Conditional sampling (keyed and per-chunk noise) and NLL in chunks, as this process sees them."""
    sde, mix = sg.VPSDE(), mixture_2d()
    n = 45
    y = torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(1))
    score, solver = mix.conditional_score_fn(sde), sg.PredictorCorrector(5, "ancestral", "langevin")
    kw = dict(seed=77, batch_size=7, dtype=F64, cond={"y": y})
    x = mix.sample_marginal_conditional(y, EPS, sde, generator=torch.Generator().manual_seed(2))
    rk4 = sg.ProbabilityFlow("rk4", steps=10)
    return {
        "rank": sg.distributed.get_rank(),
        "keyed": sg.generate_samples(sde, score, n, (2,), solver, noise="keyed", **kw)["samples"],
        "chunk": sg.generate_samples(sde, score, n, (2,), solver, **kw)["samples"],
        "nll": sg.evaluate_nll(sde, score, x, eps=EPS, solver=rk4, batch_size=7, cond={"y": y})["per_point"],
    }


def test_two_processes_split_labels_as_one(tmp_path):
    """Under torchrun with 2 gloo processes (this file is their script), every rank returns the very
    samples and NLLs of one process: labels travel with their chunks."""
    tests = os.path.dirname(os.path.dirname(__file__))  # problems.py
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONPATH=tests)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        str(tmp_path),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    single = _split_figures()
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        assert got["rank"] == r
        for key in ("keyed", "chunk", "nll"):
            assert torch.equal(got[key], single[key]), (r, key)


# -- (5) bad input ----------------------------------------------------------------------------------


def test_bad_conditioning_is_refused_clearly():
    sde, mix = sg.VPSDE(), mixture_2d()
    score, em = mix.conditional_score_fn(sde), sg.EulerMaruyama(2)
    x, t, y = _points(sde, mix, n=6)
    with pytest.raises(ValueError, match=r"y must hold labels in 0\.\.2, or 3 .*K=3.*\[5\]"):
        score(x, t, y=torch.tensor([0, 1, 2, 5, 0, 1]))
    with pytest.raises(ValueError, match=r"labels in 0\.\.2 .*\[-1\]"):
        mix.log_responsibility(x, t, sde, torch.tensor([0, 1, 2, -1, 0, 1]))
    with pytest.raises(ValueError, match=r"labels in 0\.\.2 .*\[3\]"):  # no null label for a classifier
        mix.sample_marginal_conditional(torch.tensor([3]), 0.5, sde)
    with pytest.raises(ValueError, match=r"cond\['y'\] has 5 rows, but the batch has 6 samples"):
        sg.sample(sde, score, (6, 2), em, cond={"y": torch.zeros(5, dtype=torch.long)})
    with pytest.raises(TypeError, match=r"cond\['y'\] holds class labels and must be an integer tensor"):
        sg.sample(sde, score, (6, 2), em, cond={"y": torch.zeros(6)})
    with pytest.raises(TypeError, match=r"y must hold integer labels"):
        score(x, t, y=torch.zeros(6))
    with pytest.raises(TypeError, match="cond must be a dict"):
        sg.sample(sde, score, (6, 2), em, cond=torch.zeros(6, dtype=torch.long))
    with pytest.raises(TypeError, match=r"cond\['y'\] must be a torch.Tensor"):
        sg.sample(sde, score, (6, 2), em, cond={"y": [0] * 6})
    with pytest.raises(TypeError, match=r"does not accept the conditioning keyword\(s\) \['y'\]"):
        sg.sample(sde, mix.score_fn(sde), (6, 2), em, cond={"y": y})
    with pytest.raises(ValueError, match=r"cond\['y'\] has 5 rows, but the batch has 6"):
        sg.log_likelihood(sde, score, x, cond={"y": y[:5]})
    with pytest.raises(ValueError, match=r"cond\['y'\] has 7 rows, but the batch has 6"):
        sg.generate_samples(sde, score, 6, (2,), em, seed=0, cond={"y": torch.zeros(7, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"cond\['y'\] has 7 rows, but the batch has 6"):
        sg.evaluate_nll(sde, score, x, cond={"y": torch.zeros(7, dtype=torch.long)})


def test_bad_guidance_arguments_are_refused_clearly():
    sde, mix = sg.VPSDE(), mixture_2d()
    cond_score, clf = mix.conditional_score_fn(sde), mix.classifier_fn(sde)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="w must be finite"):
            classifier_free_guidance(cond_score, bad, null=K)
        with pytest.raises(ValueError, match="scale must be finite"):
            classifier_guidance(mix.score_fn(sde), clf, bad)
    with pytest.raises(TypeError, match="w must be a real number"):
        classifier_free_guidance(cond_score, "3", null=K)
    with pytest.raises(TypeError, match="scale must be a real number"):
        classifier_guidance(mix.score_fn(sde), clf, None)
    with pytest.raises(ValueError, match="null must be given"):
        classifier_free_guidance(mix.score_fn(sde), 1.0)
    with pytest.raises(ValueError, match="null must be a label >= 0"):
        classifier_free_guidance(cond_score, 1.0, null=-1)
    with pytest.raises(ValueError, match="pass sde= as well"):
        classifier_free_guidance(cond_score, 1.0, null=K, interval=(0.1, 1.0))
    with pytest.raises(ValueError, match="sigma_lo < sigma_hi"):
        classifier_free_guidance(cond_score, 1.0, null=K, interval=(1.0, 0.1), sde=sde)
    with pytest.raises(TypeError, match="log_prob_fn must be callable"):
        classifier_guidance(cond_score, None, 1.0)
    x, t, y = _points(sde, mix, n=6)
    with pytest.raises(ValueError, match="classifier-free guidance needs conditioning"):
        classifier_free_guidance(cond_score, 1.0, null=K)(x, t)
    with pytest.raises(ValueError, match="classifier guidance needs the labels"):
        classifier_guidance(mix.score_fn(sde), clf, 1.0)(x, t)
    with pytest.raises(ValueError, match=r"log_prob_fn must return log p\(y \| x_t\) of shape \(6,\)"):
        classifier_guidance(mix.score_fn(sde), lambda x, t, y: clf(x, t, y).sum(), 1.0)(x, t, y=y)


if __name__ == "__main__":  # the two-process worker of test_two_processes_split_labels_as_one
    torch.set_num_threads(1)
    sg.distributed.init_from_env(backend="gloo")
    try:
        figures = _split_figures()
        torch.save(figures, Path(sys.argv[1]) / f"rank{figures['rank']}.pt")
    finally:
        torch.distributed.destroy_process_group()
