"""Model files keep what the network predicts: every parameterisation saves and loads to the same
model (score and denoiser bit for bit), EDM's with its sigma_data; a recipe naming an unknown
parameterisation or a bad setting is refused with a CheckpointError naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sde_gen as sg


def _rewrite_recipe(src: Path, dst: Path, edit) -> Path:
    """A copy of a model file whose recipe was changed by ``edit(recipe)``."""
    from safetensors.torch import load_file, save_file

    recipe = sg.read_model_metadata(src)
    edit(recipe)
    save_file(load_file(str(src)), str(dst), metadata={"sde_gen": json.dumps(recipe)})
    return dst


def _model(param, sde=None) -> sg.ScoreModel:
    torch.manual_seed(0)
    return sg.ScoreModel(sg.MLP(2, hidden=16, depth=1, embed_dim=8), sde or sg.VPSDE(), param).eval()


CASES = [
    ("noise", sg.VPSDE()),
    ("score", sg.VESDE(sigma_max=30.0)),
    ("data", sg.VPSDE()),
    ("v", sg.SubVPSDE()),
    ("flow", sg.VPSDE()),
    (sg.EDMPreconditioning(sigma_data=0.7), sg.VPSDE()),
    (sg.EDMPreconditioning(), sg.EDMSDE()),
]


@pytest.mark.parametrize(
    "param,sde", CASES, ids=[f"{sg.parameterization(p).name}-{type(s).__name__}" for p, s in CASES]
)
def test_every_parameterization_saves_and_loads_to_the_same_model(tmp_path, param, sde):
    model = _model(param, sde)
    path = sg.save_model(tmp_path / "m.safetensors", model)
    stored = sg.read_model_metadata(path)["parameterization"]
    # A name for the parameterisations without settings (as files always held), a dict for EDM.
    assert stored == (param if isinstance(param, str) else {"name": "edm", "sigma_data": param.sigma_data})
    loaded = sg.load_model(path)
    assert type(loaded.param) is type(model.param) and loaded.param == model.param
    assert loaded.parameterization == model.parameterization
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    t = torch.linspace(0.05, 0.95, 6) * sde.T
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model(x, t))
        assert torch.equal(loaded.denoise(x, t), model.denoise(x, t))


def test_an_edm_model_keeps_its_sigma_data(tmp_path):
    path = sg.save_model(tmp_path / "m.safetensors", _model(sg.parameterization("edm", sigma_data=0.7)))
    loaded = sg.load_model(path)
    assert isinstance(loaded.param, sg.EDMPreconditioning) and loaded.param.sigma_data == 0.7
    assert loaded.param != sg.EDMPreconditioning()  # not the default 0.5


def test_a_file_of_the_name_only_format_still_loads(tmp_path):
    """Files written before settings existed hold the name as a string; so do the name-only ones now."""
    path = sg.save_model(tmp_path / "m.safetensors", _model("score"))
    edm = _rewrite_recipe(path, tmp_path / "edm.safetensors", lambda r: r.update(parameterization="edm"))
    assert sg.load_model(edm).param == sg.EDMPreconditioning()  # the name alone: EDM's sigma_data 0.5
    named = _rewrite_recipe(
        path, tmp_path / "n.safetensors", lambda r: r.update(parameterization={"name": "v"})
    )
    assert isinstance(sg.load_model(named).param, sg.VPrediction)


@pytest.mark.parametrize(
    "value,words",
    [
        ("eps", "must be one of"),
        ({"name": "foo"}, "must be one of"),
        ({"name": "edm", "sigma_data": 0}, "sigma_data must be > 0"),
        ({"name": "edm", "sigma_data": -1.0}, "sigma_data must be > 0"),
        ({"name": "edm", "sigma_data": "0.5"}, "sigma_data must be a real number"),
        ({"name": "edm", "sigma_data": None}, "sigma_data must be a real number"),
        ({"name": "edm", "sigma_data": 10**400}, "parameterization"),
        ({"name": "edm", "bogus": 1}, "bogus"),
        ({"name": "noise", "sigma_data": 0.5}, "takes no settings"),
        ({"sigma_data": 0.5}, "must be a name"),
        ({}, "must be a name"),
        (None, "a name or a dict"),
        (3, "a name or a dict"),
        (["edm"], "a name or a dict"),
        ("a" * 100_000, "must be one of"),
    ],
)
def test_a_bad_parameterization_in_a_file_is_refused(tmp_path, value, words):
    path = sg.save_model(tmp_path / "m.safetensors", _model("noise"))
    bad = _rewrite_recipe(path, tmp_path / "bad.safetensors", lambda r: r.update(parameterization=value))
    with pytest.raises(sg.CheckpointError, match=rf"model file {bad}: its parameterization ") as e:
        sg.load_model(bad)
    assert words in str(e.value) and len(str(e.value)) < 1000  # a hostile value never makes a huge message


def test_a_parameterization_of_ones_own_cannot_be_exported(tmp_path):
    class Mine(sg.NoisePrediction):
        pass

    with pytest.raises(TypeError, match="cannot export a parameterization of type Mine"):
        sg.save_model(tmp_path / "m.safetensors", _model(Mine()))
    assert not (tmp_path / "m.safetensors").exists()
