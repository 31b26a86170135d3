"""The demo apps as the browser tests serve them, recorded.

The app's side is the only trustworthy witness of what a browser engine
sent: :func:`demo_server` serves the demo (WSGI under gunicorn, ASGI under
uvicorn or daphne), guarded or not, wrapped in a recorder outside the guard
that prints one ``SEEN`` line per request tagged ``?case=NAME``: its
headers, the answer's status and headers, a refusal's body, and the
guard's refusal lines logged while it ran. :meth:`DemoServer.wait_for`
reads them back by case.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from .servers import Server, free_port, request, server_process

#: The guard's refusal lines logged while the current tagged request runs.
_refusals: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "selfhost_case_refusals", default=None
)


class _RefusalsOfThisRequest(logging.Filter):
    """Copies each refusal line into the running request's record. A filter,
    not a handler: the guard places its lines itself when no handler is set
    up (``flask_selfhost.log``), and the test must not change where they go."""

    def filter(self, record: logging.LogRecord) -> bool:
        lines = _refusals.get()
        if lines is not None and record.levelno >= logging.WARNING:
            lines.append(record.getMessage())
        return True


def _watch_refusals() -> None:
    guard_log = logging.getLogger("flask_selfhost")
    if not any(isinstance(known, _RefusalsOfThisRequest) for known in guard_log.filters):
        guard_log.addFilter(_RefusalsOfThisRequest())


def _policy(query: str) -> str | None:
    """``policy=VALUE`` in a tagged URL: the answer gets ``Referrer-Policy: VALUE``,
    as an app that sets one sends it (added outside the guard)."""
    return parse_qs(query).get("policy", [None])[0]


def recorded_wsgi(guarded: bool = True):  # type: ignore[no-untyped-def]
    """The Flask demo (its options from ``DEMO_SELFHOST_*``), recorded."""
    from demo_app import create_app

    app = create_app(guarded)
    inner = app.wsgi_app
    _watch_refusals()

    def record(environ, start_response):  # type: ignore[no-untyped-def]
        query = environ.get("QUERY_STRING", "")
        if "case=" not in query:
            return inner(environ, start_response)
        policy, answer, lines = _policy(query), {}, []

        def start(status, headers, *rest):  # type: ignore[no-untyped-def]
            answer.update(status=int(status.split()[0]), headers=headers)
            if policy is not None:
                headers = [*headers, ("Referrer-Policy", policy)]
            return start_response(status, headers, *rest)

        token = _refusals.set(lines)
        try:
            result = inner(environ, start)
            try:
                body = b"".join(result)  # the demo's answers are small
            finally:
                getattr(result, "close", lambda: None)()
        finally:
            _refusals.reset(token)
        request_headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        seen = (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), request_headers)
        _print_seen(query, *seen, answer["status"], answer["headers"], body, lines)
        return [body]

    app.wsgi_app = record  # outside the guard (init_app wraps wsgi_app first)
    return app


def recorded_asgi(guarded: bool = True):  # type: ignore[no-untyped-def]
    """The FastAPI demo, guarded by the ASGI middleware with the options in
    ``SELFHOST_TEST_OPTIONS`` (JSON), recorded."""
    from demo_app.asgi import create_app
    from flask_selfhost.asgi import SelfHostASGIMiddleware

    app = create_app(guarded=False)
    if guarded:
        app = SelfHostASGIMiddleware(
            app, **json.loads(os.environ.get("SELFHOST_TEST_OPTIONS", "{}"))
        )
    _watch_refusals()

    async def record(scope, receive, send):  # type: ignore[no-untyped-def]
        query = scope.get("query_string", b"").decode("latin-1")
        if scope["type"] not in ("http", "websocket") or "case=" not in query:
            return await app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        seen = (scope.get("method", "GET"), scope["path"], headers)
        policy, lines, body = _policy(query), [], []
        answer: dict = {}

        async def watch(message):  # type: ignore[no-untyped-def]
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                pairs = message.get("headers", [])
                answer["status"] = message["status"]
                answer["headers"] = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs]
                if policy is not None:
                    pairs = [*pairs, (b"referrer-policy", policy.encode())]
                    message = {**message, "headers": pairs}
            elif kind.endswith("response.body"):
                body.append(message.get("body", b""))
            if "printed" not in answer and (
                kind in ("websocket.accept", "websocket.close")
                or (kind.endswith("response.body") and not message.get("more_body"))
            ):
                answer["printed"] = True
                status = {"websocket.accept": 101, "websocket.close": 403}.get(kind)
                status = answer.get("status", status)
                _print_seen(query, *seen, status, answer.get("headers", []), b"".join(body), lines)
            await send(message)

        token = _refusals.set(lines)
        try:
            return await app(scope, receive, watch)
        finally:
            _refusals.reset(token)

    return record


def _print_seen(
    query: str,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    answer: list[tuple[str, str]],
    body: bytes,
    refusals: list[str],
) -> None:
    """One ``SEEN`` line: the request's headers, the answer's status and
    headers, a refusal's body, and the guard's refusal lines for it."""
    answered: dict[str, str] = {}
    for name, value in answer:
        name = name.lower()
        answered[name] = f"{answered[name]}, {value}" if name in answered else value
    case = parse_qs(query).get("case", [""])[0]
    line = {"case": case, "method": method, "status": status, "path": path, "headers": headers}
    line.update(answer=answered, refusals=refusals)
    if status >= 400:
        line["body"] = body[:500].decode("utf-8", "replace")
    # One write per record: gunicorn's threads share the log.
    os.write(2, ("\nSEEN " + json.dumps(line) + "\n").encode())


_daphne_app = None


async def daphne_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """The guarded, recorded ASGI demo for daphne, which takes an app object
    (no factory): built at the first call, in the server's process."""
    global _daphne_app
    if _daphne_app is None:
        _daphne_app = recorded_asgi()
    await _daphne_app(scope, receive, send)


@dataclass
class DemoServer:
    """A recorded demo on a loopback port (one worker: one counter)."""

    port: int
    guarded: bool
    asgi: bool
    server: Server
    host: str = "127.0.0.1"

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def actions(self) -> int:
        """The action counter, read as this host's own script would (no Origin)."""
        reply = request(self.host, self.port, "/api/status")
        assert reply.status == 200, reply
        return int(json.loads(reply.body)["actions"])

    def log(self) -> str:
        return self.server.log()

    def seen(self, mark: int = 0) -> list[dict]:
        """The tagged requests the app got since ``mark`` (a log length)."""
        lines = self.log()[mark:].splitlines()
        return [json.loads(line[5:]) for line in lines if line.startswith("SEEN ")]

    def wait_for(self, mark: int, cases: set[str], timeout: float = 6.0) -> dict[str, list[dict]]:
        """The requests of each case since ``mark``, once every case in ``cases``
        has one, or after ``timeout`` (an engine may never send some)."""
        deadline = time.monotonic() + timeout
        while True:
            by_case: dict[str, list[dict]] = {}
            for seen in self.seen(mark):
                by_case.setdefault(seen["case"], []).append(seen)
            if cases <= by_case.keys() or time.monotonic() > deadline:
                return by_case
            time.sleep(0.1)


#: The servers :func:`demo_server` runs: the WSGI demo under gunicorn, the
#: ASGI demo under uvicorn, and under daphne (whose WebSocket scope has no
#: ``scheme``; guarded only).
SERVERS = ("gunicorn", "uvicorn", "daphne")


@contextlib.contextmanager
def demo_server(
    guarded: bool, server: str, log_dir: Path, options: dict | None = None
) -> Iterator[DemoServer]:
    """The recorded demo under ``server`` (one of :data:`SERVERS`); ``options``
    are the guard's (``allowed_hosts``, ``trusted_origins``)."""
    port = free_port()
    flag = "guarded" if guarded else "unguarded"
    env = {f"DEMO_SELFHOST_{k.upper()}": json.dumps(v) for k, v in (options or {}).items()}
    env["SELFHOST_TEST_OPTIONS"] = json.dumps(options or {})
    if server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--no-proxy-headers", "--ws", "wsproto", "--no-access-log", "--factory"]
        command.append(f"tests.recorded_demo:{'recorded_asgi' if guarded else 'unguarded_asgi'}")
    elif server == "daphne":
        assert guarded, "daphne serves the guarded demo only"
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        command.append("tests.recorded_demo:daphne_app")
    else:
        command = [sys.executable, "-m", "gunicorn", "--no-control-socket", "--bind"]
        command += [f"127.0.0.1:{port}", "--workers", "1", "--threads", "8"]
        command.append(f"tests.recorded_demo:recorded_wsgi({guarded})")
    with server_process(
        command, ("127.0.0.1", port), log_dir, env=env, name=f"{server}-{flag}"
    ) as s:
        yield DemoServer(port, guarded, server != "gunicorn", s)


def unguarded_asgi():  # type: ignore[no-untyped-def]
    return recorded_asgi(guarded=False)
