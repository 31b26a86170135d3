"""What a refused client reads: one fixed text per rule, on every front.

The full reason names the server, the proxy line or the option to change:
that is for the operator's log. A client on another host must not learn
from a refusal which server runs here or how it is configured.
"""

from __future__ import annotations

import asyncio

import pytest
from flask import Flask
from werkzeug.test import Client

from flask_selfhost import SelfHost, SelfHostMiddleware
from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.decision import PUBLIC_REASONS

#: Scopes written by hand name connections that do not exist (see the fixture).
pytestmark = pytest.mark.usefixtures("made_up_connections")

BODIES = {
    f"Forbidden: only clients on this server's own host may use it ({text}).\n"
    for text in PUBLIC_REASONS.values()
}
#: Words of the operator's reasons that a client must never read.
OPERATOR_WORDS = (
    "gunicorn", "granian", "waitress", "uvicorn", "hypercorn", "daphne", "uwsgi", "nginx",
    "trusted_proxies", "allowed_hosts", "trusted_origins", "unix_socket_is_local",
    "--", "bind", "ProxyFix", "SERVER_ADDR",
)  # fmt: skip

#: (REMOTE_ADDR, extra environ, expected rule text): refusals whose full
#: reasons name a server or an option.
WSGI_REFUSALS = [
    ("10.0.0.2", {"SERVER_SOFTWARE": "granian"}, "not from this host"),
    ("10.0.0.2", {"SERVER_SOFTWARE": "bjoern"}, "not from this host"),
    ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": "127.0.0.1"}, "relayed request not accepted"),
    ("127.0.0.1", {"PROXY_PROTOCOL": "TCP4"}, "relayed request not accepted"),
    ("127.0.0.1", {"HTTP_HOST": "evil.example"}, "Host not allowed"),
    ("127.0.0.1", {"HTTP_ORIGIN": "http://evil.example"}, "cross-site request"),
    ("127.0.0.1", {"HTTP_SEC_FETCH_SITE": "cross-site"}, "cross-site request"),
    ("localhost", {"SERVER_SOFTWARE": "waitress"}, "not from this host"),  # unix socket
]


def plain_app(environ, start_response):
    start_response("200 OK", [])
    return [b"app"]


def flask_app():
    app = Flask(__name__)
    app.get("/")(lambda: "app")
    SelfHost(app)
    return app


@pytest.mark.parametrize("front", ["middleware", "extension"])
@pytest.mark.parametrize(("remote", "extra", "text"), WSGI_REFUSALS)
def test_a_wsgi_refusal_names_the_rule_only(front, remote, extra, text, logged):
    app = SelfHostMiddleware(plain_app) if front == "middleware" else flask_app()
    environ = {"REMOTE_ADDR": remote, **extra}
    host = environ.pop("HTTP_HOST", "localhost")  # the test client sets it from the URL
    reply = Client(app).get("/", environ_base=environ, headers={"Host": host})
    body = reply.get_data(as_text=True)
    assert reply.status_code == 403 and body in BODIES and f"({text})" in body, body
    assert not [word for word in OPERATOR_WORDS if word in body], body
    assert len(logged()) > len(body)  # the log has the whole reason


def run_asgi(scope):
    sent = []

    async def app(scope, receive, send):
        raise AssertionError("a refused request reached the app")

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        sent.append(message)

    asyncio.run(SelfHostASGIMiddleware(app)(scope, receive, send))
    return sent


@pytest.mark.parametrize(
    ("client", "server", "headers", "text"),
    [
        ("10.0.0.2", ("0.0.0.0", 8000), [], "not from this host"),  # granian's bind address
        (None, None, [], "not from this host"),  # hypercorn's unix socket
        ("127.0.0.1", ("127.0.0.1", 8000), [(b"x-forwarded-for", b"::1")], "relayed request"),
        ("127.0.0.1", ("127.0.0.1", 8000), [(b"host", b"evil.example")], "Host not allowed"),
    ],
)
def test_an_asgi_refusal_names_the_rule_only(client, server, headers, text, logged):
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "scheme": "http",
        "http_version": "1.1",
        "client": None if client is None else (client, 40000),
        "server": server,
        "headers": headers,
    }
    start, body_message = run_asgi(scope)
    body = body_message["body"].decode()
    assert start["status"] == 403 and body in BODIES and text in body, body
    assert not [word for word in OPERATOR_WORDS if word in body], body
    assert len(logged()) > len(body)
