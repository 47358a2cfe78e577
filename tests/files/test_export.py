"""Model files to share: safetensors weights with their recipe, rebuilt from the file alone,
giving bit-identical samples in a fresh process; hostile model files are refused, and nothing in
them runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sde_gen as sg

ROOT = Path(__file__).resolve().parents[2]


def _trained(sde, net, steps=3, seed=0):
    """A model trained a few steps, with an EMA that differs from its weights."""
    torch.manual_seed(seed)
    model = sg.ScoreModel(net, sde, "score" if isinstance(sde, sg.VESDE) else "noise")
    shape = (2,) if isinstance(net, sg.MLP) else (1, 8, 8)
    data = torch.randn(64, *shape, generator=torch.Generator().manual_seed(1))
    trainer = sg.Trainer(model, sg.DSMLoss(sde), sg.Batches(data, batch_size=16), ema=0.9)
    trainer.fit(steps)
    return trainer


@pytest.mark.parametrize(
    "sde,net",
    [
        (sg.VPSDE(beta_max=15.0), sg.MLP(2, hidden=16, depth=2, embed_dim=8)),
        (sg.VESDE(sigma_max=30.0), sg.UNet.digits(channels=16)),
        (sg.SubVPSDE(T=0.8), sg.UNet.digits(channels=16, time_embedding="sinusoidal")),
        (sg.RectifiedFlow(T=0.99, prior_std=0.9), sg.MLP(2, hidden=16, depth=2, embed_dim=8)),
    ],
)
def test_exported_model_is_the_ema_model(tmp_path, sde, net):
    trainer = _trained(sde, net)
    path = sg.save_model(tmp_path / "m.safetensors", trainer.model, ema=trainer.ema, data={"name": "x"})
    loaded = sg.load_model(path)
    assert type(loaded.sde) is type(sde) and loaded.sde.T == sde.T
    assert loaded.sde.prior_std == sde.prior_std
    assert loaded.parameterization == trainer.model.parameterization and not loaded.training
    x = torch.randn(5, *(2,) if isinstance(net, sg.MLP) else (1, 8, 8))
    t = torch.linspace(0.1, 0.7, 5) * sde.T
    with trainer.ema.applied(trainer.model), torch.no_grad():
        trainer.model.eval()
        want = trainer.model(x, t)
    with torch.no_grad():
        assert torch.equal(loaded(x, t), want)
        assert not torch.equal(want, trainer.model(x, t))  # the EMA, not the raw weights
    assert loaded.recipe["data"] == {"name": "x"}


def test_a_model_of_a_users_sde_comes_back_with_the_sde_passed_to_load_model(tmp_path):
    """A file names its own SDE only as a recipe, which load_model does not build: it says to pass
    sde=, and with sde= the model is the saved one, with the recipe kept."""
    sde = sg.LinearSDE(a=-2.0, g=2.0)  # not a built-in target of a model file
    trainer = _trained(sde, sg.MLP(2, hidden=16, depth=2, embed_dim=8))
    recipe = {"_target_": "my_project.OrnsteinUhlenbeck", "theta": 2.0, "s": 2.0}
    path = sg.save_model(tmp_path / "m.safetensors", trainer.model, ema=trainer.ema, sde_config=recipe)
    with pytest.raises(sg.CheckpointError, match="my_project.OrnsteinUhlenbeck.*pass sde="):
        sg.load_model(path)
    with pytest.raises(TypeError, match="sde must be a sde_gen.SDE, got str"):
        sg.load_model(path, sde="ou")
    loaded = sg.load_model(path, sde=sde)
    assert loaded.sde is sde and loaded.recipe["sde"] == recipe
    x, t = torch.randn(5, 2), torch.linspace(0.1, 0.9, 5)
    with trainer.ema.applied(trainer.model), torch.no_grad():
        assert torch.equal(loaded(x, t), trainer.model.eval()(x, t))


def test_a_float64_model_comes_back_in_float64(tmp_path):
    model = sg.ScoreModel(sg.MLP(3, hidden=8, depth=1, embed_dim=8), sg.VPSDE()).double()
    loaded = sg.load_model(sg.save_model(tmp_path / "m.safetensors", model))
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)
    assert next(loaded.parameters()).dtype == torch.float64
    assert torch.equal(loaded(x, t), model(x, t))


SAMPLE = """
import sys, torch, sde_gen as sg
model = sg.load_model(sys.argv[1])
g = torch.Generator().manual_seed(7)
x = sg.sample(model.sde, model, (64, 2), sg.EulerMaruyama(steps=20), generator=g)
torch.save(x, sys.argv[2])
"""


def test_samples_from_the_file_are_bit_identical_in_a_fresh_process(tmp_path):
    trainer = _trained(sg.VPSDE(), sg.MLP(2, hidden=16, depth=2, embed_dim=8), steps=20)
    path = sg.save_model(tmp_path / "m.safetensors", trainer.model, ema=trainer.ema)
    with trainer.ema.applied(trainer.model), torch.no_grad():
        trainer.model.eval()
        here = sg.sample(
            sg.VPSDE(),
            trainer.model,
            (64, 2),
            sg.EulerMaruyama(steps=20),
            generator=torch.Generator().manual_seed(7),
        )
    out = tmp_path / "there.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", SAMPLE, str(path), str(out)], check=True, env=env, timeout=120)
    there = torch.load(out, weights_only=True)
    assert torch.isfinite(here).all() and torch.equal(here, there)


# -- hostile files -------------------------------------------------------------------------------


def _rewrite_recipe(src: Path, dst: Path, edit) -> Path:
    """A copy of a model file whose recipe was changed by ``edit(recipe)``."""
    from safetensors.torch import load_file, save_file

    recipe = sg.read_model_metadata(src)
    edit(recipe)
    save_file(load_file(str(src)), str(dst), metadata={"sde_gen": json.dumps(recipe)})
    return dst


@pytest.fixture
def model_file(tmp_path):
    model = sg.ScoreModel(sg.MLP(2, hidden=8, depth=1, embed_dim=8), sg.VPSDE())
    return sg.save_model(tmp_path / "good.safetensors", model)


def test_a_file_cannot_name_any_other_callable(tmp_path, model_file):
    sentinel = tmp_path / "ran"
    evil = _rewrite_recipe(
        model_file,
        tmp_path / "evil.safetensors",
        lambda r: r.update(net={"_target_": "os.system", "command": f"touch {sentinel}"}),
    )
    with pytest.raises(sg.CheckpointError, match=r"names net 'os\.system'; a model file can only name"):
        sg.load_model(evil)
    assert not sentinel.exists()
    bad_args = _rewrite_recipe(
        model_file, tmp_path / "args.safetensors", lambda r: r["sde"].update(beta_max=-1.0)
    )
    with pytest.raises(sg.CheckpointError, match=r"its sde sde_gen\.VPSDE\(.*\) is refused"):
        sg.load_model(bad_args)
    other = _rewrite_recipe(model_file, tmp_path / "other.safetensors", lambda r: r["net"].update(hidden=9))
    with pytest.raises(sg.CheckpointError, match="its tensors do not fit the network it names"):
        sg.load_model(other)


@pytest.mark.parametrize("cut", [0, 4, 8, 40, -10])
def test_truncated_or_foreign_files_raise_checkpoint_errors(tmp_path, model_file, cut):
    data = model_file.read_bytes()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(data[:cut])
    with pytest.raises(sg.CheckpointError, match=rf"model file {broken} "):
        sg.load_model(broken)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((10**15).to_bytes(8, "little") + data[8:])  # a header length of 1 PB
    with pytest.raises(sg.CheckpointError, match="does not fit a file of"):
        sg.load_model(huge)
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(plain))  # a safetensors file, but not ours
    with pytest.raises(sg.CheckpointError, match="no sde_gen recipe"):
        sg.load_model(plain)


def test_run_py_samples_an_exported_model_and_refuses_to_train_it(tmp_path):
    from hydra import compose, initialize_config_dir

    from experiments import run as run_script

    model = sg.ScoreModel(sg.MLP(2, hidden=8, depth=1, embed_dim=8), sg.VPSDE())
    model_file = sg.save_model(tmp_path / "m.safetensors", model, data={"name": "gmm8", "shape": [2]})

    def cfg(*overrides):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=["experiment=gmm8", f"ckpt={model_file}", *overrides])

    with pytest.raises(
        run_script.ConfigError, match=r"^mode='all' is not allowed: sample, likelihood or evaluate"
    ):
        run_script.build(cfg())
    with pytest.raises(run_script.ConfigError, match=r"^data='digits' is not allowed: data of the exported"):
        run_script.build(cfg("mode=sample", "data=digits", "model=unet_digits", "likelihood.n=null"))
    built = run_script.build(cfg("mode=sample"))
    assert built.trainer is None and isinstance(built.model, sg.ScoreModel)
