"""The guard's cost in CPU instructions, which do not vary with machine load.

    python benchmarks/instructions.py        # needs valgrind (Debian: valgrind)
    python benchmarks/instructions.py --compare /path/to/older/checkout

With ``--compare``, the guarded variants are also run with the
``flask_selfhost`` of another checkout (a ``git worktree`` of an older
commit, say), in the same run, so that before and after sit side by side.

Times on a shared 2-core machine wander by a few percent from run to run;
callgrind's instruction counts repeat exactly. Each variant serves N and then
N + EXTRA Flask hello-world requests (the same loop as overhead.py) under
callgrind; the difference divided by EXTRA is the cost of one request,
start-up excluded. Printed side by side: bare Flask, Flask with SelfHost,
a trivial WSGI app bare and behind SelfHostMiddleware (beside two floors
under it, from benchmarks/wsgi_floors.py: a closure that only calls the app,
and the same after the common path's absence tests), and a Starlette hello
app bare and with SelfHostASGIMiddleware (served by an asyncio loop, as
uvicorn would call it, with its ``receive`` on a real loopback connection,
without the server), beside the same app with a
middleware that only awaits the app: the floor under any ASGI guard; then
the same app for a browser's navigation (``Sec-Fetch-*``: the full rules,
and ``Vary`` added to the answer).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASE, EXTRA = 200, 1000

sys.path.insert(0, str(ROOT))  # this checkout's flask_selfhost, installed or not
from wsgi_floors import absent_keys  # noqa: E402  (beside this script)

LOOP = r"""
import io, sys
sys.path[:0] = [{package!r}, {here!r}]
from overhead import gunicorn_like_environ, start_response, trivial_app
from flask import Flask
from flask_selfhost import SelfHost, SelfHostMiddleware
variant, count = sys.argv[1], int(sys.argv[2])
if variant.startswith("starlette"):
    import asyncio
    from asgi_apps import PassThrough, serve, starlette_hello
    import gc
    guarded = variant.endswith("guarded")
    app = starlette_hello(guarded or "pass" in variant, PassThrough if "pass" in variant else None)
    gc.collect()
    gc.disable()
    asyncio.run(serve(app, count, "browser" in variant))
    raise SystemExit
if variant.startswith("flask"):
    flask_app = Flask("bench")
    flask_app.get("/")(lambda: "Hello, World!")
    if variant == "flask guarded":
        SelfHost(flask_app)
    app = flask_app.wsgi_app
elif variant in ("wsgi pass-through", "wsgi absence tests"):
    from wsgi_floors import pass_through, with_absence_tests
    app = (pass_through if variant == "wsgi pass-through" else with_absence_tests)(trivial_app)
else:
    app = SelfHostMiddleware(trivial_app) if variant == "wsgi guarded" else trivial_app
# A real loopback connection, as gunicorn's socket: the guard asks the
# kernel for its client once, on the first request, and remembers it.
import socket
listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
accepted, _ = listener.accept()
environ = gunicorn_like_environ("127.0.0.1", accepted)
# The cyclic collector runs after a count of allocations, so its passes fall
# on different requests in different runs: thousands of instructions of
# noise on a Flask request. Requests here make no cycles; collect now, then
# leave it off.
import gc
gc.collect()
gc.disable()
for _ in range(count):
    for _ in app(dict(environ, **{{"wsgi.input": io.BytesIO()}}), start_response):
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
    return int(found.group(1)) if found else 0


CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]


def per_request(variant: str, package: Path = ROOT) -> float:
    # Once without callgrind first: a module changed since its last import is
    # compiled (and its .pyc written) by the first run only, which would
    # count thousands of instructions against the other.
    instructions(variant, 1, package, [])
    before = instructions(variant, BASE, package, CALLGRIND)
    return (instructions(variant, BASE + EXTRA, package, CALLGRIND) - before) / EXTRA


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind (apt-get install valgrind)")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", type=Path, help="another checkout, measured alongside")
    compare = parser.parse_args().compare
    trees = [("this checkout", ROOT)] + ([(f"{compare}", compare.resolve())] if compare else [])
    print(f"instructions per request (callgrind, {EXTRA} requests after {BASE})\n")
    print(f"{'':24s} {'':>14s} {'bare':>10s} {'guarded':>10s} {'added':>8s} {'ratio':>7s}")
    labels = {
        "wsgi": "trivial WSGI app",
        "flask": "Flask hello world",
        "starlette": "Starlette hello (ASGI)",
        "starlette browser": "  a browser's request",
    }
    for name, label in labels.items():
        bare = per_request(f"{name} bare")
        for tree, package in trees:
            has_asgi = (package / "flask_selfhost" / "asgi.py").exists()
            if name.startswith("starlette") and not has_asgi:
                print(f"{label:24s} {tree[-14:]:>14s} {bare:10.0f}  (no ASGI front there)")
                continue
            guarded = per_request(f"{name} guarded", package)
            print(
                f"{label:24s} {tree[-14:]:>14s} {bare:10.0f} {guarded:10.0f} "
                f"{guarded - bare:8.0f} {guarded / bare:7.3f}"
            )
        if name == "wsgi":  # the floors: a closure that only calls the app; plus the tests
            for variant, row in (
                ("wsgi pass-through", "  pass-through closure"),
                ("wsgi absence tests", f"  + {len(absent_keys())} absence tests"),
            ):
                floor = per_request(variant)
                print(
                    f"{row:24s} {'(a floor)':>14s} {bare:10.0f} "
                    f"{floor:10.0f} {floor - bare:8.0f} {floor / bare:7.3f}"
                )
        if name == "starlette":  # the floor: a middleware that only awaits the app
            floor = per_request("starlette pass-through")
            print(
                f"{'  pass-through middleware':24s} {'(the floor)':>14s} {bare:10.0f} "
                f"{floor:10.0f} {floor - bare:8.0f} {floor / bare:7.3f}"
            )


if __name__ == "__main__":
    main()
