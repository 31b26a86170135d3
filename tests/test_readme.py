"""Every Python block of the README runs, as pasted.

Blocks run in order, each in a fresh namespace that holds only what a
reader already has at that point: ``application`` (a WSGI app), ``app`` (a
Flask app) and ``environ`` (a request's environ). A block that defines an app
factory has it called, and the result is asked a request.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.test import Client

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def plain_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{n}" for n in range(len(BLOCKS))])
def test_a_readme_block_runs(block):
    namespace = {
        "__name__": "readme",
        "application": plain_app,
        "app": Flask("readme"),
        "environ": {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET"},
    }
    exec(compile(block, "README.md", "exec"), namespace)
    factory = namespace.get("create_app")
    if factory is not None:
        made = factory()
        remote = Client(made).get("/healthz", environ_base={"REMOTE_ADDR": "10.0.0.2"})
        assert remote.status_code == 200  # allow_remote
        assert (
            Client(made).get("/nothing", environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code
            == 403
        )
