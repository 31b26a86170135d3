"""
Which users of this host may connect: the ``allowed_users`` rule
================================================================

"This host" is every user of it. On a shared machine any other Unix user
can ``curl 127.0.0.1:8000/admin``, and the address, the Host and the
browser's headers all say "this host". The kernel knows who: the client's
socket has an owner (:func:`flask_selfhost.kernel_witness.client_socket_of`:
``sock_diag`` for TCP, ``SO_PEERCRED`` for a unix socket). With
``allowed_users`` set, the owner of the peer's socket must be one of the
users named (:func:`judge_peer_user`), whatever earlier rules granted.

- **Names, uids, or ``"self"``** (:class:`AllowedUsers`). Names are
  resolved once, when the guard is built (a name this host does not know
  raises then, never on a request). ``"self"`` is the effective uid of the
  process that serves the request, read at the request (one system call):
  a worker that a server forks as root and then moves to another user
  (gunicorn's ``--user``) allows its own user, not root.
- **The peer is the immediate one.** Behind a proxy on this host, the
  proxy's socket is judged (nginx's workers run as ``www-data``), and the
  proxy's client is another host's or nobody's: name the proxy's user here,
  and trust it with ``trusted_proxies=["user:www-data"]``.
- **Fail closed.** Where the owner cannot be known, the request is
  refused, and the log names what works: a server that gives no 4-tuple
  (granian on a wildcard address, bjoern, mod_wsgi), a unix socket under a
  server that hands the app no socket object (uvicorn, hypercorn, granian),
  a peer that is not on this host, a socket no process holds, or netlink
  refused by the sandbox.
- **What the owner is.** A socket's uid is its creator's: a tool that made
  its socket as root and then dropped privileges reads as root, and so
  does a socket passed to another process. Do not put root in
  ``allowed_users`` where other tools started as root run on the host.
  Inside a user namespace, a uid it does not map reads as 65534
  (``nobody``): leave that one out too.

The memory: the owner is remembered with the kernel's witness on the
connection object (never by address or 4-tuple), so a keep-alive request,
the fronts' fast paths included, costs one dict lookup and one comparison.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable

from .decision import USER, Decision
from .facts import RequestFacts
from .kernel_witness import client_socket_of, is_this_host

#: The entry that means the serving process's own effective uid.
SELF = "self"

WORKS = (
    "allowed_users works on TCP under gunicorn, Werkzeug, waitress, uvicorn and hypercorn, "
    "and on a unix socket under gunicorn, Werkzeug or waitress"
)
UNIX_UNKNOWN = (
    "the server gives the app no socket object for a unix-socket connection (uvicorn, "
    "hypercorn, granian), so the peer's user cannot be known; " + WORKS
)
NOT_WITNESSED = (
    "the server does not say which addresses and ports the connection joins, so the "
    "peer's user cannot be known; " + WORKS
)
ANOTHER_HOST = "the peer is not on this host, so no user of this host holds its socket"
NOT_HELD = (
    "the kernel names no user for the peer's socket (no socket of this host holds the "
    "connection, or netlink cannot be asked here)"
)


def user_id(entry: object, option: str) -> int:
    """The uid an option's entry names: an int, digits, or a user name
    this host knows (``pwd``); raises ValueError or TypeError naming
    ``option`` otherwise."""
    if isinstance(entry, bool) or not isinstance(entry, (int, str)):
        raise TypeError(f"flask_selfhost: {option} entries are user names or uids, got {entry!r}")
    if isinstance(entry, str) and entry.isdigit():
        entry = int(entry)
    if isinstance(entry, int):
        if entry < 0:
            raise ValueError(f"flask_selfhost: {option} uid {entry} is negative")
        return entry
    try:
        return pwd.getpwnam(entry).pw_uid
    except KeyError:
        raise ValueError(
            f"flask_selfhost: {option} names the user {entry!r}, which this host does not "
            f"have (no such entry in the user database)"
        ) from None


def user_name(uid: int) -> str:
    """A uid's name for the log, or the uid itself when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class AllowedUsers:
    """The users whose sockets may connect: uids, and whether ``"self"``.

    :param entries: User names, uids (ints or digits) and ``"self"``; a
        list, or one comma-separated string. Empty is refused: it would
        refuse everyone (leave the option unset to turn the rule off).

    Immutable and hashable, so that it can be part of :class:`Options`.
    """

    __slots__ = ("_hash", "itself", "uids")

    uids: frozenset[int]
    itself: bool
    _hash: int

    def __init__(self, entries: str | Iterable[object]) -> None:
        if isinstance(entries, str):
            entries = [part for part in (p.strip() for p in entries.split(",")) if part]
        uids: set[int] = set()
        itself = False
        for entry in entries:
            if entry == SELF:
                itself = True
            else:
                uids.add(user_id(entry, "allowed_users"))
        if not uids and not itself:
            raise ValueError(
                "flask_selfhost: allowed_users is empty, which would refuse everyone; "
                "name users, uids or 'self', or leave it unset (None) to turn the rule off"
            )
        object.__setattr__(self, "uids", frozenset(uids))
        object.__setattr__(self, "itself", itself)
        object.__setattr__(self, "_hash", hash((self.uids, itself)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("AllowedUsers is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AllowedUsers):
            return NotImplemented
        return (self.uids, self.itself) == (other.uids, other.itself)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        shown = [str(uid) for uid in sorted(self.uids)] + ([SELF] if self.itself else [])
        return f"AllowedUsers({', '.join(map(repr, shown))})"

    def allows(self, uid: int) -> bool:
        """Whether a socket of ``uid`` may connect: ``"self"`` is this
        process's effective uid now."""
        return uid in self.uids or (self.itself and uid == os.geteuid())


def judge_peer_user(facts: RequestFacts, allowed: AllowedUsers, grant: Decision) -> Decision:
    """``grant`` (with the peer's owner) when the owner of the peer's
    socket is one of ``allowed``; else a refusal that says whose socket it
    is, or why nobody's can be known."""
    owner = grant.peer_owner or client_socket_of(facts.connection)
    if owner is not None:
        if allowed.allows(owner.uid):
            return grant if grant.peer_owner is owner else grant._replace(peer_owner=owner)
        reason = (
            f"the peer's socket belongs to user {user_name(owner.uid)} (uid {owner.uid}), "
            "who is not in allowed_users"
        )
        return _refusal(grant, reason)._replace(peer_owner=owner)
    return _refusal(grant, _unknown_reason(facts))


def _unknown_reason(facts: RequestFacts) -> str:
    connection = facts.connection
    ends = connection.ends()
    if ends is None:
        return UNIX_UNKNOWN if connection.is_unix() else NOT_WITNESSED
    return NOT_HELD if is_this_host(ends) else ANOTHER_HOST


def _refusal(grant: Decision, reason: str) -> Decision:
    return Decision(False, USER, reason, grant.remote_addr, grant.local_addr, grant.peer_addr)
