"""The package's layers, read from its imports (issue 19).

Every ``import`` in ``sde_gen/`` (function-level ones included; only ``if TYPE_CHECKING:`` blocks
are exempt) is read with :mod:`ast` and checked against the layer order that
docs/architecture.md states in its folder tree: a module imports only from its own layer or the
layers before it, no two modules import each other through any chain, and no private name
(``_name``) crosses from one module to another.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sde_gen"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MAX_TOP_LEVEL_MODULES = 8
MAX_MODULE_LINES = 400


def layer_order() -> list[str]:
    """The entries of the ``sde_gen/`` tree in docs/architecture.md, in the order drawn."""
    text = ARCHITECTURE.read_text()
    block = re.search(r"```text\nsde_gen/\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md must draw the package as a ```text block starting 'sde_gen/'"
    names = re.findall(r"^  (\w+)(?:/|\.py)\s", block.group(1), re.M)
    names = [n for n in names if n != "__init__"]  # the namespace itself sits above every layer
    assert names, "no entries found in the sde_gen/ tree of docs/architecture.md"
    return names


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                skip.add(id(child))
    return skip


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """``(module imported, names taken from it, line)`` for every sde_gen import in a module."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("sde_gen")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("sde_gen"):
                target = node.module
            else:
                continue
            taken = []
            for alias in node.names:
                if f"{target}.{alias.name}" in known:  # `from package import submodule`
                    found.append((f"{target}.{alias.name}", [], node.lineno))
                else:
                    taken.append(alias.name)
            if taken:
                found.append((target, taken, node.lineno))
    return found


def layer_of(name: str, order: list[str]) -> int:
    parts = name.split(".")
    if len(parts) == 1:  # sde_gen/__init__.py: the public namespace, above every layer
        return len(order)
    assert parts[1] in order, f"{name}: {parts[1]!r} is not drawn in docs/architecture.md's tree"
    return order.index(parts[1])


def graph() -> dict[str, list[tuple[str, list[str], int]]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_architecture_tree_lists_every_top_level_entry():
    order = layer_order()
    entries = {p.stem for p in PACKAGE.iterdir() if (p.suffix == ".py" and p.stem != "__init__")}
    entries |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert sorted(entries) == sorted(order)


def test_at_most_eight_top_level_modules():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_module_over_400_lines():
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long


def test_imports_follow_the_layers():
    order = layer_order()
    wrong = []
    for name, found in graph().items():
        for target, _, line in found:
            if target.split(".")[:2] == name.split(".")[:2]:
                continue  # within one layer: the cycle test applies
            if layer_of(target, order) > layer_of(name, order):
                wrong.append(f"{name}:{line} imports {target} from a later layer")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    edges = {name: sorted({t for t, _, _ in found if t != name}) for name, found in graph().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, path):
        state[node] = 1
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                cycles.append(
                    " -> ".join(path[path.index(nxt) :] + [nxt]) if nxt in path else f"{node} -> {nxt}"
                )
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_no_private_name_crosses_modules():
    crossing = [
        f"{name}:{line} takes {n} from {target}"
        for name, found in graph().items()
        for target, taken, line in found
        for n in taken
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not crossing, "\n".join(crossing)


def test_layer_reader_resolves_relative_imports():
    # The reader itself: sdes/linear.py's `from .base import ...` and `from .._checks import ...`.
    path = PACKAGE / "sdes" / "linear.py"
    targets = {t for t, _, _ in imports("sde_gen.sdes.linear", path, modules())}
    assert {"sde_gen.sdes.base", "sde_gen._checks"} <= targets
