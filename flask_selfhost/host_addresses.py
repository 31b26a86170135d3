"""
This host's own addresses, read from the kernel and refreshed now and then
=========================================================================

A client on this host that reaches a same-host proxy through the host's LAN
address ``192.168.0.13`` is recorded by the proxy as ``192.168.0.13``. To
judge such a forwarded client the guard needs the set of addresses this host
owns, which it cannot learn from the request.

The set comes from ``/proc`` (Linux), without a subprocess, DNS or a
third-party package:

- IPv4: ``/proc/net/fib_trie``, the kernel's routing trie. Every address the
  host owns appears in it followed by a ``/32 host LOCAL`` line, secondary
  addresses included (``ioctl(SIOCGIFADDR)`` would give one per interface).
- IPv6: ``/proc/net/if_inet6``, one line per address, 32 hex digits first.

Both are per network namespace, so a server inside a container or a test's
namespace sees its own addresses. Reading them costs some tens of
microseconds, so the set is read once and re-read when it is older than
:data:`REFRESH_SECONDS`, never per request, and only on the code path that
needs it (a request forwarded by a trusted proxy). Where ``/proc`` is missing
(not Linux) the set is empty, so only loopback forwarded clients can pass:
closed, not open.

Loopback addresses are left out: "loopback" means this host only when the
hop that recorded it is on this host, which the caller decides.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .addresses import IPAddress

#: How old the cached set may get before the next caller re-reads it. An
#: address added by DHCP is recognised within this many seconds; an address
#: just removed is still honoured as long (it can only have been this host's).
REFRESH_SECONDS = 30.0

_monotonic = time.monotonic

FIB_TRIE = Path("/proc/net/fib_trie")
IF_INET6 = Path("/proc/net/if_inet6")


def parse_fib_trie(text: str) -> frozenset[IPAddress]:
    """The IPv4 addresses that ``/proc/net/fib_trie`` marks ``/32 host LOCAL``."""
    found: set[IPAddress] = set()
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == "/32 host LOCAL" and previous.startswith("|-- "):
            # A line this parser does not know is skipped, never guessed at.
            with contextlib.suppress(ValueError):
                found.add(ipaddress.IPv4Address(previous[4:]))
        previous = stripped
    return frozenset(found)


def parse_if_inet6(text: str) -> frozenset[IPAddress]:
    """The IPv6 addresses listed in ``/proc/net/if_inet6`` (32 hex digits each)."""
    found: set[IPAddress] = set()
    for line in text.splitlines():
        fields = line.split()
        if not fields or len(fields[0]) != 32:
            continue
        try:
            found.add(ipaddress.IPv6Address(int(fields[0], 16)))
        except ValueError:
            continue
    return frozenset(found)


def read_host_addresses() -> frozenset[IPAddress]:
    """Read this host's non-loopback addresses now (a few file reads)."""
    found: set[IPAddress] = set()
    for path, parse in ((FIB_TRIE, parse_fib_trie), (IF_INET6, parse_if_inet6)):
        try:
            found |= parse(path.read_text())
        except OSError:
            continue  # not Linux, or /proc not mounted: fewer addresses, never more
    # A link-local address is only meaningful with its interface; a proxy's
    # header carries none, so such an entry cannot be tied to this host.
    return frozenset(a for a in found if not a.is_loopback and not a.is_link_local)


class HostAddresses:
    """A cached snapshot of :func:`read_host_addresses`, re-read when stale.

    :param refresh_seconds: Age after which the next :meth:`current` call
        reads the system again.
    :param reader: The function that reads the addresses (tests pass their
        own).
    """

    def __init__(
        self,
        refresh_seconds: float = REFRESH_SECONDS,
        reader: Callable[[], frozenset[IPAddress]] | None = None,
    ) -> None:
        self.refresh_seconds = refresh_seconds
        self._read = reader or read_host_addresses
        self._lock = threading.Lock()
        # (snapshot, monotonic deadline), replaced as one object so that a
        # reader never sees a new deadline with an old snapshot.
        self._state: tuple[frozenset[IPAddress], float] = (frozenset(), float("-inf"))

    def current(self) -> frozenset[IPAddress]:
        """This host's addresses, at most ``refresh_seconds`` old.

        The snapshot is a new frozenset only when the addresses changed, so
        callers may use it as part of a cache key.
        """
        snapshot, deadline = self._state
        if _monotonic() < deadline:
            return snapshot
        with self._lock:  # one caller re-reads; the others then find it fresh
            snapshot, deadline = self._state
            if _monotonic() >= deadline:
                fresh = self._read()
                if fresh != snapshot:
                    snapshot = fresh
                self._state = (snapshot, _monotonic() + self.refresh_seconds)
        return snapshot


#: The process-wide snapshot the guard uses.
host_addresses = HostAddresses()
