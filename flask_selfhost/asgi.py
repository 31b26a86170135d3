"""
Self-host guard for any ASGI app
================================

The same rules as the WSGI fronts (:mod:`flask_selfhost.guard`), for ASGI 3
apps: Starlette, FastAPI, Quart, Litestar, Django's ASGI handler, or a bare
ASGI callable. HTTP requests and WebSocket handshakes are judged; lifespan
passes through untouched.

.. code-block:: python

    from flask_selfhost.asgi import SelfHostASGIMiddleware
    app = SelfHostASGIMiddleware(app)                 # any ASGI app
    app.add_middleware(SelfHostASGIMiddleware)        # Starlette, FastAPI

Where the facts come from, and what ASGI servers do to them:

- the local address is ``scope["server"]`` where the server fills it per
  connection (uvicorn, hypercorn, daphne). An unspecified address
  (``0.0.0.0``, ``::``) is a bind address, not a connection's (granian puts
  its bind address there): unknown, so only loopback clients pass, and the
  reason says why;
- a unix socket is recognised by the server's own marks: uvicorn's
  ``scope["server"] = (path, None)`` and granian's ``(path, "0")``;
- uvicorn (by default, for peers in ``forwarded_allow_ips``), hypercorn's
  ``ProxyFixMiddleware`` and daphne's ``--proxy-headers`` overwrite
  ``scope["client"]`` with an address taken from ``X-Forwarded-For`` and
  keep no original: the peer is then unknowable. A relayed request whose
  client equals an entry of its own forwarding headers is refused, with a
  reason that names the server setting to change. daphne's
  ``--proxy-headers-host`` may name any header: those of
  :data:`CLIENT_HEADERS` are forwarding headers too, any other name is one
  the guard cannot know of (so do not use it);
- cleartext HTTP/2 (h2c): ``http_version`` other than ``1.1`` or ``1.0``
  (``2`` from hypercorn and granian; missing means ``1.1``, as the spec
  says) with a ``scheme`` other than ``https``/``wss``. hypercorn answers an
  ``Upgrade: h2c`` (or a ``PRI *`` preface) that a proxy relays, and the
  proxy then relays raw bytes: every later stream comes from the proxy's
  address, with headers the proxy's client wrote. Marked
  :data:`~flask_selfhost.facts.H2C`, refused by the client rule unless
  ``allow_cleartext_http2``;
- gunicorn's ASGI worker (``gunicorn -k asgi``) gives an HTTP/2 request the
  transport's peer even behind ``--proxy-protocol``: after an ``Upgrade: h2c``
  through a PROXY protocol relay on this host, every stream names the relay
  (loopback). The scope cannot tell such a stream from a local one, nor h2c
  from TLS (a client may claim ``:scheme https``), so gunicorn's HTTP/2 is
  marked :data:`~flask_selfhost.facts.HTTP2_GUNICORN_ASGI` and refused
  whatever the options, with a reason that names the setting to change;
- a key that a server leaves out means what the ASGI spec says it means
  (:data:`SPEC_DEFAULTS`): daphne's WebSocket scope has no ``scheme``,
  which is ``ws``;
- a WebSocket handshake's ``Origin`` is judged by the cross-site rule (a
  cross-site WebSocket is the WebSocket form of CSRF), its ``ws``/``wss``
  scheme read as ``http``/``https``. A refused handshake gets an HTTP 403
  where the server supports the denial-response extension, else a close
  before accept (which servers answer with 403);
- a refused request that the Starlette/FastAPI router below would give to an
  :func:`~flask_selfhost.allow_remote` endpoint is passed on to it, and to
  nothing else (see :mod:`flask_selfhost.asgi_routes`). Quart apps use
  :mod:`flask_selfhost.quart`.

:param app: The ASGI application to guard.
:param options: See :class:`flask_selfhost.options.Options`; checked now.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import forwarded
from .addresses import parse_ip
from .asgi_routes import starlette_exempt_app
from .crosssite import merge_headers
from .decision import Decision
from .exempt import allow_remote
from .facts import H2C, HTTP1_VERSIONS, HTTP2_GUNICORN_ASGI, UNIX, RequestFacts
from .guard import judge
from .log import DEBUG, is_enabled_for, log_decision, log_warning
from .options import Options

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Headers that name the client alone (nginx's X-Real-IP, CDNs' own):
#: daphne's ``--proxy-headers-host`` takes the client from the one it is told,
#: its first entry verbatim, and keeps no original.
CLIENT_HEADERS = (
    b"x-real-ip",
    b"cf-connecting-ip",
    b"true-client-ip",
    b"x-client-ip",
    b"x-cluster-client-ip",
    b"fastly-client-ip",
)
#: A module that only gunicorn's ASGI worker loads (``gunicorn.workers.gasgi`` imports it).
GUNICORN_ASGI = "gunicorn.asgi.protocol"
#: Header names (lowercase bytes) that say "a proxy forwarded this".
FORWARDING_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
        b"x-forwarded-scheme",
        b"x-forwarded-ssl",
        *CLIENT_HEADERS,
    }
)
#: Headers a request may carry once: twice is malformed (refused), never a guess.
SINGLE = (b"host", b"origin", b"sec-fetch-site", b"sec-fetch-mode", b"sec-fetch-dest")
SCHEMES = {"ws": "http", "wss": "https"}

#: What a missing scope key means, per scope type, as the ASGI HTTP and
#: WebSocket spec says. A server may leave any of these out (daphne's
#: WebSocket scope has no ``scheme``), and a key read as unknown instead
#: would refuse this host's own pages: an unknown scheme matches no Origin.
#: Keys with no default (an HTTP scope's ``http_version``, ``method``) stay
#: unknown when missing.
SPEC_DEFAULTS: dict[str, dict[str, Any]] = {
    "http": {"scheme": "http", "root_path": "", "raw_path": None, "client": None, "server": None},
    "websocket": {
        "scheme": "ws",
        "http_version": "1.1",
        "root_path": "",
        "raw_path": None,
        "query_string": b"",
        "client": None,
        "server": None,
        "subprotocols": (),
    },
}
NO_DEFAULTS: dict[str, Any] = {}

REWRITTEN_CLIENT = (
    "the client address is one its own forwarding headers name: the server may have put it "
    "there and kept no original, so the proxy cannot be checked; turn that off (uvicorn: "
    "--no-proxy-headers; daphne: no --proxy-headers; hypercorn: no ProxyFixMiddleware) and "
    "let trusted_proxies judge the headers. A proxy on this host that relays this host's "
    "client over TCP looks the same: connect it over a unix socket, "
    "trusted_proxies=['unix']"
)
#: Why gunicorn's HTTP/2 is refused (the client rule says it).
GUNICORN_HTTP2 = forwarded.GUNICORN_ASGI_HTTP2
NO_ADDRESSES = (
    "the server gives neither the client's nor its own address (hypercorn and daphne on a "
    "unix socket), so unix_socket_is_local cannot work there; use uvicorn --uds, or TCP "
    "on 127.0.0.1"
)
BIND_ADDRESS = (
    "the server reports its bind address, not the connection's local address "
    "(granian does), so only loopback clients pass; bind the server to 127.0.0.1 and ::1"
)


def scope_value(scope: Scope, key: str) -> Any:
    """``scope[key]``, or what the ASGI spec says its absence means
    (:data:`SPEC_DEFAULTS`), or ``None`` where the spec gives no default."""
    try:
        return scope[key]
    except KeyError:
        kind = scope.get("type")
        defaults = SPEC_DEFAULTS.get(kind, NO_DEFAULTS) if type(kind) is str else NO_DEFAULTS
        return defaults.get(key)


class ScopeConnection:
    """:class:`~flask_selfhost.facts.Connection` from an ASGI scope."""

    __slots__ = ("_client", "_server")

    def __init__(self, scope: Scope) -> None:
        self._server = scope_value(scope, "server")
        self._client = scope_value(scope, "client")

    def local_address(self) -> str | None:
        host = _host(self._server)
        address = parse_ip(host)
        if address is None or address.is_unspecified:
            return None
        return host

    def peer_address(self) -> str | None:
        if self.is_unix():
            return UNIX
        host = _host(self._client)
        return host if parse_ip(host) is not None else None

    def is_unix(self) -> bool:
        host = _host(self._server)
        # uvicorn: (path, None); granian: (path, "0"). A path is never an address.
        return host is not None and host.startswith("/")

    def unknown_local_reason(self) -> str | None:
        if self._server is None and self._client is None:
            return NO_ADDRESSES
        address = parse_ip(_host(self._server))
        return BIND_ADDRESS if address is not None and address.is_unspecified else None


def _host(pair: Any) -> str | None:
    if isinstance(pair, (tuple, list)) and pair and type(pair[0]) is str:
        return str(pair[0])
    return None


def facts_from_scope(scope: Scope) -> RequestFacts:
    """The facts of an HTTP request or WebSocket handshake; never raises."""
    seen: dict[bytes, list[bytes | None]] = {}
    headers = scope.get("headers")
    # Headers that cannot be read may hold any header, the Host included (an
    # app may read a deque or a (str, bytes) pair): the Host is then unusable.
    # So are missing headers: the spec gives them no default.
    readable = isinstance(headers, (list, tuple))
    for pair in headers if isinstance(headers, (list, tuple)) else ():
        try:
            name, value = pair
            values = seen.setdefault(bytes(name).lower(), [])
        except (TypeError, ValueError):
            readable = False
            continue
        try:
            values.append(bytes(value))
        except (TypeError, ValueError):
            values.append(None)  # present but not bytes: the header is unusable

    def header(name: bytes) -> str | None:
        values = seen.get(name)
        if values is None:
            return None
        if (len(values) > 1 and name in SINGLE) or None in values:
            return ""  # twice, or not bytes: unusable, refused by the rule that reads it
        return ", ".join(value.decode("latin-1") for value in values)  # type: ignore[union-attr]

    remote = _host(scope_value(scope, "client"))
    scheme = scope_value(scope, "scheme")
    # The spec: never empty. Any value that is not a string is unknown, and
    # then no Origin is this request's own.
    if type(scheme) is str and scheme:
        scheme = scheme.lower()
        scheme = SCHEMES.get(scheme, scheme)
    else:
        scheme = None
    method = "GET" if scope.get("type") == "websocket" else scope.get("method")
    return RequestFacts(
        remote,
        ScopeConnection(scope),
        header(b"host") if readable else "",
        scheme,
        method if type(method) is str else None,
        header(b"origin"),
        header(b"sec-fetch-site"),
        header(b"sec-fetch-mode"),
        header(b"sec-fetch-dest"),
        header(b"access-control-request-method"),
        header(b"access-control-request-headers"),
        header(b"access-control-request-private-network"),
        header(b"forwarded"),
        header(b"x-forwarded-for"),
        not FORWARDING_HEADERS.isdisjoint(seen),
        None,
        None,
        False,
        None,
        "asgi",
        False,
        _http2(scope, scheme),
    )


def _http2(scope: Scope, scheme: str | None) -> str | None:
    """The ``http2`` fact: which HTTP/2 this is, if its connection may be a
    tunnel (``scheme`` read as ``http``/``https``)."""
    if scope.get("http_version", "1.1") in HTTP1_VERSIONS:
        return None  # as the common path reads it
    if GUNICORN_ASGI in sys.modules:
        return HTTP2_GUNICORN_ASGI
    return None if scheme == "https" else H2C


def rewritten_by_server(facts: RequestFacts, scope: Scope) -> bool:
    """True when the client address is one of the request's own forwarded
    entries: the server (not a witness) put it there."""
    if not facts.relayed or facts.remote is None:
        return False
    if facts.remote in _client_entries(scope):
        return True
    client = parse_ip(facts.remote)
    entries: list[str] = []
    for parse, value in (
        (forwarded.parse_x_forwarded_for, facts.x_forwarded_for),
        (forwarded.parse_forwarded, facts.forwarded),
    ):
        if value is not None and len(value) <= forwarded.MAX_HEADER_LENGTH:
            try:
                entries.extend(parse(value) or ())
            except forwarded.MalformedHeader:
                continue  # the rules refuse it anyway
    return any(parse_ip(entry) == client for entry in entries)


def _client_entries(scope: Scope) -> set[str]:
    """The entries of the request's :data:`CLIENT_HEADERS`, as text."""
    entries: set[str] = set()
    headers = scope.get("headers")
    for pair in headers if isinstance(headers, (list, tuple)) else ():
        try:
            name, value = pair
            if bytes(name).lower() in CLIENT_HEADERS:
                entries.update(entry.strip() for entry in bytes(value).decode("latin-1").split(","))
        except (TypeError, ValueError):
            continue  # unreadable: the host rule refuses the request
    return entries


def evaluate_scope(scope: Scope, options: Options) -> Decision:
    """The decision for an ASGI scope: :func:`flask_selfhost.guard.judge`,
    after the thing only ASGI servers do (rewriting the client). An HTTP
    grant teaches the common path (:mod:`flask_selfhost.accepted`)."""
    facts = facts_from_scope(scope)
    if options.trusted_proxies and rewritten_by_server(facts, scope):
        return Decision(False, forwarded.RULE, REWRITTEN_CLIENT, facts.remote, None)
    decision = judge(facts, options)
    if decision.allowed and scope.get("type") == "http":
        options.accepted.remember(facts, decision)
    return decision


#: Request headers that no rule reads (lowercase, as ASGI requires). The
#: common path takes a request only when every header but one Host is one of
#: these: any other name, in any case, goes to the full rules.
UNJUDGED_HEADERS = frozenset(
    {
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-length",
        b"content-type",
        b"cookie",
        b"dnt",
        b"if-modified-since",
        b"if-none-match",
        b"pragma",
        b"priority",
        b"range",
        b"referer",
        b"te",
        b"upgrade-insecure-requests",
        b"user-agent",
    }
)


#: Whether this process has looked at its server yet.
_server_checked = False


class SelfHostASGIMiddleware:
    """Refuse requests and WebSocket handshakes that do not come from this host."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        self.options = Options.from_mapping(options)
        self._remotes = self.options.accepted.remotes
        self._hosts = self.options.accepted.hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ``async``, though the common path awaits one thing only: servers
        # (uvicorn, hypercorn, daphne) tell ASGI 3 apps by a coroutine __call__.
        # The common request, answered from what the full rules granted
        # before (as in guard_wsgi_app).
        common, grant = False, None
        try:
            client, headers = scope["client"][0], scope["headers"]
            # Exact types only: a subclass of str or bytes may hash and compare
            # as it likes, while the full rules read what it holds. HTTP/1.1
            # only: an HTTP/2 connection may be a proxy's tunnel (1.0 and a
            # missing version, which means 1.1, take the full rules).
            if (
                type(client) is str
                and type(headers) is list
                and scope["type"] == "http"
                and scope["http_version"] == "1.1"
            ):
                grant = self._remotes.get(client)
            if grant is not None:
                host = None
                for name, value in headers:
                    if type(name) is not bytes:
                        break
                    if name == b"host" and host is None:
                        host = value
                    elif name not in UNJUDGED_HEADERS:
                        break
                else:
                    common = type(host) is bytes and host in self._hosts
        except (KeyError, TypeError, ValueError, IndexError):
            pass  # absent, odd or unhashable: not the common request
        if common:  # the app is awaited outside the try: its errors are its own
            if is_enabled_for(DEBUG) and grant is not None:
                log_decision(grant, scope.get("method"), scope.get("path"))
            await self.app(scope, receive, send)
            return
        await self.judged(scope, receive, send)

    async def judged(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request the common path does not take: the full rules."""
        kind = scope.get("type")
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)  # lifespan, and anything newer
            return
        global _server_checked
        if not _server_checked:
            _server_checked = True
            reason = ScopeConnection(scope).unknown_local_reason()
            if reason is not None:  # once per process: what the server cannot tell
                log_warning(reason)
        decision = evaluate_scope(scope, self.options)
        method, path = ("GET" if kind == "websocket" else scope.get("method")), scope.get("path")
        if not decision.allowed:
            exempt = self.exempt_app(scope)  # routing happens on refusals only
            if exempt is not None:
                if decision.headers and kind == "http":  # Vary, as on an allowed answer
                    send = _with_headers(send, decision.headers)
                await exempt(scope, receive, send)
                return
            log_decision(decision, method, path)
            await self.refuse(decision, scope, send)
            return
        if is_enabled_for(DEBUG):
            log_decision(decision, method, path)
        if decision.answers_preflight:
            await send(_start(204, list(decision.headers)))
            await send({"type": "http.response.body", "body": b""})
            return
        if decision.headers and kind == "http":
            await self.app(scope, receive, _with_headers(send, decision.headers))
            return
        await self.app(scope, receive, send)

    def exempt_app(self, scope: Scope) -> ASGIApp | None:
        """Where a refused request goes instead of the refusal: the app's own
        routing, when it would run an :func:`allow_remote` endpoint, else
        ``None``. Never raises: whatever cannot be routed is refused.

        Here, the Starlette/FastAPI router below this middleware (see
        :func:`starlette_exempt_app`); the Quart extension routes with Quart.
        """
        try:
            return starlette_exempt_app(self.app, scope)
        except Exception:  # an odd scope, a router we misread: refused, never a 500
            return None

    def refusal_options(self, scope: Scope) -> Options:
        """The options a refusal is answered with (its status and body):
        here the guard's own; the Quart extension's are those of the view
        the request is routed to, where that view says."""
        return self.options

    async def refuse(self, decision: Decision, scope: Scope, send: Send) -> None:
        """The same plain-text refusal as the WSGI fronts; for a WebSocket,
        an HTTP 403 where the server can send one, else a close."""
        options = self.refusal_options(scope)
        status = options.refuse_status
        body = options.body_for(decision).encode("utf-8")
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *decision.headers,
        ]
        if scope.get("type") == "websocket":
            if "websocket.http.response" not in (scope.get("extensions") or {}):
                await send({"type": "websocket.close", "code": 1008})
                return
            await send(_start(status, headers, "websocket.http.response.start"))
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send(_start(status, headers))
        await send({"type": "http.response.body", "body": body})


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """ASGI's form: lowercase names, bytes."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _start(
    status: int, headers: list[tuple[str, str]], kind: str = "http.response.start"
) -> Message:
    return {"type": kind, "status": status, "headers": _encode(headers)}


def _with_headers(send: Send, extra: Any) -> Send:
    """``send`` that adds the decision's headers (``Vary``, CORS) to the response."""

    async def send_with_headers(message: Message) -> None:
        if message.get("type") == "http.response.start":
            present = [
                (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                for name, value in message.get("headers") or ()
            ]
            merged = merge_headers(present, extra)
            message = {**message, "headers": _encode(merged)}
        await send(message)

    return send_with_headers


def is_guarded_asgi(app: object) -> Options | None:
    """The options of an ASGI app guarded by :class:`SelfHostASGIMiddleware`
    (directly, or one Starlette middleware layer down), else ``None``."""
    if isinstance(app, SelfHostASGIMiddleware):
        return app.options
    for layer in getattr(app, "user_middleware", ()) or ():  # Starlette, FastAPI
        if getattr(layer, "cls", None) is SelfHostASGIMiddleware:
            return Options.from_mapping(getattr(layer, "kwargs", {}) or {})
    return None


__all__ = [
    "SelfHostASGIMiddleware",
    "allow_remote",
    "evaluate_scope",
    "facts_from_scope",
    "is_guarded_asgi",
]
