"""What each known forwarder on this host relays to. A forwarder whose target
is ``--port`` hands its own clients, from anywhere, to the app as local
ones: risky, unless the app's guard refuses them (``refuse_forwarders``, for
a forwarder its server can read).

Targets come from the forwarders' command lines (an idle ``socat`` or
``ssh -R`` has no connection to show its target) and from the connections
they hold (:mod:`flask_selfhost.doctor.peers` reads the sockets). The
parsers are pure; :func:`relay_findings` does the reading.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .. import peer_process
from ..options import Options
from .listeners import FORWARDERS, LISTEN
from .peers import ESTABLISHED, TcpSocket, user_name
from .report import NOTE, REFUSED_BY_GUARD, RISKY, Finding, Question

PROXY_NAMES = frozenset({"nginx", "haproxy", "caddy", "traefik", "envoy", "apache2", "httpd"})

FORWARDER_TARGET_FIX = (
    "stop it (kill {pids}) or point it elsewhere; or refuse its clients in the app's guard: "
    "refuse_forwarders=True (the server sees it when it runs as {owner} or as root)"
)
PROXY_TARGET_FIX = (
    "make it send X-Forwarded-For or Forwarded, and put its address (or user) in the "
    "app's trusted_proxies"
)


@dataclass(frozen=True)
class Forwarder:
    """A known forwarder: its processes (one command line, one owner), and
    the ``(host, port)`` ends it relays to."""

    pids: tuple[int, ...]
    name: str
    uid: int
    targets: tuple[tuple[str, int], ...]


_HOST_PORT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d+)$")
#: socat addresses that dial out (TCP-LISTEN and the like accept instead).
_SOCAT_DIALS = re.compile(r"(?i)^(?:TCP[46]?|TCP[46]?-CONNECT|SSL|OPENSSL):(.+)$")


def _host_port(text: str) -> tuple[str, int] | None:
    match = _HOST_PORT.search(text)
    if match is None:
        return None
    return match["v6"] or match["host"], int(match["port"])


def _flag(argv: Sequence[str], name: str) -> str:
    """A Go program's flag: ``-name value``, ``--name value`` or ``-name=value``."""
    for index, word in enumerate(argv):
        flag, _, value = word.lstrip("-").partition("=")
        if word.startswith("-") and flag == name:
            return value if value else (argv[index + 1] if index + 1 < len(argv) else "")
    return ""


def command_targets(name: str, argv: Sequence[str]) -> list[tuple[str, int]]:
    """What a forwarder's command line says it dials: socat's ``TCP:host:port``,
    ``ssh -R [bind:]port:host:hostport``, docker-proxy's container address."""
    targets = []
    if name == "socat":
        for word in argv[1:]:
            match = _SOCAT_DIALS.match(word.split(",", 1)[0])
            target = _host_port(match[1]) if match else None
            if target:
                targets.append(target)
    elif name == "ssh":
        for index, word in enumerate(argv):
            spec = argv[index + 1] if word == "-R" and index + 1 < len(argv) else ""
            spec = word[2:] if word.startswith("-R") and len(word) > 2 else spec
            parts = spec.rsplit(":", 2)
            target = _host_port(":".join(parts[-2:])) if len(parts) >= 3 else None
            if target:
                targets.append(target)
    elif name == "docker-proxy":
        port = _flag(argv, "container-port")
        if port.isdigit():
            targets.append((_flag(argv, "container-ip") or "?", int(port)))
    return targets


def socket_targets(inodes: Iterable[int], sockets: Sequence[TcpSocket]) -> list[tuple[str, int]]:
    """The ends that a process's connected sockets dial: the other end of each
    connection it holds whose port is one that a socket of this host
    listens on (its own accepted connections end at a client's port)."""
    listening = {item.local_port for item in sockets if item.state == LISTEN}
    held = set(inodes)
    return [
        (item.remote, item.remote_port)
        for item in sockets
        if item.inode in held and item.state == ESTABLISHED and item.remote_port in listening
    ]


def is_here(host: str, own: set[str]) -> bool:
    """A target on this host: loopback, ``localhost``, a wildcard, or one of ``own``."""
    if host in ("localhost", "ip6-localhost") or host in own:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def forwarder_target_findings(
    forwarders: Iterable[Forwarder],
    scope: Question,
    own: set[str],
    options: Options | None = None,
    server_uids: frozenset[int] = frozenset(),
) -> list[Finding]:
    """Each known forwarder and what it relays to. One that relays to
    ``--port`` on this host is risky: the app sees its clients as local;
    unless the guarded app refuses them (``refuse_forwarders``, and the
    server runs as the forwarder's owner or root, so it can see it)."""
    findings = []
    for forwarder in forwarders:
        owner = user_name(forwarder.uid)
        targets = sorted(set(forwarder.targets))
        if not targets:
            continue  # listening only: the listener findings speak of it
        shown = ", ".join(f"{host} port {port}" for host, port in targets)
        pids = ", ".join(map(str, forwarder.pids[:4])) + (
            ", ..." if len(forwarder.pids) > 4 else ""
        )
        about = f"{forwarder.name} (pid {pids}, user {owner}) relays to {shown}"
        details = {"pids": list(forwarder.pids), "name": forwarder.name, "uid": forwarder.uid}
        details["targets"] = [list(target) for target in targets]
        hits = scope.port is not None and any(
            port == scope.port and is_here(host, own) for host, port in targets
        )
        if not hits:
            findings.append(Finding(NOTE, "relay", f"{about}.", details))
            continue
        proxy = forwarder.name in PROXY_NAMES
        refuses = (
            scope.guarded_port
            and options is not None
            and options.refuse_forwarders
            and peer_process.is_forwarder(forwarder.name)
            and not (proxy and options.trusted_proxies)
            and bool(server_uids)
            and server_uids <= {0, forwarder.uid}
        )
        if refuses:
            details.update({REFUSED_BY_GUARD: True, "app": scope.app, "port": scope.port})
            message = (
                f"{about}: port {scope.port}; {scope.app} refuses its clients (refuse_forwarders)."
            )
            findings.append(Finding(NOTE, "relay", message, details))
            continue
        message = (
            f"{about}: port {scope.port} is the app's, so whoever reaches {forwarder.name} "
            "reaches the app as a client on this host."
        )
        fix = (
            PROXY_TARGET_FIX
            if proxy
            else FORWARDER_TARGET_FIX.format(pids=" ".join(map(str, forwarder.pids)), owner=owner)
        )
        findings.append(Finding(RISKY, "relay", message, details, fix))
    return findings


# Reading ------------------------------------------------------------------


def read_forwarders(sockets: Sequence[TcpSocket]) -> list[Forwarder]:
    """The known forwarders this user can see in this network namespace, one
    per command line and owner (socat's forked children, nginx's workers),
    with their targets."""
    try:
        here = os.readlink("/proc/self/ns/net")
    except OSError:
        here = ""
    found: dict[tuple[str, int, tuple[str, ...]], tuple[list[int], set[int]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        name = peer_process.process_name(pid, FORWARDERS)
        if name not in FORWARDERS:
            continue
        try:
            if here and os.readlink(f"/proc/{pid}/ns/net") != here:
                continue  # another network namespace: another host
        except OSError:
            pass  # not readable: kept, since it may be here
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                argv = tuple(w.decode(errors="replace") for w in file.read().split(b"\0") if w)
        except OSError:
            continue  # gone
        pids, inodes = found.setdefault((name, uid, argv), ([], set()))
        pids.append(pid)
        inodes |= peer_process.socket_inodes(pid)
    forwarders = [
        Forwarder(
            tuple(sorted(pids)),
            name,
            uid,
            tuple(command_targets(name, argv) + socket_targets(inodes, sockets)),
        )
        for (name, uid, argv), (pids, inodes) in found.items()
    ]
    return sorted(forwarders, key=lambda item: item.pids)


def relay_findings(
    scope: Question,
    own: set[str] | None,
    options: Options | None,
    server_pids: Iterable[int],
    sockets: Sequence[TcpSocket],
) -> list[Finding]:
    """The forwarders on this host and what they relay to; ``server_pids``
    serve ``--port`` (their users are whom the guard's lookups run as)."""
    server_uids = set()
    for pid in server_pids:
        try:
            server_uids.add(os.stat(f"/proc/{pid}").st_uid)
        except OSError:
            continue
    return forwarder_target_findings(
        read_forwarders(sockets), scope, own or set(), options, frozenset(server_uids)
    )
