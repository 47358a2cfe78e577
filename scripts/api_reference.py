"""Write docs/api.md: one mkdocstrings entry for every public name of ``sde_gen`` (``sg.__all__``),
grouped by the module that defines it. ``tests/test_docs.py`` checks the file is up to date.

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


def text() -> str:
    groups: dict[str, list[str]] = {}
    for name in sg.__all__:
        obj = getattr(sg, name)
        module = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None) or "sde_gen"
        if not module.startswith("sde_gen"):
            module = "sde_gen"
        groups.setdefault(module, []).append(name)
    lines = [
        "# API reference",
        "",
        "Every public name of `sde_gen` (`import sde_gen as sg`), grouped by the module that defines it;",
        "generated from the docstrings by `python scripts/api_reference.py`.",
        "",
    ]
    for module in sorted(groups):
        lines += [f"## `{module}`", ""]
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
