"""The kernel witness (flask_selfhost.peer_socket) against real sockets: a
plain accepting server, real clients, the kernel's real answers. The root
tests add another user, and another host whose connections NAT disguises as
this host's (network namespaces made and removed here)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from flask_selfhost import peer_socket
from flask_selfhost.host_addresses import read_host_addresses
from flask_selfhost.peer_socket import (
    ABSENT,
    ERROR,
    FOUND,
    HELD,
    NOT_FOUND,
    ORPHANED,
    OTHER_SOCKET,
    SAME_ENDS,
    UNAVAILABLE,
    WRONG_STATE,
    ClientSocket,
    check_client,
    find_client_socket,
    judge_client_socket,
)

from .conftest import require_commands, require_root
from .nat_rules import (
    PORT,
    dnat_and_snat_to_own_address,
    dnat_trap_and_snat_to_loopback,
    snat_to_another_listening_port,
    snat_to_own_address,
    snat_to_own_ipv6_address,
    snat_to_the_listening_port,
)
from .netns import Hosts, ns_command, ns_run, require_netns, two_hosts
from .servers import ROOT

LISTEN, ESTABLISHED, TIME_WAIT = 10, 1, 6
FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT = 4, 5, 8


class Connection:
    """A listener, a client connected to it and the accepted socket."""

    def __init__(self, listener: socket.socket, client: socket.socket, accepted: socket.socket):
        self.listener, self.client, self.accepted = listener, client, accepted
        peer, local = accepted.getpeername(), accepted.getsockname()
        self.peer: tuple[str, int] = (peer[0], peer[1])
        self.local: tuple[str, int] = (local[0], local[1])

    def find(self) -> ClientSocket:
        return find_client_socket(*self.peer, *self.local)

    @property
    def client_inode(self) -> int:
        return os.fstat(self.client.fileno()).st_ino


@contextlib.contextmanager
def connection(
    listen: str, dial: str | None = None, client_family: int | None = None
) -> Iterator[Connection]:
    """A plain TCP server socket on ``listen`` and a client dialing ``dial``
    (``listen`` by default) with a socket of ``client_family``."""
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    dial = dial or listen
    with socket.socket(family) as listener:
        if family == socket.AF_INET6 and listen == "::":
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind((listen, 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        client_family = client_family or (socket.AF_INET6 if ":" in dial else socket.AF_INET)
        client = socket.socket(client_family)
        try:
            client.settimeout(5)
            client.connect((dial, port))
            accepted, _ = listener.accept()
            with accepted:
                accepted.settimeout(5)
                yield Connection(listener, client, accepted)
        finally:
            client.close()


def assert_held(found: ClientSocket, conn: Connection) -> None:
    verdict = judge_client_socket(found)
    assert verdict.granted, verdict
    assert verdict.reason == HELD
    assert found.outcome == FOUND
    assert found.answered == found.asked
    assert found.inode == conn.client_inode  # the client's own socket, not any
    assert found.uid == os.geteuid()


# A local client is found and granted ----------------------------------------------


LOOPBACK_CASES = {
    "IPv4 loopback": ("127.0.0.1", None, None),
    "IPv4 wildcard listener, 127.0.0.5 dialled": ("0.0.0.0", "127.0.0.5", None),
    "IPv6 loopback": ("::1", None, None),
    "dual-stack listener, IPv4 client (v4-mapped)": ("::", "127.0.0.1", socket.AF_INET),
    "dual-stack listener, IPv6 socket dialing ::ffff:127.0.0.1": (
        "::",
        "::ffff:127.0.0.1",
        socket.AF_INET6,
    ),
    "dual-stack listener, IPv6 client": ("::", "::1", socket.AF_INET6),
}


@pytest.mark.parametrize("case", list(LOOPBACK_CASES))
def test_a_loopback_client_is_found_and_granted(case):
    listen, dial, family = LOOPBACK_CASES[case]
    with connection(listen, dial, family) as conn:
        found = conn.find()
        assert_held(found, conn)
        assert found.state == ESTABLISHED
        # The asked form is canonical and unmapped: what a front logs.
        assert found.asked[0][0] == str(ipaddress.ip_address(conn.peer[0].replace("::ffff:", "")))


def own_addresses() -> list[str]:
    usable = [a for a in read_host_addresses() if not a.is_link_local and not a.is_loopback]
    return [str(a) for a in sorted(usable, key=lambda a: (a.version, int(a)))]


def test_a_client_dialing_this_hosts_own_address_is_found():
    addresses = own_addresses()
    if not addresses:
        pytest.skip("this host has no address besides loopback and link-local")
    for address in addresses:
        with connection(address) as conn:
            assert conn.peer[0] == conn.local[0] == address  # remote == local
            assert_held(conn.find(), conn)
        with connection("::" if ":" in address else "0.0.0.0", address) as conn:
            assert_held(conn.find(), conn)


def test_keep_alive_is_found_on_every_request_of_one_connection():
    with connection("127.0.0.1") as conn:
        inodes = set()
        for number in range(5):
            conn.client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.accepted.recv(100).startswith(b"GET")
            found = conn.find()
            assert_held(found, conn)
            inodes.add(found.inode)
            conn.accepted.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % number)
            assert conn.client.recv(100).endswith(b"%d" % number)
        assert len(inodes) == 1


def test_a_client_that_half_closed_is_still_granted():
    with connection("127.0.0.1") as conn:
        conn.client.sendall(b"request")
        conn.client.shutdown(socket.SHUT_WR)
        assert conn.accepted.recv(100) == b"request"
        assert conn.accepted.recv(100) == b""  # the FIN arrived
        found = conn.find()
        assert found.state in (FIN_WAIT1, FIN_WAIT2)
        assert_held(found, conn)
        conn.accepted.sendall(b"answer")  # and it can still read the answer
        assert conn.client.recv(100) == b"answer"


def test_a_client_the_server_half_closed_is_still_granted():
    with connection("127.0.0.1") as conn:
        conn.accepted.shutdown(socket.SHUT_WR)
        assert conn.client.recv(100) == b""
        found = conn.find()
        assert found.state == CLOSE_WAIT
        assert_held(found, conn)


def poll(find, until, seconds: float = 3.0) -> ClientSocket:
    """``find()`` until ``until(answer)`` holds, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = find()
        if until(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_a_client_that_sent_and_closed_at_once_is_refused_as_orphaned():
    with connection("127.0.0.1") as conn:
        inode = conn.client_inode
        conn.client.sendall(b"GET /admin HTTP/1.1\r\n\r\n")
        conn.client.close()
        found = poll(conn.find, lambda f: f.inode == 0)
        # What the kernel shows: the client's own 4-tuple, no owner, and a
        # uid of 0 that is no one's.
        assert found.outcome == FOUND and found.answered == found.asked
        assert found.inode == 0 and found.uid == 0, found
        assert found.state in (FIN_WAIT1, FIN_WAIT2)
        assert inode != 0
        verdict = judge_client_socket(found)
        assert not verdict.granted and verdict.reason == ORPHANED
        # ... while the server can still read the request.
        assert conn.accepted.recv(100) == b"GET /admin HTTP/1.1\r\n\r\n"


def test_a_client_in_time_wait_is_refused_for_its_state():
    with connection("127.0.0.1") as conn:
        conn.client.close()
        assert conn.accepted.recv(100) == b""
        conn.accepted.close()
        found = poll(conn.find, lambda f: f.state == TIME_WAIT)
        assert found.state == TIME_WAIT and found.answered == found.asked, found
        verdict = judge_client_socket(found)
        assert not verdict.granted and verdict.reason == WRONG_STATE


def test_the_listener_fallback_is_refused():
    """A 4-tuple whose client end is a listening address and port, with no
    connection: the kernel answers with the LISTEN socket itself."""
    with connection("127.0.0.1") as conn:
        listening = conn.listener.getsockname()
        found = find_client_socket(listening[0], listening[1], "127.0.0.1", 40000)
        assert found.outcome == FOUND, found
        # The raw answer really is the listener: held by this process,
        # LISTEN, its other end unset.
        assert found.state == LISTEN
        assert found.inode == os.fstat(conn.listener.fileno()).st_ino
        assert found.answered == (("127.0.0.1", listening[1]), ("0.0.0.0", 0))
        verdict = judge_client_socket(found)
        assert not verdict.granted and verdict.reason == OTHER_SOCKET


def test_an_absent_client_is_not_found():
    with connection("127.0.0.1") as conn:
        found = find_client_socket(conn.peer[0], conn.peer[1] ^ 1, *conn.local)
        assert found.outcome == ABSENT and found.error == "ENOENT"
        verdict = judge_client_socket(found)
        assert not verdict.granted and verdict.reason == NOT_FOUND


# The judgement alone -----------------------------------------------------------------

ASKED = (("127.0.0.1", 50000), ("127.0.0.1", 8000))
SELF = (("10.0.0.1", 8000), ("10.0.0.1", 8000))


@pytest.mark.parametrize(
    ("answer", "granted", "reason"),
    [
        (ClientSocket(FOUND, ASKED, ASKED, ESTABLISHED, 1000, 77), True, HELD),
        (ClientSocket(FOUND, ASKED, ASKED, FIN_WAIT1, 1000, 77), True, HELD),
        (ClientSocket(FOUND, ASKED, ASKED, FIN_WAIT2, 1000, 77), True, HELD),
        (ClientSocket(FOUND, ASKED, ASKED, CLOSE_WAIT, 1000, 77), True, HELD),
        # A LISTEN answer that names the asked 4-tuple is still refused.
        (ClientSocket(FOUND, ASKED, ASKED, LISTEN, 1000, 77), False, WRONG_STATE),
        (ClientSocket(FOUND, ASKED, ASKED, TIME_WAIT, 0, 0), False, WRONG_STATE),
        (ClientSocket(FOUND, ASKED, ASKED, 3, 0, 0), False, WRONG_STATE),  # SYN_RECV
        (ClientSocket(FOUND, ASKED, ASKED, 12, 0, 0), False, WRONG_STATE),  # NEW_SYN_RECV
        (ClientSocket(FOUND, ASKED, ASKED, ESTABLISHED, 0, 0), False, ORPHANED),
        (ClientSocket(FOUND, ASKED, ASKED, FIN_WAIT2, 0, 0), False, ORPHANED),
        # Any other 4-tuple, connected and held, is another socket.
        (
            ClientSocket(FOUND, ASKED, (ASKED[0], ("127.0.0.1", 8001)), ESTABLISHED, 1, 7),
            False,
            OTHER_SOCKET,
        ),
        (
            ClientSocket(FOUND, ASKED, (("127.0.0.2", 50000), ASKED[1]), ESTABLISHED, 1, 7),
            False,
            OTHER_SOCKET,
        ),
        (ClientSocket(FOUND, ASKED, None, ESTABLISHED, 1, 7), False, OTHER_SOCKET),
        (ClientSocket(ABSENT, ASKED, error="ENOENT"), False, NOT_FOUND),
        (ClientSocket(ERROR, ASKED, error="netlink: denied"), False, UNAVAILABLE),
        # Equal ends: whatever the kernel says, it can only be the server's socket.
        (ClientSocket(FOUND, SELF, SELF, ESTABLISHED, 1000, 77), False, SAME_ENDS),
        (ClientSocket(ABSENT, SELF, error="ENOENT"), False, SAME_ENDS),
        (ClientSocket(ERROR, None, error="not a TCP address pair"), False, UNAVAILABLE),
        (ClientSocket("something else", ASKED), False, UNAVAILABLE),
    ],
)
def test_judgement(answer, granted, reason):
    verdict = judge_client_socket(answer)
    assert (verdict.granted, verdict.reason) == (granted, reason)
    assert verdict.detail


@pytest.mark.parametrize(
    "pair",
    [
        ("not an address", 1, "127.0.0.1", 80),
        ("127.0.0.1", 0, "127.0.0.1", 80),
        ("127.0.0.1", 1, "127.0.0.1", 65536),
        ("127.0.0.1", -1, "127.0.0.1", 80),
        ("127.0.0.1", 1, "::1", 80),  # one IPv4, one IPv6
        ("", 1, "127.0.0.1", 80),
        (None, 1, "127.0.0.1", 80),
        ("127.0.0.1", "x", "127.0.0.1", 80),
        ("127.0.0.1\x00", 1, "127.0.0.1", 80),
    ],
)
def test_what_is_not_a_tcp_address_pair_is_refused_without_raising(pair):
    found = find_client_socket(*pair)
    assert found.outcome == ERROR and found.error
    assert check_client(*pair).reason == UNAVAILABLE


# The netlink socket: reuse, sequence numbers, timeout, threads, fork -----------------


def test_the_netlink_socket_is_kept_open_and_reused():
    with connection("127.0.0.1") as conn:
        conn.find()
        sock = peer_socket._current_channel().sock
        assert sock is not None
        for _ in range(3):
            assert_held(conn.find(), conn)
        assert peer_socket._current_channel().sock is sock


def test_an_answer_for_another_sequence_number_is_discarded():
    with connection("127.0.0.1") as first, connection("127.0.0.1") as second:
        assert_held(first.find(), first)  # the channel is open
        channel = peer_socket._current_channel()
        assert channel.sock is not None
        # A query for the second connection whose answer nobody reads: it
        # waits in the socket's queue, a found socket under another number.
        request = bytearray(_request_for(second, channel.sequence + 1000))
        channel.sock.send(bytes(request))
        found = first.find()
        assert found.answered == found.asked == (first.peer, first.local)
        assert_held(found, first)


def _request_for(conn: Connection, sequence: int) -> bytes:
    source, destination = (
        socket.inet_pton(socket.AF_INET, a) for a in (conn.peer[0], conn.local[0])
    )
    return peer_socket.request(sequence, source, conn.peer[1], destination, conn.local[1], 0)


def test_no_answer_refuses_within_the_timeout_and_the_next_query_works():
    """A socket that never answers (a datagram pair whose other end nobody
    reads) in place of the netlink socket: the query waits TIMEOUT, no more,
    refuses, and the next one opens a fresh netlink socket."""
    with connection("127.0.0.1") as conn:
        channel = peer_socket._current_channel()
        silent, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with other:
            peer_socket.bound_in_time(silent)  # as the netlink socket is
            channel.close()
            channel.sock = silent
            started = time.monotonic()
            found = conn.find()
            waited = time.monotonic() - started
        assert found.outcome == ERROR and "timed out" in found.error
        assert peer_socket.TIMEOUT <= waited < peer_socket.TIMEOUT + 1
        assert judge_client_socket(found).reason == UNAVAILABLE
        assert silent.fileno() == -1 and channel.sock is None  # closed, forgotten
        assert_held(conn.find(), conn)


def test_threads_each_get_their_own_clients_answer():
    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(connection("127.0.0.1")) for _ in range(8)]

        def ask(conn: Connection) -> None:
            for _ in range(300):
                found = conn.find()
                if found.answered != (conn.peer, conn.local) or found.inode != conn.client_inode:
                    failures.append(repr(found))
                    return

        threads = [threading.Thread(target=ask, args=(conn,)) for conn in conns]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_asks_on_a_netlink_socket_of_its_own():
    with connection("127.0.0.1") as conn:
        assert_held(conn.find(), conn)
        parent = peer_socket._current_channel()
        assert parent.sock is not None
        parent_port = parent.sock.getsockname()[0]
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, and leave without pytest's clean-up
            try:
                verdict = conn.find()
                child = peer_socket._current_channel()
                assert child.sock is not None
                report = [verdict.inode == conn.client_inode, child.sock.getsockname()[0]]
                os.write(writer, json.dumps(report).encode())
            finally:
                os._exit(0)
        os.close(writer)
        with os.fdopen(reader) as pipe:
            found_in_child, child_port = json.loads(pipe.read())
        os.waitpid(pid, 0)
        assert found_in_child is True
        assert child_port != parent_port  # not the parent's netlink socket
        assert peer_socket._current_channel() is parent
        assert_held(conn.find(), conn)


def run_script(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter that imports this checkout's package."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


#: A query from a greenlet of a gevent-patched process, as in gunicorn's
#: gevent worker: the netlink socket must be the C-level one (a green socket
#: would yield inside the lock).
_GEVENT = r"""
from gevent import monkey
monkey.patch_all()
import json, socket
import gevent
from flask_selfhost import peer_socket
def query():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, peer = listener.accept()
    verdict = peer_socket.check_client(*peer, *accepted.getsockname())
    return [verdict.reason, type(peer_socket._current_channel().sock).__module__]
print(json.dumps(gevent.spawn(query).get(timeout=10)))
"""


def test_a_greenlet_of_a_gevent_patched_process_is_answered():
    pytest.importorskip("gevent", reason="pip install gevent (the test extra)")
    done = run_script(_GEVENT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [HELD, "_socket"]


# Where netlink cannot be used ---------------------------------------------------------


def test_available_here():
    assert peer_socket.available() == (True, "netlink sock_diag answers")


def test_without_af_netlink_every_query_is_refused(monkeypatch):
    """Not Linux: the socket module has no AF_NETLINK."""
    monkeypatch.delattr(socket, "AF_NETLINK")
    monkeypatch.setattr(peer_socket, "_channel", peer_socket._Channel())
    with connection("127.0.0.1") as conn:
        found = conn.find()
        assert found.outcome == ERROR and "AF_NETLINK" in found.error
        assert judge_client_socket(found).reason == UNAVAILABLE
    ok, reason = peer_socket.available()
    assert not ok and "AF_NETLINK" in reason


#: Run in a process that can open no more file descriptors: the kernel
#: refuses the netlink socket itself (EMFILE), as a sandbox refuses
#: AF_NETLINK (EPERM, EAFNOSUPPORT).
_NO_DESCRIPTORS = r"""
import json, os, resource, socket
from flask_selfhost import peer_socket
listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
accepted, peer = listener.accept()
probe = os.dup(0); os.close(probe)  # the lowest free descriptor
resource.setrlimit(resource.RLIMIT_NOFILE, (probe, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
found = peer_socket.find_client_socket(*peer, *accepted.getsockname())
print(json.dumps([found.outcome, found.error, peer_socket.judge_client_socket(found).reason]))
"""


def test_a_netlink_socket_the_kernel_refuses_refuses_the_client():
    done = run_script(_NO_DESCRIPTORS)
    assert done.returncode == 0, done.stderr
    outcome, error, reason = json.loads(done.stdout)
    assert outcome == ERROR and "Too many open files" in error
    assert reason == UNAVAILABLE


# Another user (root) ------------------------------------------------------------------


@pytest.fixture
def other_user() -> Iterator[pwd.struct_passwd]:
    require_root()
    require_commands("useradd", "userdel", "setpriv")
    name = f"shpeer{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/false", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True)


_HOLDING_CLIENT = r"""
import socket, sys
client = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
client.sendall(b"x")
client.recv(1)  # held until the server answers
"""


@pytest.mark.root
def test_a_client_of_another_user_is_found_with_its_uid(other_user):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        listener.settimeout(20)
        command = [
            *["setpriv", f"--reuid={other_user.pw_uid}", f"--regid={other_user.pw_gid}"],
            *["--clear-groups", sys.executable, "-c", _HOLDING_CLIENT, str(port)],
        ]
        client = subprocess.Popen(command, stderr=subprocess.PIPE)
        try:
            accepted, peer = listener.accept()
            with accepted:
                assert accepted.recv(1) == b"x"
                found = find_client_socket(*peer, *accepted.getsockname())
                accepted.sendall(b"y")
        finally:
            _, stderr = client.communicate(timeout=20)
        assert client.returncode == 0, stderr
    assert other_user.pw_uid != os.geteuid()
    assert found.uid == other_user.pw_uid
    verdict = judge_client_socket(found)
    assert verdict.granted and str(other_user.pw_uid) in verdict.detail


# Another host disguised by NAT (root) ---------------------------------------------------


#: A plain server run inside the server namespace ("this host"): it accepts
#: one connection, reads one byte, asks the kernel for the client's socket,
#: prints what it saw and the verdict as JSON, answers, and exits.
_WITNESS_SERVER = r"""
import json, socket, sys
from flask_selfhost import peer_socket
listen = sys.argv[1]
family = socket.AF_INET6 if ":" in listen else socket.AF_INET
listener = socket.socket(family)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if family == socket.AF_INET6:
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
listener.bind((listen, int(sys.argv[2])))
listener.listen(1)
listener.settimeout(30)
other_server = socket.create_server(("0.0.0.0", int(sys.argv[2]) + 1))  # another server here
print("ready", flush=True)
accepted, _ = listener.accept()
accepted.settimeout(10)
accepted.recv(1)
peer, local = accepted.getpeername(), accepted.getsockname()
found = peer_socket.find_client_socket(peer[0], peer[1], local[0], local[1])
verdict = peer_socket.judge_client_socket(found)
print(json.dumps({"peer": peer[0], "peer_port": peer[1], "local": local[0],
                  "state": found.state, "outcome": found.outcome,
                  "reason": verdict.reason, "granted": verdict.granted}), flush=True)
accepted.sendall(b"y")
"""

_CLIENT = r"""
import socket, sys
client = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
client.sendall(b"x")
assert client.recv(1) == b"y"
"""


def witness(hosts: Hosts, listen: str, client_ns: str, dial: str, dial_port: int = PORT) -> dict:
    """Start the witness server in the server namespace, connect from
    ``client_ns`` to ``dial``, return what the server printed."""
    server = subprocess.Popen(
        [
            *ns_command(hosts.server_ns, "env", f"PYTHONPATH={ROOT}", sys.executable),
            *["-c", _WITNESS_SERVER, listen, str(PORT)],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready", server.stderr
        client = ns_run(client_ns, sys.executable, "-c", _CLIENT, dial, str(dial_port), timeout=30)
        assert client.returncode == 0, client.stderr
        out, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        return json.loads(out)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


#: name: (rules, where the server listens, the address it then sees on both
#: ends (a Hosts attribute or a literal), the outcome and the reason)
NAT_CASES = {
    "INPUT SNAT to this host's own address": (
        *(snat_to_own_address, "::", "server_ip4"),
        *(ABSENT, NOT_FOUND),
    ),
    "DNAT to the own address and SNAT": (
        *(dnat_and_snat_to_own_address, "0.0.0.0", "server_ip4"),
        *(ABSENT, NOT_FOUND),
    ),
    "DNAT trap to 127.0.0.1 and SNAT to 127.0.0.1": (
        *(dnat_trap_and_snat_to_loopback, "127.0.0.1", "127.0.0.1"),
        *(ABSENT, NOT_FOUND),
    ),
    "ip6tables INPUT SNAT to the own IPv6 address": (
        *(snat_to_own_ipv6_address, "::", "server_ip6"),
        *(ABSENT, NOT_FOUND),
    ),
    "INPUT SNAT to the own address and the listening port": (
        *(snat_to_the_listening_port, "0.0.0.0", "server_ip4"),
        *(FOUND, SAME_ENDS),
    ),
    "INPUT SNAT to the own address and another server's port": (
        *(snat_to_another_listening_port, "0.0.0.0", "server_ip4"),
        *(FOUND, OTHER_SOCKET),
    ),
}


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("case", list(NAT_CASES))
def test_another_host_disguised_by_nat_is_refused(case):
    require_netns()
    require_commands("iptables", "ip6tables", "sysctl")
    rules, listen, seen, outcome, reason = NAT_CASES[case]
    with two_hosts() as hosts:
        rules(hosts)
        address = getattr(hosts, seen, seen)
        dial = hosts.server_ip6 if seen == "server_ip6" else hosts.server_ip4
        other_host = witness(hosts, listen, hosts.client_ns, dial)
        # What fools the address rule: the server sees this host on both ends.
        unmapped = other_host["peer"].removeprefix("::ffff:")
        assert unmapped == other_host["local"].removeprefix("::ffff:") == address
        assert other_host["outcome"] == outcome, other_host
        assert (other_host["granted"], other_host["reason"]) == (False, reason)
        if outcome == FOUND:  # the raw answer: a socket of the server's own
            state = {SAME_ENDS: ESTABLISHED, OTHER_SOCKET: LISTEN}[reason]
            assert other_host["state"] == state, other_host
        # The control: a client on this host, dialing the same address, is found.
        this_host = witness(hosts, listen, hosts.server_ns, address)
        assert this_host["peer"].removeprefix("::ffff:") == address
        assert (this_host["granted"], this_host["reason"]) == (True, HELD)


@pytest.mark.root
@pytest.mark.slow
def test_a_local_client_behind_an_output_redirect_is_not_found():
    """The documented false refusal: the client's socket names the port it
    dialled (80), the server sees the redirected one (8000)."""
    require_netns()
    require_commands("iptables")
    with two_hosts() as hosts:
        ns_run(
            hosts.server_ns,
            *["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1"],
            *["--dport", "80", "-j", "REDIRECT", "--to-ports", str(PORT)],
            check=True,
        )
        redirected = witness(hosts, "127.0.0.1", hosts.server_ns, "127.0.0.1", dial_port=80)
        assert redirected["peer"] == redirected["local"] == "127.0.0.1"
        assert (redirected["granted"], redirected["reason"]) == (False, NOT_FOUND)
        direct = witness(hosts, "127.0.0.1", hosts.server_ns, "127.0.0.1")
        assert (direct["granted"], direct["reason"]) == (True, HELD)


#: A client of this host dialing its own link-local address, and the
#: witness asked with and without the address's scope.
_LINK_LOCAL = r"""
import json, socket, sys
from flask_selfhost import peer_socket
address, interface = sys.argv[1:]
listener = socket.create_server(("::", 0), family=socket.AF_INET6)
client = socket.create_connection((f"{address}%{interface}", listener.getsockname()[1]))
accepted, _ = listener.accept()
peer, peer_port, _, scope = accepted.getpeername()
local, local_port = accepted.getsockname()[:2]
def verdict(peer, local):
    return peer_socket.check_client(peer, peer_port, local, local_port).reason
print(json.dumps({
    "peer": peer,
    "scope": scope,
    "by name": verdict(f"{peer}%{interface}", f"{local}%{interface}"),
    "by index": verdict(f"{peer}%{scope}", f"{local}%{scope}"),
    "without": verdict(peer, local),
}))
"""


@pytest.mark.root
def test_a_link_local_client_is_found_when_asked_with_its_scope():
    require_netns()
    address = "fe80::5e1f:1"
    with two_hosts() as hosts:
        ns_run(
            hosts.server_ns,
            *["ip", "addr", "add", f"{address}/64", "dev", hosts.server_if, "nodad"],
            check=True,
        )
        done = ns_run(
            hosts.server_ns,
            *["env", f"PYTHONPATH={ROOT}", sys.executable, "-c", _LINK_LOCAL],
            *[address, hosts.server_if],
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
    assert result["peer"] == address and result["scope"] != 0, result
    assert (result["by name"], result["by index"]) == (HELD, HELD)
    assert result["without"] == NOT_FOUND


@pytest.mark.slow
def test_the_benchmark_runs_and_prints_every_figure():
    done = subprocess.run(
        [
            *(sys.executable, "benchmarks/peer_socket.py", "--sockets", "5", "--number", "40"),
            *("--seconds", "1", "--rounds", "1"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "10 extra loopback sockets" in done.stdout
    for figure in (
        "check_client (the guard's call)",
        "shared under a lock",
        "one per thread",
        "new netlink socket",
        "/proc/net/tcp",
    ):
        assert figure in done.stdout
    for figure in (
        "WSGI, a new connection",
        "WSGI, a keep-alive request",
        "ASGI, a scope only",
        "ASGI under uvicorn, keep-alive",
    ):
        assert done.stdout.count(figure) == 2  # the witness, then allowed_users
    assert "with allowed_users=['self'] and without" in done.stdout
    if shutil.which("ab"):
        assert "gunicorn sync, a new connection per request" in done.stdout
        assert "uvicorn, keep-alive" in done.stdout
