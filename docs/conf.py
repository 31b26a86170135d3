"""Sphinx configuration: built by CI with warnings as errors (sphinx-build -W)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # flask_selfhost from this checkout, and tests.server_matrix

import flask_selfhost  # noqa: E402

project = "flask-selfhost"
author = "the flask-selfhost maintainers"
copyright = "2026, the flask-selfhost maintainers"  # noqa: A001
release = version = flask_selfhost.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": False}
nitpicky = False

# No intersphinx: CI builds offline, and a failed inventory download would
# fail the -W build. References to Python and Flask stay plain text.

html_theme = "furo"
html_title = f"flask-selfhost {release}"


def write_server_table() -> None:
    """The server support table, rendered from the tests' one source
    (tests/server_matrix.py), so the docs cannot drift from what is tested."""
    from tests.server_matrix import render

    generated = Path(__file__).parent / "_generated"
    generated.mkdir(exist_ok=True)
    target = generated / "server-table.md"
    text = render()
    if not target.exists() or target.read_text() != text:  # unchanged: no rebuild
        target.write_text(text)


write_server_table()


def setup(app: object) -> None:
    """HAProxy configuration blocks (```haproxy, run by tests/test_docs.py):
    Pygments has no lexer for them, so they are shown as plain text."""
    from pygments.lexers.special import TextLexer

    app.add_lexer("haproxy", TextLexer)  # type: ignore[attr-defined]
