"""The kernel witness (:mod:`flask_selfhost.kernel_witness`): whether the
app's guard asks the kernel for each local client's socket, whether netlink
answers here, and which connections to ``--port`` it would refuse right now
(a peer that claims to be this host with no socket of this host behind it:
another host that NAT on this host disguises)."""

from __future__ import annotations

from collections.abc import Iterable

from ..facts import Ends
from ..kernel_witness import is_this_host
from ..options import Options
from ..peer_socket import HELD, available, check_client
from .listeners import decode_proc_address
from .report import NOTE, OK, Finding

ESTABLISHED = "01"
TOPIC = "witness"
#: Servers that do not tell the app which addresses and ports a connection joins.
UNWITNESSING = ("granian", "bjoern", "mod_wsgi", "uwsgi")
#: ASGI servers that name no object for the connection
#: (:mod:`flask_selfhost.asgi_connection`): the kernel is asked per request.
#: Every other server that witnesses both ends (the WSGI servers' accepted
#: socket, the transport of uvicorn and of gunicorn's ASGI worker) is asked
#: once per connection.
ASKED_PER_REQUEST = ("hypercorn", "daphne")


def parse_connections(text: str) -> list[Ends]:
    """Established connections in the text of ``/proc/net/tcp{,6}``, as the
    server's side sees them (peer = the remote end)."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != ESTABLISHED:
            continue
        try:
            (local, local_port), (peer, peer_port) = (
                field.split(":") for field in (fields[1], fields[2])
            )
            found.append(
                Ends(
                    decode_proc_address(peer),
                    int(peer_port, 16),
                    decode_proc_address(local),
                    int(local_port, 16),
                )
            )
        except ValueError:
            continue
    return found


def read_connections(port: int) -> list[Ends]:
    """Established connections whose local port is ``port``."""
    found: list[Ends] = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as file:
                found += parse_connections(file.read())
        except OSError:
            continue
    return [ends for ends in found if ends.local_port == port]


def refused_now(connections: Iterable[Ends]) -> list[tuple[Ends, str]]:
    """The connections the witness would refuse now, with the reason."""
    refused = []
    for ends in connections:
        if not is_this_host(ends):
            continue
        verdict = check_client(ends.peer, ends.peer_port, ends.local, ends.local_port)
        if verdict.reason != HELD:
            refused.append((ends, verdict.reason))
    return refused


def witness_findings(
    options: Options | None, port: int | None, commands: Iterable[str] = ()
) -> tuple[list[Finding], bool]:
    """The findings, and whether the witness works for the app's guard here
    (then source NAT to this host's address no longer bypasses it)."""
    works, why = available()
    if options is None:
        if works:
            return [
                Finding(
                    OK,
                    TOPIC,
                    "netlink sock_diag answers here: a guard with "
                    "check_client_socket (the default) refuses clients that NAT on "
                    "this host disguises as local.",
                )
            ], False
        return [
            Finding(
                NOTE,
                TOPIC,
                f"the kernel cannot be asked about clients here ({why}): "
                "a guard goes on without that witness.",
            )
        ], False
    if not options.check_client_socket:
        return [
            Finding(
                NOTE,
                TOPIC,
                "the app's guard has check_client_socket=False: NAT on "
                "this host can pass another host off as local.",
            )
        ], False
    if not works:
        consequence = (
            "every client that claims this host is refused (require_client_socket)"
            if options.require_client_socket
            else "the guard goes on without it, so NAT on this host can pass another host off "
            "as local"
        )
        return [
            Finding(
                NOTE,
                TOPIC,
                f"the kernel cannot be asked about clients here ({why}): {consequence}.",
            )
        ], False
    unwitnessing = sorted(
        {name for name in UNWITNESSING for command in commands if name in command.lower()}
    )
    if unwitnessing:
        return [
            Finding(
                NOTE,
                TOPIC,
                f"{', '.join(unwitnessing)} does not tell the app which "
                "addresses and ports a connection joins, so the guard cannot ask the "
                "kernel about its clients.",
                {"servers": unwitnessing},
            )
        ], False
    per_request = sorted(
        {name for name in ASKED_PER_REQUEST for command in commands if name in command.lower()}
    )
    how_often = (
        f" Under {', '.join(per_request)} it asks for every request (no connection "
        "object to remember the answer on); elsewhere once per connection."
        if per_request
        else " It asks once per connection (per request under hypercorn and daphne)."
    )
    findings = [
        Finding(
            OK,
            TOPIC,
            "the app's guard asks the kernel for each local client's "
            "socket (check_client_socket), and netlink answers here: clients that "
            "NAT on this host disguises as local are refused." + how_often,
            {"asked_per_request": per_request} if per_request else {},
        )
    ]
    if port is not None:
        refused = refused_now(read_connections(port))
        if refused:
            named = ", ".join(
                f"{ends.peer} port {ends.peer_port} ({reason})" for ends, reason in refused
            )
            findings.append(
                Finding(
                    NOTE,
                    TOPIC,
                    f"right now it would refuse {len(refused)} "
                    f"connection(s) to port {port}: {named}.",
                    {"refused": [[*list(ends[:4]), reason] for ends, reason in refused]},
                )
            )
    return findings, True


__all__ = ["parse_connections", "read_connections", "refused_now", "witness_findings"]
