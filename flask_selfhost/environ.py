"""
From a WSGI environ to the facts the rules read
===============================================

:func:`facts_from_environ` is the one place that knows WSGI: which environ
keys hold the headers, where each server keeps the connection
(:mod:`flask_selfhost.connection`), and two things servers and middleware do
to the environ that the rules must undo:

- **Werkzeug's ProxyFix**, run before the guard, rewrites ``REMOTE_ADDR``,
  the Host and the scheme from ``X-Forwarded-*`` (which a DNS-rebinding page
  can send) and keeps the originals in ``werkzeug.proxy_fix.orig``. The
  rules judge the originals; the rewritten client address is verified
  against the connection (see :mod:`flask_selfhost.forwarded`).
- **gunicorn's PROXY protocol** puts the header's client in ``REMOTE_ADDR``
  and sets ``PROXY_PROTOCOL``, but its threaded worker does so only for the
  first request on a connection: the next request on the same connection
  shows the proxy itself as a plain client. The connection is remembered
  (weakly, so it is forgotten when closed) and every later request on it
  is judged as relayed by the same header.
- **cleartext HTTP/2** (h2c): ``SERVER_PROTOCOL`` is ``HTTP/2`` (hypercorn,
  granian) or ``HTTP/2.0`` (gunicorn) and ``wsgi.url_scheme`` is not
  ``https``. Behind a proxy that relayed an ``Upgrade: h2c``, every stream
  shows the proxy as the client, so such a request is marked
  :data:`~flask_selfhost.facts.H2C` and the client rule refuses it (unless
  ``allow_cleartext_http2``). A ``SERVER_PROTOCOL`` other than HTTP/1.x
  counts as HTTP/2; a missing one as HTTP/1.1.
- **gunicorn's cleartext HTTP/2** (``--http2-cleartext``) also drops a PROXY
  protocol header's client: an HTTP/2 request shows the relay itself
  (loopback, say) as a plain client, and the HTTP/1.1 request that carried
  the header never reaches the app, so nothing can be remembered. gunicorn's
  ``wsgi.url_scheme`` follows ``X-Forwarded-Proto`` from its
  ``forwarded_allow_ips``, so its own socket says whether TLS was used; such
  a request is marked :data:`~flask_selfhost.facts.H2C_GUNICORN`, refused
  whatever the options.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from . import connection, kernel_witness, peer_socket, servers
from .accepted import forget_everything
from .decision import Decision
from .facts import H2C, H2C_GUNICORN, HTTP1_PROTOCOLS, Ends, PeerOwner, RequestFacts, text
from .forwarding_syntax import ENVIRON_KEYS
from .guard import DEFAULT_OPTIONS, judge
from .log import log_warning
from .options import Options
from .peer_users import AllowedUsers

_FORWARDING_KEYS = frozenset(ENVIRON_KEYS)

#: A key gunicorn sets in the environ of HTTP/2 requests only.
GUNICORN_HTTP2 = "gunicorn.http2.priority_weight"

#: Connections (gunicorn's socket objects) that carried a PROXY protocol
#: header, with what it said: (client, kind, proxy_addr). Weak keys, so an
#: entry goes when the connection does.
proxy_connections: weakref.WeakKeyDictionary[Any, tuple[Any, Any, Any]] = (
    weakref.WeakKeyDictionary()
)
#: True once this process has seen a PROXY protocol header: from then on any
#: request may belong to a remembered connection.
proxy_protocol_seen = False


class EnvironConnection:
    """:class:`~flask_selfhost.facts.Connection` for a WSGI environ: the
    witnesses :mod:`flask_selfhost.connection` finds, asked lazily, once.

    ``server`` is the server that built the environ, as
    :func:`~flask_selfhost.servers.server_name` named it for the facts.
    """

    __slots__ = ("_environ", "_local", "_peer", "_server", "_socket")

    _UNASKED: Any = object()

    def __init__(self, environ: Mapping[str, Any], server: str) -> None:
        self._environ, self._server = environ, server
        self._socket = self._local = self._peer = self._UNASKED

    def socket(self) -> Any:
        """The accepted connection (or ``None``), found once per request:
        under uWSGI each search is a ``dup()`` and two system calls."""
        if self._socket is self._UNASKED:
            self._socket = connection.connection_socket(self._environ, self._server)
        return self._socket

    def local_address(self) -> str | None:
        if self._local is self._UNASKED:
            self._local = connection.local_address_of(self._environ, self.socket)
        return self._local  # type: ignore[no-any-return]

    def peer_address(self) -> str | None:
        if self._peer is self._UNASKED:
            self._peer = connection.peer_address(self.socket())
        return self._peer  # type: ignore[no-any-return]

    def is_unix(self) -> bool:
        sock = self.socket()
        if sock is not None:
            return connection.is_unix_socket(sock)
        # waitress keeps no socket in the environ; it marks a unix-socket
        # client as 'localhost', which no TCP client's address can be.
        return self._environ.get("REMOTE_ADDR") == "localhost" and self._server == servers.WAITRESS

    def unknown_local_reason(self) -> str | None:
        return connection.unknown_local_reason(self._environ, self._server)

    def ends(self) -> Ends | None:
        return connection.socket_ends(self.socket())

    def unix_peer(self) -> PeerOwner | None:
        return peer_socket.unix_peer_owner(self.socket())


def environ_witnessed(environ: Mapping[str, Any], required: bool) -> bool:
    """For the WSGI fast path, which looked up gunicorn's socket itself:
    whether the kernel vouches for the client of ``environ``'s connection
    (asked now, the first time, and remembered for it), or the check cannot
    run and need not (:func:`flask_selfhost.kernel_witness.ends_witnessed`).
    False sends the request to the full rules."""
    sock = _fast_path_socket(environ)
    if sock is None:  # the server gives no socket: the check cannot run
        return not required
    if id(sock) in kernel_witness.witnessed_connections:
        return True
    if not kernel_witness.usable and not required:  # said once in the log
        return True
    ends = connection.socket_ends(sock)
    return ends is not None and kernel_witness.ends_witnessed(ends, required)[0]


def remembered_owner(environ: Mapping[str, Any]) -> PeerOwner | None:
    """For the WSGI fast path's log line: the owner of the client's socket
    that the kernel named for ``environ``'s connection, if it did."""
    entry = kernel_witness.witnessed_connections.get(id(_fast_path_socket(environ)))
    return None if entry is None else entry[1]


def remembered_user_allowed(environ: Mapping[str, Any], allowed: AllowedUsers) -> bool:
    """For the WSGI fast path, with ``allowed_users`` set: whether the owner
    of the client's socket, remembered on ``environ``'s connection object,
    is one of ``allowed``. False (nothing remembered yet, or another user)
    sends the request to the full rules, which ask the kernel and say why."""
    entry = kernel_witness.witnessed_connections.get(id(_fast_path_socket(environ)))
    return entry is not None and allowed.allows(entry[1].uid)


def _fast_path_socket(environ: Mapping[str, Any]) -> Any:
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if sock is None:
        sock = connection.connection_socket(environ, servers.server_name(environ))
    return sock


def facts_from_environ(environ: Mapping[str, Any]) -> RequestFacts:
    """The facts of the request in ``environ``; never raises."""
    get = environ.get
    remote = get("REMOTE_ADDR")
    if type(remote) is not str:
        remote = None  # None, bytes or anything else counts as missing
    proxy_protocol = get("PROXY_PROTOCOL")
    proxy_addr = get("PROXY_ADDR")
    if proxy_protocol is not None or proxy_protocol_seen:
        remote, proxy_protocol, proxy_addr = _proxy_protocol(
            get("gunicorn.socket"), remote, proxy_protocol, proxy_addr
        )

    relayed = not _FORWARDING_KEYS.isdisjoint(environ)
    server = servers.server_name(environ)
    # Asked even when other headers say "relayed": the refusal then names the recipe.
    deleted = server == servers.WAITRESS and connection.waitress_deleted_forwarding(environ)
    host, scheme = get("HTTP_HOST"), get("wsgi.url_scheme")
    rewritten, original_remote = False, None
    original = get("werkzeug.proxy_fix.orig")
    if original is not None and relayed:  # without the headers, ProxyFix changed nothing
        rewritten = True
        if isinstance(original, Mapping):
            original_remote = text(original.get("REMOTE_ADDR")) or None
            host, scheme = original.get("HTTP_HOST"), original.get("wsgi.url_scheme")
        else:
            host = scheme = ""  # unusable: refused, never taken as absent

    http2 = _http2(environ, scheme)

    # Only browsers send these; the rest of their headers matter only then.
    origin, site = get("HTTP_ORIGIN"), get("HTTP_SEC_FETCH_SITE")
    browser = origin is not None or site is not None
    return RequestFacts(
        remote,
        EnvironConnection(environ, server),
        text(host),
        text(scheme),
        text(get("REQUEST_METHOD")),
        text(origin),
        text(site),
        text(get("HTTP_SEC_FETCH_MODE")) if browser else None,
        text(get("HTTP_SEC_FETCH_DEST")) if browser else None,
        text(get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")) if browser else None,
        text(get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS")) if browser else None,
        text(get("HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK")) if browser else None,
        text(get("HTTP_FORWARDED")) if relayed else None,
        text(get("HTTP_X_FORWARDED_FOR")) if relayed else None,
        relayed or deleted,
        None if proxy_protocol is None else text(proxy_protocol),
        text(proxy_addr) or None,
        rewritten,
        original_remote,
        server,
        deleted,
        http2,
    )


#: Whether this process has looked at its server yet (see :func:`evaluate`).
_server_checked = False


def evaluate(environ: Mapping[str, Any], options: Options | None = None) -> Decision:
    """Decide whether the request in the WSGI ``environ`` comes from this host.

    ``options`` (default ``Options()``) say which proxies may name the client,
    whether a unix socket is local, and what the later rules accept.
    """
    if options is None:
        options = DEFAULT_OPTIONS
    facts = facts_from_environ(environ)
    global _server_checked
    if not _server_checked:
        # Once per process, on the first request: say so when the server gives
        # no witness of the local address, so that only loopback clients pass.
        _server_checked = True
        reason = facts.connection.unknown_local_reason()
        if reason is not None:
            log_warning(reason)
    decision = judge(facts, options)
    options.accepted.remember(facts, decision)
    return decision


def _http2(environ: Mapping[str, Any], scheme: object) -> str | None:
    """The ``http2`` fact: which HTTP/2 this is, if its connection may be a
    tunnel (``scheme`` is the one the server saw, before any ProxyFix)."""
    if environ.get("SERVER_PROTOCOL", "HTTP/1.1") in HTTP1_PROTOCOLS:
        return None  # as the fronts' common path reads it
    if GUNICORN_HTTP2 in environ:
        # Over TLS gunicorn reads no PROXY header at all (it wraps the socket first).
        return None if _is_tls(environ.get("gunicorn.socket")) else H2C_GUNICORN
    return None if scheme == "https" else H2C


def _is_tls(sock: Any) -> bool:
    """True for a TLS socket: the standard library's or gevent's (which is
    no ``ssl.SSLSocket``); both have ``getpeercert``, plain sockets do not."""
    return callable(getattr(sock, "getpeercert", None))


def _proxy_protocol(
    sock: Any, remote: str | None, kind: Any, proxy_addr: Any
) -> tuple[str | None, Any, Any]:
    """Remember what a connection's PROXY header said; recall it for the
    connection's later requests, where gunicorn's gthread worker omits it."""
    global proxy_protocol_seen
    if not proxy_protocol_seen:
        proxy_protocol_seen = True
        forget_everything()  # the fronts' fast path cannot tell such a request
    if sock is None:
        return remote, kind, proxy_addr
    try:
        if kind is not None:
            proxy_connections[sock] = (remote, kind, proxy_addr)
            return remote, kind, proxy_addr
        remembered = proxy_connections.get(sock)
    except TypeError:  # an object that cannot be weakly referenced: no memory
        return remote, kind, proxy_addr
    if remembered is None:
        return remote, kind, proxy_addr
    return remembered


__all__ = ["GUNICORN_HTTP2", "H2C", "EnvironConnection", "evaluate", "facts_from_environ"]
