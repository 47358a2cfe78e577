"""Write docs/api.md: one mkdocstrings entry for every public name of ``sde_gen`` (``sg.__all__``),
grouped by the layer (the folder of ``sde_gen/``) that defines it. ``tests/test_docs.py`` checks
the file is up to date.

    .venv/bin/python scripts/api_reference.py
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sde_gen as sg  # noqa: E402

OUT = ROOT / "docs" / "api.md"
#: the layer order of docs/architecture.md, which the headings follow
LAYERS = (
    "_checks",
    "distributed",
    "sdes",
    "data",
    "models",
    "sampling",
    "likelihood",
    "files",
    "training",
    "evaluation",
)


def _layer_position(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def text() -> str:
    groups: dict[str, list[str]] = {}
    for name in sg.__all__:
        obj = getattr(sg, name)
        module = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None) or "sde_gen"
        if not module.startswith("sde_gen"):
            module = "sde_gen"
        groups.setdefault(".".join(module.split(".")[:2]), []).append(name)
    lines = [
        "# API reference",
        "",
        "Every public name of `sde_gen` (`import sde_gen as sg`), grouped by the layer that defines it",
        "(docs/architecture.md); generated from the docstrings by `python scripts/api_reference.py`.",
        "The names are the supported API; the module paths under them are not.",
        "",
    ]
    for module in sorted(groups, key=_layer_position):
        path = module.replace(".", "/")
        lines += [f"## `{path}/`" if (ROOT / path).is_dir() else f"## `{path}.py`", ""]
        for name in groups[module]:
            obj = getattr(sg, name)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                lines += [f"### `sg.{name}`", "", f"`{name}`: see `{getattr(obj, '__name__', module)}`.", ""]
                continue
            lines += [f"::: sde_gen.{name}", "    options:", "      heading_level: 3", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    OUT.write_text(text())
    print(f"wrote {OUT}")
