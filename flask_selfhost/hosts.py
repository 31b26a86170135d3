"""
The host rule: does the Host header name this host?
===================================================

DNS rebinding points the attacker's name (``evil.example``) at ``127.0.0.1``
once the attacker's page has loaded. The page's requests then reach this
server from loopback and are same-origin to the browser; only the Host
header (``evil.example:8000``) gives them away. So a Host is accepted only
when no DNS answer can make it point here behind the user's back:

1. no Host header at all: allowed (HTTP/1.0 clients; every browser sends one);
2. the header is parsed strictly (see :func:`parse_host`): not ASCII, empty,
   a bad name, an unbracketed or bad IPv6 literal, a port outside 1-65535,
   userinfo (``localhost:5000@evil.example``) or anything else: refused;
3. ``allowed_hosts`` contains ``"*"``: allowed (the check is off);
4. ``localhost`` and any ``*.localhost`` (RFC 6761: browsers resolve them to
   loopback themselves, never through DNS): allowed;
5. an IP literal (``127.0.0.1``, ``[::1]``) that is loopback, or equals the
   local address the connection arrived on, or is listed in
   ``allowed_hosts``: allowed; any other IP literal: refused;
6. a name listed in ``allowed_hosts``, exactly or under a ``.domain`` entry
   (which also matches ``domain`` itself): allowed;
7. anything else: refused.

Matching ignores case and one trailing dot (``LocalHost.`` is ``localhost``).
The functions here take strings and return a :class:`Decision` for a refusal
or ``None``; :func:`judge_host` is cached on the raw header, so the common
case costs one cache hit.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

from .addresses import CACHE_SIZE, IPAddress, parse_ip
from .decision import HOST, Decision
from .facts import RequestFacts
from .host_addresses import host_addresses

#: Longer Host values are malformed (a name is at most 253 characters). The
#: guard checks the length before the cached functions see a value, so that
#: huge headers never become cache keys.
MAX_LENGTH = 300

MALFORMED = "the Host header is empty or malformed"
IP_NOT_LOCAL = (
    "the Host header is an IP address that is not this host's; "
    "add it to the allowed_hosts option if it is one"
)
IP_LOCAL_UNKNOWN = (
    "the Host header is an IP address that is not loopback, and the server did not say "
    "which local address it used; add it to the allowed_hosts option if it is this host's"
)
NOT_ALLOWED = (
    "the Host header names a host that is not allowed, as after DNS rebinding; "
    "add the name to the allowed_hosts option if it is this host's"
)

# One regular expression for the whole header, on ASCII text only (``str.lower``
# would turn the Kelvin sign into "k"). Names and IPv4 are told apart below.
_HOST = re.compile(
    r"""
    (?: \[ (?P<ipv6> [0-9a-f:.]+ ) \]       # IPv6 literal; no zone id
      | (?P<name> [a-z0-9_.-]+ ) )          # a name or an IPv4 literal
    (?: : (?P<port> [0-9]{1,5} ) )?         # optional port, digits only
    """,
    re.VERBOSE,
)
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_IPV4ISH = re.compile(r"[0-9.]+")


class ParsedHost(NamedTuple):
    """A Host header (or an origin's host) taken apart.

    ``origin_form`` is the host part lowercase, as written (brackets kept
    for IPv6, a trailing dot kept), so that two hosts can be compared as
    origins; ``name`` is the same without brackets and trailing dot, for
    matching; ``ip`` is set for IP literals (IPv4-mapped IPv6 unwrapped to
    IPv4).
    """

    origin_form: str
    name: str
    port: int | None
    ip: IPAddress | None


@lru_cache(maxsize=CACHE_SIZE)
def parse_host(text: str) -> ParsedHost | None:
    """Parse ``host[:port]`` strictly; ``None`` when it is not exactly that."""
    if not text.isascii() or len(text) > MAX_LENGTH:
        return None
    match = _HOST.fullmatch(text.lower())
    if match is None:
        return None
    port_text = match["port"]
    port = int(port_text) if port_text is not None else None
    if port is not None and not 1 <= port <= 65535:
        return None
    if match["ipv6"] is not None:
        try:
            ip: IPAddress | None = ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return None
        ip = parse_ip(str(ip))  # unwraps ::ffff:a.b.c.d
        return ParsedHost(f"[{match['ipv6']}]", str(ip), port, ip)
    origin_form = match["name"]
    name = origin_form[:-1] if origin_form.endswith(".") else origin_form
    if _IPV4ISH.fullmatch(origin_form):
        # Digits and dots are an IPv4 literal, in its one canonical form:
        # "127.1", "0127.0.0.1" or "127.0.0.1." mean different things to
        # different resolvers, so they are refused, not guessed at.
        try:
            ip = ipaddress.IPv4Address(origin_form)
        except ValueError:
            return None
        return ParsedHost(origin_form, origin_form, port, ip)
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return ParsedHost(origin_form, name, port, None)


def normalise_allowed_hosts(entries: Iterable[str]) -> frozenset[str]:
    """Check and normalise the ``allowed_hosts`` option; raise ``ValueError``.

    An entry is ``"*"``, a name (``mybox``), a domain with its subdomains
    (``.example.internal``), or an IP address (``192.168.0.13``, ``::1`` or
    ``[::1]``), without a port.
    """
    normalised = set()
    for entry in entries:
        if not isinstance(entry, str):
            raise TypeError(f"flask_selfhost: allowed_hosts entries must be strings, got {entry!r}")
        if entry == "*":
            normalised.add(entry)
            continue
        domain = entry.startswith(".")
        text = entry[1:] if domain else entry
        if ":" in text and not text.startswith("["):
            text = f"[{text}]"  # a bare IPv6 address
        parsed = parse_host(text) if text else None
        if parsed is None or parsed.port is not None or (domain and parsed.ip is not None):
            raise ValueError(
                f"flask_selfhost: allowed_hosts entry {entry!r} is not a host name, "
                "a .domain or an IP address (without a port)"
            )
        normalised.add(("." if domain else "") + parsed.name)
    return frozenset(normalised)


def refuse(reason: str, local: str | None = None) -> Decision:
    return Decision(False, HOST, reason, None, local)


MALFORMED_REFUSAL = refuse(MALFORMED)


@lru_cache(maxsize=CACHE_SIZE)
def judge_host(
    host: str, allowed_hosts: frozenset[str], local: str | None = None
) -> Decision | None:
    """Apply the rules above to a raw Host header; ``None`` means allowed.

    ``local`` is the connection's local address, needed only for an IP
    literal that is not loopback: call without it first, and again with it
    when the refusal's reason is :data:`IP_LOCAL_UNKNOWN` (that costs a
    system call, which the common case should not pay). The refusal's
    ``remote_addr`` is ``None``: the caller fills it in.
    """
    parsed = parse_host(host)
    if parsed is None:
        return MALFORMED_REFUSAL
    if "*" in allowed_hosts:
        return None
    name, ip = parsed.name, parsed.ip
    if ip is None:
        if name == "localhost" or name.endswith(".localhost") or name in allowed_hosts:
            return None
        for entry in allowed_hosts:
            if entry[0] == "." and (name.endswith(entry) or name == entry[1:]):
                return None
        return refuse(NOT_ALLOWED)
    if ip.is_loopback or name in allowed_hosts:
        return None
    if local is None:
        return refuse(IP_LOCAL_UNKNOWN)
    own = parse_ip(local)
    # The local address may carry an IPv6 zone (fe80::1%eth0); a Host cannot.
    if own is not None and own.version == ip.version and int(own) == int(ip):
        return None
    return refuse(IP_NOT_LOCAL, local)


def judge_request_host(facts: RequestFacts, allowed_hosts: frozenset[str]) -> Decision | None:
    """The host rule for one request: a refusal, or ``None``.

    The raw header is judged first without the local address (one cache hit
    in the common case); only an IP literal that is not loopback makes it ask
    the connection which local address it used. Behind a proxy, that
    connection is the proxy's link to the app, not the one the browser
    dialled, so any of this host's own addresses is an acceptable literal
    there (no DNS answer can make an IP literal point here); whether the
    proxy may be believed at all is the client rule's question.
    """
    host = facts.host
    if host is None:
        return None
    if len(host) > MAX_LENGTH:
        return MALFORMED_REFUSAL  # never a cache key
    refusal = judge_host(host, allowed_hosts)
    if refusal is None or refusal.reason is not IP_LOCAL_UNKNOWN:
        return refusal
    local = facts.connection.local_address()
    if local is not None:
        refusal = judge_host(host, allowed_hosts, local)
        if refusal is None:
            return None
    if facts.relayed or facts.proxy_protocol is not None:
        parsed = parse_host(host)
        if parsed is not None and parsed.ip in host_addresses.current():
            return None
    return refusal
