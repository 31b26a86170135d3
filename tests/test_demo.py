"""The demo's gunicorn configurations, started as a user starts them, and the
start-up lines of flask_selfhost.gunicorn.announce."""

from __future__ import annotations

import re
import time
from pathlib import Path

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
    assert (
        "selfhost=refused method=GET path=/admin remote=::ffff:127.0.0.1 local=::ffff:127.0.0.1"
        in log
    )


#: gunicorn's error-log format: "[2026-11-22 17:02:03 +0000] [1234] [WARNING] ..."
ERROR_LOG_LINE = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(\d+)\] \[(\w+)\] (.*)$", re.MULTILINE
)


def worker_pids(arbiter: int) -> set[int]:
    children = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()
    return {int(pid) for pid in children}


@pytest.mark.parametrize("level", ["info", "debug"])
def test_refusals_go_to_gunicorns_error_log(tmp_path, level):
    """Under gunicorn the guard's lines would go to stderr through Python's
    last-resort handler (no time, level or pid) and never reach
    --error-logfile. The demo configs' post_worker_init fixes that."""
    port = free_port("::")
    error_log = tmp_path / "error.log"
    env = {"DEMO_PORT": str(port), "DEMO_WORKERS": "1"}
    args = ["-c", "demo_app/gunicorn_guarded.py", "--error-logfile", str(error_log)]
    with gunicorn([*args, "--log-level", level], ("127.0.0.1", port), tmp_path, env=env) as server:
        refused = request("127.0.0.1", port, "/admin", headers={"X-Forwarded-For": "10.0.0.2"})
        assert refused.status == 403
        assert request("127.0.0.1", port, "/admin").status == 200
        workers = worker_pids(server.process.pid)
        deadline = time.monotonic() + 10
        while "selfhost=refused method=GET path=/admin" not in error_log.read_text():
            assert time.monotonic() < deadline, error_log.read_text()
            time.sleep(0.05)
    lines = ERROR_LOG_LINE.findall(error_log.read_text())  # (pid, level, message)
    (refusal,) = [
        line for line in lines if line[2].startswith("selfhost=refused method=GET path=/admin")
    ]
    pid, severity, message = refusal
    assert severity == "WARNING"
    assert int(pid) in workers  # the worker that judged the request, not the arbiter
    assert "remote=::ffff:127.0.0.1 local=::ffff:127.0.0.1" in message
    allowed = [
        line for line in lines if line[2].startswith("selfhost=allowed method=GET path=/admin")
    ]
    assert len(allowed) == (1 if level == "debug" else 0)  # DEBUG lines at --log-level debug
    # Not also on stderr through the last-resort handler (or the root logger).
    assert "selfhost=refused method=GET path=/admin" not in server.log()
