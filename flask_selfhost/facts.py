"""
A request as the rules see it
=============================

The rules (:mod:`~flask_selfhost.addresses`, :mod:`~flask_selfhost.forwarded`,
:mod:`~flask_selfhost.hosts`, :mod:`~flask_selfhost.crosssite`) never read a
WSGI environ or an ASGI scope. They read :class:`RequestFacts`: strings, and
a :class:`Connection` that answers for the connection the server accepted.
One adapter per interface builds the facts (:mod:`flask_selfhost.environ` for
WSGI, :mod:`flask_selfhost.scope` for ASGI), so that every front applies the
same rules and no rule is written twice.

The facts are of two kinds, and the difference is the whole point:

- **what the client sent**: Host, Origin, ``Sec-Fetch-*``, forwarding
  headers. A client can write any of it, so a rule may refuse because of it
  but never grants on its word alone;
- **what the server witnessed**: the peer address, the local address, the
  socket family. Only a witness can let a request in: a forwarded client is
  believed only because the witnessed peer is a trusted proxy.

A header that is present but not text (bytes from a broken server, say) is
given to the rules as ``""``, which every parser refuses: present and
unusable, never absent.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

#: The peer address of a unix-socket connection (:meth:`Connection.peer_address`).
UNIX = "unix"

# What :attr:`RequestFacts.http2` says of an HTTP/2 request that the client
# rule must judge. Such a connection carries many requests (streams) at once,
# and no stream may be granted on the word of a peer that may be a tunnel.

#: Cleartext HTTP/2 (h2c: HTTP/2 without TLS, by ``Upgrade: h2c`` or prior
#: knowledge). No browser speaks it; a proxy that relayed an upgrade (and
#: then relays raw bytes) or a deliberate tool does.
H2C = "h2c"
#: gunicorn's cleartext HTTP/2 under its WSGI workers: gunicorn drops a PROXY
#: protocol header's client there, so the client may be a relay on this host.
H2C_GUNICORN = "h2c-gunicorn"
#: HTTP/2 under gunicorn's ASGI worker: its streams name the transport's peer
#: (a PROXY protocol relay, say), and the scope cannot tell h2c from TLS.
HTTP2_GUNICORN_ASGI = "http2-gunicorn-asgi"
#: Protocol versions that carry one request at a time (WSGI's
#: ``SERVER_PROTOCOL``, ASGI's ``http_version``): the rest are judged as HTTP/2.
#: granian writes ``HTTP/1`` for an HTTP/1.0 request.
HTTP1_PROTOCOLS = ("HTTP/1.1", "HTTP/1.0", "HTTP/1")
HTTP1_VERSIONS = ("1.1", "1.0", "1")


class Ends(NamedTuple):
    """A TCP connection's two ends as the server witnessed them: the peer's
    address and port, the local address and port it arrived on, and the
    server's object for the connection (a verdict may be remembered on it;
    ``None`` when the server gives none)."""

    peer: str
    peer_port: int
    local: str
    local_port: int
    connection: object = None


class PeerOwner(NamedTuple):
    """Who holds the client's end of a connection, as the kernel says.

    ``uid`` is the owner: for TCP, the uid that created the client's socket
    (``sock_diag``; a socket made as root and then handed on, or passed to
    another process, still reads as its creator); for a unix socket, the
    connecting process's uid at ``connect()`` (``SO_PEERCRED``). ``inode``
    names the client's socket (TCP; ``/proc/PID/fd`` links read
    ``socket:[INODE]``), 0 where unknown. ``pid`` is the connecting
    process (unix socket, ``SO_PEERCRED``), 0 where unknown.
    """

    uid: int
    inode: int = 0
    pid: int = 0


class Connection(Protocol):
    """The connection the server accepted, asked only when a rule needs it
    (the local address may cost a system call)."""

    def local_address(self) -> str | None:
        """The local IP address the connection arrived on, or ``None`` when
        the server gives no witness of it."""

    def peer_address(self) -> str | None:
        """The peer's IP address as the socket reports it, :data:`UNIX`, or
        ``None`` when the server gives no witness of it."""

    def is_unix(self) -> bool:
        """True only when a witness says the connection is a unix socket."""

    def unknown_local_reason(self) -> str | None:
        """Why this server cannot say which local address a connection used,
        and what to change; ``None`` when nothing specific is known."""

    def ends(self) -> Ends | None:
        """The TCP connection's two ends, or ``None`` when the server does
        not witness both addresses and ports (or it is no TCP connection)."""

    def unix_peer(self) -> PeerOwner | None:
        """The peer of a unix-socket connection (``SO_PEERCRED``), or
        ``None`` when the server gives no socket object to ask (uvicorn,
        hypercorn) or the connection is no unix socket."""


class RequestFacts(NamedTuple):
    """One request, as every rule reads it (a tuple: built on every request
    off the common path, and a frozen dataclass costs microseconds to build).

    :param remote: The client address as the server reports it
        (``REMOTE_ADDR``, ``scope["client"][0]``), possibly rewritten by a
        proxy middleware or a PROXY protocol header; ``None`` when missing or
        not text.
    :param connection: The witness of the accepted connection.
    :param host: The Host header as the client sent it (before any
        middleware rewrote it from ``X-Forwarded-Host``), or ``None``.
    :param scheme: ``http`` or ``https`` as the server saw the connection.
    :param method: The request method.
    :param origin: The ``Origin`` header.
    :param sec_fetch_site: ``Sec-Fetch-Site``.
    :param sec_fetch_mode: ``Sec-Fetch-Mode``.
    :param sec_fetch_dest: ``Sec-Fetch-Dest``.
    :param request_method: ``Access-Control-Request-Method`` (a preflight).
    :param request_headers: ``Access-Control-Request-Headers``.
    :param request_private_network: ``Access-Control-Request-Private-Network``.
    :param forwarded: The ``Forwarded`` header.
    :param x_forwarded_for: The ``X-Forwarded-For`` header.
    :param relayed: Any forwarding header is present (``Forwarded``,
        ``X-Forwarded-*``, ``X-Real-IP``, ``CF-Connecting-IP`` and the like:
        :data:`~flask_selfhost.forwarding_syntax.FORWARDING_HEADERS`): a
        proxy relays someone else's request, or a client pretends that one
        does.
    :param proxy_protocol: The server read a PROXY protocol header on this
        connection (its kind, such as ``TCP4`` or ``LOCAL``), so ``remote``
        is the header's client; ``None`` otherwise.
    :param proxy_addr: Where, per that header, the client connected to the proxy.
    :param rewritten: ``remote`` was rewritten by a middleware that kept the
        original (Werkzeug's ``ProxyFix``), which is then ``original_remote``.
    :param original_remote: The ``REMOTE_ADDR`` that middleware saw.
    :param server: The server that built the request, as
        :func:`flask_selfhost.servers.server_name` names it (``""`` when
        unknown, ``None`` when not asked): what it does to headers decides
        how far they can be read.
    :param deleted_forwarding: The server deleted forwarding headers that the
        request carried (waitress, by default): ``relayed`` is then True,
        with a client that nothing names.
    :param http2: :data:`H2C`, :data:`H2C_GUNICORN` or
        :data:`HTTP2_GUNICORN_ASGI` for an HTTP/2 request whose connection
        may be a tunnel; ``None`` for HTTP/1.x and for HTTP/2 that the server
        witnessed over TLS. A protocol version the adapter does not know
        counts as HTTP/2: odd values are refused over cleartext, never
        taken for HTTP/1.1.
    :param remote_in_headers: ``remote`` is an entry of the request's own
        forwarding headers (set only for a relayed request, by the ASGI
        adapter): ASGI servers that read those headers (uvicorn's proxy
        headers, daphne's ``--proxy-headers``, hypercorn's
        ``ProxyFixMiddleware``) overwrite the client with an entry and keep
        no original, so the peer that sent the headers is unknown.
    """

    remote: str | None
    connection: Connection
    host: str | None = None
    scheme: str | None = None
    method: str | None = None
    origin: str | None = None
    sec_fetch_site: str | None = None
    sec_fetch_mode: str | None = None
    sec_fetch_dest: str | None = None
    request_method: str | None = None
    request_headers: str | None = None
    request_private_network: str | None = None
    forwarded: str | None = None
    x_forwarded_for: str | None = None
    relayed: bool = False
    proxy_protocol: str | None = None
    proxy_addr: str | None = None
    rewritten: bool = False
    original_remote: str | None = None
    server: str | None = None
    deleted_forwarding: bool = False
    http2: str | None = None
    remote_in_headers: bool = False


def text(value: object) -> str | None:
    """A header or address value for the rules: ``None`` when absent, the
    string itself, or ``""`` (unusable) for anything that is not text."""
    if value is None or type(value) is str:
        return value
    return ""


class KnownConnection:
    """A :class:`Connection` whose witnesses the caller already knows: the
    CLI's ``check``, tests, or a front whose server hands them over as data.

    :param local: The local IP address, or ``None``.
    :param peer: The peer's address (or :data:`UNIX`), or ``None``.
    :param unix: Whether the connection is a unix socket.
    :param reason: What :meth:`unknown_local_reason` says.
    :param ends: What :meth:`ends` says.
    :param unix_peer: What :meth:`unix_peer` says.
    """

    __slots__ = ("_ends", "_local", "_peer", "_reason", "_unix", "_unix_peer")

    def __init__(
        self,
        local: str | None = None,
        peer: str | None = None,
        unix: bool = False,
        reason: str | None = None,
        ends: Ends | None = None,
        unix_peer: PeerOwner | None = None,
    ) -> None:
        self._local, self._peer, self._unix, self._reason = local, peer, unix, reason
        self._ends, self._unix_peer = ends, unix_peer

    def local_address(self) -> str | None:
        return self._local

    def peer_address(self) -> str | None:
        return self._peer

    def is_unix(self) -> bool:
        return self._unix

    def unknown_local_reason(self) -> str | None:
        return self._reason

    def ends(self) -> Ends | None:
        return self._ends

    def unix_peer(self) -> PeerOwner | None:
        return self._unix_peer
