"""
Clients behind a trusted proxy
==============================

When nginx (or any reverse proxy) on this host forwards to the app, every
request arrives from the proxy: from ``127.0.0.1`` or over a unix socket. A
guard that looks only at the connection would then let the whole internet
in. The proxy names its own client in a header, and that header is only as
good as whoever sent it: any client can send ``X-Forwarded-For: 127.0.0.1``.

So a forwarded client address is read only when the immediate peer (the
connection the server accepted) is a *trusted proxy*, and only from the
entries that trusted proxies wrote:

- ``X-Forwarded-For: client, proxy1, proxy2`` and RFC 7239
  ``Forwarded: for=client, for=proxy1, for=proxy2`` list one entry per hop;
  each proxy *appends* the address it saw. The right-most entry was written
  by the peer; an entry further left is believed only while the entry to its
  right is itself a trusted proxy, and at most ``proxy_hops`` entries from
  the right are read. Everything a client put further left is never read.
- The client address found is judged like a direct client: it passes when
  it is one of this host's own addresses (see
  :mod:`flask_selfhost.host_addresses`), or loopback *as recorded by a proxy
  on this host* (loopback on another machine is that machine).
- ``unknown`` and obfuscated identifiers (``_abc``) are not addresses:
  refused. So are host names (``X-Forwarded-Host``, ``Forwarded: host=``),
  which are never read. A malformed header, or ``Forwarded`` and
  ``X-Forwarded-For`` naming different clients, is refused, never guessed at.

The headers' names and grammar are :mod:`flask_selfhost.forwarding_syntax`;
who is a trusted proxy is :class:`~flask_selfhost.proxies.TrustedProxies`
(by address, or by the user that owns the peer's socket:
:func:`~flask_selfhost.proxies.trusted_user_proxy`);
relays that leave no header to judge are :mod:`flask_selfhost.hidden_relays`.
:func:`judge_forwarded` is pure: strings in, a decision out, cached on the
raw strings (a proxy sends the same few header values again and again).
"""

from __future__ import annotations

from functools import lru_cache

from .addresses import CACHE_SIZE, IPAddress, parse_ip
from .caching import PRIVATE
from .decision import FORWARDED, SOURCE, Decision
from .facts import UNIX, RequestFacts
from .forwarding_syntax import (
    MAX_HEADER_LENGTH,
    MalformedHeader,
    parse_forwarded,
    parse_x_forwarded_for,
)
from .host_addresses import host_addresses
from .proxies import TrustedProxies, trusted_user_proxy

# ``UNIX`` ("unix") names a unix-socket peer in ``trusted_proxies`` and in
# :attr:`Decision.peer_addr`.

# Reasons, for the log: sentences that name no address (a client is told
# only Decision.public_reason).
UNTRUSTED = (
    "the request carries forwarding headers, so a proxy is relaying another client's "
    "request, and its sender is not in trusted_proxies"
)
NO_PEER = "the proxy's own address is missing or not an IP address"
NO_CLIENT_HEADER = (
    "a trusted proxy relayed the request but named no client "
    "(neither Forwarded: for= nor X-Forwarded-For)"
)
CONFLICT = "Forwarded and X-Forwarded-For name different clients"
UNKNOWN_CLIENT = "the proxy did not name its client by address (unknown or obfuscated)"
LOOPBACK_CLIENT = "a proxy on this host relayed a loopback client"
FOREIGN_LOOPBACK = "the client is loopback on the proxy's host, which is not this host"
FOREIGN_OWN_ADDRESS = (
    "a proxy on another host named a client with one of this host's addresses, "
    "which there may mean another machine (private addresses repeat)"
)
OWN_ADDRESS_CLIENT = "a trusted proxy relayed a client that is one of this host's addresses"
OTHER_HOST_CLIENT = "a trusted proxy relayed a client on another host"


def _client_past_trusted_proxies(
    nodes: tuple[str, ...],
    peer_is_local: bool,
    trusted: TrustedProxies,
    proxy_hops: int,
    host: frozenset[IPAddress],
) -> tuple[str, bool]:
    """``(client, recorded_on_this_host)``: the right-most node that no
    trusted proxy within ``proxy_hops`` vouches for, and whether the proxy
    that recorded it runs on this host."""
    recorder_is_local = peer_is_local
    index = len(nodes) - 1
    hops_left = proxy_hops
    while index > 0 and hops_left > 1:
        address = parse_ip(nodes[index])
        if address is None or not trusted.trusts(address):
            break
        # This node is a proxy that recorded the node to its left; it is on
        # this host when a proxy on this host recorded it as loopback or as
        # one of this host's addresses (another host's proxy could mean its
        # own 127.0.0.1, or a private address this host happens to share).
        recorder_is_local = recorder_is_local and (address.is_loopback or address in host)
        index -= 1
        hops_left -= 1
    return nodes[index], recorder_is_local


@lru_cache(maxsize=CACHE_SIZE)
def judge_forwarded(
    peer: str | None,
    forwarded: str | None,
    x_forwarded_for: str | None,
    trusted: TrustedProxies,
    proxy_hops: int,
    host: frozenset[IPAddress],
    peer_user_trusted: bool = False,
) -> Decision:
    """Judge a request that a proxy relayed.

    :param peer: The immediate peer: its address as the server reported it,
        or :data:`UNIX` for a unix-socket connection.
    :param forwarded: The raw ``Forwarded`` header, or ``None``.
    :param x_forwarded_for: The raw ``X-Forwarded-For`` header, or ``None``.
    :param trusted: Who may name the client (``trusted_proxies``).
    :param proxy_hops: How many entries, from the right, trusted proxies can
        have written: the number of proxies in front of the app.
    :param host: This host's own non-loopback addresses.
    :param peer_user_trusted: The peer's socket belongs to a user that
        ``trusted_proxies`` names (``user:www-data``): the peer is a trusted
        proxy on this host, whatever its address.

    The returned decision has ``rule="forwarded"``, ``remote_addr`` the
    client address judged (or the peer, when the peer is not trusted) and
    ``peer_addr`` the peer. A grant carries :data:`~flask_selfhost.caching.PRIVATE`:
    the proxy may be a shared cache, which must not replay the answer to
    another client (:mod:`flask_selfhost.caching`).
    """

    def decide(allowed: bool, reason: str, client: str | None) -> Decision:
        return Decision(allowed, FORWARDED, reason, client, None, peer, PRIVATE if allowed else ())

    if peer == UNIX:
        if not (trusted.unix or peer_user_trusted):
            return decide(False, UNTRUSTED, peer)
        peer_is_local = True
    else:
        peer_address = parse_ip(peer)
        if peer_address is None:
            return decide(False, NO_PEER, peer)
        if not (peer_user_trusted or trusted.trusts(peer_address)):
            return decide(False, UNTRUSTED, peer)
        # A socket whose owner the kernel named is on this host.
        peer_is_local = peer_user_trusted or peer_address.is_loopback or peer_address in host

    found: list[tuple[str, bool]] = []
    try:
        for nodes in (
            None if forwarded is None else parse_forwarded(forwarded),
            None if x_forwarded_for is None else parse_x_forwarded_for(x_forwarded_for),
        ):
            if nodes is not None:
                found.append(
                    _client_past_trusted_proxies(nodes, peer_is_local, trusted, proxy_hops, host)
                )
    except MalformedHeader as error:
        return decide(False, f"a forwarding header is malformed: {error}", None)
    if not found:
        return decide(False, NO_CLIENT_HEADER, None)
    client, recorder_is_local = found[0]
    address = parse_ip(client)
    for other, other_is_local in found[1:]:
        if parse_ip(other) != address or other_is_local != recorder_is_local:
            # Which header did the proxy write? Nothing says; naming either
            # in the log would let a client frame any address.
            return decide(False, CONFLICT, None)
    if address is None:
        return decide(False, UNKNOWN_CLIENT, client)
    if address in host:
        if recorder_is_local:
            return decide(True, OWN_ADDRESS_CLIENT, client)
        return decide(False, FOREIGN_OWN_ADDRESS, client)
    if address.is_loopback:
        if recorder_is_local:
            return decide(True, LOOPBACK_CLIENT, client)
        return decide(False, FOREIGN_LOOPBACK, client)
    return decide(False, OTHER_HOST_CLIENT, client)


# The facts front: where the peer and the headers come from. Thin on
# purpose; every decision above is a pure function of the strings found here.

#: ``PROXY_PROTOCOL`` values for which gunicorn gives no client address.
PROXY_NO_CLIENT = "the PROXY protocol header carried no client address (a LOCAL or UNSPEC header)"
PROXY_UNTRUSTED = (
    "the server took the client address from a PROXY protocol header, and its sender "
    "is not in trusted_proxies"
)
PROXY_AND_HEADERS = (
    "the request carries both a PROXY protocol header and Forwarded or X-Forwarded-For; "
    "flask_selfhost reads one of them, not both"
)
PROXY_UNKNOWN_SENDER = "the sender of the PROXY protocol header is unknown (no connection socket)"
REWRITTEN = (
    "REMOTE_ADDR was rewritten before the guard ran and its original does not match the "
    "connection; put the guard outside (before) ProxyFix"
)
REWRITTEN_CLIENT = (
    "the client address is one its own forwarding headers name: the server may have put it "
    "there and kept no original, so the proxy cannot be checked; turn that off (uvicorn: "
    "--no-proxy-headers; daphne: no --proxy-headers; hypercorn: no ProxyFixMiddleware) and "
    "let trusted_proxies judge the headers. A proxy on this host that relays this host's "
    "client over TCP looks the same: connect it over a unix socket, "
    "trusted_proxies=['unix']"
)
REWRITTEN_UNVERIFIED = (
    "REMOTE_ADDR was rewritten before the guard ran, and this server gives no witness of "
    "the connection to check the original against; put the guard outside (before) ProxyFix"
)

UNIX_LOCAL = "the client connected over a unix socket (unix_socket_is_local)"
UNIX_REFUSED = (
    "the client connected over a unix socket, which has no client address; set "
    "unix_socket_is_local for local tools, or trusted_proxies=['unix'] behind a proxy"
)

TOO_LONG = "a forwarding header is longer than any real proxy chain"

#: What servers put in ``REMOTE_ADDR`` for a unix-socket client: gunicorn,
#: Werkzeug, waitress. A rewritten client's original must be one of these
#: when the witness says the connection is a unix socket.
UNIX_REMOTE_ADDRS = frozenset({"", "<local>", "localhost"})


def judge_unix_socket(facts: RequestFacts, unix_socket_is_local: bool) -> Decision | None:
    """The decision for a unix-socket connection without forwarding headers,
    or ``None`` when no witness says the connection is a unix socket."""
    if not facts.connection.is_unix():
        return None
    reason = UNIX_LOCAL if unix_socket_is_local else UNIX_REFUSED
    return Decision(unix_socket_is_local, SOURCE, reason, facts.remote, None, UNIX)


def judge_relayed(facts: RequestFacts, trusted: TrustedProxies, proxy_hops: int) -> Decision:
    """Judge a request that carries forwarding headers or came through a
    PROXY protocol header, with ``trusted_proxies`` set.

    The peer is the client address as the server set it: the original that
    Werkzeug's ``ProxyFix`` keeps when it ran first, which must match the
    connection's witnessed peer (a second ProxyFix overwrites that original,
    and an original nothing can check never grants); or, under the PROXY
    protocol, the connection's witnessed peer, since the address the server
    reports is the header's client. A client that an ASGI server may have
    taken from the headers themselves (``facts.remote_in_headers``) has no
    peer left to check: refused.
    """
    forwarded, x_forwarded_for = facts.forwarded, facts.x_forwarded_for
    for value in (forwarded, x_forwarded_for):
        if value is not None and len(value) > MAX_HEADER_LENGTH:
            return Decision(False, FORWARDED, TOO_LONG, None, None)
    if facts.proxy_protocol is not None:
        return _judge_proxy_protocol(facts, trusted, proxy_hops)

    if facts.remote_in_headers:  # the peer that wrote the headers is unknown
        return Decision(False, FORWARDED, REWRITTEN_CLIENT, facts.remote, None)
    peer = facts.remote
    if facts.rewritten:
        peer = facts.original_remote
        actual = facts.connection.peer_address()
        if actual is None:
            return Decision(False, FORWARDED, REWRITTEN_UNVERIFIED, facts.remote, None, peer)
        if not _same_peer(actual, peer):
            return Decision(False, FORWARDED, REWRITTEN, facts.remote, None, actual)
    if facts.connection.is_unix():
        peer = UNIX
    host = host_addresses.current()
    owner = trusted_user_proxy(facts, trusted)
    decision = judge_forwarded(
        peer, forwarded, x_forwarded_for, trusted, proxy_hops, host, owner is not None
    )
    return decision if owner is None else decision._replace(peer_owner=owner)


def _judge_proxy_protocol(
    facts: RequestFacts, trusted: TrustedProxies, proxy_hops: int
) -> Decision:
    """The server put the PROXY header's client in the client address; the
    header's sender is the connection's witnessed peer, which must be trusted."""
    peer = facts.connection.peer_address()
    if peer is None:
        return Decision(False, FORWARDED, PROXY_UNKNOWN_SENDER, None, None)
    sender = None if peer == UNIX else parse_ip(peer)
    owner = trusted_user_proxy(facts, trusted)
    by_address = trusted.unix if peer == UNIX else sender is not None and trusted.trusts(sender)
    if not (by_address or owner is not None):
        return Decision(False, FORWARDED, PROXY_UNTRUSTED, peer, None, peer)
    if facts.forwarded is not None or facts.x_forwarded_for is not None:
        return Decision(False, FORWARDED, PROXY_AND_HEADERS, None, None, peer)
    client = facts.remote
    if client is None or parse_ip(client) is None:
        return Decision(False, FORWARDED, PROXY_NO_CLIENT, client, None, peer)
    host = host_addresses.current()
    decision = judge_forwarded(peer, None, client, trusted, proxy_hops, host, owner is not None)
    # PROXY_ADDR is where the client connected to the proxy: the local side.
    return decision._replace(local_addr=facts.proxy_addr, peer_owner=owner)


def _same_peer(actual: str, remote: str | None) -> bool:
    if actual == UNIX:
        return remote in UNIX_REMOTE_ADDRS
    address = parse_ip(remote)
    return address is not None and address == parse_ip(actual)
