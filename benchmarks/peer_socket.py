"""What asking the kernel for a client's socket costs, measured in one run.

    python benchmarks/peer_socket.py [--sockets 20 3000]

For each count of extra loopback connections held open on the host (each is
two sockets, a client and an accepted one), microseconds per lookup of one
connection's client socket:

0. ``check_client``, the guard's call (a grant read from the answer's
   bytes);
1. ``find_client_socket``, which also spells out both ends in text (for
   the doctor and the log), as the module runs it: one netlink socket kept
   open, shared under a lock;
2. the same with one netlink socket per thread (``threading.local``), for
   comparison;
3. a new netlink socket per query;
4. reading and parsing ``/proc/net/tcp`` for the same row (the fallback a
   tool without netlink would use);

and both sharing schemes with four threads querying at once (wall-clock
microseconds per query, all threads together). Each figure is the best of
several repeats, the least disturbed by other work on the machine.

Then the guard with the witness (``check_client_socket``, the default)
beside the same guard without it, on a real loopback connection:
microseconds per request of a trivial WSGI app behind
``SelfHostMiddleware`` on a new connection (the full rules and one query)
and on a keep-alive connection (the fast path, the connection found in
memory), and of an ASGI app behind ``SelfHostASGIMiddleware``: called with
a scope and a plain ``receive`` (a query per request: nothing names the
connection), and with uvicorn's ``receive`` for a keep-alive connection
(the connection found in memory: asked once); then, the same way, the
guard with ``allowed_users=["self"]`` beside the default guard (the rule
reads the owner of the client's socket that the witness found, kept on
the connection). Last, requests per
second under real servers on 127.0.0.1, bare, guarded, and guarded without
the witness, in alternating rounds (median): gunicorn's sync worker with a
new connection per request (``ab``), and uvicorn with keep-alive
(``ab -k``); ``--seconds 0`` leaves them out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from asgi_apps import uvicorn_like_scope, uvicorn_receive

from flask_selfhost import SelfHostMiddleware, kernel_witness, peer_socket
from flask_selfhost.asgi import SelfHostASGIMiddleware

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
        check = functools.partial(peer_socket.check_client, *peer, *local)
        figures = {"check_client (the guard's call)": best_us(check, number)}
        figures["kept open, shared under a lock"] = best_us(find, number)
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


# The guard with and without the witness ---------------------------------------------


def trivial_app(environ: dict, start_response: Callable) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


def ignore(*_: object) -> None:
    pass


def environ_for(accepted: socket.socket) -> dict:
    """What gunicorn puts in the environ of ``curl`` on this connection."""
    peer, local = accepted.getpeername(), accepted.getsockname()
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "gunicorn/27.0.1",
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": str(peer[1]),
        "HTTP_HOST": f"127.0.0.1:{local[1]}",
        "HTTP_USER_AGENT": "curl/7.88.1",
        "HTTP_ACCEPT": "*/*",
        "wsgi.url_scheme": "http",
        "gunicorn.socket": accepted,
    }


def scope_for(accepted: socket.socket) -> dict:
    """What uvicorn puts in the scope of ``curl`` on this connection."""
    scope = uvicorn_like_scope()
    scope["server"], scope["client"] = accepted.getsockname(), accepted.getpeername()
    return scope


async def asgi_hello(scope: dict, receive: Callable, send: Callable) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"Hello, World!"})


#: What is measured with and without, each against the same guard otherwise:
#: the witness (on by default), and the allowed_users rule beside the
#: default guard (the witness on in both).
COMPARED = {
    "The guard, with the witness and without": ({}, {"check_client_socket": False}),
    "The guard, with allowed_users=['self'] and without": ({"allowed_users": ["self"]}, {}),
}


def guard_figures(
    number: int, with_options: dict, without_options: dict
) -> dict[str, tuple[float, float]]:
    """(with, without) microseconds per request: guards with these options."""
    figures: dict[str, tuple[float, float]] = {}
    with connections(1) as pairs:
        accepted = pairs[0][1]
        environ = environ_for(accepted)
        on, off = (
            SelfHostMiddleware(trivial_app, **with_options),
            SelfHostMiddleware(trivial_app, **without_options),
        )
        for app in (on, off):  # the first request teaches the memories
            assert app(dict(environ), ignore) == [b"Hello, World!"]
        witnessed = kernel_witness.witnessed_connections
        owner = witnessed[id(accepted)][1]

        def new_connection(app: Callable) -> Callable[[], object]:
            def request() -> object:
                witnessed.pop(id(accepted), None)  # as a new socket object would be
                return app(dict(environ), ignore)

            return request

        figures["WSGI, a new connection"] = (
            best_us(new_connection(on), number),
            best_us(new_connection(off), number),
        )
        kernel_witness.remember_connection(accepted, owner)
        figures["WSGI, a keep-alive request"] = (
            best_us(lambda: on(dict(environ), ignore), number * 10),
            best_us(lambda: off(dict(environ), ignore), number * 10),
        )
        scope = scope_for(accepted)
        asgi_on = SelfHostASGIMiddleware(asgi_hello, **with_options)
        asgi_off = SelfHostASGIMiddleware(asgi_hello, **without_options)

        async def plain_receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            pass

        def asgi_us(app: SelfHostASGIMiddleware, under_uvicorn: bool) -> float:
            async def timed() -> float:
                nonlocal receive
                transport = None
                if under_uvicorn:
                    sock = socket.socket(fileno=os.dup(accepted.fileno()))
                    receive, transport = await uvicorn_receive(sock)
                await app(dict(scope), receive, send)  # teaches the memories
                best = float("inf")
                for _ in range(REPEATS):
                    started = time.perf_counter()
                    for _ in range(number):
                        await app(dict(scope), receive, send)
                    best = min(best, (time.perf_counter() - started) / number)
                if transport is not None:
                    transport.close()
                return best * 1e6

            return asyncio.run(timed())

        receive = plain_receive
        figures["ASGI, a scope only"] = (asgi_us(asgi_on, False), asgi_us(asgi_off, False))
        figures["ASGI under uvicorn, keep-alive"] = (
            asgi_us(asgi_on, True),
            asgi_us(asgi_off, True),
        )
    return figures


SERVED = """
from flask_selfhost import SelfHostMiddleware
from flask_selfhost.asgi import SelfHostASGIMiddleware

def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"Hello, World!"})

wsgi_guarded = SelfHostMiddleware(wsgi)
wsgi_unwitnessed = SelfHostMiddleware(wsgi, check_client_socket=False)
asgi_guarded = SelfHostASGIMiddleware(asgi)
asgi_unwitnessed = SelfHostASGIMiddleware(asgi, check_client_socket=False)
"""

#: name: (the command for a port and an app, ab's options, the apps)
SERVERS = {
    "gunicorn sync, a new connection per request": (
        lambda port, app: [
            *(sys.executable, "-m", "gunicorn", "--no-control-socket", "-w", "1"),
            *("-b", f"127.0.0.1:{port}", f"served:{app}"),
        ],
        [],
        "wsgi",
    ),
    "uvicorn, keep-alive": (
        lambda port, app: [
            *(sys.executable, "-m", "uvicorn", "--port", str(port), "--log-level", "warning"),
            f"served:{app}",
        ],
        ["-k"],
        "asgi",
    ),
}
VARIANTS = ("bare", "guarded", "unwitnessed")


def requests_per_second(port: int, seconds: int, options: list[str]) -> float:
    done = subprocess.run(
        [
            "ab",
            *options,
            "-q",
            "-c",
            "4",
            "-t",
            str(seconds),
            "-n",
            "10000000",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(re.search(r"Requests per second:\s+([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]


def server_figures(seconds: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median req/s per server and variant."""
    from tests.servers import free_port, server_process

    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "served.py").write_text(SERVED)
        env = {"PYTHONPATH": f"{folder}:{Path(__file__).resolve().parent.parent}"}
        for name, (command, ab_options, kind) in SERVERS.items():
            measured: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
            with contextlib.ExitStack() as stack:
                ports = {}
                for variant in VARIANTS:
                    app = kind if variant == "bare" else f"{kind}_{variant}"
                    port = ports[variant] = free_port()
                    stack.enter_context(
                        server_process(
                            command(port, app),
                            ("127.0.0.1", port),
                            Path(folder),
                            env=env,
                            cwd=Path(folder),
                        )
                    )
                for _ in range(rounds):
                    for variant in VARIANTS:
                        measured[variant].append(
                            requests_per_second(ports[variant], seconds, ab_options)
                        )
            figures[name] = {v: statistics.median(values) for v, values in measured.items()}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, nargs="+", default=[20, 3000])
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=3, help="per ab round; 0: no servers")
    parser.add_argument("--rounds", type=int, default=3)
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
    for title, (with_options, without_options) in COMPARED.items():
        print(f"\n{title} (us per request)")
        figures = guard_figures(options.number, with_options, without_options)
        for name, (on, off) in figures.items():
            print(f"  {name:<34} {on:7.2f} {off:7.2f}   added {on - off:6.2f}")
    if options.seconds and shutil.which("ab"):
        print(f"\nRequests per second, median of {options.rounds} rounds of {options.seconds} s")
        print(f"  {'':<44} {'bare':>8} {'guarded':>8} {'no witness':>10}")
        for name, values in server_figures(options.seconds, options.rounds).items():
            row = " ".join(f"{values[v]:8.0f}" for v in VARIANTS[:2])
            print(f"  {name:<44} {row} {values['unwitnessed']:10.0f}")
    elif options.seconds:
        print("\n(no ab here: Debian's apache2-utils has it)")


if __name__ == "__main__":
    main()
