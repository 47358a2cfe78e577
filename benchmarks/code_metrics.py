"""How the code base is cut: lines per module, the Trainer's constructor, where training
settings are written, and (if the `duplicates` tool is on PATH) repeated code.

    python benchmarks/code_metrics.py            # this checkout
    python benchmarks/code_metrics.py --root DIR # another checkout (e.g. a git worktree of an older commit)

Prints a Markdown report (docs/architecture.md quotes it).
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
from pathlib import Path

import yaml


def module_lines(root: Path) -> list[tuple[str, int]]:
    """(module, lines) for every Python file under sde_gen/, longest first."""
    rows = [
        (str(p.relative_to(root)), len(p.read_text().splitlines())) for p in (root / "sde_gen").rglob("*.py")
    ]
    return sorted(rows, key=lambda r: -r[1])


def trainer_parameters(root: Path) -> list[str]:
    """The parameters of ``Trainer.__init__`` (without self), read from the source."""
    for path in (root / "sde_gen").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "Trainer":
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        a = item.args
                        return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs][1:]
    return []


def setting_places(root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """For each key of conf/train/default.yaml, the places its default value is written: the
    YAML files under conf/train/ that set it to the default's value and the typed schema's default
    in experiments/run.py when it is not MISSING; and the experiments/*.py lines that pass a
    training setting on by hand (``name=cfg.train.key``)."""
    default = yaml.safe_load((root / "conf" / "train" / "default.yaml").read_text())
    places: dict[str, list[str]] = {k: [] for k in default}
    for path in sorted((root / "conf" / "train").glob("*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        for k, v in values.items():
            if k in places and v == default[k]:
                places[k].append(str(path.relative_to(root)))
    run = root / "experiments" / "run.py"
    tree = ast.parse(run.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "TrainConfig":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    if item.value is not None and "MISSING" not in ast.unparse(item.value):
                        places.setdefault(item.target.id, []).append(
                            "experiments/run.py: TrainConfig default"
                        )
    forwards = []
    for path in sorted((root / "experiments").glob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            for m in re.finditer(r"(\w+)=cfg\.train\.(\w+)", line):
                forwards.append(f"{path.relative_to(root)}:{i} ({m.group(0)})")
    return places, forwards


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = p.parse_args()
    root = args.root.resolve()
    rows = module_lines(root)
    print(f"## {root}\n\nModules in sde_gen/: {len(rows)}; over 400 lines: {sum(n > 400 for _, n in rows)}\n")
    print("| module | lines |\n|---|---|")
    for name, n in rows[:8]:
        print(f"| {name} | {n} |")
    params = trainer_parameters(root)
    print(f"\nTrainer constructor: {len(params)} parameters ({', '.join(params)})\n")
    places, forwards = setting_places(root)
    worst = max(len(v) for v in places.values())
    print(f"Training settings ({len(places)} keys): at most {worst} places write one's default; for example")
    shown = ["lr", "warmup", "ema_decay", "weighting"] + [k for k, v in places.items() if len(v) > 1]
    for k in dict.fromkeys(shown):
        if k in places:
            print(f"- {k}: {len(places[k])} ({'; '.join(places[k])})")
    print(f"\nSettings passed on by hand in experiments/: {len(forwards)}")
    for f in forwards[:3]:
        print(f"- {f}")
    tool = shutil.which("duplicates")
    if tool:
        out = subprocess.run([tool, "--repo", str(root)], capture_output=True, text=True).stdout
        print(f"\n`duplicates --repo {root.name}`: {out.splitlines()[0] if out else '(no output)'}")


if __name__ == "__main__":
    main()
