"""Real servers, real sockets: gunicorn and Werkzeug's server, no SERVER_ADDR,
so the local address must come from the connection socket."""

from __future__ import annotations

import json

import pytest

from tests.apps import flask_app, middleware_app
from tests.servers import free_port, gunicorn, request, unix_request, werkzeug_server

pytestmark = pytest.mark.slow


def whoami(host, port, path="/", source=None, headers=None):
    response = request(host, port, path, source=source, headers=headers)
    return response.status, (json.loads(response.body) if response.status == 200 else response.body)


@pytest.mark.parametrize("app", ["tests.apps:middleware_app", "tests.apps:flask_app"])
def test_gunicorn_on_all_ipv4_interfaces(tmp_path, app):
    port = free_port()
    path = "/" if app.endswith("middleware_app") else "/whoami"
    with gunicorn(["--bind", f"0.0.0.0:{port}", app], ("127.0.0.1", port), tmp_path) as server:
        status, seen = whoami("127.0.0.1", port, path)
        assert status == 200 and (seen["remote"], seen["local"]) == ("127.0.0.1", "127.0.0.1")
        # Dial 127.0.0.2: the socket, not SERVER_NAME (0.0.0.0), gives the local address.
        status, seen = whoami("127.0.0.2", port, path)
        assert status == 200 and seen["local"] == "127.0.0.2"
        # Bind the client to 127.0.0.3: remote 127.0.0.3, still loopback.
        status, seen = whoami("127.0.0.1", port, path, source="127.0.0.3")
        assert status == 200 and seen["remote"] == "127.0.0.3"
        if app.endswith("middleware_app"):
            assert seen["server_name"] == "0.0.0.0" and seen["server_addr"] is None
        # A proxy's request, from loopback, is refused and logged with the socket's address.
        status, body = whoami("127.0.0.2", port, path, headers={"X-Forwarded-For": "127.0.0.1"})
        assert status == 403, body
    assert "remote=127.0.0.1 local=127.0.0.2 rule=forwarded" in server.log()
    assert "forwarding headers" in server.log()


def test_gunicorn_dual_stack_listener_over_ipv4_and_ipv6(tmp_path):
    port = free_port("::")
    with gunicorn(["--bind", f"[::]:{port}", "tests.apps:middleware_app"], ("::1", port), tmp_path):
        status, seen = whoami("127.0.0.1", port)
        assert status == 200
        assert (seen["remote"], seen["local"]) == ("::ffff:127.0.0.1", "::ffff:127.0.0.1")
        status, seen = whoami("127.0.0.2", port)
        assert status == 200 and seen["local"] == "::ffff:127.0.0.2"
        status, seen = whoami("::1", port)
        assert status == 200 and (seen["remote"], seen["local"]) == ("::1", "::1")
        status, _ = whoami("::1", port, headers={"Forwarded": "for=127.0.0.1"})
        assert status == 403


def test_gunicorn_loopback_binding(tmp_path):
    port = free_port()
    with gunicorn(
        ["--bind", f"127.0.0.1:{port}", "tests.apps:middleware_app"], ("127.0.0.1", port), tmp_path
    ):
        status, seen = whoami("127.0.0.1", port)
        assert status == 200 and seen["local"] == "127.0.0.1"
        with pytest.raises(ConnectionRefusedError):
            request("127.0.0.2", port)  # nothing listens there


def test_gunicorn_unix_socket_is_refused_not_an_error(tmp_path):
    path = tmp_path / "app.sock"
    port = free_port()
    # A TCP listener too, only so that the helper can tell when gunicorn is up.
    args = ["--bind", f"unix:{path}", "--bind", f"127.0.0.1:{port}", "tests.apps:middleware_app"]
    with gunicorn(args, ("127.0.0.1", port), tmp_path) as server:
        assert unix_request(str(path)).status == 403
    refusal = 'selfhost=refused method=GET path=/ remote="" local=- peer=unix rule=source'
    assert refusal in server.log()


def test_werkzeug_server_from_two_loopback_addresses():
    with werkzeug_server(middleware_app, "127.0.0.1") as port:
        status, seen = whoami("127.0.0.1", port)
        assert status == 200 and (seen["remote"], seen["local"]) == ("127.0.0.1", "127.0.0.1")
        status, seen = whoami("127.0.0.1", port, source="127.0.0.2")
        assert status == 200 and seen["remote"] == "127.0.0.2"
        status, _ = whoami("127.0.0.1", port, headers={"X-Real-IP": "127.0.0.1"})
        assert status == 403


def test_werkzeug_server_on_all_interfaces_reads_the_socket():
    with werkzeug_server(flask_app, "0.0.0.0") as port:
        status, seen = whoami("127.0.0.2", port, "/whoami")
        assert status == 200 and seen["local"] == "127.0.0.2"
        status, _ = whoami("127.0.0.2", port, "/nowhere", headers={"X-Forwarded-Host": "x"})
        assert status == 403


def test_werkzeug_server_on_ipv6_loopback():
    with werkzeug_server(middleware_app, "::1") as port:
        status, seen = whoami("::1", port)
        assert status == 200 and (seen["remote"], seen["local"]) == ("::1", "::1")


def test_werkzeug_unix_socket_is_refused(tmp_path):
    path = tmp_path / "wz.sock"
    with werkzeug_server(middleware_app, f"unix://{path}"):
        assert unix_request(str(path)).status == 403
