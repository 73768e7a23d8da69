"""The finding catalogue: every code used in the source is declared, the docs are
generated from it, and findings take their severity from it."""

import ast
from pathlib import Path

import pytest

from wsanalyze import catalogue
from wsanalyze.catalogue import CATALOGUE, finding
from wsanalyze.model import Severity

ROOT = Path(__file__).resolve().parents[1]


def _codes_used_in_source() -> set[str]:
    """String literals passed as the first argument of finding(...) / _finding(...)."""
    codes: set[str] = set()
    for path in (ROOT / "wsanalyze").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            arg = node.args[0]
            if "finding" in name.lower() and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str) and arg.value.islower() and "_" in arg.value:
                    codes.add(arg.value)
    return codes


def test_every_code_used_in_the_source_is_catalogued():
    used = _codes_used_in_source()
    assert len(used) > 20  # the scan found the calls
    assert used - set(CATALOGUE) == set()


def test_codes_are_snake_case_and_unique():
    codes = [e.code for e in catalogue._ENTRIES]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert code == code.lower() and " " not in code


def test_every_entry_has_a_reference_and_an_explanation():
    for e in CATALOGUE.values():
        assert e.reference, e.code
        assert len(e.explanation) > 20, e.code


def test_docs_are_generated_from_the_catalogue():
    assert (ROOT / "docs" / "findings.md").read_text(encoding="utf-8") == (
        catalogue.catalogue_markdown()
    ), "regenerate with: python -m wsanalyze.catalogue > docs/findings.md"


def test_finding_takes_severity_from_the_catalogue():
    f = finding("ws_unmasked_client_frame", "expected=mask, found=none", packets=[5, 3, 5])
    assert f.severity == Severity.ERROR
    assert f.packets == (3, 5)


def test_unknown_code_is_a_programming_error():
    with pytest.raises(KeyError):
        finding("no_such_code", "x")
