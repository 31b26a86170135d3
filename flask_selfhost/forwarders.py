"""
Forwarders on this host, refused by name
========================================

A forwarder on this host (``ssh -R``, ``socat TCP-LISTEN:...,fork
TCP:127.0.0.1:PORT``, ``docker-proxy``, userspace ``tailscaled``) relays
clients from elsewhere over a socket of its own, on this host, held by a
process of this host: every other rule, the kernel witness included, rightly
sees a local client. With ``refuse_forwarders``, :func:`forwarder_rule`
looks up the process that holds the client's socket (the kernel's answer
names the socket's inode, :func:`flask_selfhost.kernel_witness.client_socket_of`;
:mod:`flask_selfhost.peer_process` finds its holders) and refuses the
request when it is a known forwarder
(:data:`flask_selfhost.peer_process.FORWARDERS`), whatever the rules before
it granted. nginx and haproxy are not counted for a request that came
through ``trusted_proxies``: the guard judged the client they named.

When it cannot tell, it refuses (fail closed): a TCP client on this host
whose socket the kernel cannot name (the server witnesses no ports, netlink
cannot be used), and a lookup that the scans' time budget did not allow.
A socket held by no process this user may read (another user's, without
root; another PID namespace) is granted: the docs' threat model says what
it cannot see. A unix-socket peer is named by its pid (``SO_PEERCRED``),
where the server gives the socket.

Memory: a connection the rule cleared is remembered on its connection
object (:data:`cleared_connections`, by ``id()`` with a weak reference, as
:data:`flask_selfhost.kernel_witness.witnessed_connections`), so that its
keep-alive requests cost a dict lookup, never a scan; nothing is kept by
address or 4-tuple. An ASGI scope names no connection: each request asks
the kernel, and the inode's cached answer (checked against pid reuse).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from . import peer_process
from .decision import FORWARDER, Decision
from .facts import RequestFacts
from .kernel_witness import client_socket_of, is_this_host
from .options import Options

#: Connections whose client's socket the rule found held by no known
#: forwarder, by ``id()``: (a weak reference whose callback removes the entry
#: when the socket object is freed, the holders' names or ``None``).
cleared_connections: dict[int, tuple[weakref.ref[Any], str | None]] = {}

UNSEEN = (
    "the client's socket cannot be named here ({why}), so whether a forwarder holds it "
    "cannot be told (refuse_forwarders refuses such clients)"
)
NOT_LOOKED = (
    "the process that holds the client's socket was not looked up: scans of /proc have "
    "spent their time budget (refuse_forwarders refuses until it refills)"
)
HELD_BY = (
    "the client's socket is held by {names} (pid {pids}), a known forwarder: it relays "
    "clients from elsewhere, who look local (refuse_forwarders)"
)


def _forget(key: int) -> Any:
    return lambda _: cleared_connections.pop(key, None)


def _remember(connection: object, shown: str | None) -> None:
    key = id(connection)
    with contextlib.suppress(TypeError):  # not weakly referable: asked every time
        cleared_connections[key] = (weakref.ref(connection, _forget(key)), shown)


def forwarder_rule(facts: RequestFacts, options: Options, grant: Decision) -> Decision:
    """Rule 3 (:data:`flask_selfhost.guard.RULES`): ``grant``, or a refusal
    when the client's socket is held by a known forwarder on this host (only
    with ``refuse_forwarders``)."""
    if not options.refuse_forwarders:
        return grant
    connection = facts.connection
    ends = connection.ends()
    remembered = ends.connection if ends is not None else None
    if remembered is not None:
        entry = cleared_connections.get(id(remembered))
        if entry is not None:
            return grant._replace(peer_process=entry[1])
    owner = grant.peer_owner or client_socket_of(connection)
    if owner is None:
        if connection.is_unix() or (ends is not None and not is_this_host(ends)):
            return grant  # a unix peer without SO_PEERCRED, or a peer of another host
        why = (
            "the server does not say which ports the connection joins"
            if ends is None
            else "the kernel does not answer for it"
        )
        return _refusal(grant, UNSEEN.format(why=why), None)
    if not owner.inode:  # a unix socket's peer: its pid, where the server gave the socket
        name = peer_process.process_name(owner.pid) if owner.pid > 0 else None
        holders = (peer_process.Holder(owner.pid, name),) if name else ()
        lookup = peer_process.Lookup(
            peer_process.FOUND if name else peer_process.NOT_FOUND, holders
        )
    else:
        lookup = peer_process.finder.find(owner.inode)
    if lookup.outcome == peer_process.NOT_LOOKED:
        return _refusal(grant, NOT_LOOKED, None)
    shown = lookup.shown() if lookup.outcome == peer_process.FOUND else None
    names = lookup.forwarders(trusted_proxy=grant.peer_addr is not None)
    if names:
        pids = ", ".join(str(holder.pid) for holder in lookup.holders if holder.name in names)
        return _refusal(grant, HELD_BY.format(names="/".join(names), pids=pids), shown)
    if remembered is not None and owner.inode:
        _remember(remembered, shown)
    return grant._replace(peer_process=shown)


def _refusal(grant: Decision, reason: str, shown: str | None) -> Decision:
    return Decision(
        False,
        FORWARDER,
        reason,
        grant.remote_addr,
        grant.local_addr,
        grant.peer_addr,
        peer_owner=grant.peer_owner,
        peer_process=shown,
    )
