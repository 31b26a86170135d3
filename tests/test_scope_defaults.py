"""Scope keys a server leaves out mean what the ASGI spec says.

daphne's WebSocket scope has no ``scheme`` (the spec's default is ``ws``).
Read as unknown, no Origin matched it, so the app's own page was refused
its WebSocket under daphne (Chromium sends no ``Sec-Fetch-*`` on WebSocket
handshakes). The adapter applies the spec's default for every key that has
one, and a key with no default stays unknown: refused, never guessed. The
common path reads keys directly; a missing one sends the request to the
full rules.

The real thing: daphne serving a guarded app, and a raw WebSocket handshake
with the app's own Origin and no ``Sec-Fetch-*``. Chromium, Firefox and
WebKit opening the ASGI demo's own WebSocket under daphne are cases of
tests/test_engines.py.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import sys
import textwrap
import time

import pytest

from flask_selfhost import asgi
from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.scope import evaluate_scope, facts_from_scope, scope_value

from .servers import free_port, server_process

#: Scopes written by hand name connections that do not exist (see the fixture).
pytestmark = pytest.mark.usefixtures("made_up_connections")


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"the app"})


def run(guard, scope):
    sent = []

    async def receive():
        return {"type": "websocket.connect" if scope["type"] == "websocket" else "http.request"}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return sent


def daphne_websocket_scope(host: str, origin: str | None) -> dict:
    """What daphne 4 gives a WebSocket app (``daphne/ws_protocol.py``): no
    ``scheme``, no ``http_version``, no ``extensions``."""
    headers = [(b"host", host.encode()), (b"upgrade", b"websocket")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "headers": headers,
        "query_string": b"",
        "client": ["127.0.0.1", 50000],
        "server": ["127.0.0.1", 8000],
        "subprotocols": [],
    }


@pytest.mark.parametrize(
    "host, origin",
    [("127.0.0.1:8000", "http://127.0.0.1:8000"), ("localhost:8000", "http://localhost:8000")],
)
def test_own_websocket_without_a_scheme_is_accepted(host, origin):
    handshake = daphne_websocket_scope(host, origin)
    assert facts_from_scope(handshake).scheme == "http"  # ws, the spec's default
    assert run(SelfHostASGIMiddleware(app), handshake) == [{"type": "websocket.accept"}]


@pytest.mark.parametrize(
    "origin",
    ["http://evil.test:8000", "https://127.0.0.1:8000", "http://127.0.0.1:8001", "null"],
)
def test_other_websocket_without_a_scheme_is_refused(origin):
    handshake = daphne_websocket_scope("127.0.0.1:8000", origin)
    assert run(SelfHostASGIMiddleware(app), handshake) == [
        {"type": "websocket.close", "code": 1008}
    ]


def test_http_scope_without_a_scheme_is_http():
    request = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000")],
        "client": ["127.0.0.1", 50000],
        "server": ["127.0.0.1", 8000],
    }
    assert facts_from_scope(request).scheme == "http"
    assert run(SelfHostASGIMiddleware(app), request)[0]["status"] == 200
    request["headers"][1] = (b"origin", b"https://127.0.0.1:8000")
    assert run(SelfHostASGIMiddleware(app), request)[0]["status"] == 403


@pytest.mark.parametrize("scheme", ["", None, 7, b"ws"])
def test_a_scheme_present_but_unusable_matches_no_origin(scheme):
    """The spec says a scheme is never empty: present and unusable is
    unknown, never the default."""
    handshake = daphne_websocket_scope("127.0.0.1:8000", "http://127.0.0.1:8000")
    handshake["scheme"] = scheme
    assert facts_from_scope(handshake).scheme is None
    assert run(SelfHostASGIMiddleware(app), handshake)[0]["type"] == "websocket.close"


@pytest.mark.parametrize("scheme", ["WSS", "wss", "https"])
def test_a_secure_scheme_is_read_in_any_case(scheme):
    handshake = daphne_websocket_scope("127.0.0.1:8000", "https://127.0.0.1:8000")
    handshake["scheme"] = scheme
    assert facts_from_scope(handshake).scheme == "https"
    assert run(SelfHostASGIMiddleware(app), handshake) == [{"type": "websocket.accept"}]


def test_keys_without_a_default_stay_unknown():
    assert scope_value({"type": "http"}, "http_version") is None
    assert scope_value({"type": "websocket"}, "http_version") == "1.1"
    assert scope_value({"type": "websocket"}, "scheme") == "ws"
    assert scope_value({"type": "http"}, "scheme") == "http"
    assert scope_value({"type": ["http"]}, "scheme") is None  # an odd type: no default
    assert scope_value({}, "scheme") is None


@pytest.mark.parametrize("kind", ["http", "websocket"])
def test_missing_headers_are_unknown_not_empty(kind):
    """The spec gives ``headers`` no default: a scope without them may have
    had an Origin or a Host that names another site, so it is refused."""
    handshake = daphne_websocket_scope("127.0.0.1:8000", None)
    handshake.update(type=kind, method="GET", http_version="1.1")
    del handshake["headers"]
    assert facts_from_scope(handshake).host == ""
    sent = run(SelfHostASGIMiddleware(app), handshake)
    assert sent[0]["type"] == "websocket.close" if kind == "websocket" else sent[0]["status"] == 403


def test_common_path_sends_a_scope_with_a_missing_key_to_the_full_rules(monkeypatch):
    """A loopback client the common path knows, in a scope with no
    ``http_version`` (an HTTP scope has no default for it): the full rules
    judge it, and grant it."""
    guard = SelfHostASGIMiddleware(app)
    request = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ["127.0.0.1", 50000],
        "server": ["127.0.0.1", 8000],
    }
    assert run(guard, request)[0]["status"] == 200  # the grant the common path remembers
    judged = []

    def counting(scope, options, connection=None):
        judged.append(scope)
        return evaluate_scope(scope, options, connection)

    monkeypatch.setattr(asgi, "evaluate_scope", counting)
    assert run(guard, request)[0]["status"] == 200
    assert judged == []  # the common path took it
    del request["http_version"]
    assert run(guard, request)[0]["status"] == 200
    assert judged == [request]


# ------------------------------------------------------------------ real daphne

APP = """
from flask_selfhost.asgi import SelfHostASGIMiddleware


async def socket_app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "scheme=" + str(scope.get("scheme"))})
        await send({"type": "websocket.close"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


app = SelfHostASGIMiddleware(socket_app)
"""


def handshake(port: int, host: str, origin: str | None) -> tuple[int, bytes]:
    """A raw WebSocket handshake to ``127.0.0.1:port``, as Chromium sends it
    to a plain-http page's own server (no ``Sec-Fetch-*``): the status, and
    whatever followed the response head (the app's first frame)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *([f"Origin: {origin}"] if origin is not None else []),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        reply = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in reply or (
            reply.startswith(b"HTTP/1.1 101") and b"scheme=" not in reply
        ):
            chunk = client.recv(4096)
            if not chunk or time.monotonic() > deadline:
                break
            reply += chunk
    head, _, rest = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


@pytest.mark.slow
def test_daphne_own_websocket_is_accepted_and_another_sites_refused(tmp_path):
    pytest.importorskip("daphne", reason="needs daphne (the test extra installs it)")
    (tmp_path / "socket_app.py").write_text(textwrap.dedent(APP))
    port = free_port()
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    with server_process(
        [*command, "socket_app:app"],
        ("127.0.0.1", port),
        tmp_path,
        {"PYTHONPATH": path},
        name="daphne",
    ) as server:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            status, frame = handshake(port, host, f"http://{host}")
            assert status == 101, server.log()
            assert b"scheme=None" in frame  # daphne gave the app no scheme
        for origin in (f"http://evil.test:{port}", "null", f"https://127.0.0.1:{port}"):
            assert handshake(port, f"127.0.0.1:{port}", origin)[0] == 403
        assert handshake(port, f"127.0.0.1:{port}", None)[0] == 101  # not a browser
        deadline = time.monotonic() + 5
        while server.log().count("rule=cross-site") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        log = server.log()
    # peer_uid: the kernel names this process's user as the owner of the
    # client's socket; peer_process: a logged refusal names its holder, this
    # test's own interpreter.
    line = re.compile(
        "selfhost=refused method=GET path=/ws remote=127.0.0.1 local=127.0.0.1 "
        rf"peer_uid={os.geteuid()} peer_process=python[0-9.]* rule=cross-site"
    )
    assert len(line.findall(log)) == 3, log
    assert log.count("selfhost=refused ") == 3  # the own handshakes and the non-browser passed
