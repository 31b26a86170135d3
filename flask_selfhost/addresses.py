"""
The source rule: is a client on this host?
==========================================

Apache httpd's ``Require local``, as plain functions of strings. A
connection comes from this host when:

1. the client address is loopback: anything in ``127.0.0.0/8`` or ``::1``,
   including the IPv4-mapped form ``::ffff:127.0.0.1`` that a dual-stack
   ``[::]`` listener reports (Python < 3.13 calls that *not* loopback, so it
   is unwrapped first); or
2. the client address equals the local address the connection arrived on,
   compared as parsed addresses: a client on this host that dials the host's
   LAN address ``192.168.0.13`` shows up as ``192.168.0.13 -> 192.168.0.13``.
   Mapped and plain IPv4 are equal; IPv6 scopes must match.

Everything else is another host. A missing, empty or unparsable address
(gunicorn gives ``''`` on a unix socket, Werkzeug ``'<local>'``, gunicorn's
PROXY protocol can give ``None``) is refused, never guessed at. When the
local address is unknown, only loopback clients pass.

Why not "the client is one of this host's addresses"? A process on this host
may bind any of them as its source; ``Require local`` asks for the pair that
the kernel reports for a direct connection, nothing wider.

Parsing costs microseconds, so results are cached on the raw strings; no
function here does DNS or any other I/O.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from .decision import SOURCE, Decision

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Bounds the caches. Distinct client addresses beyond this evict old ones;
#: a flood of spoofed sources costs a parse each, never unbounded memory.
CACHE_SIZE = 4096


LOOPBACK = "the client is loopback"
OWN_ADDRESS = "the client is the address it connected to (this host)"
NO_CLIENT = "the client address is missing or not an IP address"
NO_LOCAL = "the client is not loopback and the server did not say which local address it used"
BAD_LOCAL = "the server's local address is not a usable IP address"
OTHER_HOST = "the client is another host"


@lru_cache(maxsize=CACHE_SIZE)
def parse_ip(text: str | None) -> IPAddress | None:
    """Parse an address as a server reports it, or return ``None``.

    Only an exact textual address is accepted (no brackets, ports, spaces or
    names), because ``ipaddress`` would otherwise take integers and packed
    bytes. An IPv4-mapped IPv6 address is unwrapped to plain IPv4, so that
    ``::ffff:127.0.0.1`` is loopback and equal to ``127.0.0.1``.
    """
    if type(text) is not str:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(text: str | None) -> bool:
    """True for ``127.0.0.0/8``, ``::1`` and their IPv4-mapped forms."""
    address = parse_ip(text)
    return address is not None and address.is_loopback


@lru_cache(maxsize=CACHE_SIZE)
def judge_source(remote: str | None, local: str | None) -> Decision:
    """Apply ``Require local`` to a client and a local address (strings).

    ``local`` may be ``None`` when the server did not tell; then only a
    loopback client passes. Callers pass ``str`` or ``None`` only: the cache
    needs hashable arguments (``environ.evaluate`` sees to that).
    """

    def decide(allowed: bool, reason: str) -> Decision:
        return Decision(allowed, SOURCE, reason, remote, local)

    client = parse_ip(remote)
    if client is None:
        return decide(False, NO_CLIENT)
    if client.is_loopback:
        return decide(True, LOOPBACK)
    if local is None:
        return decide(False, NO_LOCAL)
    server = parse_ip(local)
    if server is None or server.is_unspecified or server.is_multicast:
        return decide(False, BAD_LOCAL)
    # IPv6Address equality includes the scope id, as APR's does.
    if client == server:
        return decide(True, OWN_ADDRESS)
    return decide(False, OTHER_HOST)
