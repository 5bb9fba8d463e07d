"""The core (`whiteboard/board/`) performs no I/O: it imports no web, database, broker or OS module.

Checked twice: statically, by reading every module's imports with `ast`, and dynamically, by
importing the core in a fresh interpreter and looking at what it loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import whiteboard

PACKAGE = Path(whiteboard.__file__).parent
CORE = PACKAGE / "board"
FORBIDDEN = frozenset(
    {
        "starlette",
        "sqlalchemy",
        "redis",
        "asyncio",
        "uvicorn",
        "websockets",
        "httpx",
        "socket",
        "os",
        "subprocess",
    }
)
#: The only parts of the package the core may lean on.
ALLOWED_INTERNAL = ("whiteboard.board", "whiteboard.errors")

CORE_MODULES = sorted(CORE.glob("*.py"))
#: The core modules and the one outside module they share.
PURE_FILES = [*CORE_MODULES, PACKAGE / "errors.py"]


def imported_names(path: Path) -> set[str]:
    """Every module `path` imports, absolute, whether by `import x` or `from x import y`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the core package
                base = "whiteboard.board" if node.level == 1 else "whiteboard"
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
                # `from os import path` names os; `from whiteboard import store` names a submodule.
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.add("__import__")
    return names


def test_there_is_a_core_to_check() -> None:
    names = {p.stem for p in CORE_MODULES}
    assert {"model", "commands", "rules", "events", "views", "roles", "nhs"} <= names


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: p.name)
def test_core_module_imports_nothing_forbidden(path: Path) -> None:
    names = imported_names(path)
    assert "__import__" not in names
    assert "importlib" not in {n.split(".")[0] for n in names}
    bad = sorted(n for n in names if n.split(".")[0] in FORBIDDEN)
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: p.name)
def test_core_module_leans_only_on_the_core(path: Path) -> None:
    internal = {n for n in imported_names(path) if n.split(".")[0] == "whiteboard"}
    outside = sorted(
        n
        for n in internal
        if not any(n == a or n.startswith(f"{a}.") for a in ALLOWED_INTERNAL) and n != "whiteboard.board"
    )
    assert not outside, f"{path.name} reaches outside the core: {outside}"


def test_the_import_walker_sees_both_forms(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os.path\nfrom asyncio import sleep\nfrom . import rules\nimport json as j\n", encoding="utf-8"
    )
    names = imported_names(sample)
    assert {"os.path", "asyncio", "asyncio.sleep", "whiteboard.board", "json"} <= names
    assert {n.split(".")[0] for n in names} & FORBIDDEN == {"os", "asyncio"}


PROBE = """
import json, sys
before = set(sys.modules)
import whiteboard.board.rules, whiteboard.board.views, whiteboard.board.roles
import whiteboard.board.commands, whiteboard.board.events, whiteboard.board.model, whiteboard.board.nhs
after = set(sys.modules)
print(json.dumps({"new": sorted(after - before), "all": sorted(after)}))
"""


def test_importing_the_core_loads_no_io_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=PACKAGE.parent,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    new = {name.split(".")[0] for name in loaded["new"]}
    assert "whiteboard" in new, "the probe did not import the core"
    assert not new & FORBIDDEN, f"importing the core loaded {sorted(new & FORBIDDEN)}"
    # `os` is loaded by every interpreter at start-up; the rest must not be there at all.
    everything = {name.split(".")[0] for name in loaded["all"]}
    assert not everything & (FORBIDDEN - {"os"}), sorted(everything & FORBIDDEN)
    assert not any(name.startswith(("whiteboard.store", "whiteboard.routes")) for name in loaded["new"])
