"""Every bad input of docs/bad_inputs.md gets the error the table lists, and the table is up to date.

The cases live in tests/bad_inputs.py; scripts/bad_inputs_table.py writes the table from them.
"""

from __future__ import annotations

import functools
import re

import bad_inputs as bi
import pytest

CASES = {case.id: case for case in bi.CASES}


@functools.cache
def outcome(case_id: str) -> Exception | None:
    """What the case raises; each case runs once per session (its test and the table share it)."""
    return bi.run_case(CASES[case_id])


def test_cases_are_well_formed():
    assert len(bi.CASES) >= 40
    assert len(CASES) == len(bi.CASES), "case ids must be unique"
    assert len({c.bad_input for c in bi.CASES}) == len(bi.CASES), "each bad input appears once"
    for case in bi.CASES:
        assert case.category in bi.CATEGORIES, (case.id, case.category)
        assert re.fullmatch(r"[a-z0-9_]+(-[a-zA-Z0-9_]+)*", case.id), case.id
        assert issubclass(case.error, Exception), case.id
        re.compile(case.match)
    assert {c.category for c in bi.CASES} == set(bi.CATEGORIES), "every category has a case"


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_gets_its_error(case_id):
    case = CASES[case_id]
    exc = outcome(case_id)
    assert exc is not None, f"{case.bad_input}: no error raised, expected {case.error.__name__}"
    assert isinstance(exc, case.error), (
        f"{case.bad_input}: raised {bi.error_type(exc)}, expected {case.error.__name__}: {bi.error_text(exc)}"
    )
    text = bi.error_text(exc)
    assert re.search(case.match, text, re.DOTALL), f"{case.bad_input}: {text!r} does not match {case.match!r}"


def test_doc_table_is_up_to_date():
    expected = bi.render({case_id: outcome(case_id) for case_id in CASES})
    rel = bi.DOC.relative_to(bi.ROOT)
    assert bi.DOC.is_file(), f"{rel} is missing: run {bi.REGENERATE}"
    assert bi.DOC.read_text() == expected, (
        f"{rel} is out of date with tests/bad_inputs.py or the library's messages: run {bi.REGENERATE}"
    )


def test_error_text_normalises_paths():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix=bi.TMP_PREFIX) as tmp:
        err = ValueError(f"{Path(tmp) / 'ckpt.pt'}: bad; see {bi.ROOT / 'conf'}")
        assert bi.error_text(err) == "<tmp>/ckpt.pt: bad; see <repo>/conf"
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = ValueError("inner")
    assert (
        bi.error_text(wrapped) == "outer\ninner" and bi.error_type(wrapped) == "RuntimeError from ValueError"
    )
