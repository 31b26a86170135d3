"""What asking the kernel for a client's socket costs, measured in one run.

    python benchmarks/peer_socket.py [--sockets 20 3000]

For each count of extra loopback connections held open on the host (each is
two sockets, a client and an accepted one), microseconds per lookup of one
connection's client socket:

1. ``find_client_socket`` as the module runs it: one netlink socket kept
   open, shared under a lock;
2. the same with one netlink socket per thread (``threading.local``), for
   comparison;
3. a new netlink socket per query;
4. reading and parsing ``/proc/net/tcp`` for the same row (the fallback a
   tool without netlink would use);

and both sharing schemes with four threads querying at once (wall-clock
microseconds per query, all threads together). Each figure is the best of
several repeats, the least disturbed by other work on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flask_selfhost import peer_socket

REPEATS = 5


def best_us(call: Callable[[], object], number: int) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - started) / number)
    return best * 1e6


@contextlib.contextmanager
def connections(count: int) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """``count`` loopback connections held open: (client, accepted) pairs."""
    pairs: list[tuple[socket.socket, socket.socket]] = []
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        try:
            for _ in range(count):
                client = socket.create_connection(listener.getsockname())
                accepted, _ = listener.accept()
                pairs.append((client, accepted))
            yield pairs
        finally:
            for client, accepted in pairs:
                client.close()
                accepted.close()


def proc_net_tcp_row(peer: tuple[str, int], local: tuple[str, int]) -> tuple[int, int] | None:
    """(uid, inode) of the socket whose own end is ``peer`` and other end
    ``local``, read from /proc/net/tcp (IPv4: one little-endian word)."""

    def hexed(address: tuple[str, int]) -> str:
        packed = socket.inet_aton(address[0])
        return f"{int.from_bytes(packed, 'little'):08X}:{address[1]:04X}"

    own, other = hexed(peer), hexed(local)
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == own and fields[2] == other:
                return int(fields[7]), int(fields[9])
    return None


def per_thread_channels() -> Callable[[], peer_socket._Channel]:
    local = threading.local()

    def current() -> peer_socket._Channel:
        channel = getattr(local, "channel", None)
        if channel is None:
            channel = local.channel = peer_socket._Channel()
        return channel

    return current


def threaded_us(query: Callable[[], object], threads: int, number: int) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        workers = [
            threading.Thread(target=lambda: [query() for _ in range(number)])
            for _ in range(threads)
        ]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = min(best, (time.perf_counter() - started) / (threads * number))
    return best * 1e6


def measure(count: int, number: int) -> dict[str, float]:
    """Every figure, with ``count`` extra loopback connections open."""
    shared = peer_socket._current_channel
    with connections(count) as pairs:
        accepted = pairs[-1][1]
        peer, local = accepted.getpeername(), accepted.getsockname()
        find = functools.partial(peer_socket.find_client_socket, *peer, *local)

        def fresh() -> peer_socket.ClientSocket:
            peer_socket._current_channel().close()
            return find()

        assert peer_socket.judge_client_socket(find()).granted
        assert proc_net_tcp_row(peer, local) is not None
        proc = functools.partial(proc_net_tcp_row, peer, local)
        figures = {"kept open, shared under a lock": best_us(find, number)}
        peer_socket._current_channel = per_thread_channels()  # type: ignore[assignment]
        try:
            figures["kept open, one per thread"] = best_us(find, number)
            four_per_thread = threaded_us(find, 4, number // 4)
        finally:
            peer_socket._current_channel = shared  # type: ignore[assignment]
        figures["4 threads, shared under a lock"] = threaded_us(find, 4, number // 4)
        figures["4 threads, one per thread"] = four_per_thread
        figures["a new netlink socket per query"] = best_us(fresh, number)
        figures["parsing /proc/net/tcp"] = best_us(proc, max(20, number // (10 + count // 10)))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, nargs="+", default=[20, 3000])
    parser.add_argument("--number", type=int, default=5000)
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * max(options.sockets) + 100
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    print(f"Python {sys.version.split()[0]}, {options.number} queries, best of {REPEATS}")
    for count in options.sockets:
        figures = measure(count, options.number)
        print(f"\n{2 * count} extra loopback sockets")
        for name, value in figures.items():
            print(f"  {name:<34} {value:9.1f} us")


if __name__ == "__main__":
    main()
