"""The flask-selfhost console script and the `flask selfhost` commands, run as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.servers import ROOT


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize(
    ("remote", "local", "status", "words"),
    [
        ("127.0.0.1", None, 0, "allowed: the client is loopback"),
        ("192.168.0.13", "192.168.0.13", 0, "allowed: the client is the address"),
        ("10.0.0.2", "127.0.0.1", 1, "refused: the client is another host"),
        ("", None, 1, "refused: the client address is missing"),
    ],
)
def test_check(remote, local, status, words):
    result = run("flask-selfhost", "check", remote, *([local] if local else []))
    assert result.returncode == status, result.stderr
    assert words in result.stdout


def test_check_is_the_same_module_entry_point():
    result = run(sys.executable, "-m", "flask_selfhost.cli", "check", "::ffff:127.0.0.1")
    assert result.returncode == 0 and "loopback" in result.stdout


def test_flask_selfhost_status():
    guarded = run("flask", "--app", "demo_app:app", "selfhost", "status")
    assert guarded.returncode == 0 and "guarded by SelfHost" in guarded.stdout
    unguarded = run("flask", "--app", "demo_app:unguarded_app", "selfhost", "status")
    assert unguarded.returncode == 1 and "NOT guarded" in unguarded.stdout
