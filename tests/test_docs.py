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
import doc_examples  # noqa: E402


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


def test_every_page_example_runs_or_says_why_not():
    """A block is skipped only with a stated reason, and most of the docs' code runs."""
    skipped = [
        (p, b.line)
        for p in doc_examples.pages_with_examples()
        for b in doc_examples.blocks(p)
        if b.not_run is not None and len(b.not_run) < 10
    ]
    assert not skipped, f"a `not run` mark must say why: {skipped}"


@pytest.mark.parametrize("page", doc_examples.pages_with_examples())
def test_documented_examples_run(page, tmp_path, monkeypatch):
    """Each page's examples run as written, in page order (their asserts included), in a scratch
    directory, so the docs cannot rot (scripts/doc_examples.py)."""
    monkeypatch.chdir(tmp_path)
    doc_examples.run(page)


_IMAGE = re.compile(r"^!\[[^\]]*\]\((img/[^)]+)\)", flags=re.M)


def test_every_figure_names_the_command_that_made_it():
    """The paragraph right after every picture names the command that produced it."""
    missing = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        text = path.read_text()
        for m in _IMAGE.finditer(text):
            assert (ROOT / "docs" / m.group(1)).is_file(), f"{path.name}: {m.group(1)} is missing"
            rest = text[m.end() :].lstrip("\n")
            while _IMAGE.match(rest):  # pictures side by side share one caption
                rest = rest[_IMAGE.match(rest).end() :].lstrip("\n")
            caption = rest.split("\n\n", 1)[0]
            if not re.search(r"`(python|bash|torchrun|sbatch) [^`]+`", caption):
                missing.append(f"{path.name}: {m.group(1)}")
    assert not missing, f"pictures whose next paragraph names no command: {missing}"
