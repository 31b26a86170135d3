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
    "gunicorn asgi": (
        lambda listen, app: gunicorn_command(
            "-w", "1", "-k", "asgi", "-b", f"{bracketed(listen)}:{PORT}", app
        ),
        ASGI,
    ),
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
@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.parametrize("pipelined", [False, True], ids=["keep-alive", "pipelined"])
def test_every_request_on_a_disguised_connection_is_refused(server, pipelined, tmp_path):
    """The DNAT trap to 127.0.0.1 with an SNAT to 127.0.0.1, while this host's
    own keep-alive connection is vouched for and answered from memory (under
    uvicorn by its scope's ends): the other host's later requests on its one
    connection, one by one or pipelined, are each refused, never answered
    by what another connection proved."""
    require_netns()
    rules, listen, _ = NAT_CASES["DNAT trap to 127.0.0.1 and SNAT to 127.0.0.1"]
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n\r\n".encode()
    with two_hosts() as hosts:
        rules(hosts, PORT)
        with serving(hosts, server, listen, tmp_path, control=False):
            # (gunicorn's sync worker and Werkzeug close after one answer.)
            own, _ = raw_exchange(hosts.server_ns, "127.0.0.1", PORT, [request] * 3, False, 0.5)
            assert own and set(own) == {200}, own
            other, text = raw_exchange(
                hosts.client_ns, hosts.server_ip4, PORT, [request] * 3, pipelined, 0.5
            )
            assert other and set(other) == {403}, text


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
        if server == "gunicorn asgi":
            # Its protocol keeps asyncio's eof_received: a half-closed
            # connection is closed unanswered, and the app never called.
            assert client_in(ns, "127.0.0.1", "half-close") == ""
            return
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
    real = peer_socket.check_client

    def counting(*ends):
        asked.append(ends)
        return real(*ends)

    kernel_witness.ask_kernel(Ends("127.0.0.1", 1, "127.0.0.1", 2), False)  # probed before
    monkeypatch.setattr(peer_socket, "check_client", counting)
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
    verdict = kernel_witness.ask_kernel(fake, required=False)[0]
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
        findings, works = witness_findings(Options(), port, ["hypercorn app:app"])
        assert works and findings[0].details == {"asked_per_request": ["hypercorn"]}
        assert "asks for every request" in findings[0].message
        findings, works = witness_findings(Options(), port, ["uvicorn app:app"])
        assert works and "once per connection" in findings[0].message


def test_a_probe_that_cannot_be_built_does_not_turn_the_witness_off(monkeypatch, logged):
    """Out of descriptors at the first check, say: that is no verdict on
    netlink, so the witness stays on (and is probed again at the next check)."""
    monkeypatch.setattr(kernel_witness, "_probed", False)
    monkeypatch.setattr(kernel_witness, "usable", True)
    monkeypatch.setattr(peer_socket, "available", lambda: (False, "no loopback connection: EMFILE"))
    fake = Ends("127.0.0.1", 1, "127.0.0.1", 2)
    verdict = kernel_witness.ask_kernel(fake, required=False)[0]
    assert verdict is not None and verdict.reason == peer_socket.NOT_FOUND  # still asked
    assert kernel_witness.usable and not kernel_witness._probed
    assert "cannot be asked" not in logged()


# ASGI: one query per connection where the server keeps one ---------------------------

#: An ASGI app that answers with how many times this process asked the
#: kernel about clients of its port (the start-up probe asks about its own).
_COUNTING_APP = """
from flask_selfhost import peer_socket
from flask_selfhost.asgi import SelfHostASGIMiddleware

asked = []
real = peer_socket.check_client


def counting(*ends):
    asked.append(ends[3])
    return real(*ends)


peer_socket.check_client = counting


async def queries(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    body = str(asked.count(scope["server"][1])).encode()
    await send({"type": "http.response.body", "body": body})


app = SelfHostASGIMiddleware(queries)
"""

#: name: (the command for a port, the queries counted for three requests on
#: one connection and one on the next). uvicorn's and gunicorn's connection
#: object is the transport: asked once per connection. hypercorn and daphne name none:
#: asked per request. granian gives its ports as strings: its scope
#: witnesses no 4-tuple, and the kernel is never asked (the log says so).
ASGI_COUNTS = {
    "uvicorn h11": (
        lambda port: [
            *(sys.executable, "-m", "uvicorn", "--http", "h11", "--no-proxy-headers"),
            *("--port", str(port), "--log-level", "warning", "counting:app"),
        ],
        [1, 1, 1, 2],
    ),
    "uvicorn httptools": (
        lambda port: [
            *(sys.executable, "-m", "uvicorn", "--http", "httptools", "--no-proxy-headers"),
            *("--port", str(port), "--log-level", "warning", "counting:app"),
        ],
        [1, 1, 1, 2],
    ),
    "gunicorn asgi": (
        lambda port: gunicorn_command("-k", "asgi", "-b", f"127.0.0.1:{port}", "counting:app"),
        [1, 1, 1, 2],
    ),
    "hypercorn": (
        lambda port: [sys.executable, "-m", "hypercorn", "-b", f"127.0.0.1:{port}", "counting:app"],
        [1, 2, 3, 4],
    ),
    "daphne": (
        lambda port: [
            *(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "counting:app")
        ],
        [1, 2, 3, 4],
    ),
    "granian": (
        lambda port: [
            *(sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"),
            *("--port", str(port), "counting:app"),
        ],
        [0, 0, 0, 0],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("server", list(ASGI_COUNTS))
def test_asgi_servers_ask_once_per_connection_where_they_keep_one(server, tmp_path):
    import http.client

    from .servers import free_port, server_process

    for module in server.split():  # httptools: uvicorn[standard] installs it
        if module != "asgi":
            pytest.importorskip(module, reason=f"needs {module}")
    command, expected = ASGI_COUNTS[server]
    (tmp_path / "counting.py").write_text(_COUNTING_APP)
    port = free_port()
    paths = [str(tmp_path), str(Path(__file__).resolve().parent.parent), *sys.path]
    env = {"PYTHONPATH": ":".join(paths)}
    with server_process(command(port), ("127.0.0.1", port), tmp_path, env=env, cwd=tmp_path):
        counts = []
        for requests in (3, 1):  # three on one keep-alive connection, then a new one
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for _ in range(requests):
                connection.request("GET", "/", headers={"Host": f"127.0.0.1:{port}"})
                response = connection.getresponse()
                assert response.status == 200
                counts.append(int(response.read()))
            connection.close()
    assert counts == expected


class _Transport:
    """Stands for uvicorn's asyncio transport: its ends, as asyncio keeps them."""

    def __init__(self, peer: tuple, local: tuple) -> None:
        self.extra = {"peername": peer, "sockname": local}

    def get_extra_info(self, name: str) -> object:
        return self.extra.get(name)


def test_uvicorns_connection_is_its_transport_while_the_scope_names_its_ends():
    import asyncio

    from flask_selfhost.asgi_connection import connection_object

    h11_impl = pytest.importorskip("uvicorn.protocols.http.h11_impl")
    cycle = object.__new__(h11_impl.RequestResponseCycle)
    cycle.transport = transport = _Transport(("127.0.0.1", 40000), ("127.0.0.1", 8000))
    scope = {"client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    assert connection_object(scope, cycle.receive) is transport
    # A proxy-headers middleware rewrote the client: not the connection's verdict.
    assert connection_object({**scope, "client": ("127.0.0.1", 0)}, cycle.receive) is None
    # A class that only bears the name, a queue's get (hypercorn, daphne), anything else.
    lookalike = type("RequestResponseCycle", (), {"receive": lambda self: None})
    lookalike.__module__ = h11_impl.__name__
    impostor = lookalike()
    impostor.transport = transport  # type: ignore[attr-defined]
    assert connection_object(scope, impostor.receive) is None
    assert connection_object(scope, asyncio.Queue().get) is None
    assert connection_object(scope, None) is None


@pytest.fixture
def gunicorn_asgi_modules():
    """gunicorn's ASGI modules, imported here and forgotten after: their
    presence in sys.modules tells the guard that gunicorn's ASGI worker runs
    this process (flask_selfhost.scope)."""
    before = set(sys.modules)
    try:
        yield (
            pytest.importorskip("gunicorn.asgi.protocol"),
            pytest.importorskip("gunicorn.asgi.websocket"),
        )
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]


def test_gunicorns_connection_is_its_protocols_transport_while_the_scope_names_its_ends(
    gunicorn_asgi_modules,
):
    from flask_selfhost.asgi_connection import connection_object

    protocol_module, websocket_module = gunicorn_asgi_modules
    transport = _Transport(("127.0.0.1", 40000), ("127.0.0.1", 8000))
    protocol = type("Protocol", (), {})()
    protocol.transport = transport
    receiver = protocol_module.BodyReceiver(None, protocol)
    scope = {"client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    assert connection_object(scope, receiver.receive) is transport
    assert connection_object({**scope, "client": ("127.0.0.1", 0)}, receiver.receive) is None
    websocket = object.__new__(websocket_module.WebSocketProtocol)
    websocket.transport = transport
    assert connection_object(scope, websocket._receive) is transport


def test_a_freed_connection_object_hands_its_grant_to_no_object_that_reuses_its_id():
    first = _Transport(("127.0.0.1", 40000), ("127.0.0.1", 8000))
    kernel_witness.remember_connection(first, PeerOwner(os.geteuid(), 1))
    key = id(first)
    assert key in kernel_witness.witnessed_connections
    del first  # freed: its weak reference's callback forgets it
    assert key not in kernel_witness.witnessed_connections
    later = [_Transport(("127.0.0.1", 40001), ("127.0.0.1", 8000)) for _ in range(100)]
    reused = [transport for transport in later if id(transport) == key]
    assert reused, "CPython reuses a freed object's memory for the next of its size"
    assert (
        kernel_witness.ends_witnessed(
            Ends("127.0.0.1", 1, "127.0.0.1", 2, reused[0]), required=False
        )[0]
        is False
    )  # asked, and no socket has these ends


# AF_NETLINK refused by a real seccomp filter ------------------------------------------

#: Runs ``python ARGS...`` under a seccomp filter that fails
#: ``socket(AF_NETLINK, ...)`` with EAFNOSUPPORT, as a sandbox does
#: (systemd's ``RestrictAddressFamilies`` installs the same kind of filter).
#: libseccomp through ctypes; the filter outlives the exec.
_NO_NETLINK = r"""
import ctypes, errno, os, socket, sys

class Compare(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

seccomp = ctypes.CDLL("libseccomp.so.2")
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
seccomp.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Compare)
]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
SCMP_ACT_ALLOW, SCMP_CMP_EQ = 0x7FFF0000, 4
refuse = 0x00050000 | errno.EAFNOSUPPORT  # SCMP_ACT_ERRNO(EAFNOSUPPORT)
context = seccomp.seccomp_init(SCMP_ACT_ALLOW)
number = seccomp.seccomp_syscall_resolve_name(b"socket")
first_argument = Compare(0, SCMP_CMP_EQ, socket.AF_NETLINK, 0)
assert seccomp.seccomp_rule_add_array(context, refuse, number, 1, ctypes.byref(first_argument)) == 0
assert seccomp.seccomp_load(context) == 0
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""

_SANDBOXED_APPS = """
from flask_selfhost import SelfHostMiddleware, peer_socket


def report(environ, start_response):
    start_response("200 OK", [])
    return [repr(peer_socket.available()).encode()]


going_on = SelfHostMiddleware(report)
required = SelfHostMiddleware(report, require_client_socket=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("app", ["going_on", "required"])
def test_a_seccomp_filter_that_refuses_af_netlink_is_said_once(app, tmp_path):
    """Where the sandbox refuses netlink, the first request finds out, the
    log says so once, and the guard goes on without the witness (the
    default) or refuses every client (require_client_socket)."""
    import ctypes.util
    import http.client

    from .servers import free_port, server_process

    if ctypes.util.find_library("seccomp") is None:
        pytest.skip("needs libseccomp2 (a Debian package every system has)")
    (tmp_path / "sandboxed.py").write_text(_SANDBOXED_APPS)
    port = free_port()
    command = [sys.executable, "-c", _NO_NETLINK, "-m", "gunicorn", "--no-control-socket"]
    command += ["-w", "1", "-b", f"127.0.0.1:{port}", f"sandboxed:{app}"]
    paths = [str(tmp_path), str(Path(__file__).resolve().parent.parent), *sys.path]
    env = {"PYTHONPATH": ":".join(paths)}
    with server_process(command, ("127.0.0.1", port), tmp_path, env=env, cwd=tmp_path):
        answers = []
        for _ in range(2):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/", headers={"Host": f"127.0.0.1:{port}"})
            response = connection.getresponse()
            answers.append((response.status, response.read().decode()))
            connection.close()
    log = logs_in(tmp_path)
    said = [line for line in log.splitlines() if "flask_selfhost: the kernel cannot" in line]
    assert len(said) == 1 and "Address family not supported" in said[0], log
    if app == "going_on":
        assert "the guard goes on without that witness" in said[0]
        for status, body in answers:  # the app runs in the sandbox too: netlink refused
            assert status == 200 and body.startswith("(False, 'netlink sock_diag does not"), body
    else:
        assert "every client on this host is refused" in said[0]
        assert [status for status, _ in answers] == [403, 403], answers
        assert f"rule={KERNEL}" in last_refusal(tmp_path), log
