"""Which modules load a web framework: only each framework's own front.

A WSGI or ASGI app guarded by flask_selfhost must not need Flask (nor
Werkzeug or click, which come with it), Quart, Starlette or FastAPI: the
package, the WSGI and ASGI middleware, the rules, the options and the
``flask-selfhost`` script import none of them. Proved twice: in a venv that
has none of them installed, where the guards answer real requests, and here,
where an import hook refuses them to every module of the package in turn.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import venv

import pytest

import flask_selfhost
import flask_selfhost.cli
from flask_selfhost.options import REFUSE_STATUSES
from tests.servers import ROOT

FRAMEWORKS = ("flask", "werkzeug", "click", "quart", "starlette", "fastapi")

#: The modules that are a framework's own front, and the frameworks each may load.
FRONTS = {
    "flask_selfhost.extension": {"flask", "werkzeug"},
    "flask_selfhost.flask_routes": {"flask", "werkzeug"},
    "flask_selfhost.flask_cli": {"flask", "werkzeug", "click"},
    "flask_selfhost.quart": {"quart", "flask", "werkzeug", "click"},
    "flask_selfhost.fastapi": {"starlette", "fastapi"},
}

ALL_MODULES = sorted(
    module.name for module in pkgutil.walk_packages(flask_selfhost.__path__, "flask_selfhost.")
)

# Guards a plain WSGI app and a plain ASGI app, asks each for a loopback
# client's request and another host's, and says which frameworks were loaded.
GUARDED_APPS = """\
import asyncio, io, json, sys

import flask_selfhost
import flask_selfhost.asgi
from flask_selfhost import SelfHostMiddleware
from flask_selfhost.asgi import SelfHostASGIMiddleware


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served"]


async def asgi_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


def wsgi_answer(remote):
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000", "REMOTE_ADDR": remote, "SERVER_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
    }
    statuses = []
    body = b"".join(SelfHostMiddleware(wsgi_app)(environ, lambda s, h, e=None: statuses.append(s)))
    return int(statuses[0][:3]), body.decode()


async def asgi_answer(remote):
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": (remote, 50000), "server": ("127.0.0.1", 8000),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await SelfHostASGIMiddleware(asgi_app)(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]).decode()


print(json.dumps({
    "wsgi": [wsgi_answer("127.0.0.1"), wsgi_answer("10.0.0.2")],
    "asgi": [asyncio.run(asgi_answer("127.0.0.1")), asyncio.run(asgi_answer("10.0.0.2"))],
    "loaded": sorted(name for name in sys.modules if name.split(".")[0] in %r),
}))
""" % (FRAMEWORKS,)  # noqa: UP031 - the script's own braces stay literal


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """A venv's interpreter with no framework installed (no system site
    packages), that imports flask_selfhost from this checkout."""
    home = tmp_path_factory.mktemp("bare-venv")
    venv.create(home, with_pip=False, system_site_packages=False)
    python = str(home / "bin" / "python")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    installed = f"import importlib.util as u; print([n for n in {FRAMEWORKS!r} if u.find_spec(n)])"
    missing = subprocess.run(
        [python, "-c", installed], capture_output=True, text=True, env=env, cwd=home, timeout=60
    )
    assert missing.stdout.strip() == "[]", missing.stdout + missing.stderr  # truly bare
    return python, env


def test_a_venv_without_frameworks_guards_wsgi_and_asgi_apps(bare_python, tmp_path):
    python, env = bare_python
    done = subprocess.run(
        [python, "-c", GUARDED_APPS], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    for front in ("wsgi", "asgi"):
        (local_status, local_body), (other_status, other_body) = answers[front]
        assert (local_status, local_body) == (200, "served"), front
        assert other_status == 403 and "served" not in other_body, front
        assert other_body.startswith("Forbidden: only clients on this server's own host"), front
    assert answers["loaded"] == []


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["check", "127.0.0.1", "127.0.0.1"], 0, "allowed: the client is loopback"),
        (["check", "10.0.0.2", "127.0.0.1"], 1, "refused: the client is another host"),
        (["--version"], 0, f"flask-selfhost {flask_selfhost.__version__}"),
    ],
)
def test_the_console_script_runs_without_frameworks(bare_python, tmp_path, args, status, words):
    python, env = bare_python
    done = subprocess.run(
        [python, "-m", "flask_selfhost.cli", *args], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == status, done.stdout + done.stderr
    assert words in done.stdout


def test_the_flask_front_asks_for_flask_by_name(bare_python, tmp_path):
    """Without Flask, ``SelfHost`` says what is missing; the rest still works."""
    python, env = bare_python
    script = (
        "import flask_selfhost\n"
        "assert {'SelfHost', 'local_only'} <= set(dir(flask_selfhost))\n"
        "try:\n    flask_selfhost.SelfHost\n"
        "except ModuleNotFoundError as error:\n    print(error.name)\n"
    )
    done = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "flask"


# Imports one module with the frameworks refused; prints which of them the
# module asked for (even if it caught the error) and whether it imported.
BLOCKED_IMPORT = """\
import importlib, importlib.abc, json, sys

FRAMEWORKS = %r
already = [name for name in sys.modules if name.split(".")[0] in FRAMEWORKS]
asked = []


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FRAMEWORKS:
            asked.append(name.split(".")[0])
            raise ModuleNotFoundError(f"refused by the test: {name}", name=name)
        return None


sys.meta_path.insert(0, Refuse())
try:
    importlib.import_module(sys.argv[1])
    error = None
except ImportError as failure:
    error = repr(failure)
print(json.dumps({"already": already, "asked": sorted(set(asked)), "error": error}))
""" % (FRAMEWORKS,)  # noqa: UP031 - the script's own braces stay literal


@pytest.mark.parametrize("module", ALL_MODULES)
def test_only_a_frameworks_own_front_imports_it(module):
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, module],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["already"] == [], result  # nothing loaded before the hook
    if module in FRONTS:
        assert result["error"] is not None, f"{module} imported with its framework refused"
        assert set(result["asked"]) <= FRONTS[module], result
    else:
        assert result == {"already": [], "asked": [], "error": None}, module


def test_every_front_is_a_module_of_the_package():
    """A renamed front fails here, not by quietly leaving the list above."""
    assert set(FRONTS) <= set(ALL_MODULES)
    assert "flask_selfhost.views" in ALL_MODULES and "flask_selfhost.views" not in FRONTS


def test_refuse_statuses_are_werkzeugs_errors():
    """The Flask and Quart fronts raise Werkzeug's class for the status:
    every accepted status has one, and every one Werkzeug has is accepted."""
    from werkzeug.exceptions import default_exceptions

    assert set(default_exceptions) == REFUSE_STATUSES


def test_the_cli_module_has_no_flask_commands():
    """``flask selfhost`` is registered from the Flask front (setup.cfg)."""
    setup = (ROOT / "setup.cfg").read_text()
    assert "selfhost = flask_selfhost.flask_cli:flask_group" in setup
    assert "flask-selfhost = flask_selfhost.cli:main" in setup
    assert not hasattr(flask_selfhost.cli, "flask_group")


def test_the_import_hook_can_fail():
    """The hook refuses: a module that imports Flask fails under it."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, "flask"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert json.loads(done.stdout)["error"] is not None


def test_the_lazy_names_are_the_flask_fronts():
    from flask_selfhost import extension

    assert flask_selfhost.SelfHost is extension.SelfHost
    assert flask_selfhost.local_only is extension.local_only
    assert {"SelfHost", "local_only"} <= set(dir(flask_selfhost)) <= set(vars(flask_selfhost))
    with pytest.raises(AttributeError, match="no attribute 'SelfHoast'"):
        flask_selfhost.SelfHoast  # noqa: B018 - the lookup is the test
