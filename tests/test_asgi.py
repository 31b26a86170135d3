"""The ASGI front: the same rules, the same answers, from an ASGI scope.

Scopes here are what uvicorn, hypercorn, daphne and granian put in them
(``shared/notes/asgi.md``); the real servers are in the server matrix
(``tests/test_server_matrix.py``).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from werkzeug.test import Client

from flask_selfhost import SelfHostMiddleware
from flask_selfhost.asgi import SelfHostASGIMiddleware, asgi_guard_options

#: Scopes written by hand name connections that do not exist (see the fixture).
pytestmark = pytest.mark.usefixtures("made_up_connections")


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"the app"})


def run(guard, scope):
    """Call ``guard`` with ``scope``; the messages it sent."""
    sent = []

    async def receive():
        return (
            {"type": "websocket.connect"}
            if scope["type"] == "websocket"
            else {"type": "http.request"}
        )

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return sent


def scope(client="127.0.0.1", server=("127.0.0.1", 8000), kind="http", method="GET", **headers):
    return {
        "type": kind,
        "method": method,
        "path": "/admin",
        "raw_path": b"/admin",
        "query_string": b"",
        "root_path": "",
        "scheme": "ws" if kind == "websocket" else "http",
        "client": None if client is None else (client, 50000),
        "server": server,
        "headers": [
            (name.replace("_", "-").lower().encode(), value.encode())
            for name, value in headers.items()
        ],
        "extensions": {},
    }


def status(sent):
    return sent[0].get("status") if sent[0]["type"].endswith("response.start") else sent[0]["type"]


def test_lifespan_passes_through():
    seen = []

    async def lifespan_app(scope, receive, send):
        seen.append(scope["type"])

    run(SelfHostASGIMiddleware(lifespan_app), {"type": "lifespan"})
    assert seen == ["lifespan"]


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 8000), 200),
        ("::1", ("::1", 8000), 200),
        ("192.0.2.7", ("192.0.2.7", 8000), 200),  # this host via its own address
        ("::ffff:192.0.2.7", ("::ffff:192.0.2.7", 8000), 200),  # hypercorn on [::]
        ("10.0.0.2", ("192.0.2.7", 8000), 403),  # another host
        ("192.0.2.7", ("0.0.0.0", "8000"), 403),  # granian: its bind address
        ("127.0.0.1", ("0.0.0.0", "8000"), 200),
        (None, None, 403),  # hypercorn, daphne: unix socket, no addresses
        ("", ("/run/app.sock", "0"), 200),  # granian's unix socket (unix_socket_is_local)
        (None, ("/run/app.sock", None), 200),  # uvicorn's
    ],
)
def test_the_client_rule_from_a_scope(client, server, expected):
    guard = SelfHostASGIMiddleware(app, unix_socket_is_local=True)
    assert status(run(guard, scope(client, server, host="localhost"))) == expected


def test_the_reasons_name_the_fix_in_the_log_only(logged):
    guard = SelfHostASGIMiddleware(app)
    sent = run(guard, scope("192.0.2.7", ("0.0.0.0", "8000")))
    assert "bind the server to 127.0.0.1" in logged()
    assert b"(not from this host)" in sent[1]["body"] and b"bind" not in sent[1]["body"]
    sent = run(SelfHostASGIMiddleware(app, unix_socket_is_local=True), scope(None, None))
    assert "unix_socket_is_local cannot work" in logged()
    assert b"unix" not in sent[1]["body"]


def test_a_refusal_is_the_same_as_the_wsgi_fronts(caplog):
    def wsgi_app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    with caplog.at_level(logging.WARNING, logger="flask_selfhost"):
        sent = run(SelfHostASGIMiddleware(app), scope("10.0.0.2", ("192.0.2.7", 8000)))
        wsgi = Client(SelfHostMiddleware(wsgi_app)).get(
            "/admin",
            environ_base={
                "REMOTE_ADDR": "10.0.0.2",
                "SERVER_ADDR": "192.0.2.7",
                "mod_wsgi.version": (4, 9, 0),
            },
        )
    assert sent[0]["status"] == wsgi.status_code == 403
    assert sent[1]["body"] == wsgi.data
    headers = {name.decode(): value.decode() for name, value in sent[0]["headers"]}
    assert headers["cache-control"] == "no-store" and headers["content-type"].startswith(
        "text/plain"
    )
    asgi_line, wsgi_line = (record.getMessage() for record in caplog.records)
    assert asgi_line == wsgi_line


@pytest.mark.parametrize(
    "headers",
    [
        {
            "origin": "http://evil.example",
            "sec_fetch_site": "cross-site",
            "sec_fetch_mode": "websocket",
        },
        {"origin": "http://evil.example"},  # plain http, LAN URL: Origin only
        {"origin": "null"},
    ],
)
def test_a_cross_site_websocket_is_refused_before_the_app(headers):
    guard = SelfHostASGIMiddleware(app)
    handshake = scope(kind="websocket", host="127.0.0.1:8000", **headers)
    assert run(guard, handshake) == [{"type": "websocket.close", "code": 1008}]
    handshake["extensions"] = {"websocket.http.response": {}}
    sent = run(guard, handshake)
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 403


def test_the_apps_own_websocket_passes():
    guard = SelfHostASGIMiddleware(app)
    own = scope(kind="websocket", host="127.0.0.1:8000", origin="http://127.0.0.1:8000")
    assert run(guard, own) == [{"type": "websocket.accept"}]
    fetch = dict(sec_fetch_site="same-origin", sec_fetch_mode="websocket")
    assert run(guard, scope(kind="websocket", host="localhost:8000", **fetch)) == [
        {"type": "websocket.accept"}
    ]


def test_dns_rebinding_is_refused(logged):
    sent = run(SelfHostASGIMiddleware(app), scope(host="evil.example:8000"))
    assert sent[0]["status"] == 403 and b"(Host not allowed)" in sent[1]["body"]
    assert "DNS rebinding" in logged()


@pytest.mark.parametrize("hosts", [["localhost", "evil.example"], ["localhost", "localhost"]])
def test_two_host_headers_are_refused(hosts):
    request = scope()
    request["headers"] = [(b"host", host.encode()) for host in hosts]
    assert status(run(SelfHostASGIMiddleware(app), request)) == 403


def test_browser_answers_vary_and_trusted_preflights_are_answered():
    guard = SelfHostASGIMiddleware(app, trusted_origins=["http://localhost:3000"])
    sent = run(guard, scope(host="localhost:8000", sec_fetch_site="same-origin"))
    assert (b"vary", b"Origin, Sec-Fetch-Site") in sent[0]["headers"]
    assert (b"x-app", b"1") in sent[0]["headers"]
    preflight = scope(
        method="OPTIONS",
        host="localhost:8000",
        origin="http://localhost:3000",
        access_control_request_method="PUT",
    )
    sent = run(guard, preflight)
    assert sent[0]["status"] == 204
    assert (b"access-control-allow-origin", b"http://localhost:3000") in sent[0]["headers"]


@pytest.mark.parametrize(
    ("client", "xff"),
    [
        ("127.0.0.1", "127.0.0.1"),  # uvicorn --forwarded-allow-ips='*', a direct attacker
        ("127.0.0.1", "127.0.0.1, 10.0.0.2"),  # daphne --proxy-headers: the left-most
        ("10.0.0.2", "10.0.0.2"),  # uvicorn behind nginx: the right-most
    ],
)
def test_a_client_the_server_took_from_a_header_is_refused(client, xff, logged):
    guard = SelfHostASGIMiddleware(app, trusted_proxies=["127.0.0.1"])
    sent = run(guard, scope(client, ("127.0.0.1", 8000), host="localhost", x_forwarded_for=xff))
    assert sent[0]["status"] == 403 and "--no-proxy-headers" in logged()


def test_a_client_the_server_took_from_a_header_is_logged_with_the_local_address(caplog):
    """Refused by the client rule like every refusal: the log line names the
    local address the connection arrived on, and the reason the setting."""
    caplog.set_level(logging.WARNING, logger="flask_selfhost")
    guard = SelfHostASGIMiddleware(app, trusted_proxies=["127.0.0.1"])
    relayed = scope("127.0.0.1", ("127.0.0.2", 8000), host="localhost", x_forwarded_for="127.0.0.1")
    assert status(run(guard, relayed)) == 403
    [line] = [r.getMessage() for r in caplog.records if r.name == "flask_selfhost"]
    assert "remote=127.0.0.1 local=127.0.0.2 rule=forwarded" in line
    assert "--no-proxy-headers" in line


def test_with_proxy_headers_off_a_trusted_proxy_is_judged():
    guard = SelfHostASGIMiddleware(app, trusted_proxies=["127.0.0.1"])
    relayed = scope("127.0.0.1", ("127.0.0.1", 8000), host="localhost", x_forwarded_for="10.0.0.2")
    assert status(run(guard, relayed)) == 403  # another host, relayed
    local = scope("127.0.0.1", ("127.0.0.1", 8000), host="localhost", x_forwarded_for="::1")
    assert status(run(guard, local)) == 200


def test_starlette_and_fastapi_recognise_the_middleware():
    fastapi = pytest.importorskip("fastapi", reason="needs fastapi (the test extra installs it)")
    api = fastapi.FastAPI()
    api.get("/admin")(lambda: {"ok": True})
    api.add_middleware(SelfHostASGIMiddleware, trusted_proxies=["127.0.0.1"])
    assert asgi_guard_options(api) is not None
    assert asgi_guard_options(SelfHostASGIMiddleware(app)) is not None
    assert asgi_guard_options(app) is None
    # Through the app itself: Starlette builds its stack with the middleware.
    assert status(run(api, scope("10.0.0.2", ("192.0.2.7", 8000), host="localhost"))) == 403
    # 127.0.0.2: the trusted proxy's own address sends headers or is refused.
    assert status(run(api, scope("127.0.0.2", ("127.0.0.1", 8000), host="localhost"))) == 200


def test_a_fastapi_route_guarded_by_a_dependency(logged):
    fastapi = pytest.importorskip("fastapi", reason="needs fastapi (the test extra installs it)")
    from flask_selfhost.fastapi import local_only

    api = fastapi.FastAPI()

    @api.get("/admin", dependencies=[fastapi.Depends(local_only())])
    def admin():
        return {"admin": True}

    @api.get("/healthz")
    def healthz():
        return {"ok": True}

    def get(path, client, **headers):
        request = scope(client, ("192.0.2.7", 8000), host="localhost", **headers)
        request["path"], request["raw_path"] = path, path.encode()
        return run(api, request)

    assert status(get("/admin", "127.0.0.1")) == 200
    assert status(get("/admin", "192.0.2.7")) == 200  # this host via its own address
    refused = get("/admin", "10.0.0.2")
    assert status(refused) == 403 and b"not from this host" in refused[1]["body"]
    assert "another host" in logged()
    assert (b"cache-control", b"no-store") in refused[0]["headers"]
    assert status(get("/admin", "127.0.0.1", origin="http://evil.example")) == 403
    assert status(get("/healthz", "10.0.0.2")) == 200  # unguarded route


def test_servers_see_an_asgi3_app():
    """uvicorn, hypercorn and daphne tell an ASGI 3 app from an ASGI 2 one by
    a coroutine ``__call__``: without it they call the guard as ASGI 2 and
    answer 500 (tests/test_asgi_hosts.py wraps apps directly under each)."""
    import inspect

    assert inspect.iscoroutinefunction(SelfHostASGIMiddleware(lambda *a: None).__call__)
