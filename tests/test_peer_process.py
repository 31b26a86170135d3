"""Which process holds a socket (flask_selfhost.peer_process), on real
processes and sockets: found by its inode, named as a forwarder by any of its
names, a cached answer checked again (a pid that let go of the socket, a
process that ran exec), the cache bounded, and scans bounded by their time
budget."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_selfhost import peer_process
from flask_selfhost.doctor.listeners import FORWARDERS as DOCTOR_FORWARDERS
from flask_selfhost.peer_process import (
    FORWARDERS,
    FOUND,
    NOT_FOUND,
    NOT_LOOKED,
    Holder,
    Lookup,
    ProcessFinder,
    process_name,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: A child that keeps the descriptor it was given open until told to go on
#: (a line on stdin), then execs argv[2] with argv[3:] (exec keeps the fd).
HOLDER = """
import os, sys
print("ready", flush=True)
sys.stdin.readline()
if len(sys.argv) > 2:
    os.execv(sys.argv[2], sys.argv[3:])
sys.stdin.readline()
"""


def inode_of(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


@contextlib.contextmanager
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A real loopback connection: (client, accepted)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with client, accepted:
            yield client, accepted


@contextlib.contextmanager
def held_by_child(
    sock: socket.socket, argv0: str = sys.executable, *then: str
) -> Iterator[subprocess.Popen]:
    """A child process (run as ``argv0``) that holds ``sock``; this process
    lets go of its own copy. ``then`` is what the child execs when told."""
    child = subprocess.Popen(
        [argv0, "-c", HOLDER, str(sock.fileno()), *then],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(sock.fileno(),),
        executable=sys.executable,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield child
    finally:
        child.kill()
        child.wait()


def test_finds_the_process_that_holds_a_socket():
    with connection() as (client, _):
        lookup = ProcessFinder().find(inode_of(client))
        assert lookup.outcome == FOUND
        assert [holder.pid for holder in lookup.holders] == [os.getpid()]
        assert lookup.holders[0].name == process_name(os.getpid())
        assert lookup.forwarders() == ()


def test_a_socket_nobody_holds_is_not_found():
    with connection() as (client, _):
        inode = inode_of(client)
    assert ProcessFinder().find(inode) == Lookup(NOT_FOUND)
    assert ProcessFinder().find(0) == Lookup(NOT_LOOKED)


def test_not_found_is_kept_a_second():
    # No pid to check it against: kept briefly, so that a server without a
    # connection to remember it on (ASGI) does not scan at every request.
    finder = ProcessFinder()
    with connection() as (client, _):
        inode = inode_of(client)
    assert finder.find(inode) == finder.find(inode) == Lookup(NOT_FOUND)
    assert finder.scans == 1
    time.sleep(peer_process.NOT_FOUND_SECONDS)
    assert finder.find(inode) == Lookup(NOT_FOUND)
    assert finder.scans == 2


def test_a_forwarder_is_named_by_its_argv0(tmp_path):
    # The child's argv[0] is "socat" (comm and exe stay python's): any of
    # the three names in FORWARDERS names it.
    with connection() as (client, _), held_by_child(client, "socat") as child:
        client.close()
        lookup = ProcessFinder().find(inode_of_child(child))
        assert lookup.holders == (Holder(child.pid, "socat"),)
        assert lookup.forwarders() == ("socat",)
        assert lookup.shown() == "socat"


def inode_of_child(child: subprocess.Popen) -> int:
    """The inode of the one socket the child holds."""
    (inode,) = peer_process.socket_inodes(child.pid)
    return inode


def test_a_cached_answer_is_checked_again_when_the_pid_lets_go():
    finder = ProcessFinder()
    with connection() as (client, _):
        with held_by_child(client) as child:
            client.close()
            inode = inode_of_child(child)
            assert finder.find(inode).holders[0].pid == child.pid
            assert finder.scans == 1
            assert finder.find(inode).holders[0].pid == child.pid
            assert finder.scans == 1  # from the cache, checked
        # The child is gone (its pid may be anyone's next): no answer from
        # memory; the scan finds nobody.
        assert finder.find(inode) == Lookup(NOT_FOUND)
        assert finder.scans == 2


def test_a_cached_answer_names_what_the_process_runs_now(tmp_path):
    # The process that holds the socket execs another program (socat, by
    # argv[0]): the cached pid is read again, and named by what it is now.
    finder = ProcessFinder()
    with (
        connection() as (client, _),
        held_by_child(
            client, sys.executable, sys.executable, "socat", "-c", "import sys; sys.stdin.read()"
        ) as child,
    ):
        client.close()
        inode = inode_of_child(child)
        assert finder.find(inode).forwarders() == ()
        assert child.stdin is not None
        child.stdin.write("exec\n")
        child.stdin.flush()
        deadline = time.monotonic() + 5
        while process_name(child.pid) != "socat" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert finder.find(inode).forwarders() == ("socat",)
        assert finder.scans == 1


def test_the_cache_is_bounded():
    finder = ProcessFinder(size=2)
    with connection() as (a, b), connection() as (c, d):
        for sock in (a, b, c, d):
            assert finder.find(inode_of(sock)).outcome == FOUND
        assert len(finder._cache) == 2


def test_scans_stop_when_their_time_budget_is_spent_and_resume_later():
    # A budget of 5 ms of scanning per second: a few scans spend it, and the
    # lookups of new sockets that follow are not looked (a local user who
    # draws refusals cannot keep a core busy); a cached answer costs no scan.
    finder = ProcessFinder(share=0.005)
    with connection() as (first, _):
        assert finder.find(inode_of(first)).outcome == FOUND
        for _ in range(100):  # spend what is left
            with connection() as (other, _):
                if finder.find(inode_of(other)).outcome == NOT_LOOKED:
                    break
        scans = finder.scans
        assert 1 < scans < 100
        not_looked = 0
        frozen = time.monotonic()
        with pytest.MonkeyPatch.context() as clock:
            # No time passes for the budget while these run: the overdraft may
            # be a sliver of a scan, which a busy machine's slow loop would
            # otherwise refill before it ends.
            clock.setattr(time, "monotonic", lambda: frozen)
            for _ in range(50):
                with connection() as (other, _):
                    not_looked += finder.find(inode_of(other)).outcome == NOT_LOOKED
            assert not_looked == 50 and finder.scans == scans
            assert finder.find(inode_of(first)).outcome == FOUND  # cached, checked, no scan
            assert finder.scans == scans
        # Time refills the budget (the overdraft is one scan's cost, refilled at
        # 5 ms a second): a lookup that waits is looked up again.
        with connection() as (later, _):
            deadline = time.monotonic() + 30
            while finder.find(inode_of(later)).outcome == NOT_LOOKED:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert finder.scans == scans + 1


def test_a_trusted_proxy_is_no_forwarder():
    lookup = Lookup(FOUND, (Holder(7, "nginx"), Holder(8, "socat"), Holder(9, "gunicorn")))
    assert lookup.forwarders() == ("nginx", "socat")
    assert lookup.forwarders(trusted_proxy=True) == ("socat",)
    assert lookup.shown() == "gunicorn/nginx/socat"


def test_a_gone_process_has_no_name():
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    assert process_name(child.pid) is None


def test_the_doctor_knows_every_forwarder_the_guard_refuses():
    assert set(FORWARDERS) <= DOCTOR_FORWARDERS


def test_the_docs_list_the_forwarders_the_guard_refuses():
    # The table in the threat model names each executable of FORWARDERS,
    # in the same order, and no other.
    text = (DOCS / "threat-model.md").read_text()
    table = text.split("<!-- forwarders -->", 2)[1]
    named = re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE)
    assert named == list(FORWARDERS)


@pytest.mark.slow
def test_the_benchmark_runs_and_prints_every_figure():
    done = subprocess.run(
        [sys.executable, "benchmarks/peer_process.py", "--processes", "0", "20", "--number", "5"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "With 20 extra processes:" in done.stdout
    for figure in ("a scan of /proc", "a cached answer", "new connections a second"):
        assert figure in done.stdout
    for figure in ("WSGI, a new connection", "WSGI, a keep-alive request", "ASGI, every request"):
        assert figure in done.stdout
