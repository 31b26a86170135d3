"""Shared fixtures. With SELFHOST_NO_SKIP=1 (set by .ci/run) a skipped test fails,
so that CI cannot pass by skipping what it was meant to prove."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
from hypothesis import settings

# No deadline: a slow or busy machine must not fail a property test by its
# timing (speed is measured by benchmarks/, never by tests).
settings.register_profile("selfhost", deadline=None)
settings.load_profile("selfhost")

NO_SKIP = os.environ.get("SELFHOST_NO_SKIP") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under SELFHOST_NO_SKIP=1: {reason}"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, iptables, nginx)")


def require_commands(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian packages; .ci/run installs them)")


@pytest.fixture(autouse=True)
def _fresh_proxy_protocol_memory():
    """A PROXY protocol header turns the fronts' memory of common requests
    off for the rest of the process (flask_selfhost.accepted); each test
    starts with it on, as a new server process does."""
    yield
    from flask_selfhost import accepted, environ

    environ.proxy_protocol_seen = False
    environ.proxy_connections.clear()
    accepted._remembering = True


@pytest.fixture
def made_up_connections(monkeypatch):
    """For tests of the other rules through ASGI scopes written by hand:
    their ``client`` and ``server`` name connections that do not exist,
    which the kernel witness refuses as not found. Here the kernel vouches
    for every such client; tests/test_kernel_witness.py and
    tests/test_peer_socket.py ask the real kernel about real connections."""
    from flask_selfhost import peer_socket
    from flask_selfhost.facts import PeerOwner

    def vouched(peer: str, peer_port: int, local: str, local_port: int) -> peer_socket.Verdict:
        owner = PeerOwner(os.geteuid(), 1)
        made_up = "a connection made up by the test"
        return peer_socket.Verdict(True, peer_socket.HELD, made_up, owner)

    monkeypatch.setattr(peer_socket, "check_client", vouched)


@pytest.fixture
def logged(caplog):
    """The guard's log so far, as one text: where a refusal's full reason is
    read (the client is told only a fixed text per rule)."""
    caplog.set_level(logging.WARNING, logger="flask_selfhost")
    return lambda: "\n".join(r.getMessage() for r in caplog.records if r.name == "flask_selfhost")
