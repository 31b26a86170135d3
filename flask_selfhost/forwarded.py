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

Parsing is strict on purpose: Werkzeug's ``parse_list_header`` returns an
empty list for an unbalanced quote, and a lenient parser that drops what it
does not understand would shift the entries a hop count relies on. The RFC
7239 grammar is small, so it is matched here with stdlib ``re``.

Every function here is pure: strings in, a result out, cached on the raw
strings (a proxy sends the same few header values again and again).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache

from .addresses import CACHE_SIZE, IPAddress, parse_ip
from .caching import PRIVATE
from .connection import WAITRESS
from .decision import Decision
from .facts import H2C, H2C_GUNICORN, HTTP2_GUNICORN_ASGI, UNIX, RequestFacts
from .host_addresses import host_addresses

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# ``UNIX`` ("unix") names a unix-socket peer in ``trusted_proxies`` and in
# :attr:`Decision.peer_addr`.

RULE = "forwarded"

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


_ENTRY_TYPES = (
    str,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)


class MalformedHeader(ValueError):
    """A forwarding header that does not follow its grammar (the message says how)."""


class TrustedProxies:
    """Who may name the client: networks, and ``unix`` for a unix-socket peer.

    :param entries: Addresses or networks (``"127.0.0.1"``, ``"::1"``,
        ``"10.0.0.0/8"``, ``ipaddress`` objects) and the word ``"unix"``; or
        one string of them separated by commas (as in an environment
        variable). Host bits must be zero (``10.0.0.1/8`` is a typo, not a
        network) and names are refused: no DNS, ever. A network wider than
        :data:`WIDEST_PREFIX` (/8 for IPv4, /32 for IPv6; ``::ffff:a.b.c.d``
        networks count at their IPv4 width) is refused: every host in it could
        name any client. So is an address with a port, with the address to
        write instead.

    Immutable and hashable, so that it can be part of :class:`Options` and of
    a cache key. False when it trusts nobody.
    """

    __slots__ = ("_hash", "networks", "unix")

    networks: frozenset[IPNetwork]
    unix: bool
    _hash: int

    def __init__(self, entries: str | Iterable[object] = ()) -> None:
        if isinstance(entries, str):
            entries = [part for part in (p.strip() for p in entries.split(",")) if part]
        networks: set[IPNetwork] = set()
        unix = False
        for entry in entries:
            if entry == UNIX:
                unix = True
                continue
            if not isinstance(entry, _ENTRY_TYPES):
                raise TypeError(
                    f"flask_selfhost: trusted_proxies entries are addresses, networks or "
                    f"'unix', got {entry!r}"
                )
            try:
                network = ipaddress.ip_network(entry)
            except ValueError as error:
                raise ValueError(
                    f"flask_selfhost: trusted_proxies entry {entry!r} is not an address, "
                    f"a network or 'unix' ({error}){_without_port(entry)}"
                ) from None
            mapped = getattr(network.network_address, "ipv4_mapped", None)
            if mapped is not None and network.prefixlen >= 96:
                # The guard unwraps ::ffff:a.b.c.d to a.b.c.d before comparing.
                network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
            _check_width(entry, network)
            networks.add(network)
        object.__setattr__(self, "networks", frozenset(networks))
        object.__setattr__(self, "unix", unix)
        object.__setattr__(self, "_hash", hash((self.networks, unix)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("TrustedProxies is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustedProxies):
            return NotImplemented
        return (self.networks, self.unix) == (other.networks, other.unix)

    def __hash__(self) -> int:
        return self._hash

    def __bool__(self) -> bool:
        return self.unix or bool(self.networks)

    def __repr__(self) -> str:
        shown = sorted(str(n) for n in self.networks) + ([UNIX] if self.unix else [])
        return f"TrustedProxies({', '.join(map(repr, shown))})"

    def trusts(self, address: IPAddress) -> bool:
        """True when ``address`` is inside one of the trusted networks."""
        return any(address in network for network in self.networks)


#: The widest networks ``trusted_proxies`` takes, by IP version: a proxy is
#: one machine or a few, and a network wider than a site's whole private
#: range (``10.0.0.0/8``) lets any client inside it name any client at all.
WIDEST_PREFIX = {4: 8, 6: 32}

#: Every IPv4 address, as IPv6 writes it (``::ffff:a.b.c.d``).
_V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def _check_width(entry: object, network: IPNetwork) -> None:
    """Refuse a network too wide to be a set of proxies. An IPv6 network
    that holds all of ``::ffff:0:0/96`` without being inside it (``::/80``)
    holds every IPv4 address: its IPv4 width is /0."""
    widest = WIDEST_PREFIX[network.version]
    whole_ipv4 = network.version == 6 and network.prefixlen < 96 and network.overlaps(_V4_MAPPED)
    if network.prefixlen < widest or whole_ipv4:
        raise ValueError(
            f"flask_selfhost: trusted_proxies entry {entry!r} is too wide: every host in it "
            f"could name any client; list the proxies' own addresses, or a network "
            f"of at most /{WIDEST_PREFIX[4]} (IPv4, ::ffff:a.b.c.d included) or "
            f"/{WIDEST_PREFIX[6]} (IPv6)"
        )


def _without_port(entry: object) -> str:
    """A hint when ``entry`` is an address with a port (``127.0.0.1:8000``,
    ``[::1]:8000``): a proxy is trusted by its address, whatever its port."""
    if not isinstance(entry, str):
        return ""
    match = re.fullmatch(r"\[([^\]]+)\](?::[0-9]*)?|([0-9.]+):[0-9]*", entry.strip())
    address = match and (match[1] or match[2])
    if not address or parse_ip(address) is None:
        return ""
    return f"; write {address!r}: a proxy is trusted by its address, without a port"


#: Trusts nobody: the default of ``trusted_proxies``.
NO_PROXIES = TrustedProxies()

# RFC 7230 token and quoted-string; RFC 7239 node.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # noqa: S105 (a regex, not a password)
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*"'
_PAIR = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")
_OBFUSCATED = r"_[A-Za-z0-9._-]+"
_NODE = re.compile(
    rf"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)|(?P<word>(?i:unknown)|{_OBFUSCATED}))"
    rf"(?::(?P<port>[0-9]{{1,5}}|{_OBFUSCATED}))?"
)


def _node(text: str, bare_ipv6: bool) -> str:
    """The address part of one node, brackets and port removed.

    Returns the address as written, or ``"unknown"`` / the obfuscated
    identifier (which the caller refuses as a client). ``bare_ipv6`` allows
    ``2001:db8::1`` without brackets, as ``X-Forwarded-For`` writes it.
    """
    if bare_ipv6 and ":" in text and not text.startswith("[") and text.count(":") > 1:
        if parse_ip(text) is None or "%" in text:
            raise MalformedHeader("an entry is not an IP address")
        return text
    match = _NODE.fullmatch(text)
    if match is None:
        raise MalformedHeader("an entry is not an address, 'unknown' or an obfuscated name")
    address = match["v6"] or match["v4"]
    if address is None:
        word = match["word"]
        return "unknown" if word.lower() == "unknown" else word
    if parse_ip(address) is None or (match["v6"] is not None and ":" not in address):
        raise MalformedHeader("an entry is not an IP address")
    port = match["port"]
    if port is not None and port.isdigit() and int(port) > 65535:
        raise MalformedHeader("an entry has a port out of range")
    return address


@lru_cache(maxsize=CACHE_SIZE)
def parse_x_forwarded_for(value: str) -> tuple[str, ...]:
    """The nodes of an ``X-Forwarded-For`` value, left (client) to right (last hop).

    Entries are separated by commas; each is an IPv4 or IPv6 address,
    optionally with a port (``1.2.3.4:80``, ``[::1]:80``), or ``unknown``.
    An empty entry or anything else raises :class:`MalformedHeader`.
    """
    nodes = []
    for entry in value.split(","):
        entry = entry.strip(" \t")
        if not entry:
            raise MalformedHeader("X-Forwarded-For has an empty entry")
        nodes.append(_node(entry, bare_ipv6=True))
    return tuple(nodes)


@lru_cache(maxsize=CACHE_SIZE)
def parse_forwarded(value: str) -> tuple[str, ...] | None:
    """The ``for=`` nodes of an RFC 7239 ``Forwarded`` value, left to right.

    One node per element (comma-separated); an element without ``for=``
    gives ``"unknown"``. ``None`` when no element has ``for=`` (a proxy that
    only reports ``proto=``: the header names no client). Raises
    :class:`MalformedHeader` for anything outside the grammar, an empty
    element, or a parameter given twice in one element.
    """
    elements: list[str | None] = []
    position, end = 0, len(value)
    while True:
        seen: set[str] = set()
        node: str | None = None
        while True:  # the pairs of one element, separated by ";"
            match = _PAIR.match(value, position)
            if match is None:
                raise MalformedHeader(f"Forwarded is malformed at character {position}")
            name, raw = match[1].lower(), match[2]
            if name in seen:
                raise MalformedHeader("Forwarded repeats a parameter in one element")
            seen.add(name)
            if name == "for":
                if raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                node = _node(raw, bare_ipv6=False)
            position = match.end()
            if position == end or value[position] == ",":
                break
            if value[position] != ";":
                raise MalformedHeader(f"Forwarded is malformed at character {position}")
            position += 1
        elements.append(node)
        if position == end:
            break
        position += 1  # the comma
    if all(node is None for node in elements):
        return None
    return tuple("unknown" if node is None else node for node in elements)


def _walk(
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

    The returned decision has ``rule="forwarded"``, ``remote_addr`` the
    client address judged (or the peer, when the peer is not trusted) and
    ``peer_addr`` the peer. A grant carries :data:`~flask_selfhost.caching.PRIVATE`:
    the proxy may be a shared cache, which must not replay the answer to
    another client (:mod:`flask_selfhost.caching`).
    """

    def decide(allowed: bool, reason: str, client: str | None) -> Decision:
        return Decision(allowed, RULE, reason, client, None, peer, PRIVATE if allowed else ())

    if peer == UNIX:
        if not trusted.unix:
            return decide(False, UNTRUSTED, peer)
        peer_is_local = True
    else:
        peer_address = parse_ip(peer)
        if peer_address is None:
            return decide(False, NO_PEER, peer)
        if not trusted.trusts(peer_address):
            return decide(False, UNTRUSTED, peer)
        peer_is_local = peer_address.is_loopback or peer_address in host

    found: list[tuple[str, bool]] = []
    try:
        for nodes in (
            None if forwarded is None else parse_forwarded(forwarded),
            None if x_forwarded_for is None else parse_x_forwarded_for(x_forwarded_for),
        ):
            if nodes is not None:
                found.append(_walk(nodes, peer_is_local, trusted, proxy_hops, host))
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
H2C_CLIENT_UNKNOWN = (
    "gunicorn serves cleartext HTTP/2 (h2c) to proxies only and does not pass on a PROXY "
    "protocol header's client with it, so the client is unknown; let the proxy speak "
    "HTTP/1.1 or TLS to gunicorn"
)
GUNICORN_ASGI_HTTP2 = (
    "gunicorn's ASGI worker gives HTTP/2 requests the connection's peer, not a PROXY protocol "
    "header's client (behind a relay on this host, cleartext h2c names the relay), and the "
    "request cannot tell h2c from TLS, so the client is unknown; serve HTTP/1.1 only "
    "(--http-protocols h1, gunicorn's default)"
)
CLEARTEXT_HTTP2 = (
    "the request came over cleartext HTTP/2 (h2c), which no browser sends: a proxy that "
    "relays an 'Upgrade: h2c' or a piped request becomes a tunnel, and every later stream "
    "arrives from the proxy's address with headers its client wrote, so the client is "
    "unknown; drop the Upgrade header at the proxy (or let it speak HTTP/1.1 without "
    "upgrades), and set allow_cleartext_http2 only when no proxy can reach this server"
)
#: Why each kind of HTTP/2 (:attr:`RequestFacts.http2`) is refused.
HTTP2_REASONS = {
    H2C: CLEARTEXT_HTTP2,
    H2C_GUNICORN: H2C_CLIENT_UNKNOWN,
    HTTP2_GUNICORN_ASGI: GUNICORN_ASGI_HTTP2,
}
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
#: Names example addresses, never the request's: a tool on this host that
#: shares the proxy's address reads here what does work.
PROXY_WITHOUT_HEADERS = (
    "the request comes from a trusted proxy but carries no forwarding header, so its "
    "client is unknown; make the proxy send X-Forwarded-For. A tool on this host passes "
    "from an address outside trusted_proxies (curl --interface 127.0.0.2 when only "
    "127.0.0.1 is trusted), or over TCP when the proxy uses a unix socket "
    "(trusted_proxies=['unix'])"
)
#: The recipe for waitress behind a proxy: its headers kept, the guard judging them.
WAITRESS_RECIPE = (
    "run waitress with its forwarding headers kept (waitress-serve "
    "--no-clear-untrusted-proxy-headers, or clear_untrusted_proxy_headers=False; not its "
    "trusted_proxy, which rewrites the client) and put the proxy's address in trusted_proxies"
)
WAITRESS_HID_HEADERS = (
    "the request carried forwarding headers that waitress deleted before the app ran, so a "
    f"proxy relayed it for a client nobody can name; {WAITRESS_RECIPE}"
)
WAITRESS_DELETED_HEADERS = (
    f"{PROXY_WITHOUT_HEADERS} (waitress deletes X-Forwarded-For and Forwarded: {WAITRESS_RECIPE})"
)
#: What drops every spelling of a forwarding header name with an underscore.
DROP_UNDERSCORE_NAMES = (
    "nginx's default 'underscores_in_headers off;' (remove any 'underscores_in_headers on;'), "
    "or in Apache, before ProxyPass, 'RequestHeader unset X_Forwarded_For', "
    "'RequestHeader unset X-Forwarded_For' and 'RequestHeader unset X_Forwarded-For'"
)


def folded_names_reason(server: str | None) -> str:
    """Why a relayed request is refused on a server that folds header names."""
    return (
        f"{server} gives X_Forwarded_For and X-Forwarded-For the same environ key, so a client "
        "behind a proxy that passes header names with underscores writes part of the "
        f"X-Forwarded-For that the guard reads; make the proxy drop such names "
        f"({DROP_UNDERSCORE_NAMES}) and set proxy_drops_underscore_headers=True, or serve "
        "the app with gunicorn or waitress, which drop them"
    )


UNIX_LOCAL = "the client connected over a unix socket (unix_socket_is_local)"
UNIX_REFUSED = (
    "the client connected over a unix socket, which has no client address; set "
    "unix_socket_is_local for local tools, or trusted_proxies=['unix'] behind a proxy"
)

TOO_LONG = "a forwarding header is longer than any real proxy chain"

#: Longer Forwarded / X-Forwarded-For values are refused before they are
#: parsed or cached: twenty IPv6 hops fit, and the caches hold at most
#: CACHE_SIZE such strings, so a flood of distinct long headers costs
#: bounded memory.
MAX_HEADER_LENGTH = 1024

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
    return Decision(unix_socket_is_local, "source", reason, facts.remote, None, UNIX)


def judge_http2(facts: RequestFacts, allow_cleartext_http2: bool) -> Decision | None:
    """A refusal for an HTTP/2 request whose connection may be a tunnel, or
    ``None`` when it is not one (or is cleartext HTTP/2 the operator allowed).

    Judged before anything the request says: through a tunnel, every header
    of a stream (a forwarding header included) is the other host's own, and
    the peer is the proxy. gunicorn's HTTP/2 stays refused whatever the
    options, because its client may be a PROXY protocol relay's address.
    """
    kind = facts.http2
    if kind is None or (kind == H2C and allow_cleartext_http2):
        return None
    reason = HTTP2_REASONS.get(kind, CLEARTEXT_HTTP2)  # an unknown kind: refused all the same
    return Decision(False, RULE, reason, facts.remote, None)


def judge_unrelayed_peer(facts: RequestFacts, trusted: TrustedProxies) -> Decision | None:
    """A refusal when a trusted proxy sent a request without forwarding headers.

    Such a request looks like the proxy's own: a proxy that forgot its
    headers, or a server that deleted them (waitress does, by default), would
    otherwise pass every client it relays as the proxy itself (loopback).
    """
    address = parse_ip(facts.remote)  # a unix socket's client has no address
    if address is None or not trusted.trusts(address):
        return None
    reason = WAITRESS_DELETED_HEADERS if facts.server == WAITRESS else PROXY_WITHOUT_HEADERS
    return Decision(False, RULE, reason, facts.remote, None, facts.remote)


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
            return Decision(False, RULE, TOO_LONG, None, None)
    if facts.proxy_protocol is not None:
        return _judge_proxy_protocol(facts, trusted, proxy_hops)

    if facts.remote_in_headers:  # the peer that wrote the headers is unknown
        return Decision(False, RULE, REWRITTEN_CLIENT, facts.remote, None)
    peer = facts.remote
    if facts.rewritten:
        peer = facts.original_remote
        actual = facts.connection.peer_address()
        if actual is None:
            return Decision(False, RULE, REWRITTEN_UNVERIFIED, facts.remote, None, peer)
        if not _same_peer(actual, peer):
            return Decision(False, RULE, REWRITTEN, facts.remote, None, actual)
    if facts.connection.is_unix():
        peer = UNIX
    host = host_addresses.current()
    return judge_forwarded(peer, forwarded, x_forwarded_for, trusted, proxy_hops, host)


def _judge_proxy_protocol(
    facts: RequestFacts, trusted: TrustedProxies, proxy_hops: int
) -> Decision:
    """The server put the PROXY header's client in the client address; the
    header's sender is the connection's witnessed peer, which must be trusted."""
    peer = facts.connection.peer_address()
    if peer is None:
        return Decision(False, RULE, PROXY_UNKNOWN_SENDER, None, None)
    sender = None if peer == UNIX else parse_ip(peer)
    if not (trusted.unix if peer == UNIX else sender is not None and trusted.trusts(sender)):
        return Decision(False, RULE, PROXY_UNTRUSTED, peer, None, peer)
    if facts.forwarded is not None or facts.x_forwarded_for is not None:
        return Decision(False, RULE, PROXY_AND_HEADERS, None, None, peer)
    client = facts.remote
    if client is None or parse_ip(client) is None:
        return Decision(False, RULE, PROXY_NO_CLIENT, client, None, peer)
    host = host_addresses.current()
    decision = judge_forwarded(peer, None, client, trusted, proxy_hops, host)
    # PROXY_ADDR is where the client connected to the proxy: the local side.
    return decision._replace(local_addr=facts.proxy_addr)


def _same_peer(actual: str, remote: str | None) -> bool:
    if actual == UNIX:
        return remote in UNIX_REMOTE_ADDRS
    address = parse_ip(remote)
    return address is not None and address == parse_ip(actual)
