"""
The kernel as witness of a client on this host
==============================================

The source rule trusts addresses, and network address translation on this
host forges them: an INPUT ``SNAT`` to this host's own address, a ``DNAT``
to it paired with that ``SNAT``, or the DNAT trap to ``127.0.0.1`` paired
with an ``SNAT`` to ``127.0.0.1`` all make another host's connection look
like this host's (:mod:`flask_selfhost.peer_socket` tells how). So a grant of
the client rule for a TCP connection whose witnessed peer is loopback or
one of this host's own addresses (:mod:`flask_selfhost.host_addresses`)
also needs the kernel to find the client's own socket on this host
(:func:`witness_client`). Other peers (a trusted proxy on another host) are
not asked about: the kernel would not know them.

What it reads: the connection's two ends as the server witnessed them
(:class:`~flask_selfhost.facts.Ends`, which the adapters build: from the
accepted socket of a WSGI server, :func:`flask_selfhost.connection.socket_ends`,
or from ``scope["client"]`` and ``scope["server"]`` of an ASGI server that
fills them per connection). Where a server gives no such
witness (granian, whose ASGI scope gives ports as strings and whose WSGI
environ names no socket; bjoern, mod_wsgi, a unix socket) the check does
not run, and the log says so once.

Memory: where the server gives a connection object (WSGI's accepted
socket), a grant is remembered for it (:data:`witnessed_connections`, until
the socket object is freed) with the kernel's answer, and the
connection's later requests, the WSGI fast path's included, cost one dict
lookup. Nothing is ever keyed on the 4-tuple (tuples are reused, and an
INPUT ``SNAT`` keeps the attacker's source port), and nothing a client can
grow is stored. An ASGI scope names no connection; under uvicorn the
connection is found behind ``receive`` (:mod:`flask_selfhost.asgi_connection`:
its transport) and the grant is remembered on it the same way, with the
scope's ``client`` and ``server`` tuples once they were found to be its ends
(uvicorn builds them once per connection, so the next requests are answered
by identity). Under other ASGI servers each request asks the kernel again.

The peer's owner: the kernel's answer also names who holds the client's
socket (its creator's uid, its inode). A grant of the witness carries it
(:attr:`~flask_selfhost.decision.Decision.peer_owner`), and
:func:`client_socket_of` gives it to any rule that needs it (the
``allowed_users`` rule, proxies trusted by their user), for TCP and, where
the server gives the socket, for a unix socket's peer (``SO_PEERCRED``).

Where netlink cannot be used at all (not Linux, ``AF_NETLINK`` refused by
seccomp or ``RestrictAddressFamilies``), the first check finds out once
(:func:`peer_socket.available`), says so in the log, and the guard goes on
without the witness, unless ``require_client_socket`` refuses every such
request instead. On a host where it works, a query that fails for one
request refuses that request.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any

from . import peer_socket
from .decision import KERNEL, Decision
from .facts import Connection, Ends, PeerOwner
from .host_addresses import host_addresses
from .log import log_warning

#: An ASGI scope's ``client`` and ``server`` tuples (uvicorn builds them once
#: per connection, so every request of it carries the same two objects).
ScopeEnds = tuple[tuple[Any, ...], tuple[Any, ...]]

#: Connections (socket objects) whose client the kernel found on this host,
#: by ``id()``, with what it said of the client's socket (its owner's uid
#: and its inode) and, for an ASGI connection, the scope's ``client`` and
#: ``server`` objects that its requests carry (:data:`ScopeEnds`): the fast
#: path's lookup is then one builtin call and one dict lookup (a WeakSet's
#: ``in`` is a Python method: 1,500 instructions more). Each entry holds a
#: weak reference whose callback removes the entry when the socket is freed,
#: before its ``id()`` can name another object; so an ``id()`` found here
#: names the very object that was vouched for.
witnessed_connections: dict[int, tuple[weakref.ref[Any], PeerOwner, ScopeEnds | None]] = {}


#: The ``client`` tuple of an ASGI scope, by ``id()``, for each connection
#: of :data:`witnessed_connections` whose requests carry it: with that
#: scope's ``server`` tuple and the owner of the client's socket. The entry
#: holds the tuple itself, so while it is here no other object can have its
#: ``id()``; it goes when the connection's entry goes, or when the
#: connection's requests are found to carry another tuple. The ASGI fast
#: path finds a vouched connection by it, whatever server kept the connection.
vouched_scope_clients: dict[int, tuple[tuple[Any, ...], tuple[Any, ...], PeerOwner]] = {}


def _forget(key: int) -> Any:
    def forget(_: Any) -> None:
        entry = witnessed_connections.pop(key, None)
        if entry is not None and entry[2] is not None:
            vouched_scope_clients.pop(id(entry[2][0]), None)

    return forget


def remember_connection(sock: Any, owner: PeerOwner) -> None:
    """Remember that the kernel vouched for ``sock``'s client, and who owns
    the client's socket."""
    key = id(sock)
    with contextlib.suppress(TypeError):  # not weakly referable: asked every time
        witnessed_connections[key] = (weakref.ref(sock, _forget(key)), owner, None)


def remember_scope_ends(sock: Any, ends: ScopeEnds) -> None:
    """Remember, for a connection vouched for, the scope's ``client`` and
    ``server`` objects, once they were found to be its own ends: a later
    request that carries the same two objects has the same ends."""
    entry = witnessed_connections.get(id(sock))
    if entry is not None and type(ends[0]) is tuple and type(ends[1]) is tuple:
        if entry[2] is not None:  # the tuple its requests carried before
            vouched_scope_clients.pop(id(entry[2][0]), None)
        witnessed_connections[id(sock)] = (entry[0], entry[1], ends)
        vouched_scope_clients[id(ends[0])] = (ends[0], ends[1], entry[1])


#: False once this process has found that netlink cannot be asked here.
usable = True
_probed = False
_probe_lock = threading.Lock()
#: Whether the log has said that a server gives no 4-tuple (once per process).
_unwitnessed_said = False

NOT_WITNESSED = (
    "the server does not say which addresses and ports the connection joins, so the kernel "
    "cannot be asked whether the client is on this host (require_client_socket refuses such "
    "clients instead)"
)
UNUSABLE = "the kernel cannot be asked about clients here ({why}); {consequence}"
GOING_ON = (
    "the guard goes on without that witness, so address translation on this host can make "
    "another host look local (require_client_socket refuses instead)"
)
REFUSING = "require_client_socket is set, so every client on this host is refused"


def is_this_host(ends: Ends) -> bool:
    """The peer claims to be this host: loopback, the local address, or
    another address of this host. Compared as packed bytes, not
    ``ipaddress`` objects: this runs for every new connection."""
    try:
        peer = peer_socket.packed_ip(ends.peer.partition("%")[0])
    except (OSError, TypeError, AttributeError):
        return False
    if peer_socket.is_loopback(peer):
        return True
    with contextlib.suppress(OSError, TypeError, AttributeError):
        if peer == peer_socket.packed_ip(ends.local.partition("%")[0]):
            return True
    return peer in _packed_host_addresses()


#: This host's addresses (:data:`host_addresses`) packed, with the snapshot
#: they were packed from: packed again only when the snapshot changes.
_packed_snapshot: tuple[frozenset[Any], frozenset[bytes]] = (frozenset(), frozenset())


def _packed_host_addresses() -> frozenset[bytes]:
    global _packed_snapshot
    current = host_addresses.current()
    snapshot, packed = _packed_snapshot
    if current is not snapshot:
        packed = frozenset(address.packed for address in current)
        _packed_snapshot = (current, packed)
    return packed


def _probe(required: bool) -> None:
    """Find out once per process whether netlink answers here; the log says
    what follows for the guard that asked first (``required``)."""
    global usable, _probed
    with _probe_lock:
        if _probed:
            return
        works, why = peer_socket.available()
        if not works and not why.startswith(peer_socket.SILENT):
            # The probe itself could not be built (out of descriptors, say):
            # asked again at the next check; meanwhile a failing query refuses.
            return
        usable, _probed = works, True
    if not works:
        log_warning(UNUSABLE.format(why=why, consequence=REFUSING if required else GOING_ON))


def ask_kernel(ends: Ends, required: bool) -> tuple[peer_socket.Verdict | None, PeerOwner | None]:
    """The kernel's verdict on the client of ``ends`` (``None`` when the
    witness cannot run here and is not required: the grant stands), and
    the owner of the client's socket when the verdict is a grant (else
    ``None``)."""
    if not _probed:
        _probe(required)
    if not usable:
        if not required:
            return None, None
        return peer_socket.Verdict(
            False,
            peer_socket.UNAVAILABLE,
            UNUSABLE.format(why="netlink sock_diag does not answer", consequence=REFUSING),
        ), None
    verdict = peer_socket.check_client(ends.peer, ends.peer_port, ends.local, ends.local_port)
    return verdict, verdict.owner


def note_unwitnessed(server: str | None) -> None:
    """Say once per process that the server's connections cannot be checked."""
    global _unwitnessed_said
    if not _unwitnessed_said:
        _unwitnessed_said = True
        log_warning(f"{server or 'this server'}: {NOT_WITNESSED}")


def witness_client(
    connection: Connection, server: str | None, grant: Decision, check: bool, required: bool
) -> Decision:
    """``grant`` (the client rule's), or a refusal when the connection's
    peer claims to be this host and the kernel finds no socket of a client
    here that holds it."""
    if not check or grant.peer_owner is not None:
        # An owner on the grant is the kernel's answer for this connection
        # already (client_socket_of names one only for a socket it vouches for).
        return grant
    ends = connection.ends()
    if ends is None:
        if connection.is_unix():  # no TCP connection: nothing to ask about
            return grant
        note_unwitnessed(server)
        if not required:
            return grant
        reason = f"the client cannot be checked: {NOT_WITNESSED}"
        return Decision(False, KERNEL, reason, grant.remote_addr, grant.local_addr, grant.peer_addr)
    remembered = ends.connection
    if remembered is not None:
        entry = witnessed_connections.get(id(remembered))
        if entry is not None:
            return grant._replace(peer_owner=entry[1])
    if not is_this_host(ends):
        return grant
    verdict, owner = ask_kernel(ends, required)
    if verdict is None:
        return grant
    if owner is not None:
        if remembered is not None:
            remember_connection(remembered, owner)
        return grant._replace(peer_owner=owner)
    reason = (
        f"the kernel finds no client of this host for this connection ({verdict.reason}, "
        f"port {ends.peer_port} to port {ends.local_port}): {verdict.detail}"
    )
    return Decision(False, KERNEL, reason, grant.remote_addr, ends.local, grant.peer_addr)


# The peer's owner, for the rules that need it -----------------------------------


def client_socket_of(connection: Connection) -> PeerOwner | None:
    """Who holds the client's end of this request's connection: the uid
    and inode of the client's TCP socket (``sock_diag``), or the uid and pid
    of a unix socket's peer (``SO_PEERCRED``, where the server gives the
    socket object: gunicorn, Werkzeug, waitress); ``None`` when it cannot be
    known, which a rule that needs it refuses.

    "The client" is the immediate peer: a proxy, for a relayed request. A
    TCP peer is asked about only when it claims to be this host
    (:func:`is_this_host`); the answer counts only when the kernel grants
    it (:func:`flask_selfhost.peer_socket.judge_client_socket`: the exact
    4-tuple, connected, held by a process), since an orphaned socket reads
    as uid 0. A connection the kernel vouched for before is answered from
    :data:`witnessed_connections` (one dict lookup); otherwise the kernel is
    asked now (about 10 us) and a grant remembered on the connection object.
    Nothing is ever kept by address or 4-tuple. The grant a rule received
    may already carry the answer (:attr:`Decision.peer_owner`): read that
    first. Works whether ``check_client_socket`` is on or off; where netlink
    cannot be used, ``None``.
    """
    ends = connection.ends()
    if ends is None:
        return connection.unix_peer() if connection.is_unix() else None
    remembered = ends.connection
    if remembered is not None:
        entry = witnessed_connections.get(id(remembered))
        if entry is not None:
            return entry[1]
    if not is_this_host(ends):
        return None
    owner = ask_kernel(ends, True)[1]
    if owner is not None and remembered is not None:
        remember_connection(remembered, owner)
    return owner


# The fronts' fast paths: a grant from memory still needs the witness ------------


def ends_witnessed(ends: Ends | None, required: bool) -> tuple[bool, PeerOwner | None]:
    """For the fronts' fast paths: whether the kernel vouches for the client
    of ``ends`` now (remembered on its connection, if it names one), or the
    check cannot run and need not; and the owner of the client's socket
    when the kernel named it. False sends the request to the full rules,
    which say why it is refused."""
    if ends is None:
        return not required, None
    if ends.connection is not None:
        entry = witnessed_connections.get(id(ends.connection))
        if entry is not None:
            return True, entry[1]
    verdict, owner = ask_kernel(ends, required)
    if verdict is None:
        return True, None
    if owner is not None and ends.connection is not None:
        remember_connection(ends.connection, owner)
    return verdict.granted, owner
