"""
Self-host guard for single FastAPI routes
=========================================

:class:`~flask_selfhost.asgi.SelfHostASGIMiddleware` guards a whole app
(``api.add_middleware(SelfHostASGIMiddleware)``). To guard only some routes,
use :func:`local_only` as a dependency; it applies the same rules to the
request's scope and refuses with an ``HTTPException`` (FastAPI renders it,
through any handler the app registered).

.. code-block:: python

    from fastapi import Depends, FastAPI
    from flask_selfhost.fastapi import local_only

    api = FastAPI()

    @api.get("/admin", dependencies=[Depends(local_only())])
    def admin():
        return {"admin": True}

    # or every route of a router: APIRouter(dependencies=[Depends(local_only())])

A refused WebSocket handshake gets an HTTP 403 where the server supports the
denial-response extension, else a close before accept.

Needs FastAPI (or Starlette); the rest of the package does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException, WebSocketException
from starlette.requests import HTTPConnection

from .log import log_decision
from .options import Options
from .respond import NO_STORE, POLICY_VIOLATION, can_deny_websocket
from .scope import evaluate_scope


def local_only(**options: Any) -> Callable[[HTTPConnection], None]:
    """A dependency that refuses requests that do not come from this host.

    :param options: See :class:`~flask_selfhost.options.Options`; checked now.
    """
    checked = Options.from_mapping(options)

    # HTTPConnection, not Request: FastAPI gives a Request parameter nothing
    # on a WebSocket route, and the dependency would fail for every client.
    def refuse_other_hosts(connection: HTTPConnection) -> None:
        scope = connection.scope
        decision = evaluate_scope(scope, checked)
        method = scope.get("method", "GET")  # a WebSocket handshake is a GET
        log_decision(decision, method, connection.url.path)
        if decision.allowed:
            return
        if scope.get("type") == "websocket" and not can_deny_websocket(scope):
            # The server cannot answer the handshake with HTTP: a close before
            # accept, which it answers with 403 (as the middleware does).
            raise WebSocketException(code=POLICY_VIOLATION)
        raise HTTPException(
            status_code=checked.refuse_status,
            detail=checked.body_for(decision).strip(),
            headers=dict((NO_STORE, *decision.headers)),
        )

    return refuse_other_hosts
