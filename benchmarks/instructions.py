"""The guard's cost in CPU instructions, which do not vary with machine load.

    python benchmarks/instructions.py        # needs valgrind (Debian: valgrind)
    python benchmarks/instructions.py --compare /path/to/older/checkout

With ``--compare``, the guarded variants are also run with the
``flask_selfhost`` of another checkout (a ``git worktree`` of an older
commit, say), in the same run, so that before and after sit side by side.

Times on a shared 2-core machine wander by a few percent from run to run;
callgrind's instruction counts repeat exactly. Each variant serves N and then
N + EXTRA requests under callgrind; the difference divided by EXTRA is the
cost of one request, start-up excluded.

Two requests, side by side for each app: curl's (a loopback client, Host,
User-Agent, Accept) and a browser's (Chrome's same-origin ``fetch()``, fifteen
headers with ``Origin`` and ``Sec-Fetch-*``: benchmarks/browser_request.py).
Three apps: a trivial WSGI app bare and behind SelfHostMiddleware, beside two
floors under it (benchmarks/wsgi_floors.py: a closure that only calls the
app, and the same after the common path's absence tests); a Flask hello app
bare and with SelfHost; a Starlette hello app (served by an asyncio loop, as
uvicorn would call it, with uvicorn's ``receive`` on a real loopback
connection, without the server) bare and with
SelfHostASGIMiddleware, beside its peers: Starlette's TrustedHostMiddleware
(checks the Host only), uvicorn's ProxyHeadersMiddleware (checks nothing for
a client with no forwarding header) and a middleware that only awaits the
app (the floor under any ASGI guard).

The WSGI requests arrive on a real kept-alive loopback connection (a socket
accepted from a listener, as gunicorn's), so the kernel witness asks about
its client once and remembers the answer on the socket; the ASGI guard
finds the connection by uvicorn's ``receive`` and does the same. The
Starlette rows show the guard with that witness and without it
(``check_client_socket=False``), the witness's cost being the difference.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASE, EXTRA = 200, 1000

sys.path.insert(0, str(ROOT))  # this checkout's flask_selfhost, installed or not
from wsgi_floors import absent_keys  # noqa: E402  (beside this script)

LOOP = r"""
import io, sys
sys.path[:0] = [{package!r}, {here!r}]
variant, count = sys.argv[1], int(sys.argv[2])
app_name, guard, request = variant.split(":")
import gc
if app_name == "starlette":
    import asyncio
    from asgi_apps import PassThrough, serve, starlette_hello
    if guard == "bare":
        app = starlette_hello(False)
    elif guard == "guarded":
        app = starlette_hello(True)
    elif guard == "unwitnessed":
        app = starlette_hello(True, check_client_socket=False)
    elif guard == "pass-through":
        app = starlette_hello(True, PassThrough)
    elif guard in ("names", "vary", "memory"):
        import asgi_apps
        floors = {{"names": "ReadingNames", "vary": "AddingVary", "memory": "Remembering"}}
        app = starlette_hello(True, getattr(asgi_apps, floors[guard]))
    elif guard == "trustedhost":
        from starlette.middleware.trustedhost import TrustedHostMiddleware
        app = starlette_hello(True, TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])
    elif guard == "proxyheaders":
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
        app = starlette_hello(True, ProxyHeadersMiddleware)
    gc.collect()
    gc.disable()
    asyncio.run(serve(app, count, request == "browser"))
    raise SystemExit
from as_parsed import parsed_environ
from overhead import gunicorn_like_environ, start_response, trivial_app
from browser_request import environ_headers
from flask import Flask
from flask_selfhost import SelfHost, SelfHostMiddleware
if app_name == "flask":
    flask_app = Flask("bench")
    flask_app.get("/")(lambda: "Hello, World!")
    if guard == "guarded":
        SelfHost(flask_app)
    app = flask_app.wsgi_app
    if guard == "memory":
        import wsgi_floors
        app = wsgi_floors.with_memory(app)
elif guard in ("pass-through", "absence tests", "vary", "memory"):
    import wsgi_floors
    floors = {{
        "pass-through": "pass_through",
        "absence tests": "with_absence_tests",
        "vary": "with_vary",
        "memory": "with_memory",
    }}
    app = getattr(wsgi_floors, floors[guard])(trivial_app)
else:
    app = SelfHostMiddleware(trivial_app) if guard == "guarded" else trivial_app
# A real loopback connection, as gunicorn's socket: the guard asks the
# kernel for its client once, on the first request, and remembers it.
import socket
listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
accepted, _ = listener.accept()
environ = gunicorn_like_environ("127.0.0.1", accepted)
if request == "browser":
    environ = {{key: value for key, value in environ.items() if not key.startswith("HTTP_")}}
    environ.update(environ_headers())
# The cyclic collector runs after a count of allocations, so its passes fall
# on different requests in different runs: thousands of instructions of
# noise on a Flask request. Requests here make no cycles; collect now, then
# leave it off.
gc.collect()
gc.disable()
for _ in range(count):
    for _ in app(dict(parsed_environ(environ), **{{"wsgi.input": io.BytesIO()}}), start_response):
        pass
"""


def instructions(variant: str, count: int, package: Path, under: list[str]) -> int:
    """What ``under`` (the callgrind command, or nothing) counts for ``count``
    requests of ``variant``; 0 without callgrind."""
    # In an empty folder of its own: the script's '' on sys.path is listed by
    # the import system at start-up, and a busy /tmp would change that cost
    # between the two runs whose difference is measured.
    with tempfile.TemporaryDirectory() as empty:
        done = subprocess.run(
            [
                *under,
                sys.executable,
                "-c",
                LOOP.format(here=str(HERE), package=str(package)),
                variant,
                str(count),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=empty,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # dict probing, so counts, repeat exactly
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None and under:
        raise RuntimeError(f"callgrind counted nothing for {variant}:\n{done.stderr[-2000:]}")
    return int(found.group(1)) if found else 0


CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]


def per_request(variant: str, package: Path = ROOT) -> float:
    # Once without callgrind first: a module changed since its last import is
    # compiled (and its .pyc written) by the first run only, which would
    # count thousands of instructions against the other.
    instructions(variant, 1, package, [])
    before = instructions(variant, BASE, package, CALLGRIND)
    return (instructions(variant, BASE + EXTRA, package, CALLGRIND) - before) / EXTRA


REQUESTS = {"curl": "curl-like", "browser": "browser-like"}
BOTH, BROWSER = tuple(REQUESTS), ("browser",)

#: Per app: its name, and the variants beside bare (variant, label, of the
#: guard under test: also measured with --compare's checkout, the requests
#: it is measured with).
APPS: dict[str, tuple[str, list[tuple[str, str, bool, tuple[str, ...]]]]] = {
    "wsgi": (
        "trivial WSGI app",
        [
            ("guarded", "SelfHostMiddleware", True, BOTH),
            ("pass-through", "closure calling the app (a floor)", False, BOTH),
            ("absence tests", f"+ {len(absent_keys())} absence tests (a floor)", False, BOTH),
            ("vary", "+ Vary added to the answer (a floor)", False, BROWSER),
            ("memory", "+ memory lookups, level check (floor)", False, BOTH),
        ],
    ),
    "flask": (
        "Flask hello world",
        [
            ("guarded", "SelfHost", True, BOTH),
            ("memory", "absence tests, Vary, memory... (floor)", False, BOTH),
        ],
    ),
    "starlette": (
        "Starlette hello (ASGI)",
        [
            ("guarded", "SelfHostASGIMiddleware", True, BOTH),
            ("unwitnessed", "the same, check_client_socket=False", True, BOTH),
            ("trustedhost", "Starlette TrustedHostMiddleware", False, BOTH),
            ("proxyheaders", "uvicorn ProxyHeadersMiddleware", False, BOTH),
            ("pass-through", "middleware awaiting the app (floor)", False, BOTH),
            ("names", "+ a set lookup per header name (floor)", False, BOTH),
            ("vary", "+ Vary added to the answer (floor)", False, BROWSER),
            ("memory", "+ memory lookups, level check (floor)", False, BOTH),
        ],
    ),
}


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind (apt-get install valgrind)")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", type=Path, help="another checkout, measured alongside")
    parser.add_argument(
        "--jobs", type=int, default=2, help="variants measured at once (counts do not change)"
    )
    arguments = parser.parse_args()
    compare = arguments.compare
    trees = [("", ROOT)] + ([(str(compare), compare.resolve())] if compare else [])
    jobs: dict[tuple[str, Path], Future[float]] = {}
    with ThreadPoolExecutor(arguments.jobs) as pool:
        for app, (_, variants) in APPS.items():
            for request in REQUESTS:
                jobs[f"{app}:bare:{request}", ROOT] = pool.submit(
                    per_request, f"{app}:bare:{request}"
                )
                for guard, _, ours, requests in variants:
                    if request not in requests:
                        continue
                    for _, package in trees if ours else trees[:1]:
                        variant = f"{app}:{guard}:{request}"
                        jobs[variant, package] = pool.submit(per_request, variant, package)
    print(f"instructions per request (callgrind, {EXTRA} requests after {BASE})\n")
    print(f"{'':24s} {'':13s} {'':38s} {'bare':>8s} {'with it':>8s} {'added':>8s} {'ratio':>6s}")
    for app, (title, variants) in APPS.items():
        for request, request_label in REQUESTS.items():
            bare = jobs[f"{app}:bare:{request}", ROOT].result()
            for guard, label, ours, requests in variants:
                if request not in requests:
                    continue
                for tree, package in trees if ours else trees[:1]:
                    measured = jobs[f"{app}:{guard}:{request}", package].result()
                    name = f"{label} ({tree[-12:]})" if tree else label
                    print(
                        f"{title:24s} {request_label:13s} {name:38s} {bare:8.0f} "
                        f"{measured:8.0f} {measured - bare:+8.0f} {measured / bare:6.3f}"
                    )
            if app == "starlette":
                witness = (
                    jobs[f"{app}:guarded:{request}", ROOT].result()
                    - jobs[f"{app}:unwitnessed:{request}", ROOT].result()
                )
                print(
                    f"{title:24s} {request_label:13s} {'the kernel witness, per request':38s} "
                    f"{'':8s} {'':8s} {witness:+8.0f}"
                )
        print()


if __name__ == "__main__":
    main()
