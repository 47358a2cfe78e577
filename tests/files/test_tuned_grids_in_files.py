"""Tuned time grids kept in model files: the key says which solver and end time a grid is for, a
grid comes back exactly, adding one leaves the weights as they were, ``tuned_schedule`` tunes once
and then finds the kept grid without a score evaluation, and damaged entries are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import sde_gen as sg
from sde_gen.files.model_file import read_recipe, write_model_file

F64 = torch.float64


class Counting(sg.ScoreModel):
    """A ScoreModel that counts the evaluations of its network."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls = 0
        self.net.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = sg.ScoreModel(sg.MLP(2, hidden=16, depth=2, embed_dim=8), sg.VPSDE())
    return sg.save_model(tmp_path / "model.safetensors", model), model


def _weights(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def test_the_key_names_the_solver_its_settings_steps_and_end_time():
    keys = {
        sg.schedule_key(s, eps)
        for s, eps in [
            (sg.DPMSolverPlusPlus(steps=10), 1e-3),
            (sg.DPMSolverPlusPlus(steps=10, schedule="edm"), 1e-3),  # the grid is not part of the key
            (sg.DPMSolverPlusPlus(steps=10, order=3), 1e-3),
            (sg.DPMSolverPlusPlus(steps=12), 1e-3),
            (sg.DPMSolverPlusPlus(steps=10), 1e-5),
            (sg.UniPC(steps=10), 1e-3),
        ]
    }
    assert len(keys) == 5
    assert sg.schedule_key(sg.IPNDM(steps=4)).startswith("IPNDM(steps=4") and "eps=0.001" in sg.schedule_key(
        sg.IPNDM(steps=4)
    )
    with pytest.raises(TypeError, match="solver"):
        sg.schedule_key(sg.ProbabilityFlow("dopri5"))


def test_a_stored_grid_comes_back_exactly_and_the_weights_are_untouched(model_file):
    path, model = model_file
    before = _weights(path)
    solver = sg.IPNDM(steps=4)
    grid = torch.tensor([1.0, 0.3, 0.07, 0.011, 1e-3], dtype=F64)
    assert sg.stored_schedule(path, solver) is None
    sg.store_schedule(path, solver, grid)
    other = sg.DPMSolverPlusPlus(steps=2)
    sg.store_schedule(path, other, [1.0, 0.2, 1e-5], eps=1e-5)
    assert torch.equal(sg.stored_schedule(path, solver), grid)
    assert sg.stored_schedule(path, other, eps=1e-5).tolist() == [1.0, 0.2, 1e-5]
    assert sg.stored_schedule(path, other) is None  # another end time
    after = _weights(path)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    loaded = sg.load_model(path)
    assert torch.equal(sg.stored_schedule(loaded, solver), grid)
    # replacing a grid kept under the same key
    sg.store_schedule(path, solver, [1.0, 0.5, 0.1, 0.01, 1e-3])
    assert sg.stored_schedule(path, solver).tolist() == [1.0, 0.5, 0.1, 0.01, 1e-3]


def test_save_model_keeps_grids_given_to_it(tmp_path, model_file):
    _, model = model_file
    solver = sg.DDIM(steps=3)
    path = sg.save_model(
        tmp_path / "m2.safetensors", model, schedules={sg.schedule_key(solver): [1.0, 0.1, 0.01, 1e-3]}
    )
    assert sg.stored_schedule(path, solver).tolist() == [1.0, 0.1, 0.01, 1e-3]
    with pytest.raises(ValueError, match=r"schedules\['k'\]"):
        sg.save_model(tmp_path / "m3.safetensors", model, schedules={"k": "log_snr"})
    with pytest.raises(ValueError, match=r"schedules\['k'\].*decrease"):
        sg.save_model(tmp_path / "m3.safetensors", model, schedules={"k": [1.0, 1.0, 1e-3]})


def test_store_schedule_refuses_a_grid_of_another_length(model_file):
    path, _ = model_file
    with pytest.raises(ValueError, match="grid has 2 steps but the solver takes 4"):
        sg.store_schedule(path, sg.IPNDM(steps=4), [1.0, 0.1, 1e-3])


def test_a_damaged_entry_is_refused_naming_the_file(model_file):
    path, _ = model_file
    header, recipe = read_recipe(path)
    solver = sg.DDIM(steps=2)
    recipe["schedules"] = {sg.schedule_key(solver): [1.0, 2.0, 1e-3]}  # not decreasing
    write_model_file(path, _weights(path), recipe)
    with pytest.raises(sg.CheckpointError, match=str(path)):
        sg.stored_schedule(path, solver)
    recipe["schedules"] = ["not", "a", "dict"]
    write_model_file(path, _weights(path), recipe)
    with pytest.raises(sg.CheckpointError, match="schedules must be a dict"):
        sg.stored_schedule(path, solver)
    assert json.loads(json.dumps(recipe))  # the file itself stays a readable model file
    sg.load_model(path)


def test_tuned_schedule_tunes_once_then_finds_the_kept_grid(model_file):
    path, _ = model_file
    model = Counting(sg.MLP(2, hidden=16, depth=2, embed_dim=8), sg.VPSDE())
    model.load_state_dict(sg.load_model(path).state_dict())
    solver = sg.DPMSolverPlusPlus(steps=3)
    grid, result = sg.tuned_schedule(model, solver, (64, 2), path=path, generator=3, max_evals=10)
    assert result is not None and result.nfe == model.calls > 0
    assert torch.equal(sg.stored_schedule(path, solver), grid)
    model.calls = 0
    again, none = sg.tuned_schedule(model, solver, (64, 2), path=path, generator=3)
    assert none is None and model.calls == 0 and torch.equal(again, grid)
    # without a file, the same generator gives the same grid again (and tunes)
    fresh, result = sg.tuned_schedule(model, solver, (64, 2), generator=3, max_evals=10)
    assert result is not None and torch.equal(fresh, grid)
