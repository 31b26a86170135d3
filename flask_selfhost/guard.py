"""
One decision per request
========================

:func:`judge` applies the rules to a request's facts
(:class:`~flask_selfhost.facts.RequestFacts`) and says whether the request
comes from this host. :func:`flask_selfhost.environ.evaluate` (a WSGI
environ) and :func:`flask_selfhost.scope.evaluate_scope` (an ASGI scope)
build the facts and call it. Every front (WSGI middleware, Flask extension
and decorators, ASGI middleware, CLI) comes here, so they cannot disagree.
:func:`judge` has no side effects on the request and raises for no input.

The rules, in order. **Each rule runs on every request that the rules before
it granted, and only a refusal ends the evaluation: a grant never skips a
later rule.** Each takes the grant so far and returns it (perhaps with
response headers added) or a refusal; :data:`RULES` is the list, and
:func:`judge` is a loop over it with no other exit.

1. **client** - who sent this?

   a. An HTTP/2 request whose connection may be a proxy's tunnel is
      refused before anything it says is read: cleartext HTTP/2 (h2c),
      unless ``allow_cleartext_http2``, and gunicorn's HTTP/2, always (its
      client may be a PROXY protocol relay; see
      :mod:`flask_selfhost.environ` and :mod:`flask_selfhost.scope`). No
      browser speaks h2c; a proxy that relayed an ``Upgrade: h2c`` or piped
      a request relays raw bytes from then on, and every later stream
      arrives from the proxy with headers its client wrote.
   b. A request that carries a forwarding header (``Forwarded``,
      ``X-Forwarded-*``, ``X-Real-IP``, or a CDN's client header such as
      ``CF-Connecting-IP``: the one list is in
      :mod:`flask_selfhost.forwarding_syntax`) or came through a PROXY protocol
      header (on any request of that connection) is a proxy relaying someone
      else's request. Refused, even from loopback, unless the witnessed peer
      is in ``trusted_proxies``; then the client that the proxy names is
      judged instead (:mod:`flask_selfhost.forwarded`), and a grant carries
      a ``Cache-Control`` that every front makes the answer's, so that a
      shared cache in front cannot replay it to another host
      (:mod:`flask_selfhost.caching`). A request whose
      forwarding headers waitress deleted (it keeps them in its parsed
      request), and, unless ``proxy_drops_underscore_headers``, an
      ``X-Forwarded-For`` on a server that folds ``X_Forwarded_For`` into
      it (:data:`~flask_selfhost.servers.FOLDS_UNDERSCORE_NAMES`), are
      refused too; so is a client that an ASGI server may have taken from
      the request's own forwarding headers (``remote_in_headers``, see
      :mod:`flask_selfhost.scope`): the peer that sent them is unknown.
   c. Otherwise a request whose peer is in ``trusted_proxies`` is refused:
      a proxy that sends no forwarding header (or a server that deleted
      them) would pass everyone it relays as itself. These relays, a's
      tunnels and b's deleted or folded headers are judged in
      :mod:`flask_selfhost.hidden_relays`.
   d. Otherwise the source rule (:mod:`flask_selfhost.addresses`): the
      client address is loopback, or equals the local address the
      connection arrived on, as the server witnessed it. A unix-socket
      connection has no client address: refused unless
      ``unix_socket_is_local``.
   e. A grant of b. or d. for a TCP connection whose witnessed peer is
      loopback or one of this host's addresses also needs the kernel to find
      the client's own socket on this host (``check_client_socket``, on by
      default; :mod:`flask_selfhost.kernel_witness`): NAT on this host can
      give another host such an address, never a socket here.

2. **user** - with ``allowed_users`` set, the owner of the peer's socket
   (the kernel's answer, :func:`flask_selfhost.kernel_witness.client_socket_of`)
   is one of those users; where it cannot be known, refused
   (:mod:`flask_selfhost.peer_users`).
3. **forwarder** - with ``refuse_forwarders``, a TCP client on this host
   whose socket is held by a known forwarder (sshd, ssh, socat,
   docker-proxy, ...) is refused, even from an allowed user: such a
   process relays clients from elsewhere (:mod:`flask_selfhost.forwarders`).
4. **host** - the Host header names this host: absent, ``localhost``,
   ``*.localhost``, a loopback or local-address IP literal, or a name in
   ``allowed_hosts`` (:mod:`flask_selfhost.hosts`). This stops DNS rebinding.
5. **cross-site** - a browser says, in ``Sec-Fetch-Site`` or ``Origin``,
   that a page of another site made it send the request: refused unless it
   is a top-level navigation or comes from one of ``trusted_origins``; CORS
   preflights are granted to trusted origins only
   (:mod:`flask_selfhost.crosssite`). Its grants carry ``Vary`` (and CORS)
   headers that every front adds to the response; a granted preflight
   (``decision.answers_preflight``) is answered by the front itself.

Speed: the fronts answer the common requests without calling
:func:`~flask_selfhost.environ.evaluate` or
:func:`~flask_selfhost.scope.evaluate_scope`, from the grants they
remembered in ``options.accepted`` (:mod:`flask_selfhost.accepted`): curl's
(HTTP/1.1, a loopback client, no forwarding header, a Host such as
``localhost:PORT`` or ``127.0.0.1:PORT``, no ``Origin`` or ``Sec-Fetch-*``)
and a browser's whose Host, ``Origin``, ``Sec-Fetch-*``, method and scheme
were granted before; the kernel witness still runs for them. Everything
else comes here.
"""

from __future__ import annotations

from collections.abc import Callable

from . import forwarded, hidden_relays, servers
from .addresses import judge_source
from .crosssite import judge_cross_site
from .decision import FORWARDED, SOURCE, Decision
from .facts import RequestFacts
from .forwarded import judge_relayed, judge_unix_socket
from .forwarders import forwarder_rule
from .hidden_relays import judge_http2, judge_unrelayed_peer
from .hosts import judge_request_host
from .kernel_witness import witness_client
from .options import Options
from .peer_users import judge_peer_user

DEFAULT_OPTIONS = Options()

Rule = Callable[[RequestFacts, Options, Decision], Decision]


def client_rule(facts: RequestFacts, options: Options, grant: Decision) -> Decision:
    """Rule 1: the client, as witnessed or as a trusted proxy names it; a
    grant for a peer that claims to be this host also needs the kernel's
    witness (:mod:`flask_selfhost.kernel_witness`)."""
    decision = _judge_client(facts, options)
    if not decision.allowed:
        return decision
    return witness_client(
        facts.connection,
        facts.server,
        decision,
        options.check_client_socket,
        options.require_client_socket,
    )


def _judge_client(facts: RequestFacts, options: Options) -> Decision:
    if facts.http2 is not None:  # before any header: a tunnel's headers are its client's
        refusal = judge_http2(facts, options.allow_cleartext_http2)
        if refusal is not None:
            return refusal
    trusted = options.trusted_proxies
    if facts.relayed or facts.proxy_protocol is not None:
        if facts.deleted_forwarding:  # nothing left to judge, trusted proxy or not
            local = facts.connection.local_address()
            reason = hidden_relays.WAITRESS_HID_HEADERS
            return Decision(False, FORWARDED, reason, facts.remote, local)
        if trusted:
            if (
                facts.x_forwarded_for is not None
                and facts.server in servers.FOLDS_UNDERSCORE_NAMES
                and not options.proxy_drops_underscore_headers
            ):
                local = facts.connection.local_address()
                reason = hidden_relays.folded_names_reason(facts.server)
                return Decision(False, FORWARDED, reason, facts.remote, local, facts.remote)
            return judge_relayed(facts, trusted, options.proxy_hops)
        proxy = facts.proxy_protocol is not None
        reason = forwarded.PROXY_UNTRUSTED if proxy else forwarded.UNTRUSTED
        local = facts.connection.local_address()  # for the log: a refusal may cost more
        return Decision(False, FORWARDED, reason, facts.remote, local)
    if trusted:
        refusal = judge_unrelayed_peer(facts, trusted)
        if refusal is not None:
            return refusal
    # A loopback client needs no local address, and asking for one may be a
    # system call: ask only after a "no".
    decision = judge_source(facts.remote, None)
    if decision.allowed:
        return decision
    local = facts.connection.local_address()
    if local is not None:
        return judge_source(facts.remote, local)
    unix = judge_unix_socket(facts, options.unix_socket_is_local)
    if unix is not None:
        return unix
    why = facts.connection.unknown_local_reason()
    return decision if why is None or decision.rule != SOURCE else decision._replace(reason=why)


def user_rule(facts: RequestFacts, options: Options, grant: Decision) -> Decision:
    """Rule 2: the peer's socket belongs to one of ``allowed_users`` (when set)."""
    allowed = options.allowed_users
    return grant if allowed is None else judge_peer_user(facts, allowed, grant)


def host_rule(facts: RequestFacts, options: Options, grant: Decision) -> Decision:
    """Rule 4: the Host header names this host."""
    refusal = judge_request_host(facts, options.allowed_hosts)
    if refusal is None:
        return grant
    return refusal._replace(
        remote_addr=grant.remote_addr,
        local_addr=refusal.local_addr or grant.local_addr,
        peer_addr=grant.peer_addr,
    )


def cross_site_rule(facts: RequestFacts, options: Options, grant: Decision) -> Decision:
    """Rule 5: no page of another site made the browser send this."""
    if not options.check_cross_site or (facts.origin is None and facts.sec_fetch_site is None):
        return grant  # only browsers send these headers
    return judge_cross_site(facts, options.trusted_origins, grant)


#: The rules, in order. :func:`judge` runs every one of them until one refuses.
RULES: tuple[Rule, ...] = (client_rule, user_rule, forwarder_rule, host_rule, cross_site_rule)

#: What :func:`judge` starts from: a grant that names nobody, replaced by the
#: client rule's own decision.
NOBODY = Decision(True, "none", "no rule has run", None, None)


def judge(facts: RequestFacts, options: Options | None = None) -> Decision:
    """Decide whether the request described by ``facts`` comes from this host."""
    if options is None:
        options = DEFAULT_OPTIONS
    decision = NOBODY
    for rule in RULES:
        grant = decision
        decision = rule(facts, options, decision)
        if decision.peer_owner is None and grant.peer_owner is not None:
            # For the log, on a refusal and on a later rule's grant (the
            # cross-site rule's, which the fronts may remember) alike.
            decision = decision._replace(peer_owner=grant.peer_owner)
        if not decision.allowed:
            if decision.local_addr is None:
                # Logged with every refusal (remote, local, request line), even
                # where the refusing rule had no need to ask the connection.
                decision = decision._replace(local_addr=facts.connection.local_address())
            break
    return decision
