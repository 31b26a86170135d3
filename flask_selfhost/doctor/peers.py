"""Who is connected to the app's port now: for each connection to
``--port``, the client's socket on this host (from ``/proc/net/tcp{,6}``:
every socket of this network namespace, with its owner's uid and inode)
and the process that holds it (the ``/proc/PID/fd`` links this user may
read, :func:`flask_selfhost.peer_process.scan`, the guard's own lookup), or
none: another host or another network namespace. The parsers are pure;
:func:`connected_now` does the reading.
"""

from __future__ import annotations

import pwd
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .. import peer_process
from .listeners import decode_proc_address
from .report import NOTE, Finding

ESTABLISHED = "01"
#: Connections listed one by one; more are counted.
SHOWN = 10


@dataclass(frozen=True)
class TcpSocket:
    """One line of ``/proc/net/tcp{,6}``."""

    local: str
    local_port: int
    remote: str
    remote_port: int
    state: str  # hex, as the kernel prints it: "01" established, "0A" listen
    uid: int
    inode: int


def parse_sockets(text: str, byteorder: str = sys.byteorder) -> list[TcpSocket]:
    """Every socket in the text of ``/proc/net/tcp`` or ``/proc/net/tcp6``."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            (local, local_port), (remote, remote_port) = (
                field.split(":") for field in (fields[1], fields[2])
            )
            found.append(
                TcpSocket(
                    decode_proc_address(local, byteorder),
                    int(local_port, 16),
                    decode_proc_address(remote, byteorder),
                    int(remote_port, 16),
                    fields[3],
                    int(fields[7]),
                    int(fields[9]),
                )
            )
        except ValueError:
            continue
    return found


def user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def connected_findings(
    port: int, sockets: Sequence[TcpSocket], holders: dict[int, set[int]]
) -> list[Finding]:
    """Who is connected to ``port`` now: for each connection, the client's
    socket on this host (its uid, and the process that holds it where
    readable), or none: another host or another network namespace."""
    by_end = {
        (item.local, item.local_port, item.remote, item.remote_port): item for item in sockets
    }
    lines: list[str] = []
    details: list[dict[str, object]] = []
    served = [item for item in sockets if item.local_port == port and item.state == ESTABLISHED]
    for item in served:
        client = by_end.get((item.remote, item.remote_port, item.local, item.local_port))
        where = f"{item.remote} port {item.remote_port}"
        if client is None:
            lines.append(f"{where}: no socket here (another host or network namespace)")
            details.append({"client": where, "uid": None, "processes": []})
            continue
        named = [
            (pid, peer_process.process_name(pid) or "?") for pid in holders.get(client.inode, ())
        ]
        who = ", ".join(f"{name} (pid {pid})" for pid, name in sorted(named))
        if not who:
            who = "process not readable here" if client.inode else "held by no process"
        lines.append(f"{where}: {user_name(client.uid)}, {who}")
        details.append({"client": where, "uid": client.uid, "processes": sorted(named)})
    if not served:
        return []
    more = f"; and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
    text = "; ".join(lines[:SHOWN]) + more
    return [
        Finding(
            NOTE,
            "connected",
            f"{len(served)} connection(s) to port {port} now: {text}.",
            {"port": port, "connections": details},
        )
    ]


# Reading ------------------------------------------------------------------


def read_sockets() -> list[TcpSocket]:
    found: list[TcpSocket] = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as file:
                found += parse_sockets(file.read())
        except OSError:
            continue
    return found


def connected_now(port: int, sockets: Sequence[TcpSocket]) -> list[Finding]:
    """:func:`connected_findings` for ``port``, with the processes read now."""
    clients = {item.inode for item in sockets if item.inode and item.state == ESTABLISHED}
    return connected_findings(port, sockets, peer_process.scan(clients))
