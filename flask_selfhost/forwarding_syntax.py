"""
The forwarding headers: their names and their grammar
=====================================================

A request that carries a forwarding header is a proxy relaying someone
else's request, and is refused unless its sender is a trusted proxy. The
guard has several fronts (WSGI, Flask, ASGI, Quart, FastAPI), and each
reads headers in its interface's own spelling: WSGI environ keys
(``HTTP_X_FORWARDED_FOR``), ASGI lowercase bytes (``b"x-forwarded-for"``).
A header added to one front's list but not another's is a way in through
that front: a loopback proxy that names its client in it would pass there
as a local request. So :data:`FORWARDING_HEADERS` is written once, here,
as HTTP names the fields, and every spelling is derived from it
(:data:`ENVIRON_KEYS`, :data:`ASGI_NAMES`). The one exception, the WSGI
fronts' written-out fast path, is checked against it by the tests.

``Forwarded`` and ``X-Forwarded-For`` are also parsed, and strictly on
purpose: Werkzeug's ``parse_list_header`` returns an empty list for an
unbalanced quote, and a lenient parser that drops what it does not
understand would shift the entries a hop count relies on. The RFC 7239
grammar is small, so it is matched here with stdlib ``re``. The parsers
are pure and cached on the raw strings (a proxy sends the same few header
values again and again).
"""

from __future__ import annotations

import re
from functools import lru_cache

from .addresses import CACHE_SIZE, parse_ip

#: Every header that says "a proxy forwarded this", as HTTP names it, each
#: with whether it names the client alone (one address, no chain of hops).
#: Checked by exact name (a scan for every ``X-Forwarded-*`` would cost a
#: microsecond a request); these are the ones proxies set.
FORWARDING_HEADERS: dict[str, bool] = {
    "Forwarded": False,
    "X-Forwarded-For": False,
    "X-Forwarded-Host": False,
    "X-Forwarded-Proto": False,
    "X-Forwarded-Port": False,
    "X-Forwarded-Prefix": False,
    "X-Forwarded-Server": False,
    "X-Forwarded-Scheme": False,
    "X-Forwarded-Ssl": False,
    # The client alone, as nginx (X-Real-IP), CDNs and balancers name it. A
    # server may be told to take the client from any of them, its first
    # entry verbatim, keeping no original (daphne --proxy-headers-host).
    "X-Real-IP": True,
    "CF-Connecting-IP": True,
    "True-Client-IP": True,
    "X-Client-IP": True,
    "X-Cluster-Client-IP": True,
    "Fastly-Client-IP": True,
}

#: The headers of :data:`FORWARDING_HEADERS` that name the client alone.
CLIENT_HEADERS = tuple(name for name, alone in FORWARDING_HEADERS.items() if alone)

#: :data:`FORWARDING_HEADERS` as WSGI environ keys (``HTTP_X_FORWARDED_FOR``).
ENVIRON_KEYS = tuple("HTTP_" + name.upper().replace("-", "_") for name in FORWARDING_HEADERS)

#: :data:`FORWARDING_HEADERS` as ASGI header names (lowercase bytes).
ASGI_NAMES = frozenset(name.lower().encode("ascii") for name in FORWARDING_HEADERS)

#: :data:`CLIENT_HEADERS` as ASGI header names (lowercase bytes).
ASGI_CLIENT_NAMES = frozenset(name.lower().encode("ascii") for name in CLIENT_HEADERS)


class MalformedHeader(ValueError):
    """A forwarding header that does not follow its grammar (the message says how)."""


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


#: Longer Forwarded / X-Forwarded-For values are refused before they are
#: parsed or cached: twenty IPv6 hops fit, and the caches hold at most
#: CACHE_SIZE such strings, so a flood of distinct long headers costs
#: bounded memory.
MAX_HEADER_LENGTH = 1024
