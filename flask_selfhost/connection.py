"""
The connection the server accepted
==================================

gunicorn (``gunicorn.socket``) and Werkzeug's server (``werkzeug.socket``) put
the accepted connection in the environ. It is the one witness that a header
cannot forge: its local address (``getsockname()``), its peer
(``getpeername()``) and its family (a unix socket has no IP address). Every
rule that needs one of these asks here.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

#: A socket's address family as a plain int. ``sock.family`` converts it to
#: an enum, which costs half a microsecond; this C-level getter does not. It
#: raises TypeError for anything that is not a socket.
socket_family: Any = socket.SocketType.family.__get__

#: The word for "the peer is a unix socket".
UNIX = "unix"


def connection_socket(environ: Mapping[str, Any]) -> Any:
    """The accepted connection, or ``None`` when the server did not say."""
    return environ.get("gunicorn.socket") or environ.get("werkzeug.socket")


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
    server_addr = environ.get("SERVER_ADDR")
    if server_addr is not None and sets_server_addr(environ):
        return server_addr if type(server_addr) is str else ""
    sock = connection_socket(environ)
    if sock is None:
        return None
    try:
        if socket_family(sock) not in (socket.AF_INET, socket.AF_INET6):
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
        if socket_family(sock) == socket.AF_UNIX:
            return UNIX
        address = sock.getpeername()[0]
    except Exception:  # a closed or foreign socket object: unknown, not an error page
        return None
    return address if type(address) is str else None


def is_unix_socket(sock: Any) -> bool:
    """True when ``sock`` is a unix-socket connection (False for non-sockets)."""
    try:
        return bool(socket_family(sock) == socket.AF_UNIX)
    except Exception:  # not a socket: not proof of anything
        return False


def unknown_local_reason(environ: Mapping[str, Any]) -> str | None:
    """Why the server behind ``environ`` cannot say which local address a
    connection used, and what to change; ``None`` when nothing is known."""
    return None
