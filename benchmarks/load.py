"""Load from two hosts at once: the guard stays right under concurrency.

The threat: a guard that is right for one request at a time but wrong under
load (a shared cache, a socket mixed up between workers, a 500 when workers
are busy). This drives the guarded demo (``demo_app:app`` under gunicorn,
several workers, bound to ``[::]``) from *this host* (inside the server
namespace: loopback and the host's own addresses, IPv4 and IPv6) and from
*another host* (the client namespace, over a veth link) at the same time,
for a bounded time and a bounded number of requests, then does the same to
the unguarded app (``demo_app:unguarded_app``) in the same run.

Every guarded response to this host must be 200 and every one to the other
host 403, with no 5xx and no connection errors; the unguarded app answers
200 to both. It prints requests per second side by side (both hosts at
once, then this host alone, where guarded and unguarded do the same work),
and exits 1 when a response was wrong. Needs root and iproute2 (it builds
two network namespaces with ``tests.netns`` and removes them after)::

    sudo python benchmarks/load.py                         # 10 s per row
    python benchmarks/load.py --seconds 2 --quick --json   # what the test runs

The load generator is pure Python: threads, one raw socket per request
(gunicorn's sync workers close every connection anyway). Its own CPU cost is
part of the figures, so compare the two rows, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PORT = 8000
PATH = "/admin"
EXPECTED = {
    "guarded": {"this_host": "200", "other_host": "403"},
    "unguarded": {"this_host": "200", "other_host": "200"},
}
#: Each app runs twice, in this order, half the time each: a machine that
#: slows down (or warms up) during the run then weighs on both alike.
ORDER = ("guarded", "unguarded", "unguarded", "guarded")


# The load generator: runs inside one namespace --------------------------


def one_request(host: str, port: int, timeout: float) -> str:
    """One GET over a fresh connection, Host header as a browser would send
    it for this address; the status code as text."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = f"GET {PATH} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(request.encode())
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    status_line = received.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/"):
        raise ValueError(f"not an HTTP response: {received[:60]!r}")
    return status_line[1].decode()


def drive(targets: list[str], port: int, seconds: float, max_requests: int, threads: int) -> dict:
    """Send requests to ``targets`` in turn from ``threads`` threads until the
    time or the request budget runs out; count statuses and errors."""
    budget = itertools.count()  # next() is atomic under the GIL
    deadline = time.monotonic() + seconds
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(offset: int) -> None:
        mine: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        for sent in itertools.count(offset):
            if time.monotonic() >= deadline or next(budget) >= max_requests:
                break
            try:
                mine[one_request(targets[sent % len(targets)], port, timeout=10)] += 1
            except (OSError, ValueError) as error:
                failed[type(error).__name__] += 1
        with lock:
            statuses.update(mine)
            errors.update(failed)

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    total = sum(statuses.values()) + sum(errors.values())
    return {
        "targets": targets,
        "total": total,
        "seconds": round(elapsed, 3),
        "per_second": round(total / elapsed, 1) if elapsed else 0.0,
        "statuses": dict(statuses),
        "errors": dict(errors),
    }


# The orchestrator: namespaces, gunicorn, two generators at once -----------


def measure(
    mode: str, seconds: float, args: argparse.Namespace, hosts, log_dir: Path, only_this_host: bool
) -> dict:
    """Run gunicorn with the ``mode`` app and load it from both hosts at once
    (or from this host only); the generators' counts, per side."""
    from tests.netns import gunicorn_in, ns_command

    app = "demo_app:app" if mode == "guarded" else "demo_app:unguarded_app"
    server_args = ["-b", f"[::]:{PORT}", "-w", str(args.workers), app]
    sides = {
        "this_host": (hosts.server_ns, ["127.0.0.1", "::1", hosts.server_ip4, hosts.server_ip6]),
        "other_host": (hosts.client_ns, [hosts.server_ip4, hosts.server_ip6]),
    }
    if only_this_host:
        del sides["other_host"]
    with gunicorn_in(hosts.server_ns, server_args, PORT, log_dir) as server:
        generators = {
            side: subprocess.Popen(
                ns_command(
                    ns,
                    *[sys.executable, __file__, "--drive", ",".join(targets)],
                    *["--seconds", str(seconds), "--max-requests", str(args.max_requests)],
                    *["--threads", str(args.threads)],
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            for side, (ns, targets) in sides.items()
        }
        results = {}
        for side, process in generators.items():
            output, _ = process.communicate(timeout=seconds + 120)
            if process.returncode != 0:
                raise RuntimeError(f"the {side} load generator failed ({process.returncode})")
            results[side] = json.loads(output)
    results["server_log_tail"] = server.log()[-2000:]
    return results


def combine(parts: list[dict]) -> dict:
    """One result from several runs of the same app: counts and time add up."""
    combined: dict = {"runs": len(parts), "server_log_tail": parts[-1]["server_log_tail"]}
    for side in ("this_host", "other_host"):
        runs = [part[side] for part in parts if side in part]
        if not runs:
            continue
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for run in runs:
            statuses.update(run["statuses"])
            errors.update(run["errors"])
        total = sum(run["total"] for run in runs)
        seconds = sum(run["seconds"] for run in runs)
        combined[side] = {
            "targets": runs[0]["targets"],
            "total": total,
            "seconds": round(seconds, 3),
            "per_second": round(total / seconds, 1) if seconds else 0.0,
            "statuses": dict(statuses),
            "errors": dict(errors),
        }
    return combined


def wrong_responses(mode: str, result: dict) -> list[str]:
    """What broke the rule in one run (empty when every response was right)."""
    problems = []
    for side, expected in EXPECTED[mode].items():
        counts = result.get(side)
        if counts is None:
            continue
        if counts["total"] == 0:
            problems.append(f"{mode}, {side}: no requests were made")
        for status, number in counts["statuses"].items():
            if status != expected:
                problems.append(f"{mode}, {side}: {number} x {status}, expected {expected}")
        for error, number in counts["errors"].items():
            problems.append(f"{mode}, {side}: {number} x {error}")
    return problems


RUNS = {
    "guarded": "both hosts at once, guarded",
    "unguarded": "both hosts at once, unguarded",
    "guarded_this_host_only": "this host only, guarded",
    "unguarded_this_host_only": "this host only, unguarded",
}


def print_table(report: dict) -> None:
    print(
        f"GET {PATH}, {report['workers']} gunicorn workers, {report['seconds']} s per row "
        "(two runs of half that, in the order guarded, unguarded, unguarded, guarded)"
    )
    print(f"{'run':<30} {'this host req/s':>15} {'other host req/s':>16} {'total':>7}  responses")
    for name, title in RUNS.items():
        run = report.get(name)
        if run is None:
            continue
        sides = [(side, run[side]) for side in ("this_host", "other_host") if side in run]
        rates = {side: counts["per_second"] for side, counts in sides}
        counts = "; ".join(
            f"{side.replace('_', ' ')}: {counts['statuses']}, errors {counts['errors'] or 0}"
            for side, counts in sides
        )
        other = f"{rates['other_host']:>16.1f}" if "other_host" in rates else f"{'-':>16}"
        print(
            f"{title:<30} {rates['this_host']:>15.1f} {other} {sum(rates.values()):>7.1f}  {counts}"
        )
    print(
        "(The guard's cost on allowed requests: compare the two 'this host only' rows. "
        "With both hosts, the guarded app answers the other host with a cheap 403.)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per app (default 10)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="per host, per app")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--threads", type=int, default=8, help="client threads per host")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--quick", action="store_true", help="skip the 'this host only' runs (the test uses this)"
    )
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # internal: be one generator
    args = parser.parse_args()

    if args.drive:
        targets = args.drive.split(",")
        print(json.dumps(drive(targets, PORT, args.seconds, args.max_requests, args.threads)))
        return 0

    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("needs root and iproute2 (ip): it builds two network namespaces", file=sys.stderr)
        return 2
    from tests.netns import two_hosts

    report: dict = {"workers": args.workers, "seconds": args.seconds}
    with two_hosts() as hosts, tempfile.TemporaryDirectory() as log_dir:
        for suffix, only_this_host in (("", False), ("_this_host_only", True)):
            if only_this_host and args.quick:
                continue
            parts: dict[str, list[dict]] = {}
            for mode in ORDER:
                result = measure(mode, args.seconds / 2, args, hosts, Path(log_dir), only_this_host)
                parts.setdefault(mode, []).append(result)
            for mode, results in parts.items():
                report[mode + suffix] = combine(results)
    problems = [
        problem
        for name, run in report.items()
        if isinstance(run, dict)
        for problem in wrong_responses(name.split("_")[0], run)
    ]
    report["problems"] = problems
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
        for problem in problems:
            print("WRONG:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
