"""More attacks on the ASGI front: what another host or a hostile page may try.

Each test is an attack that must be refused (or an odd input that must get
the full rules' answer), in process; the real-server attacks from another
network namespace are at the end.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason="needs fastapi (the test extra installs it)")

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket

from flask_selfhost import allow_remote
from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.fastapi import local_only

from .test_asgi_exempt import THIS_HOST, body, call, request, status


def rerouting_app() -> tuple[FastAPI, list[str]]:
    """A FastAPI app with a public listing, a local-only delete and a
    function middleware (``@app.middleware("http")``) that overrides the
    method, as many apps do for HTML forms; the guard outside it."""
    api, ran = FastAPI(), []

    @api.get("/items")
    @allow_remote
    def items() -> str:
        return "items"

    @api.delete("/items")
    def delete_items() -> str:
        ran.append("delete")
        return "deleted"

    @api.middleware("http")
    async def method_override(request: Request, call_next):
        override = request.headers.get("x-http-method-override")
        if override:
            request.scope["method"] = override.upper()
        return await call_next(request)

    api.add_middleware(SelfHostASGIMiddleware)
    return api, ran


def test_a_function_middleware_cannot_reroute_an_exempt_request():
    """``@app.middleware("http")`` is Starlette's BaseHTTPMiddleware running
    the app's function: app code that could reroute, so it is skipped like
    any middleware of the app's own, and the exempt endpoint is what runs."""
    api, ran = rerouting_app()
    sent = call(api, request("/items", x_http_method_override="DELETE"))
    assert status(sent) == 200 and json.loads(body(sent)) == "items"
    assert ran == []
    # This host's requests still go through the app's middleware.
    sent = call(api, request("/items", client=THIS_HOST, x_http_method_override="DELETE"))
    assert json.loads(body(sent)) == "deleted" and ran == ["delete"]


def test_local_only_guards_websocket_routes():
    """``Depends(local_only())`` on a router's WebSocket route (the docs'
    ``APIRouter(dependencies=[...])``): this host's handshake is accepted,
    another host's refused, and never an error."""
    api, router = FastAPI(), APIRouter(dependencies=[Depends(local_only())])

    @router.websocket("/ws")
    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    api.include_router(router)
    denial = {"websocket.http.response": {}}
    for client in (THIS_HOST, "127.0.0.1"):
        scope = {**request("/ws", client=client, kind="websocket"), "extensions": denial}
        assert status(call(api, scope)) == "websocket.accept"
    scope = {**request("/ws", kind="websocket"), "extensions": denial}
    assert status(call(api, scope)) == 403
    assert call(api, request("/ws", kind="websocket")) == [
        {"type": "websocket.close", "code": 1008, "reason": ""}
    ]
