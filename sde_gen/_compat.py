"""Module paths of sde_gen 0.1, kept importable for one release with a ``DeprecationWarning``.

sde_gen 0.2 laid the package out by layer (docs/architecture.md); the supported API is the
``sde_gen`` namespace itself. An old path in :data:`MOVED` imports as a stand-in module whose
names come from where they live now (the new modules in order, then ``sde_gen``), so
``from sde_gen.sde import VPSDE`` and ``python -m sde_gen.convert_checkpoint`` keep working.
CHANGELOG.md's migration table lists the same paths (a test compares the two).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

#: Old module path -> the modules its names live in now (the first is the one to import instead).
MOVED: dict[str, tuple[str, ...]] = {
    "sde_gen.sde": ("sde_gen.sdes.base", "sde_gen.sdes"),
    "sde_gen.linear_sde": ("sde_gen.sdes.linear",),
    "sde_gen.sde_schedules": ("sde_gen.sdes.schedules",),
    "sde_gen.reverse": ("sde_gen.sdes.reverse",),
    "sde_gen.oracle": ("sde_gen.data.oracle",),
    "sde_gen.score": ("sde_gen.models.score",),
    "sde_gen.nets": ("sde_gen.models",),
    "sde_gen.nets.mlp": ("sde_gen.models.mlp",),
    "sde_gen.nets.unet": ("sde_gen.models.unet",),
    "sde_gen.nets.embeddings": ("sde_gen.models.embeddings",),
    "sde_gen.nets.classifier": ("sde_gen.models.classifier",),
    "sde_gen.noise": ("sde_gen.sampling.noise",),
    "sde_gen.guidance": ("sde_gen.sampling.guidance",),
    "sde_gen.solvers": ("sde_gen.sampling.solvers",),
    "sde_gen.solvers.base": ("sde_gen.sampling.solvers.base",),
    "sde_gen.solvers.grids": ("sde_gen.sampling.solvers.grids",),
    "sde_gen.solvers.variables": ("sde_gen.sampling.solvers.variables",),
    "sde_gen.solvers.euler_maruyama": ("sde_gen.sampling.solvers.euler_maruyama",),
    "sde_gen.solvers.predictor_corrector": ("sde_gen.sampling.solvers.predictor_corrector",),
    "sde_gen.solvers.ode": ("sde_gen.sampling.solvers.ode",),
    "sde_gen.solvers.exponential": ("sde_gen.sampling.solvers.exponential",),
    "sde_gen.solvers.unipc": ("sde_gen.sampling.solvers.unipc",),
    "sde_gen.solvers.ipndm": ("sde_gen.sampling.solvers.ipndm",),
    "sde_gen.solvers.heun": ("sde_gen.sampling.solvers.heun",),
    "sde_gen.inverse": ("sde_gen.sampling.inverse",),
    "sde_gen.inverse.operators": ("sde_gen.sampling.inverse.operators",),
    "sde_gen.inverse.solve": ("sde_gen.sampling.inverse.solve",),
    "sde_gen.inverse.dps": ("sde_gen.sampling.inverse.dps",),
    "sde_gen.inverse.smc": ("sde_gen.sampling.inverse.smc",),
    "sde_gen.inverse.exact": ("sde_gen.sampling.inverse.exact",),
    "sde_gen.bpd": ("sde_gen.likelihood.bpd", "sde_gen.data.transforms", "sde_gen.evaluation.bpd"),
    "sde_gen.dequantization": ("sde_gen.likelihood.dequantization",),
    "sde_gen.losses": ("sde_gen.training.losses",),
    "sde_gen.classifier_loss": ("sde_gen.training.classifier_loss",),
    "sde_gen.training.checkpoint": ("sde_gen.files.checkpoint",),
    "sde_gen.export": ("sde_gen.files.model_file",),
    "sde_gen.convert_checkpoint": ("sde_gen.files.convert",),
    "sde_gen.metrics": ("sde_gen.evaluation.metrics",),
    "sde_gen.metrics.classifier": ("sde_gen.evaluation.metrics.classifier",),
    "sde_gen.metrics.distances": ("sde_gen.evaluation.metrics.distances",),
    "sde_gen.metrics.features": ("sde_gen.evaluation.metrics.features",),
    "sde_gen.metrics.inception": ("sde_gen.evaluation.metrics.inception",),
}
REMOVED_IN = "0.3"


def _message(old: str) -> str:
    return (
        f"{old} is deprecated and will be removed in sde_gen {REMOVED_IN}: use `import sde_gen as sg` "
        f"(the names in sg.__all__); the code now lives in {MOVED[old][0]}"
    )


class _StandIn(types.ModuleType):
    """An old module path: its names are looked up where they live now."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        for new in (*MOVED[self.__name__], "sde_gen"):
            module = importlib.import_module(new)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self):
        return sorted(set().union(*(dir(importlib.import_module(new)) for new in MOVED[self.__name__])))


class _Namespace(types.ModuleType):
    """The ``sde_gen`` package. Importing an old path binds it on its parent (``sde_gen.inverse``);
    where that name is public (``sg.inverse``, ``sg.dequantization``, ``sg.metrics``), the public name
    keeps the new module instead of turning into the stand-in."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, _StandIn) and name in self.__dict__.get("__all__", ()):
            return
        super().__setattr__(name, value)

    def __reduce__(self):
        # Pickled by name, as a plain module is (cloudpickle, used by the Hydra launchers, looks modules
        # up by exact type, so a subclass needs to say how).
        return importlib.import_module, (self.__name__,)


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        module = _StandIn(spec.name)
        module.__all__ = list(getattr(importlib.import_module(MOVED[spec.name][0]), "__all__", []))
        return module

    def exec_module(self, module) -> None:
        warnings.warn(_message(module.__name__), DeprecationWarning, stacklevel=2)

    def get_code(self, name: str):
        # `python -m <old path>` runs the new module as __main__ (runpy asks the loader for code).
        warnings.warn(_message(name), DeprecationWarning, stacklevel=2)
        source = f"import runpy\nrunpy.run_module({MOVED[name][0]!r}, run_name='__main__', alter_sys=True)\n"
        return compile(source, f"<{name}: moved to {MOVED[name][0]}>", "exec")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        # Old packages (sde_gen.solvers, ...) had submodules: theirs resolve here too.
        is_package = any(old.startswith(fullname + ".") for old in MOVED)
        return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=is_package)


def install() -> None:
    """Put the finder for old paths at the end of ``sys.meta_path`` (once): real modules win."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
    package = sys.modules["sde_gen"]
    if type(package) is types.ModuleType:
        package.__class__ = _Namespace
