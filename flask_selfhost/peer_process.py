"""
Which process holds the client's socket
=======================================

A forwarder on this host (``ssh -R``, ``socat``, ``docker-proxy``,
userspace ``tailscaled``) makes a remote client look like a local one: the
connection the app sees comes from the forwarder's own socket, on this host,
held by a process of this host, and the kernel witness
(:mod:`flask_selfhost.kernel_witness`) rightly vouches for it. What it
cannot say is who is behind that process. The socket's inode (the kernel's
answer names it) leads to the process that holds it: every
``/proc/PID/fd/N`` link of that process reads ``socket:[INODE]``.
:func:`find_holders` finds them, and :data:`FORWARDERS` names the
executables known to relay connections from elsewhere.

Limits, each a way to miss a forwarder (the docs' threat model lists them):

- **Readable only for the same user, or root.** Another user's
  ``/proc/PID/fd`` gives ``EACCES``, and so does a process of the same user
  that made itself non-dumpable; a process in another PID namespace is not
  listed at all. Then nothing is found (:data:`NOT_FOUND`).
- **An unknown executable.** A forwarder run under another name (a copy of
  socat, a Python script) is not in :data:`FORWARDERS`.
- **A passed socket.** A descriptor sent to another process (``SCM_RIGHTS``)
  is held by both; the one that made the connection may be gone.

Cost: scanning ``/proc/*/fd`` reads one link per descriptor of every
process: milliseconds with a few hundred processes, up to about 90 ms on a
busy host (``benchmarks/peer_process.py`` prints the figure here). It is
never done on the common path: only for a refusal that is logged, and for
every new connection when ``refuse_forwarders`` asks. It is bounded twice:

- **A budget of scanning time** (:attr:`ProcessFinder.share`, a fifth of one
  core by default): a scan spends from it, time refills it, and when it is
  spent the answer is :data:`NOT_LOOKED`, so a local user who draws refusals
  by the thousand cannot keep the cores busy.
- **A cache by inode** (:attr:`ProcessFinder.size` entries, oldest out). A
  cached answer is used only after checking that each process named still
  holds that inode in its fd table, and its name is read again: a pid that
  exited and was reused by another program, or a process that ran
  ``exec``, is not trusted from memory. "Not found" (a holder this user
  may not read) has no pid to check: it is kept :data:`NOT_FOUND_SECONDS`
  only, so that an ASGI server, which gives no connection to remember an
  answer on, does not scan at every request of such a client. Socket
  inodes come from a 32-bit counter shared with every pipe and file of the
  host: none is reused within that time.

The module is stdlib only and imports nothing of this package.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

#: Executables that relay connections from other hosts (or other users) to a
#: local port, so that the app sees their socket, not the client's.
#: ``sshd-session`` is the per-connection process of OpenSSH 9.8 and later
#: (``sshd`` before). nginx and haproxy count only when the guard does not
#: trust them as proxies (:data:`PROXIES`).
FORWARDERS: tuple[str, ...] = (
    "sshd",
    "sshd-session",
    "ssh",
    "socat",
    "docker-proxy",
    "tailscaled",
    "ngrok",
    "frpc",
    "cloudflared",
    "rinetd",
    "haproxy",
    "nginx",
)
#: The reverse proxies of :data:`FORWARDERS`: not counted for a request that
#: a trusted proxy relayed with forwarding headers (the guard judged the
#: client it names).
PROXIES = frozenset({"haproxy", "nginx"})
_FORWARDER_NAMES = frozenset(FORWARDERS)

#: Outcomes of :meth:`ProcessFinder.find`.
FOUND = "found"
NOT_FOUND = "not found"  # no process this user may read holds the socket
NOT_LOOKED = "not looked"  # the scanning budget is spent, or there is no inode

#: Defaults of the process's finder: the share of one core that scans may
#: use, and the inodes cached.
SHARE = 0.2
SIZE = 256
#: Seconds a "not found" answer is kept.
NOT_FOUND_SECONDS = 1.0


class Holder(NamedTuple):
    """A process that holds the socket: its pid and its program's name."""

    pid: int
    name: str


class Lookup(NamedTuple):
    """What :meth:`ProcessFinder.find` learned about one socket inode."""

    outcome: str
    holders: tuple[Holder, ...] = ()

    def shown(self) -> str:
        """For the log: the holders' names (``socat``, ``sshd/sshd-session``),
        or the outcome."""
        if not self.holders:
            return self.outcome
        return "/".join(sorted({holder.name for holder in self.holders}))

    def forwarders(self, trusted_proxy: bool = False) -> tuple[str, ...]:
        """The known forwarders among the holders; without the proxies of
        :data:`PROXIES` when ``trusted_proxy`` (the request came through one)."""
        names = {holder.name for holder in self.holders if holder.name in _FORWARDER_NAMES}
        if trusted_proxy:
            names -= PROXIES
        return tuple(sorted(names))


def is_forwarder(name: str) -> bool:
    """Whether ``name`` is one of :data:`FORWARDERS`."""
    return name in _FORWARDER_NAMES


def process_name(pid: int, known: frozenset[str] = _FORWARDER_NAMES) -> str | None:
    """The program that ``pid`` runs, or ``None`` when the process is gone.

    Three names are read: the executable's (``/proc/PID/exe``, readable for
    the same user or root), ``comm`` (which the process may set itself, cut
    at 15 characters) and ``argv[0]``'s (``sshd: alice@notty`` reads
    ``sshd``). The first of them in ``known`` wins, so that any one of them
    names a forwarder; else ``comm`` (a script's name: ``gunicorn``, not
    ``python3``), else the executable's.
    """
    try:
        # A binary replaced by an upgrade reads "/usr/sbin/sshd (deleted)".
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)"))
    except OSError:
        exe = ""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as file:
            comm = file.read().strip()
    except OSError:
        if not exe:
            return None
        comm = ""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            argv0 = file.read().split(b"\0", 1)[0].decode(errors="replace")
        words = argv0.split(":", 1)[0].split()
        program = os.path.basename(words[0]) if words else ""
    except OSError:
        program = ""
    for name in (exe, comm, program):
        if name in known:
            return name
    return comm or exe or None


def holds(pid: int, link: str) -> bool:
    """Whether process ``pid`` has a descriptor whose link reads ``link``
    (``socket:[INODE]``) now."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        descriptors = os.listdir(fd_dir)
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(f"{fd_dir}/{descriptor}") == link:
                return True
        except OSError:
            continue  # closed meanwhile
    return False


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets that process ``pid`` holds now (empty when
    it is gone or not readable)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        descriptors = os.listdir(fd_dir)
    except OSError:
        return set()
    inodes = set()
    for descriptor in descriptors:
        try:
            link = os.readlink(f"{fd_dir}/{descriptor}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def scan(inodes: Iterable[int]) -> dict[int, set[int]]:
    """socket inode -> the pids holding it, from every ``/proc/PID/fd`` this
    user may read. Unbounded: :class:`ProcessFinder` bounds it for requests."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, set[int]] = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            descriptors = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for descriptor in descriptors:
            try:
                inode = wanted.get(os.readlink(f"{fd_dir}/{descriptor}"))
            except OSError:
                continue
            if inode is not None:
                found.setdefault(inode, set()).add(int(entry))
    return found


class ProcessFinder:
    """Finds the processes that hold a socket, within a budget of scanning
    time and with a cache checked against pid reuse (see the module's
    docstring). Thread-safe; one per process (:data:`finder`) serves every
    request, and tests make their own with other bounds."""

    def __init__(self, share: float = SHARE, size: int = SIZE) -> None:
        #: Seconds of scanning per second of time, and the most saved up.
        self.share = share
        self.size = size
        self._lock = threading.Lock()
        self._budget = share
        self._refilled = time.monotonic()
        #: inode -> the pids that held it, or the time it was found held by none.
        self._cache: OrderedDict[int, tuple[int, ...] | float] = OrderedDict()
        #: Scans done and refused, and seconds spent scanning: for tests and
        #: benchmarks.
        self.scans = 0
        self.refused = 0
        self.spent = 0.0

    def find(self, inode: int) -> Lookup:
        """The processes that hold socket ``inode`` now, by name."""
        if inode <= 0:
            return Lookup(NOT_LOOKED)
        link = f"socket:[{inode}]"
        with self._lock:
            cached = self._cache.get(inode)
        if isinstance(cached, float):
            if time.monotonic() - cached < NOT_FOUND_SECONDS:
                return Lookup(NOT_FOUND)
        elif cached is not None:
            holders = self._named(pid for pid in cached if holds(pid, link))
            if holders:
                return Lookup(FOUND, holders)
        if not self._spend():
            return Lookup(NOT_LOOKED)
        started = time.monotonic()
        pids = scan((inode,)).get(inode, set())
        holders = self._named(sorted(pids))
        took = time.monotonic() - started
        with self._lock:
            self._budget -= took
            self.spent += took
            self.scans += 1
            self._cache[inode] = tuple(h.pid for h in holders) if holders else started + took
            self._cache.move_to_end(inode)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return Lookup(FOUND, holders) if holders else Lookup(NOT_FOUND)

    def _spend(self) -> bool:
        """Whether a scan may start now: the budget is refilled for the time
        gone by, and must not be spent."""
        with self._lock:
            now = time.monotonic()
            self._budget = min(self.share, self._budget + (now - self._refilled) * self.share)
            self._refilled = now
            if self._budget <= 0:
                self.refused += 1
                return False
            return True

    @staticmethod
    def _named(pids: Iterable[int]) -> tuple[Holder, ...]:
        named = []
        for pid in pids:
            name = process_name(pid)
            if name is not None:
                named.append(Holder(pid, name))
        return tuple(named)


#: The finder of this process: every front's lookups share its budget.
finder = ProcessFinder()
