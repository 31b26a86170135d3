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
request. :func:`scope_witnessed` is the ASGI fast path's witness. Where
the WSGI servers keep their connections is :mod:`flask_selfhost.connection`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import Any

from .facts import PeerOwner
from .kernel_witness import ends_witnessed, witnessed_connections
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


def scope_witnessed(scope: Scope, receive: Any, required: bool) -> tuple[bool, PeerOwner | None]:
    """For the ASGI fast path: whether the kernel vouches for the client of
    this call's connection, remembered on the server's connection object
    (:func:`connection_object`) or asked now
    (:func:`flask_selfhost.kernel_witness.ends_witnessed`). False sends the
    request to the full rules, which say why it is refused."""
    connection = connection_object(scope, receive)
    if connection is not None:
        entry = witnessed_connections.get(id(connection))
        if entry is not None:  # its ends are the scope's: connection_object compared them
            return True, entry[1]
    return ends_witnessed(ScopeConnection(scope, connection).ends(), required)
