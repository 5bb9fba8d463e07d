"""Docs that tests keep honest: every setting documented, the README's commands real."""

from __future__ import annotations

import os
import re
from pathlib import Path

from whiteboard.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_with_its_default() -> None:
    table = (ROOT / "docs" / "configuration.md").read_text()
    for setting in SETTINGS:
        row = next((ln for ln in table.splitlines() if ln.startswith(f"| `{setting.name}` |")), None)
        assert row is not None, f"{setting.name} missing from docs/configuration.md"
        if setting.default is not None:
            assert setting.default in row, f"{setting.name}: default {setting.default} not in its row"


def test_docs_name_no_setting_that_does_not_exist() -> None:
    known = {s.name for s in SETTINGS}
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for name in re.findall(r"WHITEBOARD_[A-Z_]+", doc.read_text()):
            assert (
                name in known or name.startswith("WHITEBOARD_TEST_") or name == "WHITEBOARD_PUBLIC_ORIGIN"
            ), f"{doc.name} names {name}, which is not a setting"


def test_the_readme_commands_exist_and_are_executable() -> None:
    readme = (ROOT / "README.md").read_text()
    for script in ("scripts/demo", "scripts/test"):
        assert script in readme
        assert os.access(ROOT / script, os.X_OK), f"{script} is not executable"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci


def test_docs_linked_from_the_readme_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)\)", readme):
        assert (ROOT / link).exists(), f"README links {link}, which does not exist"
