"""The kernel witness in the guard (flask_selfhost.kernel_witness), under
real servers started here: another host whose connections NAT on this host
disguises as this host's own is refused with the reason "not found", and
this host's own clients pass over every kind of connection. The root tests
build a second host in a network namespace (tests/netns.py) and the NAT
rules of tests/nat_rules.py inside the server's namespace only."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_selfhost import SelfHostMiddleware, kernel_witness, peer_socket
from flask_selfhost.decision import KERNEL
from flask_selfhost.facts import Ends, PeerOwner
from flask_selfhost.options import Options

from .nat_rules import (
    PORT,
    dnat_and_snat_to_own_address,
    dnat_trap_and_snat_to_loopback,
    snat_to_own_address,
)
from .netns import Hosts, http_get, ns_run, raw_exchange, require_netns, server_in, two_hosts
from .servers import gunicorn_command, last_refusal, logs_in

# The servers, each serving tests.apps (the guard with default options) or
# its control with the witness off ------------------------------------------------

WSGI = "tests.apps:middleware_app", "tests.apps:unwitnessed_app"
ASGI = "tests.apps:asgi_app", "tests.apps:unwitnessed_asgi_app"


def werkzeug(listen: str, app: str) -> list[str]:
    module, name = app.split(":")
    script = (
        f"from werkzeug.serving import run_simple\nfrom {module} import {name} as app\n"
        f"run_simple({listen!r}, {PORT}, app)\n"
    )
    return [sys.executable, "-c", script]


#: uvicorn on a dual-stack socket of its own (asyncio makes "::" IPv6 only).
_DUAL_STACK_UVICORN = """
import os, socket, sys
port, options = int(sys.argv[1]), sys.argv[2:]
listener = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
os.set_inheritable(listener.fileno(), True)
fd = str(listener.fileno())
os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "--fd", fd, *options])
"""


def uvicorn(listen: str, app: str) -> list[str]:
    options = ["--no-proxy-headers", "--log-level", "warning", app]
    if listen == "::":
        return [sys.executable, "-c", _DUAL_STACK_UVICORN, str(PORT), *options]
    return [sys.executable, "-m", "uvicorn", "--host", listen, "--port", str(PORT), *options]


def bracketed(listen: str) -> str:
    return f"[{listen}]" if ":" in listen else listen


#: name: (the command for a listen address and an app, the apps)
SERVERS = {
    "gunicorn sync": (
        lambda listen, app: gunicorn_command(
            "-w", "1", "-k", "sync", "-b", f"{bracketed(listen)}:{PORT}", app
        ),
        WSGI,
    ),
    "gunicorn gthread": (
        lambda listen, app: gunicorn_command(
            *("-w", "1", "-k", "gthread", "--threads", "4"),
            *("-b", f"{bracketed(listen)}:{PORT}", app),
        ),
        WSGI,
    ),
    "werkzeug": (werkzeug, WSGI),
    "waitress": (
        # waitress's [::] listener is IPv6 only: a second one takes IPv4.
        lambda listen, app: [
            *(sys.executable, "-m", "waitress", f"--listen={bracketed(listen)}:{PORT}"),
            *([f"--listen=0.0.0.0:{PORT}"] if listen == "::" else []),
            app,
        ],
        WSGI,
    ),
    "uvicorn": (lambda listen, app: uvicorn(listen, app), ASGI),
    "hypercorn": (
        lambda listen, app: [
            *(sys.executable, "-m", "hypercorn", "--bind", f"{bracketed(listen)}:{PORT}", app)
        ],
        ASGI,
    ),
}


@contextlib.contextmanager
def serving(
    hosts: Hosts, server: str, listen: str, tmp_path: Path, control: bool
) -> Iterator[Path]:
    """``server`` in the server namespace on ``listen``; yields its log directory."""
    if server in ("waitress", "uvicorn", "hypercorn"):
        pytest.importorskip(server, reason=f"needs {server} (the test extra installs it)")
    command, apps = SERVERS[server]
    log_dir = tmp_path / ("control" if control else "guarded")
    log_dir.mkdir()
    name = server.replace(" ", "-")
    with server_in(hosts.server_ns, command(listen, apps[control]), log_dir, name):
        yield log_dir


# Another host, disguised by NAT on this host: refused as not found ----------------

#: name: (the rules, where the server listens, the Host the other host sends)
NAT_CASES = {
    "INPUT SNAT to this host's own address": (snat_to_own_address, "0.0.0.0", "server_ip4"),
    "DNAT to the own address and SNAT": (dnat_and_snat_to_own_address, "0.0.0.0", "server_ip4"),
    "DNAT trap to 127.0.0.1 and SNAT to 127.0.0.1": (
        dnat_trap_and_snat_to_loopback,
        "127.0.0.1",
        "127.0.0.1",
    ),
}


def attack(hosts: Hosts, host: str) -> tuple[int | None, str]:
    """The other host's request, after this host's own request primed the
    fronts' memory of the common request (a loopback client, this Host)."""
    primer = {"Host": f"127.0.0.1:{PORT}"}
    status, body = http_get(hosts.server_ns, "127.0.0.1", PORT, "/", primer)
    assert status == 200, body  # this host's own request: granted and remembered
    headers = {"Host": f"{getattr(hosts, host, host)}:{PORT}"}
    return http_get(hosts.client_ns, hosts.server_ip4, PORT, "/", headers)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.parametrize("case", list(NAT_CASES))
def test_another_host_disguised_by_nat_is_refused(server, case, tmp_path):
    require_netns()
    rules, listen, host = NAT_CASES[case]
    with two_hosts() as hosts:
        rules(hosts, PORT)
        # The control: with the witness off, the address rule grants the other host.
        with serving(hosts, server, listen, tmp_path, control=True):
            status, body = attack(hosts, host)
            assert status == 200, body
        with serving(hosts, server, listen, tmp_path, control=False) as log_dir:
            status, body = attack(hosts, host)
            refusal = last_refusal(log_dir)
            assert status == 403 and "(not from this host)" in body, (status, body)
            assert f"rule={KERNEL}" in refusal and "(not found," in refusal, logs_in(log_dir)
            # ... and this host, by the same address, still passes.
            address = getattr(hosts, host, host)
            status, body = http_get(hosts.server_ns, address, PORT, "/")
            assert status == 200, body


@pytest.mark.root
@pytest.mark.slow
def test_a_local_client_behind_an_output_redirect_is_refused_unless_the_check_is_off(tmp_path):
    """The documented false refusal, and what check_client_socket=False is
    for: this host's client dials port 80, an OUTPUT REDIRECT sends it to
    the server's port, and its socket names port 80."""
    require_netns()
    with two_hosts() as hosts:
        ns_run(
            hosts.server_ns,
            *["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1"],
            *["--dport", "80", "-j", "REDIRECT", "--to-ports", str(PORT)],
            check=True,
        )
        headers = {"Host": "127.0.0.1"}
        with serving(hosts, "gunicorn sync", "127.0.0.1", tmp_path, control=False) as log_dir:
            status, body = http_get(hosts.server_ns, "127.0.0.1", 80, "/", headers)
            assert status == 403, body
            assert "(not found," in last_refusal(log_dir), logs_in(log_dir)
        with serving(hosts, "gunicorn sync", "127.0.0.1", tmp_path, control=True):
            status, body = http_get(hosts.server_ns, "127.0.0.1", 80, "/", headers)
            assert status == 200, body


# This host's own clients pass over every kind of connection -------------------------

#: A client run inside a namespace: one request, then half-close (shutdown
#: SHUT_WR) and read the answer; or send and close at once.
_CLIENT = r"""
import json, socket, sys, time
host, port, how = json.loads(sys.argv[1])
client = socket.create_connection((host, port), timeout=10)
request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
if how == "close at once":
    # Corked: the request leaves with the FIN, after close() has orphaned
    # the socket, so the server cannot read it before the client is gone.
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    client.sendall(request)
    client.close()
    print(json.dumps({"received": ""}))
    sys.exit(0)
client.sendall(request)
client.shutdown(socket.SHUT_WR)
received = b""
while chunk := client.recv(65536):
    received += chunk
print(json.dumps({"received": received.decode("latin-1")}))
"""


def client_in(ns: str, host: str, how: str) -> str:
    done = ns_run(ns, sys.executable, "-c", _CLIENT, json.dumps([host, PORT, how]), timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["received"]


REQUEST = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n\r\n".encode()


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("server", list(SERVERS))
def test_this_hosts_clients_pass(server, tmp_path):
    require_netns()
    with two_hosts() as hosts, serving(hosts, server, "::", tmp_path, control=False) as log_dir:
        ns = hosts.server_ns
        # 127.0.0.1 arrives v4-mapped on the dual-stack listener.
        for address in ("127.0.0.1", "::1", hosts.server_ip4, hosts.server_ip6):
            headers = {"Host": f"{bracketed(address)}:{PORT}"}
            status, body = http_get(ns, address, PORT, "/", headers)
            assert status == 200, (address, body, logs_in(log_dir))
        # gunicorn's sync worker and Werkzeug's default server close every
        # connection after one answer.
        expected = [200] if server in ("gunicorn sync", "werkzeug") else [200, 200, 200]
        for pipelined in (False, True):
            statuses, _ = raw_exchange(ns, "127.0.0.1", PORT, [REQUEST] * 3, pipelined, 0.5)
            assert statuses == expected, (pipelined, statuses, logs_in(log_dir))
        answer = client_in(ns, "127.0.0.1", "half-close")
        assert answer.split(" ", 2)[1] == "200", ("half-close", answer)
        assert "refused" not in logs_in(log_dir)
        # A client that sends and closes at once leaves a socket no process holds.
        client_in(ns, "127.0.0.1", "close at once")
        deadline = 50
        while "refused" not in logs_in(log_dir) and deadline:
            ns_run(ns, "sleep", "0.1")
            deadline -= 1
        refusal = last_refusal(log_dir)
        assert f"rule={KERNEL}" in refusal, logs_in(log_dir)
        assert "(orphaned," in refusal or "(wrong state," in refusal, refusal


# The wiring, in this process ----------------------------------------------------------


def loopback_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    return listener, client, accepted


def environ_of(accepted: socket.socket, host: str = "127.0.0.1") -> dict:
    peer = accepted.getpeername()
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": peer[0],
        "HTTP_HOST": f"{host}:{accepted.getsockname()[1]}",
        "wsgi.url_scheme": "http",
        "gunicorn.socket": accepted,
    }


def answer(app, environ) -> str:
    statuses: list[str] = []
    b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    return statuses[0]


def test_a_connection_is_asked_about_once_and_remembered_on_its_socket(monkeypatch):
    asked: list[tuple] = []
    real = peer_socket.find_client_socket

    def counting(*ends):
        asked.append(ends)
        return real(*ends)

    kernel_witness.verdict_for(Ends("127.0.0.1", 1, "127.0.0.1", 2), False)  # probed before
    monkeypatch.setattr(peer_socket, "find_client_socket", counting)
    app = SelfHostMiddleware(lambda e, s: s("200 OK", []) or [b""])
    listener, client, accepted = loopback_pair()
    with listener, client, accepted:
        for _ in range(3):  # the first takes the full rules, the rest the fast path
            assert answer(app, environ_of(accepted)).startswith("200")
        assert len(asked) == 1 and id(accepted) in kernel_witness.witnessed_connections
        # The kernel's answer is kept with it: the client's socket, its owner and inode.
        owner = kernel_witness.witnessed_connections[id(accepted)][1]
        inode = os.fstat(client.fileno()).st_ino
        assert owner == PeerOwner(os.geteuid(), inode)
        # Another connection from the same address is asked about again.
        _, client2, accepted2 = other = loopback_pair()
        with other[0], client2, accepted2:
            assert answer(app, environ_of(accepted2)).startswith("200")
        assert len(asked) == 2


def test_a_made_up_connection_is_refused_on_the_fast_path_too(logged):
    """A socket whose 4-tuple names no client of this host (its client is
    gone and a new server holds the port): granted from memory by address,
    the fast path still asks and the full rules refuse."""
    app = SelfHostMiddleware(lambda e, s: s("200 OK", []) or [b""])
    listener, client, accepted = loopback_pair()
    with listener, client, accepted:
        assert answer(app, environ_of(accepted)).startswith("200")  # primes the memory
    fake = Ends("127.0.0.1", 1, "127.0.0.1", 2)  # no socket has these ends
    assert kernel_witness.ends_witnessed(fake, required=False) == (False, None)
    verdict = kernel_witness.verdict_for(fake, required=False)
    assert verdict is not None and verdict.reason == peer_socket.NOT_FOUND


def test_where_netlink_is_unusable_the_guard_goes_on_or_refuses_when_required(monkeypatch, logged):
    monkeypatch.setattr(kernel_witness, "_probed", False)
    monkeypatch.setattr(kernel_witness, "usable", True)
    refused = f"{peer_socket.SILENT}: netlink: [Errno 97] AF_NETLINK refused"
    monkeypatch.setattr(peer_socket, "available", lambda: (False, refused))
    listener, client, accepted = loopback_pair()
    with listener, client, accepted:
        going_on = SelfHostMiddleware(lambda e, s: s("200 OK", []) or [b""])
        assert answer(going_on, environ_of(accepted)).startswith("200")
        assert "AF_NETLINK refused" in logged() and "goes on without" in logged()
        assert logged().count("cannot be asked") == 1  # said once
        required = SelfHostMiddleware(
            lambda e, s: s("200 OK", []) or [b""], require_client_socket=True
        )
        for _ in range(2):
            assert answer(required, environ_of(accepted)).startswith("403")
        assert f"rule={KERNEL}" in logged()


def test_the_options_are_checked():
    assert Options().check_client_socket is True and Options().require_client_socket is False
    with pytest.raises(TypeError, match="check_client_socket"):
        Options(check_client_socket="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="require_client_socket needs"):
        Options(check_client_socket=False, require_client_socket=True)


def test_the_memory_goes_with_the_socket_object():
    listener, client, accepted = loopback_pair()
    with listener, client:
        kernel_witness.remember_connection(accepted, PeerOwner(os.geteuid(), 1))
        key = id(accepted)
        assert key in kernel_witness.witnessed_connections
        accepted.close()
        del accepted  # freed: its weak reference's callback forgets it
        assert key not in kernel_witness.witnessed_connections


# The doctor ----------------------------------------------------------------------------


def test_the_doctor_says_whether_the_witness_works_and_what_it_would_refuse():
    from flask_selfhost.doctor import NOTE, OK
    from flask_selfhost.doctor.witness import read_connections, refused_now, witness_findings

    listener, client, accepted = loopback_pair()
    with listener, client, accepted:
        port = listener.getsockname()[1]
        (ends,) = read_connections(port)  # the accepted end, as /proc/net/tcp lists it
        assert (ends.peer, ends.peer_port) == accepted.getpeername()
        assert refused_now([ends]) == []  # this host's own client
        made_up = Ends("127.0.0.1", 1, "127.0.0.1", port)
        assert refused_now([made_up]) == [(made_up, peer_socket.NOT_FOUND)]
        findings, works = witness_findings(Options(), port)
        assert works and [f.severity for f in findings] == [OK], findings
        findings, works = witness_findings(Options(check_client_socket=False), port)
        assert not works and [f.severity for f in findings] == [NOTE]
        assert "check_client_socket=False" in findings[0].message
        findings, works = witness_findings(Options(), port, ["granian --interface wsgi app:app"])
        assert not works and findings[0].details == {"servers": ["granian"]}


def test_a_probe_that_cannot_be_built_does_not_turn_the_witness_off(monkeypatch, logged):
    """Out of descriptors at the first check, say: that is no verdict on
    netlink, so the witness stays on (and is probed again at the next check)."""
    monkeypatch.setattr(kernel_witness, "_probed", False)
    monkeypatch.setattr(kernel_witness, "usable", True)
    monkeypatch.setattr(peer_socket, "available", lambda: (False, "no loopback connection: EMFILE"))
    fake = Ends("127.0.0.1", 1, "127.0.0.1", 2)
    verdict = kernel_witness.verdict_for(fake, required=False)
    assert verdict is not None and verdict.reason == peer_socket.NOT_FOUND  # still asked
    assert kernel_witness.usable and not kernel_witness._probed
    assert "cannot be asked" not in logged()
