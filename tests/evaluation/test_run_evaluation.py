"""The evaluation of a run, usable without Hydra: sample quality against reference floors, the
held-out likelihood, the history file and the results table, each against an independent
computation or a closed form."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch

import sde_gen as sg


def _fd_closed_form(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2), with scipy's general matrix square root."""
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sa @ sb).real
    return float(((ma - mb) ** 2).sum() + np.trace(sa + sb - 2 * root))


def _gaussian_images(n: int, shift: float, g: torch.Generator) -> torch.Tensor:
    """``n`` "images" of shape (1, 2, 2) whose 4 pixels are correlated Gaussians shifted by ``shift``."""
    mix = [[1.0, 0.3, 0.0, 0.0], [0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 0.8, 0.2], [0.1, 0.0, 0.0, 0.6]]
    mix = torch.tensor(mix)
    z = torch.randn(n, 4, generator=g, dtype=torch.float64) @ mix.double()
    return (z + shift).reshape(n, 1, 2, 2)


def flatten(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).double()


def test_sample_quality_fd_matches_the_closed_form_and_the_reference_scores_as_many_held_out_points():
    g = torch.Generator().manual_seed(0)
    data = sg.ImageData(
        train=_gaussian_images(2000, 0.0, g), test=_gaussian_images(500, 0.0, g), levels=256, name="toy"
    )
    samples = _gaussian_images(400, 0.5, g)
    quality = sg.SampleQuality(features=flatten, kid_subsets=10)
    out = quality(samples, data, seed=1)
    train = flatten(data.train).numpy()
    assert out["fd"] == pytest.approx(_fd_closed_form(train, flatten(samples).numpy()), rel=1e-6, abs=1e-9)
    # The reference: the first 400 held-out points (as many as the samples), scored the same way.
    ref = _fd_closed_form(train, flatten(data.test[:400]).numpy())
    assert out["fd_reference"] == pytest.approx(ref, rel=1e-6, abs=1e-9)
    # A shift of 0.5 in each of 4 dimensions: FD -> |dmu|^2 = 1.0 as the sets grow; far above the floor.
    assert out["fd"] == pytest.approx(1.0, abs=0.25) and out["fd_reference"] < 0.1
    assert quality.count(data, drawn=64) == 500  # None: as many as the held-out set


def test_sample_quality_of_vector_data_is_the_energy_distance_to_as_many_held_out_points():
    mixture, g = sg.gmm8(), torch.Generator().manual_seed(3)
    data = sg.VectorData(
        train=mixture.sample(300, generator=g),
        test=mixture.sample(200, generator=g),
        name="gmm8",
        log_prob=mixture.log_prob,
        mixture=mixture,
    )
    x = data.test[:150] + 0.3 * torch.randn(150, 2, generator=g, dtype=data.test.dtype)
    out = sg.SampleQuality()(x, data)
    assert out["energy_distance"] == pytest.approx(sg.energy_distance(x, data.test[:150]))
    floor = sg.energy_distance(data.train[:150], data.test[:150])
    assert out["energy_distance_reference"] == pytest.approx(floor)
    assert out["sample_log_prob"] == pytest.approx(float(data.log_prob(x.double()).mean()))


class ExactScore(torch.nn.Module):
    """The oracle's exact score as a module (HeldoutLikelihood evaluates vector models in float64)."""

    def __init__(self, mixture, sde):
        super().__init__()
        self.fn, self.dummy = mixture.score_fn(sde), torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return self.fn(x, t)


def test_heldout_likelihood_with_the_exact_score_has_no_kl_gap():
    """With the exact score of the data, the probability-flow NLL is -log p_eps(x); on data drawn
    from p (eps = 1e-5 away from p_eps) the paired KL estimate is zero within the ODE tolerance."""
    means = torch.tensor([[2.0, 0.0], [-2.0, 0.5]], dtype=torch.float64)
    mixture = sg.GaussianMixture.isotropic(means, std=0.5)
    g = torch.Generator().manual_seed(0)
    x = mixture.sample(64, generator=g)
    data = sg.VectorData(train=x, test=x, name="two", log_prob=mixture.log_prob, mixture=mixture)
    sde = sg.VPSDE()
    out = sg.HeldoutLikelihood(n=32, rtol=1e-6, atol=1e-6)(sde, ExactScore(mixture, sde), data, seed=1)
    assert out["likelihood_divergence"] == "exact"
    assert out["data_entropy_nats"] == pytest.approx(float(-mixture.log_prob(x[:32]).mean()))
    assert abs(out["kl_gap_nats"]) < 5e-3
    assert out["test_nll_nats"] == pytest.approx(out["data_entropy_nats"], abs=5e-3)


def test_history_file_round_trips_and_a_resume_keeps_the_rows_up_to_its_step(tmp_path):
    path = tmp_path / "history.json"
    rows = [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "grad_norm": float(s)} for s in range(1, 7)]
    first = SimpleNamespace(step=0, history=rows)
    history = sg.HistoryFile(path)
    history.on_train_start(first)
    history.before_checkpoint(first)
    assert sg.read_history(path) == rows
    # Killed after step 6, resumed from the checkpoint of step 4: rows 1-4 kept, then the new ones.
    resumed = SimpleNamespace(step=4, history=[{"step": 5, "loss": 0.5, "lr": 1e-3, "grad_norm": 2.0}])
    again = sg.HistoryFile(path)
    again.on_train_start(resumed)
    again.write(resumed)
    assert sg.read_history(path) == rows[:4] + resumed.history
    assert sg.read_history(tmp_path / "none.json") == []


def test_results_table_formats_and_aligns():
    rows = [{"a": 1.234567, "b": None}, {"a": 123456.0, "b": "x", "c": math.nan}]
    lines = sg.results_table(rows, ["a", ("b", "B"), "c"]).splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines]
    assert cells[0] == ["a", "B", "c"] and cells[2] == ["1.235", "-", "-"]
    assert cells[3] == ["123456", "x", "nan"]
    assert len({len(line) for line in lines}) == 1


def test_metrics_table_lists_the_headline_figures_in_their_order():
    """Only the headline figures that the metrics hold, in HEADLINE_METRICS' order (not the dict's),
    under the title line; the rest (e.g. kid_se, mode) stays in metrics.json."""
    metrics = {"mode": "all", "fd": 46.25, "test_bpd": 2.0341, "kid_se": 3.0, "step": 1000}
    lines = sg.metrics_table(metrics, "digits run").splitlines()
    assert lines[0] == "digits run"
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[1:]]
    assert cells[0] == ["metric", "value"] and set(cells[1][0]) == {"-"}
    assert cells[2:] == [["test_bpd", "2.034"], ["fd", "46.25"], ["step", "1000"]]
    assert sg.metrics_table({"fd": 1.0}).splitlines()[0].startswith("| metric")


def test_history_finish_averages_the_last_finite_losses_and_draws_the_curve(tmp_path):
    rows = [{"step": s, "loss": float(s), "lr": 1e-3, "grad_norm": 1.0} for s in range(1, 151)]
    rows[149]["loss"] = math.nan  # a skipped step has no loss
    trainer = SimpleNamespace(step=0, history=rows)
    history = sg.HistoryFile(tmp_path / "history.json")
    history.on_train_start(trainer)
    out = history.finish(trainer, curve=tmp_path / "loss.png", last=100)
    assert out["final_loss"] == pytest.approx(sum(range(50, 150)) / 100)  # steps 50..149
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert len(sg.read_history(tmp_path / "history.json")) == 150
    assert sg.HistoryFile(tmp_path / "empty.json").finish(SimpleNamespace(step=0, history=[])) == {}
