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
    witnessed_connections,
)
from .options import Options
from .scope import Scope, ScopeConnection

#: The classes whose bound method uvicorn passes as ``receive``, by module
#: and name: an HTTP request cycle (one per request) and the WebSocket
#: protocols (one per connection). Each holds the asyncio transport of the
#: accepted connection as ``transport``: one object per connection, alive
#: as long as it, which a grant can be remembered on. Other servers pass a
#: queue's ``get`` (hypercorn, daphne) or a native method (granian), which
#: leads to nothing that lives as long as the connection.
UVICORN_RECEIVERS = frozenset(
    {
        ("uvicorn.protocols.http.h11_impl", "RequestResponseCycle"),
        ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle"),
        ("uvicorn.protocols.websockets.websockets_impl", "WebSocketProtocol"),
        ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol"),
        ("uvicorn.protocols.websockets.wsproto_impl", "WSProtocol"),
    }
)

#: Whether a class is one of :data:`UVICORN_RECEIVERS`, by the class
#: object: found once per class, the module's own class, not one that
#: only bears its name. A process has few classes of ``receive`` owners;
#: the bound keeps odd callers from growing it.
_receiver_classes: dict[type, bool] = {}
RECEIVER_CLASSES_LIMIT = 32


def _is_uvicorn_receiver(kind: type) -> bool:
    known = _receiver_classes.get(kind)
    if known is None:
        module, name = getattr(kind, "__module__", None), getattr(kind, "__qualname__", None)
        known = (module, name) in UVICORN_RECEIVERS and (
            getattr(sys.modules.get(str(module)), str(name), None) is kind
        )
        if len(_receiver_classes) < RECEIVER_CLASSES_LIMIT:
            _receiver_classes[kind] = known
    return known


def connection_object(scope: Mapping[str, Any], receive: Any) -> Any:
    """The server's object for the connection of an ASGI call, or ``None``.

    uvicorn's asyncio transport (see :data:`UVICORN_RECEIVERS`), and only
    while the scope's ``client`` and ``server`` are that transport's own
    peer and local ends: a proxy-headers middleware that rewrote the client
    makes the scope name someone else, whose verdict is not the
    connection's. ``None`` elsewhere: the kernel is then asked per request.
    """
    # An internal that moved, a unix socket: no connection, never an error.
    with contextlib.suppress(Exception):
        owner = receive.__self__
        if not _is_uvicorn_receiver(type(owner)):
            return None
        transport = owner.transport
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
    answered without comparing again: an ``id()`` in
    :data:`~flask_selfhost.kernel_witness.witnessed_connections` names the
    very object vouched for, and the same two tuples hold the same ends (a
    proxy-headers middleware's ``client`` is another object)."""
    users = options.allowed_users
    try:
        entry = witnessed_connections[id(receive.__self__.transport)]
        ends = entry[2]
        if ends is not None and ends[0] is scope["client"] and ends[1] is scope["server"]:
            return users is None or users.allows(entry[1].uid), entry[1]
    except (AttributeError, KeyError, TypeError):
        pass  # not uvicorn's, or not vouched for: the full check
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
