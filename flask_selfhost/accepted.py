"""
The common request, remembered
==============================

Almost every request a guarded app answers is the same request: a loopback
client, no forwarding header, a Host such as ``127.0.0.1:8000``, no
``Origin`` or ``Sec-Fetch-*``. For such a request the rules' verdict depends
on two raw strings only, the client address and the Host, so once the full
rules have granted one, :func:`flask_selfhost.environ.evaluate` can answer the
next by two lookups instead of building the request's facts.

What may be remembered, and why it is safe:

- a client address, with the grant the rules gave it, only when the source
  rule granted it as loopback without asking the connection for anything
  (``local_addr`` is ``None``): that grant is a pure function of the string
  and the options, which own this memory;
- a Host value, only when the host rule accepts it without the connection's
  local address (loopback literals, ``localhost``, ``allowed_hosts``);
- nothing at all for a request that carried a forwarding header, a PROXY
  protocol mark or a browser's headers, or came over HTTP/2: the fast path
  tests for each of those itself (it takes HTTP/1.x only), on every request;
- nothing from a refusal, and nothing from a request that waitress served:
  waitress may have deleted the forwarding headers it carried, which only
  the full rules look for (see
  :func:`flask_selfhost.connection.waitress_deleted_forwarding`);
- nothing at all for options with ``refuse_forwarders``: the process that
  holds a client's socket is no fact of its address, so every request
  takes the full rules, where the forwarder rule remembers its answer on
  the connection (:mod:`flask_selfhost.forwarders`);
- nothing at all, ever again, once the process has seen a PROXY protocol
  header (:func:`forget_everything`): a later request on such a connection
  shows no mark of it (see :mod:`flask_selfhost.environ`);
- nothing at all for options whose ``trusted_proxies`` names a user: such
  a proxy's request without forwarding headers is refused only once the
  owner of its socket is asked, which the fast paths do not ask.

The ``allowed_users`` rule is not remembered here: the fast paths ask it on
every request, from the owner remembered on the connection object.

Both memories are bounded (:data:`LIMIT` entries, strings of bounded length),
hold only results of pure functions, and are never keyed on anything a
client can make large. :meth:`AcceptedRequests.remember` is the one place
that decides what a grant proves: the fronts call it with every decision.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .decision import SOURCE
from .hosts import MAX_LENGTH, judge_host
from .servers import WAITRESS

if TYPE_CHECKING:
    from .decision import Decision
    from .facts import RequestFacts

#: At most this many client addresses and as many Host entries (a Host value
#: takes two, its WSGI and ASGI forms) are remembered; beyond that, requests
#: take the full rules (correct, only slower).
LIMIT = 256

#: Every memory in this process, so that :func:`forget_everything` reaches all.
_memories: weakref.WeakSet[AcceptedRequests] = weakref.WeakSet()
_remembering = True


def forget_everything() -> None:
    """Empty every memory and remember nothing more in this process."""
    global _remembering
    _remembering = False
    for memory in list(_memories):
        memory.remotes.clear()
        memory.hosts.clear()


class AcceptedRequests:
    """Remembered grants for the common request, per :class:`Options`."""

    __slots__ = ("__weakref__", "allowed_hosts", "hosts", "remembering", "remotes")

    def __init__(self, allowed_hosts: frozenset[str], remembering: bool = True) -> None:
        self.allowed_hosts = allowed_hosts
        #: False: nothing is ever remembered here (a proxy trusted by its
        #: user looks like any loopback client until its socket's owner is asked).
        self.remembering = remembering
        self.remotes: dict[str, Decision] = {}
        #: Each accepted Host value twice, as WSGI's ``str`` and as ASGI's raw
        #: ``bytes`` (which never compare equal), each mapped to its form's
        #: type: a front takes only an entry of its own interface's type, so
        #: that a bytes ``HTTP_HOST`` never meets the ASGI form.
        self.hosts: dict[str | bytes, type] = {}
        _memories.add(self)

    def remember(self, facts: RequestFacts, decision: Decision) -> None:
        """Remember what the full rules' ``decision`` for ``facts`` proves,
        if anything (see the list above)."""
        if (
            not _remembering
            or not self.remembering
            or not decision.allowed
            or facts.server == WAITRESS
            or facts.relayed
            or facts.proxy_protocol is not None
            or facts.http2 is not None
            or facts.rewritten
            or facts.origin is not None
            or facts.sec_fetch_site is not None
            or decision.rule != SOURCE
            or decision.local_addr is not None
            or decision.peer_addr is not None
            or facts.remote is None
        ):
            return
        if len(self.remotes) < LIMIT:
            # Who held that connection's client socket is no fact of the address.
            self.remotes[facts.remote] = decision._replace(peer_owner=None)
        host = facts.host
        if (
            host is not None
            and len(self.hosts) < LIMIT - 1
            and len(host) <= MAX_LENGTH
            and judge_host(host, self.allowed_hosts) is None
        ):
            self.hosts[host] = str
            self.hosts[host.encode("latin-1")] = bytes
        if not _remembering:
            # Another thread forgot everything since the check above (the
            # process's first PROXY header): what was just added must go too.
            self.remotes.clear()
            self.hosts.clear()
