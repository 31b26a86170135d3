"""
An ASGI scope as the rules see it
=================================

The rules never read a scope: :func:`facts_from_scope` turns one (an HTTP
request or a WebSocket handshake) into :class:`~flask_selfhost.facts.RequestFacts`,
as :mod:`flask_selfhost.environ` does for a WSGI environ, and
:func:`evaluate_scope` judges them. Every ASGI front (the middleware, the
Quart extension, FastAPI's dependency) reads a scope only through here.

What ASGI servers put in a scope, and what the facts say of it:

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
  client equals an entry of its own forwarding headers says so
  (:attr:`~flask_selfhost.facts.RequestFacts.remote_in_headers`), and the
  client rule refuses it with a reason that names the server setting to
  change. daphne's ``--proxy-headers-host`` may name any header: those of
  :data:`~flask_selfhost.forwarding_syntax.CLIENT_HEADERS` are forwarding
  headers too, any other name is one the guard cannot know of (so do not
  use it);
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
  scheme read as ``http``/``https``.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .addresses import parse_ip
from .decision import Decision
from .facts import H2C, HTTP1_VERSIONS, HTTP2_GUNICORN_ASGI, UNIX, Ends, PeerOwner, RequestFacts
from .forwarding_syntax import (
    ASGI_CLIENT_NAMES,
    ASGI_NAMES,
    MAX_HEADER_LENGTH,
    MalformedHeader,
    parse_forwarded,
    parse_x_forwarded_for,
)
from .guard import judge
from .options import Options

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: A module that only gunicorn's ASGI worker loads (``gunicorn.workers.gasgi`` imports it).
GUNICORN_ASGI = "gunicorn.asgi.protocol"
#: Headers a request may carry once: twice is malformed (refused), never a
#: guess. These are the strings a browser's remembered grant is keyed on
#: (:mod:`flask_selfhost.accepted`), in the key's order.
SINGLE = (b"host", b"origin", b"sec-fetch-site", b"sec-fetch-mode", b"sec-fetch-dest")
#: The headers the rules read besides the forwarding headers: the Host, a
#: browser's, and a CORS preflight's (lowercase, as ASGI names them).
RULE_HEADERS = (
    *SINGLE,
    b"access-control-request-method",
    b"access-control-request-headers",
    b"access-control-request-private-network",
)
#: Every header some rule reads: :func:`facts_from_scope` keeps these and
#: drops the rest unread (tests/test_forwarding_headers.py holds the set to
#: what the rules see).
JUDGED_HEADERS = frozenset(RULE_HEADERS) | ASGI_NAMES
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

NO_ADDRESSES = (
    "the server gives neither the client's nor its own address (hypercorn and daphne on a "
    "unix socket), so unix_socket_is_local cannot work there; use uvicorn --uds, or TCP "
    "on 127.0.0.1 (allowed_users on a unix socket needs gunicorn, Werkzeug or waitress)"
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
    """:class:`~flask_selfhost.facts.Connection` from an ASGI scope, and the
    server's object for the connection where one is known
    (:func:`flask_selfhost.asgi_connection.connection_object`)."""

    __slots__ = ("_client", "_connection", "_server")

    def __init__(self, scope: Scope, connection: object = None) -> None:
        self._server = scope_value(scope, "server")
        self._client = scope_value(scope, "client")
        self._connection = connection

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

    def ends(self) -> Ends | None:
        # Ports as ints only: a server that gives anything else witnesses nothing.
        local = self.local_address()
        client, server = self._client, self._server
        try:
            if local is not None and type(client[1]) is int and type(server[1]) is int:
                peer = _host(client)
                if peer is not None:
                    return Ends(peer, client[1], local, server[1], self._connection)
        except (TypeError, IndexError, KeyError):
            pass
        return None

    def unix_peer(self) -> PeerOwner | None:
        return None  # no ASGI server hands the app its socket


def _host(pair: Any) -> str | None:
    if isinstance(pair, (tuple, list)) and pair and type(pair[0]) is str:
        return str(pair[0])
    return None


def facts_from_scope(scope: Scope, connection: object = None) -> RequestFacts:
    """The facts of an HTTP request or WebSocket handshake; never raises.
    ``connection``: the server's object for the connection, if known."""
    seen: dict[bytes, list[bytes | None]] = {}
    headers = scope.get("headers")
    # Headers that cannot be read may hold any header, the Host included (an
    # app may read a deque or a (str, bytes) pair): the Host is then unusable.
    # So are missing headers: the spec gives them no default.
    readable = isinstance(headers, (list, tuple))
    for pair in headers if isinstance(headers, (list, tuple)) else ():
        try:
            name, value = pair
            if type(name) is not bytes:
                name = bytes(name)
        except (TypeError, ValueError):
            readable = False
            continue
        # Servers send lowercase names (the spec says so): any other case is
        # lowered only when the name as it came is none the rules read.
        if name not in JUDGED_HEADERS:
            name = name.lower()
            if name not in JUDGED_HEADERS:
                continue  # no rule reads it: neither stored nor converted
        values = seen.get(name)
        if values is None:
            values = seen[name] = []
        if type(value) is bytes:
            values.append(value)
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
    forwarded_header, x_forwarded_for = header(b"forwarded"), header(b"x-forwarded-for")
    relayed = not ASGI_NAMES.isdisjoint(seen)
    return RequestFacts(
        remote,
        ScopeConnection(scope, connection),
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
        forwarded_header,
        x_forwarded_for,
        relayed,
        None,
        None,
        False,
        None,
        "asgi",
        False,
        _http2(scope, scheme),
        # Only a relayed request has entries to compare: the rest pay nothing.
        relayed and _remote_in_headers(remote, seen, forwarded_header, x_forwarded_for),
    )


def _http2(scope: Scope, scheme: str | None) -> str | None:
    """The ``http2`` fact: which HTTP/2 this is, if its connection may be a
    tunnel (``scheme`` read as ``http``/``https``)."""
    if scope.get("http_version", "1.1") in HTTP1_VERSIONS:
        return None  # as the common path reads it
    if GUNICORN_ASGI in sys.modules:
        return HTTP2_GUNICORN_ASGI
    return None if scheme == "https" else H2C


def _remote_in_headers(
    remote: str | None,
    seen: dict[bytes, list[bytes | None]],
    forwarded_header: str | None,
    x_forwarded_for: str | None,
) -> bool:
    """The ``remote_in_headers`` fact: the client address is an entry of the
    request's own forwarding headers (``seen``: the values by lowercase name),
    so the server, not a witness, may have put it there."""
    if remote is None:
        return False
    for name in ASGI_CLIENT_NAMES:  # daphne takes the first entry verbatim
        for raw in seen.get(name, ()):
            if raw is not None and remote in (
                entry.strip() for entry in raw.decode("latin-1").split(",")
            ):
                return True
    client = parse_ip(remote)
    entries: list[str] = []
    for parse, value in (
        (parse_x_forwarded_for, x_forwarded_for),
        (parse_forwarded, forwarded_header),
    ):
        if value is not None and len(value) <= MAX_HEADER_LENGTH:
            try:
                entries.extend(parse(value) or ())
            except MalformedHeader:
                continue  # the rules refuse it anyway
    return any(parse_ip(entry) == client for entry in entries)


def evaluate_scope(scope: Scope, options: Options, connection: object = None) -> Decision:
    """The decision for an ASGI scope (:func:`flask_selfhost.guard.judge` of
    its facts; ``connection`` as in :func:`facts_from_scope`). An HTTP grant
    teaches the common path (:mod:`flask_selfhost.accepted`)."""
    facts = facts_from_scope(scope, connection)
    decision = judge(facts, options)
    if scope.get("type") == "http":  # remember() keeps grants only
        options.accepted.remember(facts, decision)
    return decision


__all__ = [
    "JUDGED_HEADERS",
    "SINGLE",
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "ScopeConnection",
    "Send",
    "evaluate_scope",
    "facts_from_scope",
    "scope_value",
]
