"""Rootless container networking, for real: the app in a network namespace
of its own behind pasta (Debian ``passt``) or slirp4netns port forwarding,
run on a "host" namespace made here, with a second host beside it.

Both forwarders are processes on the host that make their own sockets, so
the app sees a connection that the forwarder made, not the client's. What
the app sees, and what the guard (with the kernel witness) says, measured:

============================  =========================  ===========================
client                        pasta ``-t``               slirp4netns ``add_hostfwd``
============================  =========================  ===========================
the host, over 127.0.0.1      ``127.0.0.1``: pasta's     ``10.0.2.2`` (slirp's
                              own loopback socket in     gateway): refused, not
                              the app's namespace, which this host's address
                              the kernel finds: granted
the host, over its address    the gateway's address      the host's address, which
                              (pasta maps the host to    is not the app
                              it): refused               namespace's: refused
another host                  its own address: refused   its own address: refused
============================  =========================  ===========================

docs/deployment.md says what to do. Traffic goes only to the namespaces
made here: the host's default route leads to the second host.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import require_commands
from .netns import (
    Hosts,
    http_get,
    kill_processes_in,
    ns_command,
    require_netns,
    server_in,
    two_hosts,
)

PORT = 8000

#: The app: what its connection is, and what the guard (default options,
#: the kernel witness on) and the kernel alone say of it.
REPORTING_APP = """
import json
from flask_selfhost import evaluate, peer_socket


def app(environ, start_response):
    sock = environ["gunicorn.socket"]
    peer, local = sock.getpeername(), sock.getsockname()
    decision = evaluate(environ)
    body = {
        "peer": peer[0],
        "local": local[0],
        "allowed": decision.allowed,
        "rule": decision.rule,
        "kernel": peer_socket.check_client(*peer[:2], *local[:2]).reason,
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]
"""


@contextlib.contextmanager
def app_namespace(hosts: Hosts) -> Iterator[str]:
    """A namespace for the app (the container), with only its loopback up;
    the forwarder gives it the rest. The host gets a default route (to the
    second host), which pasta needs to pick its outside interface."""
    app_ns = f"{hosts.server_ns}app"
    subprocess.run(["ip", "netns", "add", app_ns], check=True)
    try:
        subprocess.run(["ip", "-n", app_ns, "link", "set", "lo", "up"], check=True)
        for family, gateway in (("-4", hosts.client_ip4), ("-6", hosts.client_ip6)):
            route = ["ip", "-n", hosts.server_ns, family, "route", "add", "default"]
            subprocess.run([*route, "via", gateway], check=True)
        yield app_ns
    finally:
        kill_processes_in(app_ns)
        subprocess.run(["ip", "netns", "del", app_ns], capture_output=True)


@contextlib.contextmanager
def forwarder(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def pasta(hosts: Hosts, app_ns: str, log: Path) -> subprocess.Popen:
    """pasta in the host, forwarding the host's TCP port to the app's.
    ``--runas 0:0``: as root, pasta would drop to nobody and then could not
    enter a namespace that root made (a rootless user runs it as itself)."""
    command = ns_command(
        hosts.server_ns,
        *("pasta", "--config-net", "--foreground", "--netns-only", "--runas", "0:0"),
        *("-i", hosts.server_if, "-t", str(PORT), "--netns", f"/run/netns/{app_ns}"),
    )
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def slirp4netns(hosts: Hosts, app_ns: str, log: Path, api: Path) -> subprocess.Popen:
    """slirp4netns in the host, with the port forwarded through its API, as
    rootlesskit and podman do."""
    command = ns_command(
        hosts.server_ns,
        *("slirp4netns", "--configure", "--mtu=65520", "--netns-type=path"),
        *("--api-socket", str(api), f"/run/netns/{app_ns}", "tap0"),
    )
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not api.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"slirp4netns made no API socket: {log.read_text()}")
        time.sleep(0.05)
    forward = {
        "execute": "add_hostfwd",
        "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": PORT},
    }
    forward["arguments"]["guest_port"] = PORT  # type: ignore[index]
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(api))
        client.sendall(json.dumps(forward).encode())
        client.shutdown(socket.SHUT_WR)
        answer = json.loads(client.recv(4096))
    assert "return" in answer, answer
    return process


def wait_forwarded(ns: str, port: int) -> None:
    """Until the forwarder accepts on the host's loopback."""
    deadline = time.monotonic() + 10
    while http_get(ns, "127.0.0.1", port, "/", timeout=2)[0] is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the forwarded port does not answer")
        time.sleep(0.1)


def seen(hosts: Hosts) -> dict[str, dict]:
    """What the app reports for each client, by case."""
    cases = {
        "the host, over 127.0.0.1": (hosts.server_ns, "127.0.0.1"),
        "the host, over its address": (hosts.server_ns, hosts.server_ip4),
        "another host": (hosts.client_ns, hosts.server_ip4),
    }
    reports = {}
    for case, (ns, address) in cases.items():
        status, body = http_get(ns, address, PORT, "/", {"Host": f"127.0.0.1:{PORT}"})
        assert status == 200, (case, body)
        reports[case] = json.loads(body)
    return reports


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("name", ["pasta", "slirp4netns"])
def test_what_the_app_sees_behind_a_rootless_forwarder(name, tmp_path):
    require_netns()
    require_commands(name)
    (tmp_path / "reporting.py").write_text(REPORTING_APP)
    with two_hosts() as hosts, app_namespace(hosts) as app_ns:
        log = tmp_path / f"{name}.log"
        if name == "pasta":
            started = pasta(hosts, app_ns, log)
        else:
            started = slirp4netns(hosts, app_ns, log, tmp_path / "slirp.sock")
        gunicorn = [sys.executable, "-m", "gunicorn", "--no-control-socket"]
        gunicorn += ["-b", f"0.0.0.0:{PORT}", "reporting:app"]
        with forwarder(started), server_in(app_ns, gunicorn, tmp_path, "gunicorn", PORT):
            wait_forwarded(hosts.server_ns, PORT)
            reports = seen(hosts)
    verdicts = {
        case: (r["peer"], r["allowed"], r["rule"], r["kernel"]) for case, r in reports.items()
    }
    if name == "pasta":
        assert verdicts == {
            # pasta's own socket, in the app's namespace: the kernel finds it.
            "the host, over 127.0.0.1": ("127.0.0.1", True, "source", "held"),
            # The host mapped to the gateway's address (here the second host's).
            "the host, over its address": (hosts.client_ip4, False, "source", "not found"),
            "another host": (hosts.client_ip4, False, "source", "not found"),
        }, verdicts
    else:
        assert verdicts == {
            "the host, over 127.0.0.1": ("10.0.2.2", False, "source", "not found"),
            "the host, over its address": (hosts.server_ip4, False, "source", "not found"),
            "another host": (hosts.client_ip4, False, "source", "not found"),
        }, verdicts
