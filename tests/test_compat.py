"""Module paths of sde_gen 0.1 (sde_gen/_compat.py): each still imports, with a DeprecationWarning
that names its new home, and gives the very objects of the new layout; CHANGELOG.md's migration
table lists exactly these paths."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import sde_gen as sg
from sde_gen._compat import MOVED

ROOT = Path(__file__).resolve().parents[1]


def _fresh_import(name: str):
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(name)
    return module, [w for w in caught if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_imports_with_a_warning_and_gives_the_new_objects(old):
    module, caught = _fresh_import(old)
    assert any(f"{old} is deprecated" in str(w.message) and MOVED[old][0] in str(w.message) for w in caught)
    new = importlib.import_module(MOVED[old][0])
    names = getattr(new, "__all__", [n for n in vars(new) if not n.startswith("_")])
    assert names, f"{MOVED[old][0]} exports nothing"
    for name in names:
        assert getattr(module, name) is getattr(new, name), name
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018


def test_old_names_that_moved_between_modules_still_resolve():
    # sde_gen.sde held LinearSDE; sde_gen.bpd held bits_per_dim and evaluate_bpd.
    sde_mod, _ = _fresh_import("sde_gen.sde")
    bpd_mod, _ = _fresh_import("sde_gen.bpd")
    assert sde_mod.LinearSDE is sg.LinearSDE and sde_mod.VPSDE is sg.VPSDE
    assert bpd_mod.bits_per_dim is sg.bits_per_dim and bpd_mod.evaluate_bpd is sg.evaluate_bpd
    from sde_gen.solvers.exponential import DDIM  # an old package's submodule

    assert DDIM is sg.DDIM


@pytest.mark.parametrize("old", sorted(old for old in MOVED if old.count(".") == 1))
def test_an_old_path_leaves_the_public_name_of_the_same_spelling_alone(old):
    # sde_gen.inverse was a module and sg.inverse is public: importing the old path binds it on
    # the package, which must not turn sg.inverse into the deprecated stand-in.
    name = old.split(".")[1]
    before = getattr(sg, name, None)
    _fresh_import(old)
    if name in sg.__all__:
        assert getattr(sg, name) is before and not getattr(sg, name).__name__ == old
        assert getattr(sg, name).__name__ == MOVED[old][0]


def test_the_package_pickles_by_name_like_any_module():
    # The Hydra launchers cloudpickle the task function with its globals, `sg` among them.
    import pickle

    import cloudpickle

    assert pickle.loads(pickle.dumps(sg)) is sg
    assert cloudpickle.loads(cloudpickle.dumps(sg)) is sg


def test_new_modules_import_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for new in {targets[0] for targets in MOVED.values()}:
            importlib.import_module(new)


def test_old_command_still_runs():
    out = subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-m", "sde_gen.convert_checkpoint", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "TRUSTED checkpoint" in out.stdout
    assert "sde_gen.convert_checkpoint is deprecated" in out.stderr


def test_changelog_migration_table_matches_the_stand_ins():
    text = (ROOT / "CHANGELOG.md").read_text()
    rows = re.findall(r"^\| `(sde_gen[\w.]*)` \| `(sde_gen[\w.]*)` \|", text, re.M)
    assert dict(rows) == {old: targets[0] for old, targets in MOVED.items()}


def test_every_public_name_is_reachable_and_listed_once():
    assert len(sg.__all__) == len(set(sg.__all__))
    missing = [n for n in sg.__all__ if not hasattr(sg, n)]
    assert not missing
