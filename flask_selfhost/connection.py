"""
The connection the server accepted
==================================

The accepted connection is the one witness that a header cannot forge: its
local address (``getsockname()``), its peer (``getpeername()``) and its
family (a unix socket has no IP address). Every rule that needs one of these
asks here, and this module knows where each WSGI server keeps it:

=====================================  =========================================
server                                 the connection
=====================================  =========================================
gunicorn (sync, gthread, gevent)       ``environ["gunicorn.socket"]`` (public)
gunicorn ``gevent_pywsgi``             ``environ["gunicorn.sock"]``
Werkzeug's server                      ``environ["werkzeug.socket"]`` (public)
waitress 3                             ``environ["waitress.client_disconnected"]``
                                       ``.__self__.socket`` (the channel; internal)
cheroot 11                             ``environ["wsgi.input"].rfile.raw._sock``
                                       (private)
uWSGI ``--http-socket``                ``uwsgi.connection_fd()`` (public API)
Apache mod_wsgi, uWSGI behind nginx    ``SERVER_ADDR``, set per connection
=====================================  =========================================

The internal routes are gated on the server that uses them (its
``SERVER_SOFTWARE``) and must end in a real socket object, so that nothing
else in an environ can pose as one. uWSGI's connection is its router's link
in ``--http`` mode and nginx's in ``uwsgi_pass`` mode: it is used only when
the worker speaks HTTP itself. Where no witness exists (granian, bjoern,
uWSGI's router, nginx's ``uwsgi_params`` without ``SERVER_ADDR``),
:func:`unknown_local_reason` names the server and the fix, and only loopback
clients pass.

Where an ASGI server keeps its connection is :mod:`flask_selfhost.asgi_connection`.

Which server built the environ is :func:`flask_selfhost.servers.server_name`.
What cannot change in a process is worked out once: whether this uWSGI
worker speaks HTTP. What belongs to a connection is asked per request,
never kept: a server hands the next connection the same descriptor number.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from .facts import UNIX, Ends
from .servers import BJOERN, CHEROOT, GRANIAN, UWSGI, WAITRESS, WAITRESS_DELETES, server_name

#: A socket's address family as a plain int. ``sock.family`` converts it to
#: an enum, which costs half a microsecond; this C-level getter does not. It
#: raises TypeError for anything that is not a socket, including gevent's and
#: eventlet's green sockets (see :func:`family`).
socket_family: Any = socket.SocketType.family.__get__


def family(sock: Any) -> int:
    """The address family of a socket, green sockets included; raises for
    anything else."""
    try:
        return int(socket_family(sock))
    except TypeError:
        # gevent (imported before or after the app) and eventlet wrap the
        # real socket; both expose .family as the standard socket does.
        value = sock.family
        if not isinstance(value, int):
            raise
        return int(value)


def waitress_deleted_forwarding(environ: Mapping[str, Any]) -> bool:
    """True when the request waitress serves carried a forwarding header
    that its environ no longer has: waitress deleted it, so a proxy relayed
    the request and the app cannot see for whom.

    waitress deletes from the environ only; its parsed request keeps every
    header. The channel is ``client_disconnected``'s ``__self__``; the
    request it serves is ``channel.requests[0]`` (``channel.request`` is the
    next one, still being parsed). A channel that has no such request is
    odd, and counts as a deletion: refused, never guessed at.
    """
    disconnected = environ.get("waitress.client_disconnected")
    if disconnected is None:
        return False  # a waitress that says nothing of its channel
    try:
        headers = disconnected.__self__.requests[0].headers
        return any(name in headers and "HTTP_" + name not in environ for name in WAITRESS_DELETES)
    except Exception:  # an internal that moved: no way to know, so no grant
        return True


def connection_socket(environ: Mapping[str, Any], server: str) -> Any:
    """The accepted connection, or ``None`` when the server did not say.

    ``server`` is :func:`~flask_selfhost.servers.server_name` of ``environ``, named once per
    request by the caller. Under uWSGI each call makes a new snapshot of
    the connection (see :func:`uwsgi_http_socket`): ask once per request.
    """
    # gunicorn.sock: gunicorn's gevent_pywsgi worker, whose environ gevent builds.
    sock = (
        environ.get("gunicorn.socket")
        or environ.get("werkzeug.socket")
        or environ.get("gunicorn.sock")
    )
    if sock is not None:
        return sock
    with contextlib.suppress(Exception):  # an internal that moved: no witness, never an error
        if server == WAITRESS:
            return _real(environ["waitress.client_disconnected"].__self__.socket)
        if server == CHEROOT:
            return _real(environ["wsgi.input"].rfile.raw._sock)
    if server == UWSGI and "UWSGI_ROUTER" not in environ:
        return uwsgi_http_socket()
    return None


def socket_ends(sock: Any) -> Ends | None:
    """The two ends of an accepted TCP socket (``None`` for anything else),
    with ``sock`` as the connection to remember the kernel's answer for."""
    if sock is None:
        return None
    try:
        if family(sock) not in (socket.AF_INET, socket.AF_INET6):
            return None
        peer, local = sock.getpeername(), sock.getsockname()
        ends = Ends(peer[0], peer[1], local[0], local[1], sock)
    except Exception:  # a closed or foreign object: no witness, never an error page
        return None
    if type(ends.peer) is not str or type(ends.local) is not str:
        return None
    return ends


def _real(sock: Any) -> Any:
    """``sock`` if it is a socket object, else ``None``."""
    return sock if isinstance(sock, socket.socket) else None


class _Snapshot:
    """What a socket said, kept after the socket is closed (uWSGI's is a
    duplicate of the server's descriptor, closed at once)."""

    def __init__(self, sock: socket.socket) -> None:
        self.family = int(sock.family)
        self._local = sock.getsockname()
        self._peer = sock.getpeername()

    def getsockname(self) -> Any:
        return self._local

    def getpeername(self) -> Any:
        return self._peer


@functools.cache
def _uwsgi_speaking_http() -> Any:
    """uWSGI's module when this process is a uWSGI worker that speaks HTTP
    to its clients itself, else ``None``. Asked once per process: the
    module and its options (``uwsgi.opt``, the command line) are fixed when
    the worker starts."""
    try:
        uwsgi: Any = importlib.import_module("uwsgi")  # exists only inside uWSGI
    except ImportError:
        return None
    options = getattr(uwsgi, "opt", {})
    # --socket/--uwsgi-socket speak the uwsgi protocol: the peer is nginx.
    if not options.get("http-socket") or options.get("socket") or options.get("uwsgi-socket"):
        return None
    return uwsgi


def uwsgi_http_socket() -> Any:
    """The connection of the request uWSGI is serving, when the worker
    itself speaks HTTP to the client; else ``None``.

    Read afresh on every call: a worker serves one connection after another
    on the same descriptor number, so nothing of a connection is kept
    beyond the request that asked.
    """
    uwsgi = _uwsgi_speaking_http()
    if uwsgi is None:
        return None
    with contextlib.suppress(Exception), socket.socket(fileno=os.dup(uwsgi.connection_fd())) as dup:
        return _Snapshot(dup)
    return None


def sets_server_addr(environ: Mapping[str, Any]) -> bool:
    """True for a server that writes ``SERVER_ADDR`` per connection.

    Apache's mod_wsgi (``mod_wsgi.version``, a tuple) and uWSGI
    (``uwsgi.version``, bytes; ``SERVER_ADDR`` from nginx's ``uwsgi_param`` or
    a PROXY protocol header) do. Other servers never set it, and granian
    copies the process environment into every environ: a ``SERVER_ADDR``
    exported in a shell would then be "the local address" of every request.
    The marks are checked by type, which an environment variable (always a
    string) cannot fake.
    """
    return (
        type(environ.get("mod_wsgi.version")) is tuple
        or type(environ.get("uwsgi.version")) is bytes
    )


def local_address(environ: Mapping[str, Any]) -> str | None:
    """The local IP address the connection arrived on, or ``None``.

    ``SERVER_ADDR`` wins where the server sets it per connection (see
    :func:`sets_server_addr`), even if it is unusable (the rule then refuses:
    a server that reports nonsense is not second-guessed); elsewhere it is
    ignored. ``SERVER_NAME`` is the bind address or the Host header, never this.
    """
    return local_address_of(environ, lambda: connection_socket(environ, server_name(environ)))


def local_address_of(environ: Mapping[str, Any], find_socket: Callable[[], Any]) -> str | None:
    """:func:`local_address`, with the connection found by ``find_socket``
    (called only when ``SERVER_ADDR`` does not answer): a caller that keeps
    the request's connection for other questions passes its own finder."""
    server_addr = environ.get("SERVER_ADDR")
    if server_addr is not None and sets_server_addr(environ):
        return server_addr if type(server_addr) is str else ""
    sock = find_socket()
    if sock is None:
        return None
    try:
        if family(sock) not in (socket.AF_INET, socket.AF_INET6):
            return None  # a unix socket has no IP address
        address = sock.getsockname()[0]
    except Exception:  # a closed or foreign socket object: unknown, not an error page
        return None
    return address if type(address) is str else None


def peer_address(sock: Any) -> str | None:
    """:data:`UNIX`, the peer's IP address, or ``None`` when unknown."""
    if sock is None:
        return None
    try:
        if family(sock) == socket.AF_UNIX:
            return UNIX
        address = sock.getpeername()[0]
    except Exception:  # a closed or foreign socket object: unknown, not an error page
        return None
    return address if type(address) is str else None


def is_unix_socket(sock: Any) -> bool:
    """True when ``sock`` is a unix-socket connection (False for non-sockets)."""
    try:
        return family(sock) == socket.AF_UNIX
    except Exception:  # not a socket: not proof of anything
        return False


# Servers that give no witness: what to change ---------------------------------

LOOPBACK_FIX = "bind the server to 127.0.0.1 and ::1 only"
NO_WITNESS = {
    "granian": (
        "granian tells the app neither which local address a connection used nor whether "
        "it came over a unix socket, so only loopback TCP clients pass (unix_socket_is_local "
        f"cannot work there); {LOOPBACK_FIX}, or serve the app with gunicorn"
    ),
    "bjoern": (
        "bjoern tells the app neither which local address a connection used nor whether "
        "it came over a unix socket, so only loopback TCP clients pass (unix_socket_is_local "
        f"cannot work there); {LOOPBACK_FIX}"
    ),
    "uwsgi-router": (
        "uWSGI's --http router does not tell the app which local address the client "
        f"used, so only loopback clients pass; use --http-socket, or {LOOPBACK_FIX}"
    ),
    "uwsgi-nginx": (
        "nginx did not send SERVER_ADDR to uWSGI, so only loopback clients pass; add "
        "'uwsgi_param SERVER_ADDR $server_addr;' to the nginx location"
    ),
}


def unknown_local_reason(environ: Mapping[str, Any], server: str) -> str | None:
    """Why the server behind ``environ`` (named ``server`` by
    :func:`~flask_selfhost.servers.server_name`) cannot say which local address a connection used,
    and what to change; ``None`` when nothing is known. Names no address:
    it is shown to clients."""
    if server == UWSGI:
        return NO_WITNESS["uwsgi-router" if "UWSGI_ROUTER" in environ else "uwsgi-nginx"]
    if server in (GRANIAN, BJOERN):
        return NO_WITNESS[server]
    return None
