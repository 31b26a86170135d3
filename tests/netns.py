"""Two hosts on one machine: network namespaces joined by a veth pair.

The threat these helpers let the tests show: *another host* on the network
reaching an app that should answer its own host only. Loopback traffic can
only ever show "this host"; a second network namespace is a real second host
as far as the kernel is concerned (its own interfaces, addresses, routes,
firewall tables and ``/proc/net``), with a real link in between.

.. code-block:: python

    from tests.netns import two_hosts, http_get, gunicorn_in

    with two_hosts() as hosts, gunicorn_in(hosts.server_ns, [...], port, tmp_path):
        status, body = http_get(hosts.client_ns, hosts.server_ip4, port, "/admin")

Everything is created with unique names per run and torn down on exit, even
when the test fails: processes still running in the namespaces are killed,
then the namespaces are deleted (which deletes the veth pair with them).
Traffic goes only to addresses inside the namespaces made here, never to
this machine's own interfaces. Needs root and iproute2 (``ip``); call
:func:`require_netns` first so that a test skips with the reason instead.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .conftest import require_commands, require_root
from .servers import ROOT, STARTUP_TIMEOUT, Gunicorn, gunicorn, stop_process_group

_counter = itertools.count(1)
_OURS = re.compile(r"shs(\d+)-\d+(?:srv|cli)")  # the names two_hosts() gives

#: The client a namespace runs for :func:`http_get`: one request, one JSON line
#: out. Its own process, because a namespace is entered per process.
_CLIENT = r"""
import http.client, json, sys
host, port, path, method, headers, source, timeout = json.loads(sys.argv[1])
connection = http.client.HTTPConnection(
    host, port, timeout=timeout, source_address=(source, 0) if source else None
)
try:
    connection.request(method, path, headers=headers)
    reply = connection.getresponse()
    result = {"status": reply.status, "body": reply.read().decode("utf-8", "replace")}
except ConnectionRefusedError:
    result = {"error": "connection refused"}
except OSError as error:
    result = {"error": f"{type(error).__name__}: {error}"}
finally:
    connection.close()
print(json.dumps(result))
"""

_WAIT = r"""
import json, socket, sys, time
host, port, timeout = json.loads(sys.argv[1])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
"""


@dataclass
class Hosts:
    """Two namespaces, a server and a client, one veth link between them."""

    server_ns: str
    client_ns: str
    server_ip4: str
    client_ip4: str
    server_ip6: str
    client_ip6: str
    server_if: str  # the veth end inside server_ns
    client_if: str  # the veth end inside client_ns


def require_netns() -> None:
    """Skip (with the reason) unless this process may build namespaces."""
    require_root()
    require_commands("ip")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def ns_command(ns: str, *cmd: str) -> list[str]:
    """``cmd`` run inside namespace ``ns`` (``ip netns exec`` execs it: same pid)."""
    return ["ip", "netns", "exec", ns, *cmd]


def ns_run(ns: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` inside ``ns`` and wait; ``kw`` goes to :func:`subprocess.run`
    (text output is captured unless told otherwise)."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(ns_command(ns, *cmd), **kw)


def http_get(
    ns: str,
    host: str,
    port: int,
    path: str = "/",
    headers: dict[str, str] | None = None,
    method: str = "GET",
    source: str | None = None,
    timeout: float = 10,
) -> tuple[int | None, str]:
    """One real HTTP request made from inside ``ns``: ``(status, body)``.

    When no response arrives, ``(None, text)`` where ``text`` is
    ``"connection refused"`` or the error's name and message.
    """
    arguments = json.dumps([host, port, path, method, headers or {}, source, timeout])
    done = ns_run(ns, sys.executable, "-c", _CLIENT, arguments, timeout=timeout + 20)
    if done.returncode != 0:
        raise RuntimeError(f"the client in {ns} failed: {done.stderr}")
    result = json.loads(done.stdout)
    if "error" in result:
        return None, result["error"]
    return result["status"], result["body"]


def wait_for_port_in(
    ns: str,
    host: str,
    port: int,
    timeout: float = STARTUP_TIMEOUT,
    process: subprocess.Popen | None = None,
) -> None:
    """Block until something accepts connections on ``host:port`` seen from ``ns``.

    With ``process``, fail at once if it exits first (a server that cannot bind).
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"nothing listens on {host}:{port} in {ns} after {timeout}s")
        # Short rounds, so that a dead server is noticed quickly.
        probe = json.dumps([host, port, min(remaining, 1.0)])
        if ns_run(ns, sys.executable, "-c", _WAIT, probe).returncode == 0:
            return


@contextlib.contextmanager
def gunicorn_in(
    ns: str,
    args: Sequence[str],
    port: int,
    log_dir: Path,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[Gunicorn]:
    """gunicorn (``--no-control-socket`` added) run inside ``ns``; waits until
    ``host:port`` answers there, stops every worker after."""
    with gunicorn(
        args,
        (host, port),
        log_dir,
        env=env,
        prefix=ns_command(ns),
        wait=lambda process: wait_for_port_in(ns, host, port, process=process),
    ) as server:
        yield server


def kill_processes_in(ns: str) -> None:
    """SIGKILL whatever still runs inside ``ns`` (a test's leftovers)."""
    listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for pid in listed.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def remove_stale_namespaces() -> None:
    """Delete namespaces that :func:`two_hosts` made in a process that is gone
    (killed before its clean-up ran). Live runs' namespaces are left alone."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        match = _OURS.match(line.split(" ", 1)[0])
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # its creator still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        kill_processes_in(match.group(0))
        subprocess.run(["ip", "netns", "del", match.group(0)], capture_output=True)


@contextlib.contextmanager
def two_hosts() -> Iterator[Hosts]:
    """Build a server and a client namespace joined by a veth pair; yield their
    names and addresses; tear everything down after, whatever happened."""
    remove_stale_namespaces()
    number = next(_counter)
    tag = f"shs{os.getpid()}-{number}"  # interface names: at most 15 characters
    subnet = number % 250 + 1  # only unique for readability: each pair is isolated
    hosts = Hosts(
        server_ns=f"{tag}srv",
        client_ns=f"{tag}cli",
        server_ip4=f"10.213.{subnet}.1",
        client_ip4=f"10.213.{subnet}.2",
        server_ip6=f"fd42:213:{subnet:x}::1",
        client_ip6=f"fd42:213:{subnet:x}::2",
        server_if=f"{tag}s",
        client_if=f"{tag}c",
    )
    created: list[str] = []
    try:
        for ns in (hosts.server_ns, hosts.client_ns):
            _ip("netns", "add", ns)
            created.append(ns)
        # Created in the root namespace, then moved: no moment where the pair
        # is half-configured in a namespace the test did not make.
        _ip("link", "add", hosts.server_if, "type", "veth", "peer", "name", hosts.client_if)
        try:
            _ip("link", "set", hosts.server_if, "netns", hosts.server_ns)
            _ip("link", "set", hosts.client_if, "netns", hosts.client_ns)
        except subprocess.CalledProcessError:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", hosts.server_if)
            raise
        ends = (
            (hosts.server_ns, hosts.server_if, hosts.server_ip4, hosts.server_ip6),
            (hosts.client_ns, hosts.client_if, hosts.client_ip4, hosts.client_ip6),
        )
        for ns, interface, ip4, ip6 in ends:
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{ip4}/24", "dev", interface)
            # nodad: usable at once, no 1-2 s of duplicate address detection.
            _ip("-n", ns, "addr", "add", f"{ip6}/64", "dev", interface, "nodad")
            _ip("-n", ns, "link", "set", interface, "up")
        yield hosts
    finally:
        for ns in created:
            kill_processes_in(ns)
        for ns in created:
            # Deleting a namespace deletes the veth end inside it, and the peer.
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


#: A raw HTTP client run inside a namespace: sends each payload in turn on ONE
#: connection (waiting ``pause`` seconds for answers in between), or all at
#: once (pipelined), and prints every status code it read, as JSON.
_RAW = r"""
import json, re, socket, sys, time
host, port, payloads, pipelined, pause = json.loads(sys.argv[1])
received = b""
def drain(seconds):
    global received
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = client.recv(65536)
        except socket.timeout:
            return
        except OSError:
            return
        if not chunk:
            return
        received += chunk
client = socket.create_connection((host, port), timeout=5)
try:
    if pipelined:
        client.sendall(b"".join(bytes.fromhex(p) for p in payloads))
        drain(pause * len(payloads))
    else:
        for payload in payloads:
            try:
                client.sendall(bytes.fromhex(payload))
            except OSError:
                break
            drain(pause)
finally:
    client.close()
statuses = [int(s) for s in re.findall(rb"HTTP/1\.[01] (\d{3}) ", received)]
print(json.dumps({"statuses": statuses, "received": received.decode("latin-1")}))
"""


def raw_exchange(
    ns: str, host: str, port: int, payloads: Sequence[bytes], pipelined: bool, pause: float = 1.0
) -> tuple[list[int], str]:
    """Send raw HTTP ``payloads`` on one connection from inside ``ns``:
    ``(status codes read, everything read)``."""
    arguments = json.dumps([host, port, [p.hex() for p in payloads], pipelined, pause])
    done = ns_run(ns, sys.executable, "-c", _RAW, arguments, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"the raw client in {ns} failed: {done.stderr}")
    result = json.loads(done.stdout)
    return result["statuses"], result["received"]


#: A relay that speaks the PROXY protocol to its upstream, as HAProxy's
#: ``send-proxy`` or stunnel's ``protocol = proxy`` do: it accepts on
#: LISTEN, connects to UPSTREAM, writes a v1 or v2 header naming the real
#: client, then copies bytes both ways.
_PROXY_RELAY = r"""
import ipaddress, json, socket, struct, sys, threading
listen, upstream, version = json.loads(sys.argv[1])
def header(client, server):
    source, destination = ipaddress.ip_address(client[0]), ipaddress.ip_address(server[0])
    if version == 1:
        family = "TCP4" if source.version == 4 else "TCP6"
        return f"PROXY {family} {source} {destination} {client[1]} {server[1]}\r\n".encode()
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    if source.version == 4:
        addresses = source.packed + destination.packed + struct.pack(">HH", client[1], server[1])
        family = 0x11
    else:
        addresses = source.packed + destination.packed + struct.pack(">HH", client[1], server[1])
        family = 0x21
    return signature + bytes([0x21, family]) + struct.pack(">H", len(addresses)) + addresses
def pipe(source, destination):
    try:
        while chunk := source.recv(65536):
            destination.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, destination):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
server = socket.socket(family)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(tuple(listen))
server.listen(16)
while True:
    client, address = server.accept()
    onward = socket.create_connection(tuple(upstream))
    onward.sendall(header(address, client.getsockname()))
    threading.Thread(target=pipe, args=(client, onward), daemon=True).start()
    threading.Thread(target=pipe, args=(onward, client), daemon=True).start()
"""


@contextlib.contextmanager
def proxy_protocol_relay(
    ns: str, listen: tuple[str, int], upstream: tuple[str, int], version: int
) -> Iterator[None]:
    """Run :data:`_PROXY_RELAY` in ``ns`` until the block ends."""
    arguments = json.dumps([list(listen), list(upstream), version])
    process = subprocess.Popen(
        ns_command(ns, sys.executable, "-c", _PROXY_RELAY, arguments),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port_in(ns, *listen, process=process)
        yield
    finally:
        process.kill()
        process.wait()


def dnat_to_loopback(hosts: Hosts, port: int) -> None:
    """The DNAT trap, inside the server namespace only."""
    rule = ["-i", hosts.server_if, "-p", "tcp", "--dport", str(port)]
    ns_run(
        hosts.server_ns,
        *["iptables", "-t", "nat", "-A", "PREROUTING", *rule],
        *["-j", "DNAT", "--to-destination", f"127.0.0.1:{port}"],
        check=True,
    )
    ns_run(
        hosts.server_ns,
        *["sysctl", "-w", f"net.ipv4.conf.{hosts.server_if}.route_localnet=1"],
        check=True,
    )


@contextlib.contextmanager
def server_in(
    ns: str,
    command: list[str],
    tmp_path: Path,
    name: str,
    port: int = 8000,
    unix_socket: Path | None = None,
    **env: str,
):
    """Run ``command`` in ``ns`` with the test's app modules importable (and
    ``env``), logging to ``tmp_path/NAME.log``; wait until it listens on
    ``port`` of its loopback (or makes ``unix_socket``); stop it after."""
    environment = [f"PYTHONPATH={tmp_path}:{ROOT}", *(f"{k}={v}" for k, v in env.items())]
    with open(tmp_path / f"{name}.log", "wb") as log:
        process = subprocess.Popen(
            ["env", *environment, *ns_command(ns, *command)],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        if unix_socket is None:
            wait_for_port_in(ns, "127.0.0.1", port, process=process)
        else:  # the file system is shared with the namespace
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not unix_socket.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} made no {unix_socket}")
                time.sleep(0.05)
        yield process
    finally:
        stop_process_group(process)
