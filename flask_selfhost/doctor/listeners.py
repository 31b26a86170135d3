"""Listening TCP sockets (``/proc/net/tcp``, ``/proc/net/tcp6``), their owners,
and the forwarders among them.

The parsers are pure (text in, listeners out); :func:`read_listeners` does
the reading.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

from .. import peer_process
from .report import NOTE, OK, REFUSED_BY_GUARD, RISKY, UNKNOWN, Finding, Question

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp

#: Programs that accept connections and relay them from this host: the app
#: sees them (or whatever they connect to locally) as a local client.
#: The guard's list (:data:`flask_selfhost.peer_process.FORWARDERS`, which
#: ``refuse_forwarders`` refuses), and more that the doctor reports.
TUNNELS = ("autossh", "ncat", "stunnel", "stunnel4", "redir")
PUBLISHERS = ("rootlesskit", "slirp4netns", "pasta", "kubectl")  # port-forward
PROXIES = ("caddy", "traefik", "envoy", "apache2", "httpd", "lighttpd")
OTHER_RELAYS = ("squid", "tinyproxy", "3proxy", "varnishd", "frps", "chisel")
FORWARDERS = frozenset(peer_process.FORWARDERS + TUNNELS + PUBLISHERS + PROXIES + OTHER_RELAYS)
#: sshd forwards only for users who can log in (``ssh -L``): reported, not risky.
LOGIN_FORWARDERS = frozenset({"sshd", "sshd-session"})

FORWARDER_RISK = "forwarders make every client look local"


@dataclass(frozen=True)
class Listener:
    address: str  # as text, IPv4-mapped IPv6 unwrapped
    port: int
    version: int  # 4 or 6: which /proc file it came from
    inode: int
    kind: str = ""  # "loopback", "wildcard" or "address"
    processes: tuple[tuple[int, str], ...] = ()  # (pid, name), where readable

    @property
    def shown(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def owner(self) -> str:
        if not self.processes:
            return "owner not readable"
        names = sorted({name for _, name in self.processes})
        pids = sorted(pid for pid, _ in self.processes)
        shown_pids = ", ".join(map(str, pids[:4])) + (", ..." if len(pids) > 4 else "")
        return f"{'/'.join(names)}, pid {shown_pids}"


def decode_proc_address(hex_address: str, byteorder: str = sys.byteorder) -> str:
    """``0100007F`` -> ``127.0.0.1``; 32 hex digits -> an IPv6 address.

    The kernel prints each 32-bit word of the address as a native integer,
    so on a little-endian machine the bytes of each word come out reversed.
    IPv4-mapped IPv6 addresses come back as plain IPv4.
    """
    words = [hex_address[i : i + 8] for i in range(0, len(hex_address), 8)]
    packed = b"".join(int(word, 16).to_bytes(4, byteorder) for word in words)  # type: ignore[arg-type]
    address = ipaddress.ip_address(packed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def classify_address(address: str) -> str:
    """``"loopback"``, ``"wildcard"`` or ``"address"`` (one specific address)."""
    parsed = ipaddress.ip_address(address)
    if parsed.is_loopback:
        return "loopback"
    if parsed.is_unspecified:
        return "wildcard"
    return "address"


def parse_proc_net_tcp(text: str, version: int, byteorder: str = sys.byteorder) -> list[Listener]:
    """The listening sockets in the text of ``/proc/net/tcp`` (``version=4``)
    or ``/proc/net/tcp6`` (``version=6``). Malformed lines are skipped."""
    listeners = []
    for line in text.splitlines()[1:]:  # the first line is the header
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        try:
            hex_address, hex_port = fields[1].split(":")
            address = decode_proc_address(hex_address, byteorder)
            port, inode = int(hex_port, 16), int(fields[9])
        except ValueError:
            continue
        listeners.append(Listener(address, port, version, inode, kind=classify_address(address)))
    return listeners


#: What to do about an app that other hosts can reach and nothing refuses.
LISTENER_FIX = (
    "bind it to loopback (127.0.0.1 or [::1]), or guard the app: SelfHost(app), "
    "or SelfHostMiddleware / SelfHostASGIMiddleware around it"
)
FORWARDER_FIX = (
    "bind it to loopback or stop it; a proxy must send X-Forwarded-For or Forwarded, "
    "with its address in the app's trusted_proxies"
)
BYPASS_FIX = "delete the source NAT rule: its nat finding gives the command"


def listener_findings(
    listeners: Iterable[Listener],
    port: int | None,
    app: str | None,
    guarded: bool | None,
    bypass: str | None = None,
) -> list[Finding]:
    """Findings for the listeners (all of them, or those on ``port``).

    ``app``/``guarded`` describe the app given with ``--app`` (``None`` when
    none was given): a non-loopback listener on ``port`` is then risky
    unless the app is guarded and nothing (``bypass``, see
    :class:`~flask_selfhost.doctor.report.Question`) stops the guard refusing.
    """
    findings = []
    selected = [item for item in listeners if port is None or item.port == port]
    if port is not None and not selected:
        findings.append(
            Finding(NOTE, "listener", f"nothing listens on TCP port {port} here.", {"port": port})
        )
    for listener in sorted(selected, key=lambda item: (item.port, item.version, item.address)):
        details = {**asdict(listener), "owner": listener.owner()}
        where = f"{listener.shown} ({listener.owner()})"
        if listener.kind == "loopback":
            findings.append(
                Finding(
                    OK,
                    "listener",
                    f"{where} listens on loopback only: other hosts cannot connect to it "
                    "directly (only through NAT or a forwarder, see below).",
                    details,
                )
            )
            continue
        reach = (
            "every interface" if listener.kind == "wildcard" else f"the address {listener.address}"
        )
        text = f"{where} listens on {reach}: other hosts can connect"
        if port is None or guarded is None:
            hint = " (pass --port and --app to check the app behind it)" if port is None else ""
            findings.append(Finding(NOTE, "listener", f"{text}{hint}.", details))
        elif guarded and bypass:
            findings.append(
                Finding(
                    RISKY,
                    "listener",
                    f"{text}; {app} is guarded, but {bypass}, so it does not refuse them.",
                    details,
                    BYPASS_FIX,
                )
            )
        elif guarded:
            details.update({REFUSED_BY_GUARD: True, "app": app})
            findings.append(
                Finding(OK, "listener", f"{text}; {app} is guarded, so it refuses them.", details)
            )
        else:
            findings.append(
                Finding(
                    RISKY,
                    "listener",
                    f"{text}, and {app} is NOT guarded: nothing in the app refuses them.",
                    details,
                    LISTENER_FIX,
                )
            )
    return findings


def forwarder_findings(listeners: Iterable[Listener]) -> list[Finding]:
    """Known forwarders listening on a non-loopback address.

    Not scoped by ``--port``: a forwarder on any port may relay to the app's,
    and the guard cannot see through it (its clients look local).
    """
    findings = []
    for listener in listeners:
        if listener.kind == "loopback":
            continue
        names = sorted({name for _, name in listener.processes if name in FORWARDERS})
        if not names:
            continue
        severity = NOTE if set(names) <= LOGIN_FORWARDERS else RISKY
        message = (
            f"{'/'.join(names)} listens on {listener.shown}, reachable by other hosts: "
            f"{FORWARDER_RISK}. Whatever it relays to a local app arrives from this host."
        )
        if severity == NOTE:
            message += " (sshd relays only for users who can log in: ssh -L.)"
        details = {**asdict(listener), "forwarders": names}
        findings.append(Finding(severity, "forwarder", message, details, FORWARDER_FIX))
    return findings


def hidden_owner_findings(
    listeners: Iterable[Listener], scope: Question, is_root: bool
) -> list[Finding]:
    """What cannot be said about non-loopback listeners whose owner is unreadable.

    Unknown (exit 2) for the listeners in scope (all, or those on
    ``--port``); a note for the others, so that ``--port 8000`` is not
    failed by some other port's listener.
    """
    hidden = [item for item in listeners if item.kind != "loopback" and not item.processes]
    in_scope = [item.shown for item in hidden if scope.port is None or item.port == scope.port]
    others = [item.shown for item in hidden if item.shown not in in_scope]
    why = (
        "their processes are not visible here, perhaps in another PID namespace"
        if is_root
        else "run as root to read /proc/*/fd"
    )
    findings = []
    if in_scope:
        findings.append(
            Finding(
                UNKNOWN,
                "inspect",
                f"the owner of {', '.join(in_scope)} could not be identified ({why}): a "
                "forwarder there would not be recognised.",
                {"listeners": in_scope},
            )
        )
    if others:
        findings.append(
            Finding(
                NOTE,
                "inspect",
                f"the owner of {', '.join(others)} (not port {scope.port}) could not be "
                f"identified ({why}); a forwarder there would not be recognised.",
                {"listeners": others},
            )
        )
    return findings


# Reading ------------------------------------------------------------------


def read_listeners(scope: Question | None = None) -> tuple[list[Listener], list[Finding]]:
    listeners: list[Listener] = []
    problems: list[Finding] = []
    for version, path in ((4, "/proc/net/tcp"), (6, "/proc/net/tcp6")):
        try:
            with open(path) as file:
                listeners += parse_proc_net_tcp(file.read(), version)
        except FileNotFoundError:
            continue  # no IPv6 in this kernel: nothing listens there
        except OSError as error:
            problems.append(Finding(UNKNOWN, "inspect", f"could not read {path}: {error}."))
    owners = socket_owners({listener.inode for listener in listeners})
    listeners = [
        replace(listener, processes=tuple(sorted(owners.get(listener.inode, ()))))
        for listener in listeners
    ]
    problems += hidden_owner_findings(listeners, scope or Question(), os.geteuid() == 0)
    return listeners, problems


def socket_owners(inodes: set[int]) -> dict[int, set[tuple[int, str]]]:
    """socket inode -> {(pid, process name)}, from the ``/proc/PID/fd`` links we may read."""
    owners: dict[int, set[tuple[int, str]]] = {}
    for inode, pids in peer_process.scan(inodes).items():
        for pid in pids:
            owners.setdefault(inode, set()).add((pid, process_name(pid)))
    return owners


def process_name(pid: int) -> str:
    """The program name, a known forwarder's where any of its names is one
    (:func:`flask_selfhost.peer_process.process_name`); ``?`` when gone."""
    return peer_process.process_name(pid, FORWARDERS) or "?"
