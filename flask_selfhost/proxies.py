"""
Who may name the client: the ``trusted_proxies`` option
=======================================================

A proxy's forwarding header is only as good as whoever sent it: any client
can write ``X-Forwarded-For: 127.0.0.1``. :class:`TrustedProxies` is the set
of peers whose headers are read at all (:mod:`flask_selfhost.forwarded`
judges what they say). Each entry trusts every host inside it, so the type
refuses what would trust more than the operator meant: a network wider than
a site's own proxies, a typo with host bits set, a host name (which would
need DNS), and an address written with a port, naming the address to write
instead.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from .addresses import IPAddress, parse_ip
from .facts import UNIX, PeerOwner, RequestFacts
from .kernel_witness import client_socket_of
from .peer_users import user_id

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# ``UNIX`` ("unix") names a unix-socket peer in ``trusted_proxies``.

#: How an entry that names a user begins: ``user:www-data``, ``user:33``.
USER_PREFIX = "user:"

_ENTRY_TYPES = (
    str,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)


class TrustedProxies:
    """Who may name the client: networks, ``unix`` for a unix-socket peer,
    and users whose sockets are trusted (:attr:`users`, uids).

    :param entries: Addresses or networks (``"127.0.0.1"``, ``"::1"``,
        ``"10.0.0.0/8"``, ``ipaddress`` objects), the word ``"unix"``, and
        ``"user:NAME"`` or ``"user:UID"`` (a name this host knows); or
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

    __slots__ = ("_hash", "networks", "unix", "users")

    networks: frozenset[IPNetwork]
    unix: bool
    users: frozenset[int]
    _hash: int

    def __init__(self, entries: str | Iterable[object] = ()) -> None:
        if isinstance(entries, str):
            entries = [part for part in (p.strip() for p in entries.split(",")) if part]
        networks: set[IPNetwork] = set()
        users: set[int] = set()
        unix = False
        for entry in entries:
            if entry == UNIX:
                unix = True
                continue
            if isinstance(entry, str) and entry.startswith(USER_PREFIX):
                users.add(user_id(entry.removeprefix(USER_PREFIX), "trusted_proxies"))
                continue
            if not isinstance(entry, _ENTRY_TYPES):
                raise TypeError(
                    f"flask_selfhost: trusted_proxies entries are addresses, networks, "
                    f"'unix' or 'user:NAME', got {entry!r}"
                )
            try:
                network = ipaddress.ip_network(entry)
            except ValueError as error:
                raise ValueError(
                    f"flask_selfhost: trusted_proxies entry {entry!r} is not an address, "
                    f"a network, 'unix' or 'user:NAME' ({error}){_without_port(entry)}"
                ) from None
            mapped = getattr(network.network_address, "ipv4_mapped", None)
            if mapped is not None and network.prefixlen >= 96:
                # The guard unwraps ::ffff:a.b.c.d to a.b.c.d before comparing.
                network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
            _check_width(entry, network)
            networks.add(network)
        object.__setattr__(self, "networks", frozenset(networks))
        object.__setattr__(self, "unix", unix)
        object.__setattr__(self, "users", frozenset(users))
        object.__setattr__(self, "_hash", hash((self.networks, unix, self.users)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("TrustedProxies is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustedProxies):
            return NotImplemented
        return (self.networks, self.unix, self.users) == (other.networks, other.unix, other.users)

    def __hash__(self) -> int:
        return self._hash

    def __bool__(self) -> bool:
        return self.unix or bool(self.networks) or bool(self.users)

    def __repr__(self) -> str:
        shown = sorted(str(n) for n in self.networks) + ([UNIX] if self.unix else [])
        shown += [f"{USER_PREFIX}{uid}" for uid in sorted(self.users)]
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


def trusted_user_proxy(facts: RequestFacts, trusted: TrustedProxies) -> PeerOwner | None:
    """The owner of the peer's socket, when ``trusted_proxies`` trusts
    that user (``user:www-data``); ``None`` otherwise, or when no owner
    can be known. Asks the kernel only when a user is trusted."""
    if not trusted.users:
        return None
    owner = client_socket_of(facts.connection)
    return owner if owner is not None and owner.uid in trusted.users else None
