"""The demo's gunicorn configurations, started as a user starts them, and the
start-up lines of flask_selfhost.gunicorn.announce."""

from __future__ import annotations

import pytest

from flask_selfhost.gunicorn import classify_listener, describe_listener
from tests.servers import free_port, gunicorn, request


@pytest.mark.parametrize(
    ("sockname", "kind", "shown"),
    [
        (("127.0.0.1", 8000), "loopback", "127.0.0.1:8000"),
        (("127.0.0.2", 80), "loopback", "127.0.0.2:80"),
        (("::1", 8000, 0, 0), "loopback", "[::1]:8000"),
        (("0.0.0.0", 8000), "wildcard", "0.0.0.0:8000"),
        (("::", 8000, 0, 0), "wildcard", "[::]:8000"),
        (("192.168.0.13", 8000), "address", "192.168.0.13:8000"),
        (("fd42::1", 8000, 0, 0), "address", "[fd42::1]:8000"),
        ("/run/app.sock", "unix", "unix:/run/app.sock"),
        (b"/run/app.sock", "unix", "unix:/run/app.sock"),
    ],
)
def test_classify_listener(sockname, kind, shown):
    assert classify_listener(sockname) == (kind, shown)


@pytest.mark.parametrize(
    ("kind", "guarded", "exposed"),
    [
        ("loopback", False, False),
        ("loopback", True, False),
        ("wildcard", True, False),
        ("wildcard", False, True),
        ("address", False, True),
        ("unix", False, True),
        ("unix", True, False),
    ],
)
def test_describe_listener_warns_when_nothing_refuses_other_hosts(kind, guarded, exposed):
    assert describe_listener(kind, guarded)[0] is exposed


def test_loopback_configuration(tmp_path):
    port = free_port("::1")
    env = {"DEMO_PORT": str(port), "DEMO_WORKERS": "1"}
    with gunicorn(
        ["-c", "demo_app/gunicorn_loopback.py"], ("127.0.0.1", port), tmp_path, env=env
    ) as server:
        assert request("127.0.0.1", port, "/admin").status == 200
        assert request("::1", port, "/admin").status == 200
        # Unguarded by design: strategy 1 relies on the binding alone.
        assert (
            request("127.0.0.1", port, "/admin", headers={"X-Forwarded-For": "203.0.113.9"}).status
            == 200
        )
        with pytest.raises(ConnectionRefusedError):
            request("127.0.0.2", port, "/admin")
    log = server.log()
    assert f"listening on 127.0.0.1:{port}: loopback binding (strategy 1)" in log
    assert f"listening on [::1]:{port}: loopback binding (strategy 1)" in log
    assert "DNAT" in log


def test_guarded_configuration(tmp_path):
    port = free_port("::")
    env = {"DEMO_PORT": str(port), "DEMO_WORKERS": "1"}
    with gunicorn(
        ["-c", "demo_app/gunicorn_guarded.py"], ("127.0.0.1", port), tmp_path, env=env
    ) as server:
        assert request("127.0.0.1", port, "/admin").status == 200
        assert request("::1", port, "/admin").status == 200
        assert request("127.0.0.2", port, "/healthz").status == 200
        refused = request("127.0.0.1", port, "/admin", headers={"X-Forwarded-For": "127.0.0.1"})
        assert refused.status == 403
    log = server.log()
    assert f"listening on [::]:{port}: every interface (strategy 3)" in log
    assert "flask_selfhost refuses them" in log
    assert "refused 'GET /admin' remote=::ffff:127.0.0.1 local=::ffff:127.0.0.1" in log
