"""What finding the process behind a client's socket costs, measured in one run.

    python benchmarks/peer_process.py [--processes 0 500]

For each count of extra processes on the host (``sleep``, three descriptors
each), microseconds:

1. a scan of ``/proc/*/fd`` for one socket's inode (what a new connection
   costs with ``refuse_forwarders``, and a logged refusal);
2. a cached answer, checked again (the holder still has the inode in its fd
   table; its name read again): what an ASGI request costs, which names no
   connection to remember on;

and how many new connections a second the default budget of scans (a fifth
of one core) lets through before refusing them as not looked up.

Then the guard with ``refuse_forwarders`` beside the same guard without it
(the kernel witness on in both), on a real loopback connection whose client
end this process holds: microseconds per request of a trivial WSGI app
behind ``SelfHostMiddleware`` on a new connection (the full rules, one
netlink query and one scan) and on a keep-alive connection (remembered on
the connection object: the full rules and a dict lookup, since the common
request's memory is off with the option), and of an ASGI app behind
``SelfHostASGIMiddleware`` (a query and a cached answer per request). The
budget is lifted for these figures, so that they measure the work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from peer_socket import asgi_hello, connections, environ_for, ignore, scope_for, trivial_app

from flask_selfhost import SelfHostMiddleware, forwarders, kernel_witness, peer_process
from flask_selfhost.asgi import SelfHostASGIMiddleware

REPEATS = 5


def best_us(call: Callable[[], object], number: int, before: Callable[[], object] = lambda: None):
    """Best of :data:`REPEATS` of the mean over ``number`` calls, each after
    ``before`` (not timed)."""
    best = float("inf")
    for _ in range(REPEATS):
        total = 0.0
        for _ in range(number):
            before()
            started = time.perf_counter()
            call()
            total += time.perf_counter() - started
        best = min(best, total / number)
    return best * 1e6


@contextlib.contextmanager
def extra_processes(count: int) -> Iterator[None]:
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(count)]
    try:
        yield
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


def lookup_figures(count: int, number: int) -> dict[str, float]:
    with extra_processes(count), connections(1) as pairs:
        inode = os.fstat(pairs[0][0].fileno()).st_ino
        finder = peer_process.ProcessFinder(share=1e9)
        scan = best_us(lambda: finder.find(inode), number, lambda: finder._cache.clear())
        assert finder.find(inode).outcome == peer_process.FOUND
        cached = best_us(lambda: finder.find(inode), number * 10)
        processes = sum(1 for entry in os.listdir("/proc") if entry.isdigit())
    return {
        "processes on the host": processes,
        "a scan of /proc for one inode": scan,
        "a cached answer, checked again": cached,
        "new connections a second within the budget": peer_process.SHARE / (scan / 1e6),
    }


def guard_figures(number: int) -> dict[str, tuple[float, float]]:
    """(with refuse_forwarders, without) microseconds per request."""
    figures: dict[str, tuple[float, float]] = {}
    budget = peer_process.finder
    peer_process.finder = peer_process.ProcessFinder(share=1e9)  # the work, not the budget
    try:
        with connections(1) as pairs:
            accepted = pairs[0][1]
            environ = environ_for(accepted)
            on = SelfHostMiddleware(trivial_app, refuse_forwarders=True)
            off = SelfHostMiddleware(trivial_app)
            for app in (on, off):  # the first request teaches the memories
                assert app(dict(environ), ignore) == [b"Hello, World!"]
            assert id(accepted) in forwarders.cleared_connections

            def forget() -> None:  # as a new connection (a new socket, a new inode) would be
                kernel_witness.witnessed_connections.pop(id(accepted), None)
                forwarders.cleared_connections.pop(id(accepted), None)
                peer_process.finder._cache.clear()

            figures["WSGI, a new connection"] = (
                best_us(lambda: on(dict(environ), ignore), number, forget),
                best_us(lambda: off(dict(environ), ignore), number, forget),
            )
            for app in (on, off):
                app(dict(environ), ignore)
            figures["WSGI, a keep-alive request"] = (
                best_us(lambda: on(dict(environ), ignore), number * 10),
                best_us(lambda: off(dict(environ), ignore), number * 10),
            )
            scope = scope_for(accepted)

            async def receive() -> dict:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict) -> None:
                pass

            def asgi_us(app: SelfHostASGIMiddleware) -> float:
                async def timed() -> float:
                    best = float("inf")
                    for _ in range(REPEATS):
                        started = time.perf_counter()
                        for _ in range(number * 10):
                            await app(dict(scope), receive, send)
                        best = min(best, (time.perf_counter() - started) / (number * 10))
                    return best * 1e6

                asyncio.run(app(dict(scope), receive, send))  # teaches the memories
                return asyncio.run(timed())

            figures["ASGI, every request"] = (
                asgi_us(SelfHostASGIMiddleware(asgi_hello, refuse_forwarders=True)),
                asgi_us(SelfHostASGIMiddleware(asgi_hello)),
            )
    finally:
        peer_process.finder = budget
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[0, 500])
    parser.add_argument("--number", type=int, default=50)
    args = parser.parse_args()
    for count in args.processes:
        print(f"With {count} extra processes:")
        for name, value in lookup_figures(count, args.number).items():
            shown = (
                f"{value:10.0f}" if name.startswith(("processes", "new")) else f"{value:10.1f} us"
            )
            print(f"  {name:<46}{shown}")
    print("The guard, microseconds per request (refuse_forwarders / without):")
    for name, (on, off) in guard_figures(args.number).items():
        print(f"  {name:<30}{on:10.1f} us {off:10.1f} us   (+{on - off:.1f} us)")


if __name__ == "__main__":
    main()
