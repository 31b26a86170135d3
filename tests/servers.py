"""Real servers for the tests: gunicorn in a subprocess, Werkzeug in a thread.

Every helper here is a context manager that stops what it started, even when
the test body fails. Traffic goes to loopback only.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (and on ``::``, for dual-stack binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = STARTUP_TIMEOUT, process=None) -> None:
    """Block until something accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass
class Response:
    status: int
    body: str
    headers: dict[str, str]


def request(
    host: str,
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    source: str | None = None,
    timeout: float = 10.0,
) -> Response:
    """One HTTP request over a fresh connection, optionally from a chosen source address."""
    connection = http.client.HTTPConnection(
        host, port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        connection.request(method, path, headers=headers or {})
        reply = connection.getresponse()
        return Response(
            reply.status, reply.read().decode("utf-8", "replace"), dict(reply.getheaders())
        )
    finally:
        connection.close()


def unix_request(path: str, url: str = "/", headers: dict[str, str] | None = None) -> Response:
    """One HTTP/1.0 GET over a unix socket (http.client speaks TCP only)."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(path)
        client.sendall(f"GET {url} HTTP/1.0\r\nHost: localhost\r\n{lines}\r\n".encode())
        reply = b""
        while chunk := client.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return Response(int(head.split()[1]), body.decode("utf-8", "replace"), {})


@dataclass
class Server:
    """A server process started by :func:`server_process`, and its output."""

    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


Gunicorn = Server


def logs_in(log_dir: Path) -> str:
    """Every server log that :func:`server_process` wrote in ``log_dir``:
    where a refusal's full reason is read (the client is told a fixed text)."""
    return "\n".join(path.read_text(errors="replace") for path in sorted(log_dir.glob("*.log")))


def last_refusal(log_dir: Path) -> str:
    """The guard's latest refusal line in the logs of ``log_dir`` (``""`` if none)."""
    refusals = [line for line in logs_in(log_dir).splitlines() if "refused" in line]
    return refusals[-1] if refusals else ""


def gunicorn_command(*args: str) -> list[str]:
    # --no-control-socket: gunicorn 27 instances would otherwise share one path.
    return [sys.executable, "-m", "gunicorn", "--no-control-socket", *args]


@contextlib.contextmanager
def server_process(
    command: Sequence[str],
    wait_on: tuple[str, int],
    log_dir: Path,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
    wait: Callable[[subprocess.Popen], None] | None = None,
    name: str = "server",
    cwd: Path = ROOT,
) -> Iterator[Server]:
    """Start ``command`` (from ``cwd``, the project root by default), wait
    until it listens, stop it after.

    ``prefix`` runs it under another command (``ip netns exec NAME``). ``wait``
    replaces the wait for ``wait_on`` (called with the process), for a server
    whose port this process cannot reach (``tests.netns.gunicorn_in``); with a
    ``prefix`` and no ``wait``, nothing waits.
    """
    log_path = log_dir / f"{name}-{wait_on[1]}.log"
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*prefix, *command],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,  # its own process group, so that we can stop all workers
        )
    server = Server(process, log_path)
    try:
        if wait is not None:
            wait(process)
        elif not prefix:
            wait_for_port(*wait_on, process=process)
        yield server
    finally:
        stop_process_group(process)


def gunicorn(
    args: Sequence[str], *rest: Any, **options: Any
) -> contextlib.AbstractContextManager[Server]:
    """:func:`server_process` for ``gunicorn ARGS``."""
    return server_process(gunicorn_command(*args), *rest, name="gunicorn", **options)


def stop_process_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


@contextlib.contextmanager
def werkzeug_server(app, host: str = "127.0.0.1") -> Iterator[int]:
    """Werkzeug's development server (``werkzeug.serving``) in a thread; yields its port.

    ``host`` may be ``unix:///path`` (the port is then meaningless).
    """
    server = make_server(host, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextlib.contextmanager
def accepted_connection(address: str = "127.0.0.1", module=socket) -> Iterator[socket.socket]:
    """A real loopback TCP connection dialled to ``address``; yields the
    server side, as a server's environ holds it. ``module`` may be
    ``gevent.socket`` for a green socket."""
    with module.socket() as listener:
        listener.bind((address, 0))
        listener.listen()
        with module.create_connection(listener.getsockname()):
            server_side, _ = listener.accept()
            with server_side:
                yield server_side
