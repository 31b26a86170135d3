"""The guard's cost in CPU instructions, which do not vary with machine load.

    python benchmarks/instructions.py        # needs valgrind (Debian: valgrind)

Times on a shared 2-core machine wander by a few percent from run to run;
callgrind's instruction counts repeat exactly. Each variant serves N and then
N + EXTRA Flask hello-world requests (the same loop as overhead.py) under
callgrind; the difference divided by EXTRA is the cost of one request,
start-up excluded. Printed side by side: bare Flask, Flask with SelfHost,
and a trivial WSGI app bare and behind SelfHostMiddleware.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE, EXTRA = 200, 1000

LOOP = r"""
import io, sys
sys.path.insert(0, {here!r})
from overhead import gunicorn_like_environ, start_response, trivial_app
from flask import Flask
from flask_selfhost import SelfHost, SelfHostMiddleware
variant, count = sys.argv[1], int(sys.argv[2])
if variant.startswith("flask"):
    flask_app = Flask("bench")
    flask_app.get("/")(lambda: "Hello, World!")
    if variant == "flask guarded":
        SelfHost(flask_app)
    app = flask_app.wsgi_app
else:
    app = SelfHostMiddleware(trivial_app) if variant == "wsgi guarded" else trivial_app
environ = gunicorn_like_environ("127.0.0.1", None)
for _ in range(count):
    for _ in app(dict(environ, **{{"wsgi.input": io.BytesIO()}}), start_response):
        pass
"""


def instructions(variant: str, count: int) -> int:
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            LOOP.format(here=str(HERE)),
            variant,
            str(count),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # dict probing, so counts, repeat exactly
    )
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def per_request(variant: str) -> float:
    return (instructions(variant, BASE + EXTRA) - instructions(variant, BASE)) / EXTRA


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind (apt-get install valgrind)")
    print(f"instructions per request (callgrind, {EXTRA} requests after {BASE})\n")
    print(f"{'':24s} {'bare':>10s} {'guarded':>10s} {'added':>8s} {'ratio':>7s}")
    for name in ("wsgi", "flask"):
        bare, guarded = per_request(f"{name} bare"), per_request(f"{name} guarded")
        label = "trivial WSGI app" if name == "wsgi" else "Flask hello world"
        print(
            f"{label:24s} {bare:10.0f} {guarded:10.0f} {guarded - bare:8.0f} {guarded / bare:7.3f}"
        )


if __name__ == "__main__":
    main()
