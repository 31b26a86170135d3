"""
The connection behind an ASGI call
==================================

An ASGI scope names no connection, so a verdict about the connection's
client (the kernel's, :mod:`flask_selfhost.kernel_witness`) has nothing to
be remembered on, and would be asked again for every request of a
keep-alive connection. Some servers' ``receive`` is a method of an object
that holds the connection; this module knows which, and where:

=====================================  =========================================
server                                 the connection
=====================================  =========================================
uvicorn (h11, httptools; WebSocket)    ``receive.__self__.transport``, the
                                       asyncio transport (internal)
gunicorn's ASGI worker                 ``receive.__self__.protocol.transport``
                                       (HTTP/1.1), ``receive.__self__.transport``
                                       (WebSocket): the asyncio transport
hypercorn, daphne                      none: ``receive`` is the ``get`` of a
                                       queue made per request
granian                                none: a native method
=====================================  =========================================

An object qualifies only if it lives exactly as long as the connection and
is never used for another connection while alive: a memory keyed on it
(by ``id()``, dropped by a weak reference's callback when it is freed) then
never outlives the connection it vouched for. Where no such object is
known, :func:`connection_object` says ``None`` and the kernel is asked per
request. :func:`connection_verdict` runs the rules that read the connection
on the ASGI fast path; on a connection vouched for before it costs a few
lookups (the scope's own ``client`` and ``server`` objects, compared by
identity). Where the WSGI servers keep their connections is
:mod:`flask_selfhost.connection`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import Any

from .facts import PeerOwner
from .kernel_witness import (
    client_socket_of,
    ends_witnessed,
    remember_scope_ends,
    vouched_scope_clients,
    witnessed_connections,
)
from .options import Options
from .scope import Scope, ScopeConnection

#: The classes whose bound method a server passes as ``receive``, by module
#: and name, and the attributes that lead from such an object to the asyncio
#: transport of the accepted connection: one object per connection, alive as
#: long as it, which a grant can be remembered on. uvicorn's HTTP request
#: cycle (one per request) and WebSocket protocols (one per connection) hold
#: it as ``transport``; gunicorn's ASGI worker passes a body receiver (one
#: per request) whose ``protocol`` (one per connection) holds it, and a
#: WebSocket protocol that holds it. Other servers pass a queue's ``get``
#: (hypercorn, daphne) or a native method (granian), which leads to nothing
#: that lives as long as the connection.
RECEIVERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("uvicorn.protocols.http.h11_impl", "RequestResponseCycle"): ("transport",),
    ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle"): ("transport",),
    ("uvicorn.protocols.websockets.websockets_impl", "WebSocketProtocol"): ("transport",),
    ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol"): (
        "transport",
    ),
    ("uvicorn.protocols.websockets.wsproto_impl", "WSProtocol"): ("transport",),
    ("gunicorn.asgi.protocol", "BodyReceiver"): ("protocol", "transport"),
    ("gunicorn.asgi.websocket", "WebSocketProtocol"): ("transport",),
}

#: The way to the transport from an object of a class (see
#: :data:`RECEIVERS`), by the class object: found once per class, the
#: module's own class, not one that only bears its name. A process has few
#: classes of ``receive`` owners; the bound keeps odd callers from growing it.
_receiver_classes: dict[type, tuple[str, ...] | None] = {}
RECEIVER_CLASSES_LIMIT = 32


def _way_to_transport(kind: type) -> tuple[str, ...] | None:
    if kind in _receiver_classes:
        return _receiver_classes[kind]
    module, name = getattr(kind, "__module__", None), getattr(kind, "__qualname__", None)
    way = RECEIVERS.get((str(module), str(name)))
    if getattr(sys.modules.get(str(module)), str(name), None) is not kind:
        way = None
    if len(_receiver_classes) < RECEIVER_CLASSES_LIMIT:
        _receiver_classes[kind] = way
    return way


def connection_object(scope: Mapping[str, Any], receive: Any) -> Any:
    """The server's object for the connection of an ASGI call, or ``None``.

    The asyncio transport of uvicorn's or gunicorn's connection (see
    :data:`RECEIVERS`), and only while the scope's ``client`` and ``server``
    are that transport's own peer and local ends: a proxy-headers middleware
    that rewrote the client makes the scope name someone else, whose verdict
    is not the connection's. ``None`` elsewhere: the kernel is then asked per
    request.
    """
    # An internal that moved, a unix socket: no connection, never an error.
    with contextlib.suppress(Exception):
        transport = receive.__self__
        way = _way_to_transport(type(transport))
        if way is None:
            return None
        for name in way:
            transport = getattr(transport, name)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        client, server = scope["client"], scope["server"]
        if (
            peer[0] == client[0]
            and peer[1] == client[1]
            and local[0] == server[0]
            and local[1] == server[1]
        ):
            return transport
    return None


def connection_verdict(
    scope: Scope, receive: Any, options: Options
) -> tuple[bool, PeerOwner | None]:
    """For the ASGI fast path: whether the rules that read the connection
    allow this call's, never from a memory of requests: the kernel's witness
    (``check_client_socket``), remembered on the server's connection object
    (:func:`connection_object`) or asked now
    (:func:`flask_selfhost.kernel_witness.ends_witnessed`), and the
    ``allowed_users`` rule, from the owner of the client's socket. Also that
    owner, where the kernel named it. False sends the request to the full
    rules, which say why it is refused.

    A connection vouched for before, whose requests carry the scope's
    ``client`` and ``server`` objects that were compared with its ends, is
    answered without comparing again: the ``client`` tuple is found in
    :data:`~flask_selfhost.kernel_witness.vouched_scope_clients`, which
    holds it (so its ``id()`` names that very tuple), with the ``server``
    tuple of the same connection; the same two tuples hold the same ends (a
    proxy-headers middleware's ``client`` is another object)."""
    users = options.allowed_users
    try:
        vouched = vouched_scope_clients[id(scope["client"])]
        if vouched[1] is scope["server"]:
            return users is None or users.allows(vouched[2].uid), vouched[2]
    except (KeyError, TypeError):
        pass  # not vouched for (or no client): the full check
    owner = None
    if options.check_client_socket:
        witnessed, owner = _witnessed(scope, receive, options.require_client_socket)
        if not witnessed:
            return False, None
    if users is not None:  # the owner of this request's connection
        if owner is None:
            owner = client_socket_of(ScopeConnection(scope, connection_object(scope, receive)))
        if owner is None or not users.allows(owner.uid):
            return False, owner
    return True, owner


def _witnessed(scope: Scope, receive: Any, required: bool) -> tuple[bool, PeerOwner | None]:
    """The kernel's witness for :func:`connection_verdict`; a grant on a
    connection object is remembered on it, with the scope's ends."""
    connection = connection_object(scope, receive)
    if connection is None:
        return ends_witnessed(ScopeConnection(scope).ends(), required)
    entry = witnessed_connections.get(id(connection))
    if entry is None:  # asked now, and remembered on the connection if granted
        witnessed = ends_witnessed(ScopeConnection(scope, connection).ends(), required)
        if not witnessed[0]:
            return witnessed
    else:
        witnessed = True, entry[1]
    # Its ends are the scope's (connection_object compared them).
    remember_scope_ends(connection, (scope["client"], scope["server"]))
    return witnessed
