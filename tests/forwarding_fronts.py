"""Every front, sent a loopback request that carries one forwarding header.

:func:`outcome` builds a fresh guard of one front, optionally warms it with
a plain loopback request (which the full rules grant and the fast paths
then remember), and sends ``GET /admin`` from ``127.0.0.1`` with the header
set to ``127.0.0.1``. It reports the decision the guard logged (or
returned), never the body. ``tests/test_forwarding_headers.py`` runs it in
process, and in a subprocess on a copy of the package whose header list was
changed: it imports whichever ``flask_selfhost`` comes first on the path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

#: Fronts with a memory of grants: each is asked warm and cold.
REMEMBERING_FRONTS = ("wsgi", "flask", "asgi", "quart")
#: Fronts without one (the FastAPI dependency judges every request; the
#: rules' entry points remember nothing that they read themselves).
OTHER_FRONTS = ("fastapi", "evaluate", "judge")
FRONTS = REMEMBERING_FRONTS + OTHER_FRONTS

CLIENT = "127.0.0.1"
HOST = "localhost:8000"


class Decisions(logging.Handler):
    """The decisions the guard logs, in order."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.decisions: list[Any] = []

    def emit(self, record: logging.LogRecord) -> None:
        decision = getattr(record, "selfhost_decision", None)
        if decision is not None:
            self.decisions.append(decision)


def scope(header: str | None) -> dict[str, Any]:
    """An HTTP/1.1 scope from 127.0.0.1, as uvicorn makes it."""
    headers = [(b"host", HOST.encode())]
    if header is not None:
        headers.append((header.lower().encode("ascii"), CLIENT.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": "/admin",
        "raw_path": b"/admin",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "client": (CLIENT, 50000),
        "server": ("127.0.0.1", 8000),
        "headers": headers,
        "extensions": {},
    }


def asgi_status(app: Any, header: str | None) -> int:
    """Run ``app`` on one request; the status it answered."""
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the app answers
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope(header), receive, send), 10))
    return int(sent[0]["status"])


def wsgi_request(header: str | None) -> dict[str, Any]:
    """Werkzeug's test request arguments for the same request."""
    headers = {"Host": HOST} if header is None else {"Host": HOST, header: CLIENT}
    return {"headers": headers, "environ_base": {"REMOTE_ADDR": CLIENT}}


def build(front: str) -> tuple[Callable[[str | None], int], Callable[[], bool | None]]:
    """A fresh guard of ``front``: a function that sends a request (with a
    header or without) and returns the status, and one that says whether the
    guard's memory holds a grant for :data:`CLIENT` (``None``: no memory)."""
    if front == "wsgi":
        from werkzeug.test import Client

        from flask_selfhost import SelfHostMiddleware

        def plain_app(environ: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"admin"]

        guarded = SelfHostMiddleware(plain_app)
        client = Client(guarded)
        return (
            lambda header: client.get("/admin", **wsgi_request(header)).status_code,
            lambda: CLIENT in guarded.options.accepted.remotes,
        )
    if front == "flask":
        from flask import Flask

        from flask_selfhost import SelfHost

        flask_app = Flask(__name__)
        flask_app.add_url_rule("/admin", "admin", lambda: "admin")
        SelfHost(flask_app)
        flask_client = flask_app.test_client()
        return (
            lambda header: flask_client.get("/admin", **wsgi_request(header)).status_code,
            lambda: CLIENT in flask_app.wsgi_app.options.accepted.remotes,  # type: ignore[attr-defined]
        )
    if front == "asgi":
        from flask_selfhost.asgi import SelfHostASGIMiddleware

        async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"admin"})

        middleware = SelfHostASGIMiddleware(asgi_app)
        return (
            lambda header: asgi_status(middleware, header),
            lambda: CLIENT in middleware.options.accepted.remotes,
        )
    if front == "quart":
        from quart import Quart

        from flask_selfhost.quart import SelfHost as QuartSelfHost

        quart_app = Quart(__name__)
        quart_app.add_url_rule("/admin", "admin", lambda: "admin")
        QuartSelfHost(quart_app)
        return (
            lambda header: asgi_status(quart_app, header),
            lambda: CLIENT in quart_app.asgi_app.options.accepted.remotes,  # type: ignore[attr-defined]
        )
    if front == "fastapi":
        from fastapi import Depends, FastAPI

        from flask_selfhost.fastapi import local_only

        api = FastAPI()
        api.get("/admin", dependencies=[Depends(local_only())])(lambda: {"admin": True})
        return lambda header: asgi_status(api, header), lambda: None
    raise ValueError(f"unknown front {front!r}")


def rules_decision(front: str, header: str) -> Any:
    """The decision of the rules' entry points, for the WSGI environ or the
    ASGI scope of the same request."""
    if front == "evaluate":
        from werkzeug.test import EnvironBuilder

        from flask_selfhost import Options, evaluate

        environ = EnvironBuilder("/admin", **wsgi_request(header)).get_environ()
        return evaluate(environ, Options())
    from flask_selfhost.guard import judge
    from flask_selfhost.scope import facts_from_scope

    return judge(facts_from_scope(scope(header)))


def outcome(front: str, header: str, warm: bool) -> dict[str, Any]:
    """What ``front`` decided for a loopback request carrying ``header``:
    ``allowed``, ``rule``, ``reason`` of the decision, ``status`` answered,
    and (when ``warm``) whether the plain request before it was granted and
    remembered."""
    if front in ("evaluate", "judge"):
        decision = rules_decision(front, header)
        return {"allowed": decision.allowed, "rule": decision.rule, "reason": decision.reason}
    logger = logging.getLogger("flask_selfhost")
    handler, level = Decisions(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # the fast paths log a grant at DEBUG only
    try:
        send, remembered = build(front)
        result: dict[str, Any] = {}
        if warm:
            result["warm_status"] = send(None)
            result["remembered"] = remembered()
        handler.decisions.clear()
        result["status"] = send(header)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    if len(handler.decisions) != 1:
        result["decisions"] = len(handler.decisions)  # one request, one decision
        return result
    decision = handler.decisions[0]
    return {**result, "allowed": decision.allowed, "rule": decision.rule, "reason": decision.reason}
