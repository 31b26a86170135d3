"""The floors of docs/development.md's architecture: every module of the
package has one, and imports only from its own floor and those below."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flask_selfhost"
HEADER = "floor     modules"


def floors_from_page(text: str | None = None) -> dict[str, int]:
    """Module -> floor number (0 for the lowest), from the page's block."""
    if text is None:
        page = (ROOT / "docs" / "development.md").read_text()
        text = re.search(rf"```text\n({HEADER}\n.*?)```", page, re.S)[1]
    rows = text.strip().splitlines()
    assert rows[0] == HEADER
    floors: dict[str, int] = {}
    for number, row in enumerate(reversed(rows[1:])):
        _name, *modules = row.split()
        for module in modules:
            assert module not in floors, f"{module} is on two floors"
            floors[module] = number
    return floors


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """The name the page uses: a subpackage (doctor) is one module."""
    return path.relative_to(package).parts[0].removesuffix(".py")


def imported_modules(path: Path, package: Path = PACKAGE) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it (lazy
    imports inside functions included)."""
    inside = path.parent != package  # a subpackage: one dot more
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            level = node.level - inside
            if level != 1:
                if level == 0:
                    continue  # within the subpackage itself
                raise AssertionError(f"{path}: an import above the package")
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = (
                [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            )
            for name in names:
                if name and name.startswith("flask_selfhost."):
                    found.add(name.split(".")[1])
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_module_has_one_floor():
    floors = floors_from_page()
    names = {module_name(path) for path in MODULES}
    assert names == set(floors), (names - set(floors), set(floors) - names)


def upward_imports(path: Path, floors: dict[str, int], package: Path = PACKAGE) -> set[str]:
    """What ``path`` imports from a floor above its own."""
    own = floors[module_name(path, package)]
    imported = imported_modules(path, package) - {"__version__"}
    return {name for name in imported if name in floors and floors[name] > own}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_or_stay_on_the_floor(path):
    floors = floors_from_page()
    upward = upward_imports(path, floors)
    assert not upward, f"{module_name(path)} imports from a floor above its own: {sorted(upward)}"


def test_the_check_sees_an_upward_import(tmp_path):
    """A rule that imported an adapter, lazily or not, would be caught."""
    floors = floors_from_page()
    package = tmp_path / "flask_selfhost"
    (package / "doctor").mkdir(parents=True)
    (package / "hosts.py").write_text("def f():\n    from .environ import evaluate\n")
    (package / "facts.py").write_text("import flask_selfhost.scope\n")
    (package / "views.py").write_text("from .decision import Decision\n")
    (package / "doctor" / "app.py").write_text("from ..middleware import x\nfrom . import report\n")
    assert upward_imports(package / "hosts.py", floors, package) == {"environ"}
    assert upward_imports(package / "facts.py", floors, package) == {"scope"}
    assert upward_imports(package / "views.py", floors, package) == set()
    assert upward_imports(package / "doctor" / "app.py", floors, package) == set()
