"""The flask-selfhost console script and the `flask selfhost` commands, run as a user runs them.

The scripts are the ones installed beside this Python (the venv's ``bin``),
called by path: a test must not depend on that directory being on PATH, nor
pick up another install's script that happens to be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import flask_selfhost
from tests.conftest import require_commands, require_root
from tests.servers import ROOT


def script(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"{name} is not installed beside {sys.executable}: pip install -e ."
    return str(path)


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.mark.parametrize(
    ("remote", "local", "status", "words"),
    [
        ("127.0.0.1", None, 0, "allowed: the client is loopback"),
        ("127.0.0.1", None, 0, "(remote=127.0.0.1, local=-)"),  # absent: '-', as in the log
        ("192.168.0.13", "192.168.0.13", 0, "allowed: the client is the address"),
        ("10.0.0.2", "127.0.0.1", 1, "refused: the client is another host"),
        ("::ffff:10.0.0.2", "fe80::1%eth0", 1, "(remote=::ffff:10.0.0.2, local=fe80::1%eth0)"),
    ],
)
def test_check(remote, local, status, words):
    result = run(script("flask-selfhost"), "check", remote, *([local] if local else []))
    assert result.returncode == status, result.stderr
    assert words in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["10.0.0.300", "127.0.0.1"], "argument remote: '10.0.0.300' is not an IP address"),
        (["10.0.0.2", "127.0.0.1:8000"], "argument local: '127.0.0.1:8000' is not an IP address"),
        ([""], "argument remote: '' is not an IP address"),
        (["10.0.0.2 x"], "argument remote: '10.0.0.2 x' is not an IP address"),
        (["localhost", "--app", "demo_app:app"], "'localhost' is not an IP address"),
    ],
)
def test_check_calls_a_malformed_address_a_usage_error(args, words):
    """A typo is not a verdict: exit 2 with a message, never 'refused' (1)."""
    result = run(script("flask-selfhost"), "check", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and words in result.stderr, result.stderr
    assert result.stderr.startswith("usage: flask-selfhost check"), result.stderr


def test_check_is_the_same_module_entry_point():
    result = run(sys.executable, "-m", "flask_selfhost.cli", "check", "::ffff:127.0.0.1")
    assert result.returncode == 0 and "loopback" in result.stdout


def test_version():
    result = run(script("flask-selfhost"), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"flask-selfhost {flask_selfhost.__version__}"


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (("check", "--help"), ["exit status:", "0  allowed", "1  refused", "source rule"]),
        (("check", "--help"), ["--app MODULE:NAME", "2  usage: an address that is not", "Quart"]),
        (("doctor", "--help"), ["exit status:", "0  nothing risky", "1  something risky", "2  "]),
        (("doctor", "--help"), ['sudo "$(command -v flask-selfhost)" doctor', "--port"]),
    ],
)
def test_help_says_what_it_does_and_the_exit_status(command, words):
    result = run(script("flask-selfhost"), *command)
    assert result.returncode == 0, result.stderr
    for word in words:
        assert word in result.stdout, result.stdout


@pytest.mark.parametrize("command", ["doctor", "status"])
def test_flask_help_is_plain_text(command):
    result = run(script("flask"), "--app", "demo_app:app", "selfhost", command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Exit status:" in result.stdout
    assert "``" not in result.stdout and ":func:" not in result.stdout, result.stdout


def test_flask_selfhost_status():
    guarded = run(script("flask"), "--app", "demo_app:app", "selfhost", "status")
    assert guarded.returncode == 0, guarded.stderr
    lines = guarded.stdout.splitlines()
    assert (
        lines[0]
        == "demo_app:app: guarded by flask_selfhost (the SelfHost extension), with these options:"
    )
    assert "Options(" not in guarded.stdout and "TrustedProxies(" not in guarded.stdout
    assert any(line.split() == ["refuse_status", "403"] for line in lines)
    assert any(line.split() == ["trusted_proxies", "(none)"] for line in lines)
    assert lines[-1] == "views that answer anyone (allow_remote): healthz, home"

    unguarded = run(script("flask"), "--app", "demo_app:unguarded_app", "selfhost", "status")
    assert unguarded.returncode == 1
    assert unguarded.stdout.startswith("demo_app:unguarded_app: NOT guarded"), unguarded.stdout


@pytest.mark.parametrize(
    ("spec", "status", "first_line", "views"),
    [
        # What `flask-selfhost check --app` takes, `flask selfhost status` takes too.
        ("tests.apps:middleware_app", 0, "(SelfHostMiddleware around the app)", False),
        ("tests.apps:asgi_app", 0, "(SelfHostASGIMiddleware around the app)", False),
        ("tests.fastapi_app:app", 0, "(SelfHostASGIMiddleware around the app)", False),
        ("tests.quart_app:app", 0, "(the SelfHost extension)", True),
        ("tests.apps:whoami", 1, ": NOT guarded by flask_selfhost", False),
    ],
)
def test_status_takes_the_apps_that_check_takes(spec, status, first_line, views):
    result = run(script("flask"), "--app", spec, "selfhost", "status")
    assert result.returncode == status, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(spec) and first_line in lines[0], result.stdout
    if status == 0:
        assert any(line.split()[0] == "trusted_proxies" for line in lines[1:]), result.stdout
    assert lines[-1].startswith("views that answer anyone") is views, result.stdout
    checked = run(script("flask-selfhost"), "check", "127.0.0.2", "--app", spec)
    assert checked.returncode == (2 if status else 0), checked.stdout + checked.stderr


def test_status_of_an_app_that_cannot_be_imported_is_a_usage_error():
    result = run(script("flask"), "--app", "no_such_module:app", "selfhost", "status")
    assert result.returncode == 2 and "Could not import 'no_such_module'" in result.stderr


MIDDLEWARE_APP = """\
from flask import Flask
from flask_selfhost import SelfHostMiddleware

app = Flask(__name__)
app.wsgi_app = SelfHostMiddleware(app.wsgi_app, trusted_proxies="127.0.0.1, unix")
"""


LATE_CONFIG_APP = """\
from flask import Flask
from flask_selfhost import SelfHost

app = Flask(__name__)
SelfHost(app)
app.config.from_mapping(SELFHOST_REFUSE_STATUS=404)  # after the extension, before serving
"""


def test_status_and_check_show_config_set_after_the_extension(tmp_path):
    (tmp_path / "late.py").write_text(LATE_CONFIG_APP)
    result = run(script("flask"), "--app", "late:app", "selfhost", "status", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(line.split() == ["refuse_status", "404"] for line in result.stdout.splitlines())
    checked = run(
        script("flask-selfhost"), "check", "10.0.0.2", "192.0.2.7", "--app", "late:app",
        cwd=tmp_path,
    )  # fmt: skip
    assert checked.returncode == 1 and checked.stdout.endswith("it answers 404\n"), checked


def test_status_recognises_a_flask_app_wrapped_in_the_middleware(tmp_path):
    (tmp_path / "wrapped.py").write_text(MIDDLEWARE_APP)
    result = run(script("flask"), "--app", "wrapped:app", "selfhost", "status", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(
        "wrapped:app: guarded by flask_selfhost (SelfHostMiddleware around the app)"
    )
    assert any(
        line.split() == ["trusted_proxies", "127.0.0.1/32,", "unix"]
        for line in result.stdout.splitlines()
    ), result.stdout


@pytest.mark.parametrize(
    ("remote", "local", "spec", "status", "words"),
    [
        # Flask (SelfHost), a WSGI callable (SelfHostMiddleware): default options.
        ("127.0.0.1", None, "demo_app:app", 0, "allowed: the client is loopback"),
        ("10.0.0.2", "192.0.2.7", "demo_app:app", 1, "options of demo_app:app); it answers 403"),
        ("::1", None, "tests.apps:middleware_app", 0, "allowed: the client is loopback"),
        # FastAPI with add_middleware (ASGI).
        ("192.0.2.7", "192.0.2.7", "tests.fastapi_app:app", 0, "allowed: the client is the"),
        ("10.0.0.2", "192.0.2.7", "tests.fastapi_app:app", 1, "refused: the client is another"),
        # Quart, SELFHOST_TRUSTED_PROXIES=127.0.0.1: the proxy must name its client.
        ("127.0.0.1", None, "tests.quart_app:app", 1, "trusted proxy but carries no forwarding"),
        ("127.0.0.2", None, "tests.quart_app:app", 0, "allowed: the client is loopback"),
        # Not guarded, not importable: nothing to apply (2).
        ("127.0.0.1", None, "demo_app:unguarded_app", 2, "is not guarded by flask_selfhost"),
        ("127.0.0.1", None, "no_such_module:app", 2, "could not import no_such_module:app"),
    ],
)
def test_check_with_the_options_of_an_app(remote, local, spec, status, words):
    args = [remote, *([local] if local else []), "--app", spec]
    result = run(script("flask-selfhost"), "check", *args)
    assert result.returncode == status, result.stdout + result.stderr
    assert words in (result.stdout if status < 2 else result.stderr), result.stdout
    assert bool(result.stdout) == (status < 2)


def test_check_applies_a_wsgi_middlewares_options(tmp_path):
    (tmp_path / "wrapped.py").write_text(MIDDLEWARE_APP)
    plain = run(script("flask-selfhost"), "check", "127.0.0.1", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    proxied = run(
        script("flask-selfhost"), "check", "127.0.0.1", "--app", "wrapped:app", cwd=tmp_path
    )
    assert proxied.returncode == 1, proxied.stdout + proxied.stderr
    assert "trusted proxy" in proxied.stdout


@pytest.mark.parametrize(
    ("spec", "severity"),
    [
        ("tests.quart_app:app", "ok"),  # the Quart extension
        ("tests.fastapi_app:app", "ok"),
        ("demo_app:app", "ok"),
        ("demo_app:create_app", "ok"),  # a factory named without parentheses is called
        ("demo_app:create_app()", "ok"),
        ("demo_app:create_app(guarded=False)", "note"),
        ("demo_app:unguarded_app", "note"),
        ("demo_app", "ok"),  # no name: app, application, create_app, make_app
    ],
)
def test_doctor_loads_apps_and_factories(spec, severity):
    # Only the app finding is asserted: the rest depends on this machine.
    result = run(script("flask-selfhost"), "doctor", "--app", spec, "--json")
    assert result.returncode in (0, 1, 2), result.stderr
    (app,) = [f for f in json.loads(result.stdout)["findings"] if f["topic"] == "app"]
    assert app["severity"] == severity, app
    assert app["details"]["app"] == spec


def test_doctor_run_by_a_user_asks_for_root_not_for_packages(tmp_path):
    require_root()  # to become another user
    require_commands("unshare", "iptables-save", "nft")
    # nobody, in a user namespace of its own: no capability over this host's
    # network (iptables and nft fail as for any user), while the files of
    # root's interpreter stay readable (CI's Python lives under a 0700 /root,
    # which setpriv's real nobody could not enter).
    nobody = ["unshare", "--map-user=65534", "--map-group=65534"]
    result = subprocess.run(
        [*nobody, script("flask-selfhost"), "doctor", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    (nat,) = [f for f in report["findings"] if f["topic"] == "nat" and f["severity"] == "unknown"]
    assert 'Run as root: sudo "$(command -v flask-selfhost)" doctor' in nat["message"]
    assert "Install" not in nat["message"]


def test_the_sudo_line_of_the_docs_works_from_a_venv(tmp_path):
    """sudo resets PATH: ``sudo flask-selfhost`` finds no script in a venv.
    The docs' line keeps the venv's script by its path."""
    require_commands("sudo")
    line = 'sudo "$(command -v flask-selfhost)" --version'
    path = f"{Path(script('flask-selfhost')).parent}:/usr/bin:/bin"
    done = subprocess.run(
        ["bash", "-c", line], capture_output=True, text=True, env={"PATH": path}, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"flask-selfhost {flask_selfhost.__version__}"
