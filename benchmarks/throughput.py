"""Throughput under gunicorn with a keep-alive load generator, guarded against bare.

    python benchmarks/throughput.py                 # needs wrk (Debian: wrk)
    python benchmarks/throughput.py --seconds 3 --rounds 2

A Flask hello-world app runs under gunicorn (one gthread worker, so that
connections stay open between requests), once bare and once with
``SelfHost(app)``, each on its own loopback port. ``wrk`` drives each with
keep-alive connections for a bounded time; the two are measured in turns
(bare, guarded, bare, guarded, ...) so that a disturbance on this shared
machine hits both, and the median of the rounds is printed side by side.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, gunicorn  # noqa: E402

APP = """
from flask import Flask
from flask_selfhost import SelfHost

def make(guarded):
    app = Flask(__name__)
    app.get("/")(lambda: "Hello, World!")
    if guarded:
        SelfHost(app)
    return app

bare, guarded = make(False), make(True)
"""


def requests_per_second(port: int, seconds: int) -> float:
    done = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in done.stdout or "Socket errors" in done.stdout:
        sys.exit(f"wrong answers or errors under load:\n{done.stdout}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("needs wrk (apt-get install wrk)")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder_path = Path(folder)
        (folder_path / "throughput_app.py").write_text(APP)
        rates: dict[str, list[float]] = {"bare": [], "guarded": []}
        ports = {name: free_port() for name in rates}
        worker = ["--worker-class", "gthread", "--threads", "4", "--keep-alive", "30"]
        with (
            gunicorn(
                [
                    *worker,
                    "--chdir",
                    folder,
                    "--bind",
                    f"127.0.0.1:{ports['bare']}",
                    "throughput_app:bare",
                ],
                ("127.0.0.1", ports["bare"]),
                folder_path,
            ),
            gunicorn(
                [
                    *worker,
                    "--chdir",
                    folder,
                    "--bind",
                    f"127.0.0.1:{ports['guarded']}",
                    "throughput_app:guarded",
                ],
                ("127.0.0.1", ports["guarded"]),
                folder_path,
            ),
        ):
            for port in ports.values():  # warm up: imports, caches, the guard's memory
                requests_per_second(port, 1)
            for _ in range(arguments.rounds):
                for name, port in ports.items():
                    rates[name].append(requests_per_second(port, arguments.seconds))
    bare, guarded = (statistics.median(rates[name]) for name in ("bare", "guarded"))
    print(
        f"gunicorn gthread, wrk keep-alive, median of {arguments.rounds} x {arguments.seconds} s\n"
    )
    print(f"{'bare':>12s} {'guarded':>12s} {'ratio':>7s}")
    print(f"{bare:10.0f}/s {guarded:10.0f}/s {guarded / bare:7.3f}")
    print(f"\nrounds: bare {rates['bare']}, guarded {rates['guarded']}")


if __name__ == "__main__":
    main()
