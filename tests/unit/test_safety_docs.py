"""Every control in the hazard log and the security page names a test that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "clinical-safety" / "hazard-log.md", ROOT / "docs" / "security.md"]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_test_exists(doc: Path) -> None:
    references = REFERENCE.findall(doc.read_text())
    assert references, f"{doc.name} names no tests"
    for file, name in references:
        path = ROOT / file
        assert path.exists(), f"{doc.name} names {file}, which does not exist"
        if name:
            assert name in defined_tests(path), f"{doc.name} names {file}::{name}, which does not exist"


def test_every_hazard_has_controls_with_tests() -> None:
    text = DOCS[0].read_text()
    hazards = re.findall(r"^\| (H\d+) \|", text, re.M)
    assert len(hazards) >= 8
    for hazard in hazards:
        section = text.split(f"## {hazard} ", 1)
        assert len(section) == 2, f"{hazard} has no section of controls"
        body = section[1].split("\n## ", 1)[0]
        assert REFERENCE.search(body), f"{hazard} names no test for its controls"
        assert "Residual risk" in body, f"{hazard} states no residual risk"
