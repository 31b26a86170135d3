"""How much the guard costs, guarded against bare, measured in one run.

    python benchmarks/overhead.py

1. WSGI: nanoseconds the middleware adds to a trivial WSGI app, called
   directly with a gunicorn-like environ (a loopback client, the common case,
   and a client on the host's own LAN address, which needs getsockname()).
2. Flask: the ratio of a hello-world request through the full Flask stack
   (``app.wsgi_app``) with ``SelfHost`` to the same app without; a second
   bare app shows the noise floor of that comparison.
3. ASGI: the same for a Starlette hello app with SelfHostASGIMiddleware,
   served by an asyncio loop without a server.

Each figure is the best of several repeats (the least disturbed by other
work on the machine); guarded and bare runs are interleaved.
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
import sys
import time
import timeit
from pathlib import Path

from flask import Flask

from flask_selfhost import SelfHost, SelfHostMiddleware

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tests.servers import accepted_connection


def trivial_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def gunicorn_like_environ(remote: str, sock: socket.socket | None) -> dict:
    """The keys gunicorn 27 puts in an environ for ``curl http://host:8000/``."""
    return {
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": None,
        "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": "gunicorn/27.0.1",
        "wsgi.input": io.BytesIO(),
        "gunicorn.socket": sock,
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "",
        "RAW_URI": "/",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "curl/7.88.1",
        "HTTP_ACCEPT": "*/*",
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": remote,
        "REMOTE_PORT": "40000",
        "SERVER_NAME": "0.0.0.0",
        "SERVER_PORT": "8000",
        "PATH_INFO": "/",
        "SCRIPT_NAME": "",
    }


def start_response(status, headers, exc_info=None):
    return None


def best_ns(call, number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e9


def wsgi_overhead(number: int, repeat: int) -> list[tuple[str, float, float]]:
    guarded = SelfHostMiddleware(trivial_app)
    rows = []
    with accepted_connection() as server_side:
        loopback = gunicorn_like_environ("127.0.0.1", server_side)
        # mod_wsgi style: the server names the local address itself.
        own_address = gunicorn_like_environ("192.0.2.7", None)
        own_address["SERVER_ADDR"] = "192.0.2.7"
        own_address["mod_wsgi.version"] = (4, 9, 0)
        # A refusal: the local address comes from getsockname() on the socket.
        other_host = gunicorn_like_environ("192.0.2.99", server_side)
        cases = [
            ("allowed: loopback client", loopback, True),
            ("allowed: own address (SERVER_ADDR)", own_address, True),
            ("refused: other host (getsockname)", other_host, False),
        ]
        for name, environ, allowed in cases:
            assert (guarded(environ, start_response) == [b"ok"]) is allowed, name
            bare = best_ns(lambda e=environ: trivial_app(e, start_response), number, repeat)
            with_guard = best_ns(lambda e=environ: guarded(e, start_response), number, repeat)
            rows.append((name, bare, with_guard))
    return rows


def flask_times(number: int, repeat: int) -> dict[str, float]:
    def make(guarded: bool) -> Flask:
        app = Flask("bench")

        @app.get("/")
        def hello() -> str:
            return "Hello, World!"

        if guarded:
            SelfHost(app)
        return app

    environ = gunicorn_like_environ("127.0.0.1", None)

    def request(app):
        def call():
            fresh = dict(environ, **{"wsgi.input": io.BytesIO()})
            for _ in app.wsgi_app(fresh, start_response):
                pass

        return call

    # A second bare app measures the noise floor of the comparison itself.
    calls = {
        "bare": request(make(False)),
        "guarded": request(make(True)),
        "bare again": request(make(False)),
    }
    for call in calls.values():  # warm up: imports, caches, Jinja, the allocator
        timeit.timeit(call, number=number)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):  # interleave, so that drift hits all alike
        for name, call in calls.items():
            times[name].append(timeit.timeit(call, number=number) / number * 1e6)
    return {name: min(values) for name, values in times.items()}


def starlette_times(number: int, repeat: int) -> dict[str, float]:
    """Microseconds per request of a Starlette hello app, bare and with
    SelfHostASGIMiddleware, each served ``number`` requests by one asyncio
    loop (see benchmarks/asgi_apps.py); interleaved like flask_times."""
    import asyncio

    from asgi_apps import serve, starlette_hello

    apps = {"bare": starlette_hello(False), "guarded": starlette_hello(True)}
    apps["bare again"] = starlette_hello(False)
    for app in apps.values():
        asyncio.run(serve(app, number))
    times: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(repeat):
        for name, app in apps.items():
            start = time.perf_counter()
            asyncio.run(serve(app, number))
            times[name].append((time.perf_counter() - start) / number * 1e6)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke run)")
    args = parser.parse_args()
    # The usual production level; refusals (case 3) are silenced to time the guard, not I/O.
    logging.getLogger("flask_selfhost").setLevel(logging.ERROR)
    wsgi_n, flask_n, repeat = (20_000, 500, 3) if args.quick else (300_000, 2_000, 15)

    print(f"Python {sys.version.split()[0]}; best of {repeat} repeats\n")
    print(f"{'WSGI, trivial app':36s} {'bare ns':>9s} {'guarded ns':>11s} {'added ns':>9s}")
    for name, bare, guarded in wsgi_overhead(wsgi_n, repeat):
        print(f"{name:36s} {bare:9.0f} {guarded:11.0f} {guarded - bare:9.0f}")
    flask = flask_times(flask_n, repeat)
    print(f"\n{'Flask hello world, GET / from 127.0.0.1':42s} {'us':>7s} {'ratio to bare':>14s}")
    for name, micros in flask.items():
        print(f"{name:42s} {micros:7.2f} {micros / flask['bare']:14.3f}")
    starlette = starlette_times(flask_n, repeat)
    print(
        f"\n{'Starlette hello (ASGI), GET / from 127.0.0.1':42s} {'us':>7s} {'ratio to bare':>14s}"
    )
    for name, micros in starlette.items():
        print(f"{name:42s} {micros:7.2f} {micros / starlette['bare']:14.3f}")


if __name__ == "__main__":
    main()
