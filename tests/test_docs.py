"""The documentation site's sources: the API reference lists every public name (generated, and up
to date), and the navigation reaches every page in docs/. (`bash scripts/docs.sh` builds the site
strictly in CI: broken links and docstrings that do not parse fail it.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

import sde_gen as sg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import api_reference  # noqa: E402


def test_api_reference_is_generated_and_up_to_date():
    assert (ROOT / "docs" / "api.md").read_text() == api_reference.text(), (
        "docs/api.md is out of date: run python scripts/api_reference.py"
    )


def test_api_reference_names_every_public_name():
    text = (ROOT / "docs" / "api.md").read_text()
    named = set(re.findall(r"^::: sde_gen\.(\w+)$", text, flags=re.M))
    named |= set(re.findall(r"^### `sg\.(\w+)`$", text, flags=re.M))
    assert named == set(sg.__all__), sorted(set(sg.__all__) ^ named)


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    return [p for v in node for p in _nav_pages(v)]


def test_navigation_reaches_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    assert len(pages) == len(set(pages))
    on_disk = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(pages) == on_disk


#: pages whose ```python blocks are complete programs; each block runs in a fresh namespace
RUNNABLE = ("index.md", "samplers.md")


def _python_blocks(page: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


@pytest.mark.parametrize(
    "page,index",
    [(page, i) for page in RUNNABLE for i in range(len(_python_blocks(page)))],
)
def test_documented_examples_run(page, index):
    """The pages' examples run as written (their asserts included), so the docs cannot rot."""
    code = _python_blocks(page)[index]
    exec(compile(code, f"docs/{page} block {index}", "exec"), {"__name__": f"docs_{index}"})
