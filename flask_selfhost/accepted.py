"""
The common requests, remembered
===============================

Almost every request a guarded app answers is one of two requests from a
loopback client, with no forwarding header: curl's (a Host such as
``127.0.0.1:8000``, no ``Origin`` or ``Sec-Fetch-*``) and a browser's from
the app's own pages (the same Host, plus ``Origin`` and ``Sec-Fetch-*``).
For such a request the rules' verdict depends on a few raw strings only, so
once the full rules have granted one, the fronts answer the next with the
same strings from memory instead of building the request's facts
(:func:`flask_selfhost.middleware.guard_wsgi_app`,
:class:`flask_selfhost.asgi.SelfHostASGIMiddleware`).

What may be remembered, and why it is safe:

- a client address, with the grant the rules gave it, only when the source
  rule granted it as loopback without asking the connection for anything
  (``local_addr`` is ``None``): that grant is a pure function of the string
  and the options, which own this memory;
- a Host value, only when the host rule accepts it without the connection's
  local address (loopback literals, ``localhost``, ``allowed_hosts``);
- a browser's request (:attr:`AcceptedRequests.browsers`): the whole grant,
  keyed on every string that the rules read of it, the client address,
  ``Host``, ``Origin``, ``Sec-Fetch-Site``, ``-Mode`` and ``-Dest`` (as
  the request carried them), the method and the scheme, under the two
  conditions above, and only when the cross-site rule granted it (or is
  off). That rule reads nothing else for a method other than ``OPTIONS``:
  ``Access-Control-Request-*`` only for an ``OPTIONS``, and a request of
  that method is never remembered, so no preflight is. A key differs from
  a cross-site request's in one of its strings at least, since the rule is a
  function of them; the raw strings are the key (no case is folded and no
  repeated header joined), so a value the rules read another way is
  another key, judged by the full rules first;
- nothing at all for a request that carried a forwarding header or a
  PROXY protocol mark, or came over HTTP/2: the fast paths test for each
  of those themselves (they take HTTP/1.1 only), on every request;
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

What is never remembered is a verdict on the connection: the kernel witness
(:mod:`flask_selfhost.kernel_witness`) runs on the fast paths too, for each
request that has no witnessed connection to remember it on. A rule that
reads the connection (its socket's owner, say) must do the same: run
beside the witness on both fast paths, or turn this memory off while it is
on (:meth:`AcceptedRequests.remember` is where a grant is judged fit).

Every memory is bounded (:data:`LIMIT` entries, strings of bounded length),
holds only results of pure functions, and is never keyed on anything a
client can make large. :meth:`AcceptedRequests.remember` is the one place
that decides what a grant proves: the fronts call it with every decision.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .crosssite import MAX_ORIGIN_LENGTH
from .decision import CROSS_SITE, SOURCE
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
        memory.clear()


#: A browser's request as the WSGI fast path keys it (all text), and as the
#: ASGI fast path does (the header values as raw bytes, the rest text): the
#: client address, Host, Origin, Sec-Fetch-Site, -Mode, -Dest, the method
#: and the scheme.
BrowserKey = tuple[object, ...]


class AcceptedRequests:
    """Remembered grants for the common requests, per :class:`Options`."""

    __slots__ = (
        "__weakref__",
        "allowed_hosts",
        "asgi_browsers",
        "browsers",
        "hosts",
        "remembering",
        "remotes",
    )

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
        #: A browser's granted request (:data:`BrowserKey`, WSGI's form) and
        #: the grant, whose headers (``Vary``, CORS) the answer carries.
        self.browsers: dict[BrowserKey, Decision] = {}
        #: The same in ASGI's form: a separate memory, so that an environ
        #: whose values are bytes never meets an ASGI key.
        self.asgi_browsers: dict[BrowserKey, Decision] = {}
        _memories.add(self)

    def clear(self) -> None:
        """Forget every grant."""
        self.remotes.clear()
        self.hosts.clear()
        self.browsers.clear()
        self.asgi_browsers.clear()

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
            or decision.local_addr is not None
            or decision.peer_addr is not None
            or facts.remote is None
        ):
            return
        if facts.origin is not None or facts.sec_fetch_site is not None:
            self._remember_browser(facts, decision)
        elif decision.rule == SOURCE:
            self._remember_common(facts, decision)
        if not _remembering:
            # Another thread forgot everything since the check above (the
            # process's first PROXY header): what was just added must go too.
            self.clear()

    def _remember_common(self, facts: RequestFacts, decision: Decision) -> None:
        if len(self.remotes) < LIMIT:
            # Who held that connection's client socket is no fact of the address.
            self.remotes[facts.remote] = decision._replace(peer_owner=None)  # type: ignore[index]
        host = facts.host
        if host is not None and len(self.hosts) < LIMIT - 1 and self._host_is_pure(host):
            self.hosts[host] = str
            self.hosts[host.encode("latin-1")] = bytes

    def _host_is_pure(self, host: str) -> bool:
        """The host rule accepts ``host`` without the connection's local address."""
        return len(host) <= MAX_LENGTH and judge_host(host, self.allowed_hosts) is None

    def _remember_browser(self, facts: RequestFacts, decision: Decision) -> None:
        # The cross-site rule's grant (SOURCE: the rule is off), from the
        # loopback source grant (checked by the caller) and a pure Host.
        method, host = facts.method, facts.host
        strings = (
            host,
            facts.origin,
            facts.sec_fetch_site,
            facts.sec_fetch_mode,
            facts.sec_fetch_dest,
            method,
            facts.scheme,
        )
        if (
            (decision.rule != CROSS_SITE and decision.rule != SOURCE)
            or host is None
            or method is None
            or method.upper() == "OPTIONS"  # a preflight's verdict reads more
            or facts.scheme is None
            or len(self.browsers) >= LIMIT
            or any(value is not None and len(value) > MAX_ORIGIN_LENGTH for value in strings)
            or not self._host_is_pure(host)
        ):
            return
        # Who held that connection's client socket is no fact of these strings.
        decision = decision._replace(peer_owner=None)
        key: BrowserKey = (facts.remote, *strings)
        self.browsers[key] = decision
        # ASGI's form: header values as the scope carries them. The adapter
        # decoded them as latin-1, so this is the one byte string each came from.
        raw = tuple(None if value is None else value.encode("latin-1") for value in strings[:5])
        key = (facts.remote, *raw, method, facts.scheme)
        self.asgi_browsers[key] = decision
