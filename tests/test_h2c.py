"""Cleartext HTTP/2 (h2c): a front proxy that relays it becomes a tunnel.

A proxy on this host (HAProxy with ``option forwardfor``, nginx with the
usual WebSocket lines, Varnish's built-in VCL) relays another host's
``Upgrade: h2c``; hypercorn answers 101, and from then on the proxy relays
raw bytes. Every later HTTP/2 stream reaches the app from the proxy's
address (127.0.0.1) with no forwarding header, or with the one the other
host wrote itself. The client rule refuses cleartext HTTP/2 unless
``allow_cleartext_http2``; gunicorn's HTTP/2 whatever the options.

Here the rule and the adapters, without a server; tests/test_h2c_proxies.py
runs the attack through real proxies and servers.
"""

from __future__ import annotations

import logging

import pytest

from flask_selfhost import Options, SelfHostMiddleware
from flask_selfhost.decision import FORWARDED
from flask_selfhost.environ import facts_from_environ
from flask_selfhost.facts import (
    H2C,
    H2C_GUNICORN,
    HTTP2_GUNICORN_ASGI,
    KnownConnection,
    RequestFacts,
)
from flask_selfhost.forwarded import LOOPBACK_CLIENT
from flask_selfhost.guard import judge
from flask_selfhost.hidden_relays import CLEARTEXT_HTTP2, GUNICORN_ASGI_HTTP2, H2C_CLIENT_UNKNOWN
from flask_selfhost.scope import facts_from_scope

# 1. The rule: a table of facts -------------------------------------------------

LOOPBACK = KnownConnection(local="127.0.0.1", peer="127.0.0.1")
TRUSTED = {"trusted_proxies": ["127.0.0.1", "::1"]}


def facts(http2: str | None, **more) -> RequestFacts:
    return RequestFacts("127.0.0.1", LOOPBACK, "localhost", "http", "GET", http2=http2, **more)


RELAYED = {"relayed": True, "x_forwarded_for": "127.0.0.2"}

# (http2 fact, request, options) -> (allowed, reason)
TABLE = [
    (None, {}, {}, True, None),
    (H2C, {}, {}, False, CLEARTEXT_HTTP2),
    (H2C, RELAYED, TRUSTED, False, CLEARTEXT_HTTP2),
    (H2C, {}, {"allow_cleartext_http2": True}, True, None),
    (H2C, RELAYED, {"allow_cleartext_http2": True, **TRUSTED}, True, LOOPBACK_CLIENT),
    (H2C, RELAYED, {"allow_cleartext_http2": True}, False, None),  # relayed, untrusted
    (H2C_GUNICORN, {}, {"allow_cleartext_http2": True}, False, H2C_CLIENT_UNKNOWN),
    (H2C_GUNICORN, RELAYED, {"allow_cleartext_http2": True, **TRUSTED}, False, H2C_CLIENT_UNKNOWN),
    (HTTP2_GUNICORN_ASGI, {}, {"allow_cleartext_http2": True}, False, GUNICORN_ASGI_HTTP2),
    (HTTP2_GUNICORN_ASGI, RELAYED, TRUSTED, False, GUNICORN_ASGI_HTTP2),
    ("h3-something-new", {}, {"allow_cleartext_http2": True}, False, CLEARTEXT_HTTP2),
    ("", {}, {"allow_cleartext_http2": True}, False, CLEARTEXT_HTTP2),
]


@pytest.mark.parametrize(("http2", "request_", "options", "allowed", "reason"), TABLE)
def test_the_client_rule_on_http2(http2, request_, options, allowed, reason):
    """Cleartext HTTP/2 is refused before any header is read (a trusted
    proxy's X-Forwarded-For included: through a tunnel, the other host wrote
    it); allowed, it is judged like any request; gunicorn's HTTP/2 and any
    kind the rule does not know are refused whatever the options."""
    decision = judge(facts(http2, **request_), Options(**options))
    assert decision.allowed is allowed, decision
    if reason is not None:
        assert decision.reason == reason, decision
    if not allowed:
        assert decision.rule == FORWARDED and decision.local_addr == "127.0.0.1", decision


def test_the_reasons_name_the_fix_for_the_log():
    """The reasons go to the log: each names what to change."""
    assert "allow_cleartext_http2" in CLEARTEXT_HTTP2 and "Upgrade" in CLEARTEXT_HTTP2
    assert "--http-protocols h1" in GUNICORN_ASGI_HTTP2
    assert "HTTP/1.1 or TLS" in H2C_CLIENT_UNKNOWN


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_the_option_is_checked(value):
    with pytest.raises(TypeError, match="allow_cleartext_http2 must be True or False"):
        Options(allow_cleartext_http2=value)


# 2. The adapters: which requests are cleartext HTTP/2 ---------------------------


class TLSSocket:
    """Stands for an ``ssl.SSLSocket``: it has ``getpeercert``."""

    def getpeercert(self):
        return None


ENVIRON = {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "REQUEST_METHOD": "GET"}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http"}, None),
        ({"SERVER_PROTOCOL": "HTTP/1.0", "wsgi.url_scheme": "http"}, None),
        ({"SERVER_PROTOCOL": "HTTP/1", "wsgi.url_scheme": "http"}, None),  # granian, HTTP/1.0
        ({"wsgi.url_scheme": "http"}, None),  # missing: HTTP/1.1, as every server sends it
        ({"SERVER_PROTOCOL": "HTTP/2", "wsgi.url_scheme": "http"}, H2C),  # hypercorn, granian
        ({"SERVER_PROTOCOL": "HTTP/2", "wsgi.url_scheme": "https"}, None),
        ({"SERVER_PROTOCOL": "HTTP/2"}, H2C),  # no scheme: not TLS
        ({"SERVER_PROTOCOL": "HTTP/3", "wsgi.url_scheme": "http"}, H2C),  # odd: not HTTP/1
        ({"SERVER_PROTOCOL": "http/1.1", "wsgi.url_scheme": "http"}, H2C),
        ({"SERVER_PROTOCOL": b"HTTP/1.1", "wsgi.url_scheme": "http"}, H2C),
        ({"SERVER_PROTOCOL": None, "wsgi.url_scheme": "http"}, H2C),
        # gunicorn: "HTTP/2.0" and its mark; its socket says whether TLS was used,
        # since its wsgi.url_scheme follows X-Forwarded-Proto from its proxies.
        (
            {"SERVER_PROTOCOL": "HTTP/2.0", "wsgi.url_scheme": "https", "gunicorn.socket": None}
            | {"gunicorn.http2.priority_weight": 16},
            H2C_GUNICORN,
        ),
        (
            {"SERVER_PROTOCOL": "HTTP/2.0", "wsgi.url_scheme": "https"}
            | {"gunicorn.http2.priority_weight": 16, "gunicorn.socket": TLSSocket()},
            None,
        ),
        # ProxyFix before the guard: the scheme the server saw counts.
        (
            {"SERVER_PROTOCOL": "HTTP/2", "wsgi.url_scheme": "https"}
            | {"HTTP_X_FORWARDED_PROTO": "https"}
            | {"werkzeug.proxy_fix.orig": {"wsgi.url_scheme": "http", "REMOTE_ADDR": "::1"}},
            H2C,
        ),
    ],
)
def test_the_wsgi_fact(extra, expected):
    assert facts_from_environ({**ENVIRON, **extra}).http2 == expected


SCOPE = {"type": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"http_version": "1.1", "scheme": "http"}, None),
        ({"http_version": "1.0", "scheme": "http"}, None),
        ({"http_version": "1", "scheme": "http"}, None),
        ({"scheme": "http"}, None),  # missing: "1.1", as the spec says
        ({"http_version": "2", "scheme": "http"}, H2C),  # hypercorn's h2c
        ({"http_version": "2"}, H2C),  # no scheme: the spec's default, http
        ({"http_version": "2", "scheme": "https"}, None),
        ({"http_version": "3", "scheme": "https"}, None),  # HTTP/3 is always TLS
        ({"http_version": "2", "scheme": "ws", "type": "websocket"}, H2C),  # RFC 8441
        ({"http_version": "2", "scheme": "wss", "type": "websocket"}, None),
        ({"http_version": "2.0", "scheme": "http"}, H2C),  # odd: not HTTP/1
        ({"http_version": 2, "scheme": "http"}, H2C),
        ({"http_version": None, "scheme": "http"}, H2C),
        ({"http_version": "2", "scheme": b"https"}, H2C),
    ],
)
def test_the_asgi_fact(extra, expected):
    assert facts_from_scope({**SCOPE, **extra}).http2 == expected


def test_the_refusal_is_logged_with_the_fix(caplog):
    """The log line: the escaped request, the addresses, the rule and the reason."""

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"the app"]

    guarded = SelfHostMiddleware(app)
    environ = {**ENVIRON, "SERVER_PROTOCOL": "HTTP/2", "wsgi.url_scheme": "http"}
    environ["PATH_INFO"] = "/admin\n"
    seen: list[str] = []
    with caplog.at_level(logging.WARNING, logger="flask_selfhost"):
        guarded(environ, lambda status, headers, exc_info=None: seen.append(status))
    assert seen == ["403 Forbidden"]
    [line] = [record.getMessage() for record in caplog.records]
    assert line.startswith(
        'selfhost=refused method=GET path="/admin\\n" remote=127.0.0.1 local=- rule=forwarded '
    )
    assert "cleartext HTTP/2 (h2c)" in line and "allow_cleartext_http2" in line
