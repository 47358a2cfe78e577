"""Run the Python examples of a documentation page, as a reader would.

Every ```python block of a page (indented inside a list too) runs, in page order, in one namespace
(a page reads top to bottom, so a later block may use what an earlier one defined). A block that
cannot run here is marked on the line before it with an HTML comment that says why, which the
site does not show:

    <!-- not run: needs a CUDA device -->

`tests/test_docs.py` runs every page this way in a scratch directory, so the docs cannot rot.
From the command line, `python scripts/doc_examples.py docs/PAGE.md` runs one page in a scratch
directory; `--figures DIR` then copies the pictures the page wrote (*.png) into DIR. That is how
the pictures of docs/own_sde.md are made:

    python scripts/doc_examples.py docs/own_sde.md --figures docs/img
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^([ \t]*)```python\n(.*?)^\1```", flags=re.M | re.S)  # indented in a list too
_NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    """One ```python block: its code, the line it starts on, and why it is not run (or None)."""

    code: str
    line: int
    not_run: str | None


def blocks(page: str | Path) -> list[Block]:
    """The ```python blocks of a page in docs/ (a name such as "guide.md", or a path)."""
    path = Path(page) if Path(page).is_file() else DOCS / page
    text = path.read_text()
    out = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = _NOT_RUN.search(before)
        line = text.count("\n", 0, m.start()) + 2
        out.append(Block(textwrap.dedent(m.group(2)), line, reason.group(1) if reason else None))
    return out


def pages_with_examples() -> list[str]:
    """The pages of docs/ that have at least one ```python block."""
    return sorted(p.name for p in DOCS.glob("*.md") if blocks(p.name))


def run(page: str | Path) -> dict:
    """Run a page's blocks (those not marked `not run`) in order in one namespace; return it.

    Runs in the current directory: call it from a scratch directory if the page writes files.
    """
    name = Path(page).name
    namespace: dict = {"__name__": f"docs_{Path(name).stem}"}
    for block in blocks(page):
        if block.not_run is None:
            exec(compile(block.code, f"docs/{name}, line {block.line}", "exec"), namespace)
    return namespace


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", help="a page of docs/, e.g. docs/own_sde.md")
    parser.add_argument("--figures", type=Path, help="copy the *.png the page wrote into this folder")
    args = parser.parse_args(argv)
    page = Path(args.page).resolve()
    if not page.is_file():
        raise SystemExit(f"no such page: {args.page}")
    figures = args.figures.resolve() if args.figures else None
    with tempfile.TemporaryDirectory(prefix="sde_gen_docs_") as scratch:
        os.chdir(scratch)
        run(page)
        for png in sorted(Path(scratch).glob("*.png")):
            if figures is not None:
                figures.mkdir(parents=True, exist_ok=True)
                shutil.copy(png, figures / png.name)
                print(f"wrote {figures / png.name}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
