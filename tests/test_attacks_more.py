"""More attacks on the WSGI fronts, against real servers from another host.

The other host is a real network namespace joined by a veth pair
(:mod:`tests.netns`); requests are raw sockets.

1. gunicorn's cleartext HTTP/2 (h2c) behind a PROXY protocol relay: gunicorn
   drops the PROXY header's client on HTTP/2 requests, so the relay itself
   (loopback) looked like the client.
2. ``allow_remote`` views, under the extension and under the middleware with
   rerouting middleware inside it, and ``local_only`` alone: request-line,
   path, Host and header tricks, keep-alive and pipelining, on gunicorn,
   waitress and Werkzeug. Pinned down: no private view ever answers.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from .netns import proxy_protocol_relay, raw_exchange, require_netns, server_in, two_hosts
from .servers import gunicorn_command

pytestmark = [pytest.mark.slow, pytest.mark.root]

APP_PORT, RELAY_PORT = 8000, 8100


@pytest.fixture
def hosts():
    require_netns()
    with two_hosts() as made:
        yield made


# 1. h2c behind a PROXY protocol relay -----------------------------------------

#: An HTTP/1.1 request that asks to continue as HTTP/2 (RFC 7540 section 3.2);
#: gunicorn answers it, as stream 1, on the upgraded connection.
H2C_UPGRADE = (
    "GET /admin HTTP/1.1\r\nHost: localhost\r\n"
    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    "HTTP2-Settings: AAMAAABkAAQAAP__\r\n{extra}\r\n"
)


@pytest.mark.parametrize("options", ["trusted_proxies='127.0.0.1'", ""], ids=["trusted", "default"])
@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_h2c_through_a_proxy_protocol_relay_is_refused(hosts, tmp_path, worker, options):
    """HAProxy-style ``send-proxy`` relay on this host, gunicorn with
    ``--proxy-protocol`` and h2c upgrades on: the other host upgrades its
    connection to HTTP/2. gunicorn's HTTP/2 requests carry no PROXY_PROTOCOL
    and name the relay (127.0.0.1) as the client, so the guard saw a
    loopback client, or a trusted proxy vouching for an X-Forwarded-For the
    other host wrote itself."""
    if worker == "gevent":
        pytest.importorskip("gevent", reason="needs gevent (the test extra installs it)")
    pytest.importorskip("h2", reason="gunicorn's HTTP/2 needs the h2 package")
    command = gunicorn_command(
        "--bind", f"127.0.0.1:{APP_PORT}", "--worker-class", worker,
        *(["--threads", "2"] if worker == "gthread" else []),
        "--proxy-protocol", "v1", "--proxy-allow-from", "127.0.0.1",
        "--http-protocols", "h2,h1", "--http2-cleartext", "upgrade",
        f"tests.nginx:guarded_app({options})",
    )  # fmt: skip
    listen = (hosts.server_ip4, RELAY_PORT)
    with (
        server_in(hosts.server_ns, command, tmp_path, f"gunicorn-{worker}", port=APP_PORT),
        proxy_protocol_relay(hosts.server_ns, listen, ("127.0.0.1", APP_PORT), 1),
    ):
        for extra in ("", "X-Forwarded-For: 127.0.0.1\r\n"):
            upgrade = H2C_UPGRADE.format(extra=extra).encode()
            statuses, text = raw_exchange(hosts.client_ns, *listen, [upgrade], False, 2.0)
            assert statuses == [101], text  # gunicorn did switch to HTTP/2
            # The app (tests.nginx.report) answers with JSON naming the client.
            assert '"remote"' not in text, (extra, text)
            assert "Forbidden: only clients on this server's own host" in text, (extra, text)


# 2. allow_remote and local_only, probed from the other host --------------------

ATTACKED_APP = """
import os

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_selfhost import SelfHost, SelfHostMiddleware, allow_remote, local_only
from tests.apps import MethodOverride


def build():
    app = Flask(__name__)
    app.add_url_rule("/healthz", "healthz", allow_remote(lambda: "public"))
    app.add_url_rule("/admin", "admin", lambda: "SECRET admin", methods=["GET", "POST"])
    app.add_url_rule("/items", "list", allow_remote(lambda: "list"), methods=["GET"])
    app.add_url_rule("/items", "create", lambda: "SECRET created", methods=["POST"])
    app.add_url_rule("/local", "local", local_only(lambda: "SECRET local"))
    app.add_url_rule("/p/<path:page>", "page", allow_remote(lambda page: "public " + page))
    return app


mounted = Flask("mounted")
mounted.add_url_rule("/", "mounted", lambda: "SECRET mounted")
app = build()
if os.environ["GUARD"] == "extension":
    SelfHost(app)
elif os.environ["GUARD"] == "middleware":
    inner = ProxyFix(app.wsgi_app, x_for=1, x_host=1, x_prefix=1)
    inner = DispatcherMiddleware(MethodOverride(inner), {"/p/mnt": mounted.wsgi_app})
    app = SelfHostMiddleware(inner)
# else only local_only guards /local
"""


def request(line: str, *headers: str, body: bytes = b"") -> bytes:
    length = [f"Content-Length: {len(body)}"] if body else []
    return "".join(f"{part}\r\n" for part in (line, *headers, *length, "")).encode() + body


def probes(own: str) -> list[list[bytes]]:
    """Each a list of requests sent on one connection."""
    host = f"Host: {own}:{APP_PORT}"
    private = ["/admin", "//admin", "/%61dmin", "/admin;x", "/./admin", "/healthz/../admin"]
    return [
        *([request(f"GET {path} HTTP/1.1", host)] for path in private),
        [request(f"GET http://127.0.0.1:{APP_PORT}/admin HTTP/1.1", "Host: evil.example")],
        [request("GET /admin HTTP/1.0")],
        *(
            [request("GET /admin HTTP/1.1", f"Host: {name}")]
            for name in ("localhost.", "LOCALHOST")
        ),
        [request("GET /admin HTTP/1.1", host, "X_Forwarded_For: 127.0.0.1")],
        [request("GET /admin HTTP/1.1", host, "X-Forwarded-For: 127.0.0.1")],
        [request("POST /admin HTTP/1.1", host, "Origin: null", body=b"x")],
        [request("POST /items HTTP/1.1", host, body=b"x")],
        [request("GET /items HTTP/1.1", host, "X-HTTP-Method-Override: POST")],
        [request("GET /healthz HTTP/1.1", host, "X-Forwarded-Host: localhost")],
        [request("GET /healthz HTTP/1.1", host, "X-Forwarded-Prefix: /admin")],
        [request("GET /p/mnt/ HTTP/1.1", host)],
        [request("GET /local HTTP/1.1", host)],
        [request("OPTIONS /local HTTP/1.1", host)],
        *(
            [request(f"{method} /healthz HTTP/1.1", host), request("GET /admin HTTP/1.1", host)]
            for method in ("HEAD", "OPTIONS", "GET")
        ),
        [request("GET /healthz HTTP/1.1", host, body=request("GET /admin HTTP/1.1", host))],
    ]


SERVERS = {
    "gunicorn-gthread": [
        sys.executable, "-m", "gunicorn", "--no-control-socket", "--bind", f"0.0.0.0:{APP_PORT}",
        "--worker-class", "gthread", "--threads", "2", "--keep-alive", "5", "attacked:app",
    ],
    "waitress": [sys.executable, "-m", "waitress", f"--listen=0.0.0.0:{APP_PORT}", "attacked:app"],
    "werkzeug": [
        sys.executable, "-c",
        "import attacked, werkzeug.serving as s;"
        f"s.run_simple('0.0.0.0', {APP_PORT}, attacked.app, threaded=True)",
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("server", "guard"),
    [
        ("gunicorn-gthread", "extension"),
        ("gunicorn-gthread", "middleware"),
        ("gunicorn-gthread", "local_only"),
        ("waitress", "middleware"),
        ("werkzeug", "middleware"),
    ],
)
def test_no_private_view_answers_the_other_host(hosts, tmp_path, server, guard):
    """Whatever the request line, path, Host or headers, on one connection or
    many: only the allow_remote views answer the other host (and a view that
    only local_only guards refuses it); with the middleware, the inner
    middleware (ProxyFix, a method override, a mounted app) cannot turn an
    exempt request into a private one."""
    (tmp_path / "attacked.py").write_text(textwrap.dedent(ATTACKED_APP))
    with server_in(hosts.server_ns, SERVERS[server], tmp_path, server, port=APP_PORT, GUARD=guard):
        for payloads in probes(hosts.server_ip4):
            for pipelined in (False, True):
                statuses, text = raw_exchange(
                    hosts.client_ns, hosts.server_ip4, APP_PORT, payloads, pipelined, 0.3
                )
                assert statuses, (payloads, text)
                if guard == "local_only":
                    assert "SECRET local" not in text, (payloads, text)
                else:
                    assert "SECRET" not in text, (payloads, text)
                    assert set(statuses) <= {200, 400, 403}, (payloads, text)
