"""``allow_remote`` under ``SelfHostASGIMiddleware`` (Starlette, FastAPI).

The threat: an exemption wider than the one endpoint. Each test sends a
request from another host (refused by the rules) and checks that only a
request the app's own router would give to an ``allow_remote`` endpoint is
served, and that no other endpoint or middleware of the app ran for it. The
same app under uvicorn, from another network namespace, is in
``test_asgi_frameworks.py``.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("fastapi", reason="needs fastapi (the test extra installs it)")

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, Router, WebSocketRoute

from flask_selfhost import allow_remote
from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.asgi import allow_remote as asgi_allow_remote

from . import fastapi_app

#: Scopes written by hand name connections that do not exist (see the fixture).
pytestmark = pytest.mark.usefixtures("made_up_connections")

OTHER_HOST, THIS_HOST = "10.0.0.2", "192.0.2.7"


def request(path, client=OTHER_HOST, kind="http", method="GET", **headers):
    """A scope as uvicorn makes it, for a server listening on THIS_HOST."""
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "ws" if kind == "websocket" else "http",
        "client": (client, 50000),
        "server": (THIS_HOST, 8000),
        "headers": [(b"host", b"localhost:8000")]
        + [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()],
        "extensions": {},
    }


def call(app, scope):
    """Run ``app`` on ``scope`` (one request, then a disconnect): what it sent."""
    sent, first = [], [True]

    async def receive():
        if first[0]:
            first[0] = False
            if scope["type"] == "websocket":
                return {"type": "websocket.connect"}
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(0.1)
        if scope["type"] == "websocket":
            return {"type": "websocket.disconnect", "code": 1000}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return sent


def status(sent):
    kind = sent[0]["type"]
    return sent[0]["status"] if kind.endswith("response.start") else kind


def body(sent):
    return b"".join(m.get("body", b"") for m in sent if m["type"].endswith("body"))


@pytest.fixture(autouse=True)
def nothing_ran():
    fastapi_app.ran.clear()
    yield
    # No test here sends a request that a non-exempt endpoint may answer.
    assert fastapi_app.ran == []


def test_allow_remote_is_the_same_mark_for_every_front():
    assert asgi_allow_remote is allow_remote


@pytest.mark.parametrize(
    ("path", "method", "expected"),
    [
        ("/healthz", "GET", 200),
        ("/healthz", "HEAD", 403),  # FastAPI routes no HEAD to a GET route: a 405
        ("/pub/health", "GET", 200),  # a route of an included APIRouter
        ("/admin", "GET", 403),
        ("/pub/secret", "GET", 403),
        ("/admin/act", "POST", 403),
        ("/healthz", "POST", 403),  # a partial match (405): not the exempt endpoint
        ("/healthz/", "GET", 403),  # a redirect, not the endpoint
        ("/nothing", "GET", 403),  # a 404 of a guarded app is a 403
        ("/docs", "GET", 403),  # FastAPI's own routes are not exempt
    ],
)
def test_another_host_reaches_only_the_exempt_routes(path, method, expected):
    assert status(call(fastapi_app.app, request(path, method=method))) == expected


def test_this_host_reaches_every_route():
    for path in ("/healthz", "/pub/health", "/admin", "/pub/secret"):
        assert status(call(fastapi_app.app, request(path, client=THIS_HOST))) == 200
    assert fastapi_app.ran == ["admin", "secret"]
    fastapi_app.ran.clear()


def test_the_exempt_endpoint_sees_its_app():
    sent = call(fastapi_app.app, request("/healthz"))
    assert status(sent) == 200 and json.loads(body(sent)) == {"ok": True, "app": True}


def test_websocket_routes():
    public = call(fastapi_app.app, request("/ws/public", kind="websocket"))
    assert public[0]["type"] == "websocket.accept"
    private = call(fastapi_app.app, request("/ws/private", kind="websocket"))
    assert private == [{"type": "websocket.close", "code": 1008}]


def test_a_cross_site_request_to_an_exempt_route_is_the_apps_choice():
    """allow_remote exempts the view from every rule, as under Flask."""
    sent = call(
        fastapi_app.app, request("/healthz", client="127.0.0.1", origin="http://evil.example")
    )
    assert status(sent) == 200


def endpoint(name):
    async def answer(request):
        return PlainTextResponse(name)

    return answer


def test_a_mounted_app_is_refused_even_with_an_exempt_endpoint():
    """Behind a Mount another app routes: unclear, so refused."""
    inner = Starlette(routes=[Route("/health", allow_remote(endpoint("inner")))])
    app = Starlette(
        routes=[
            Mount("/sub", app=inner),
            Mount("/grouped", routes=[Route("/health", allow_remote(endpoint("grouped")))]),
        ],
        middleware=[Middleware(SelfHostASGIMiddleware)],
    )
    assert status(call(app, request("/sub/health"))) == 403
    assert status(call(app, request("/grouped/health"))) == 403


def test_the_router_asked_is_the_one_below_the_guard():
    """A guard on a mounted app asks that app's router, not the outer app's
    (whose exempt /health has the path the mounted app's routing sees)."""
    inner = Starlette(routes=[Route("/health", endpoint("inner, not exempt"))])
    outer = Starlette(
        routes=[
            Route("/health", allow_remote(endpoint("outer"))),
            Mount("/sub", app=SelfHostASGIMiddleware(inner)),
        ]
    )
    assert status(call(outer, request("/sub/health"))) == 403
    assert status(call(outer, request("/sub/health", client=THIS_HOST))) == 200


class Rewrite:
    """Middleware of the app's own that sends /healthz to /admin."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/healthz":
            fastapi_app.ran.append("rewrite")
            scope = {**scope, "path": "/admin", "raw_path": b"/admin"}
        await self.app(scope, receive, send)


def test_middleware_between_the_guard_and_the_router_is_skipped():
    """What was checked is what runs: middleware of the app's own (which
    could reroute) does not run for a refused request to an exempt route."""
    api = FastAPI()

    @api.get("/healthz")
    @allow_remote
    def healthz():
        return "healthz"

    api.get("/admin")(fastapi_app.admin)
    api.add_middleware(Rewrite)  # inside the guard
    api.add_middleware(SelfHostASGIMiddleware)
    sent = call(api, request("/healthz"))
    assert status(sent) == 200 and json.loads(body(sent)) == "healthz"
    # This host is not refused: its request goes through the app's middleware.
    sent = call(api, request("/healthz", client=THIS_HOST))
    assert json.loads(body(sent)) == {"admin": True}
    fastapi_app.ran.clear()


def test_wrapping_the_app_directly():
    guarded = SelfHostASGIMiddleware(fastapi_app.api)
    sent = call(guarded, request("/healthz"))
    assert status(sent) == 200 and json.loads(body(sent))["app"] is True
    assert status(call(guarded, request("/admin"))) == 403
    router = Router(routes=[Route("/health", allow_remote(endpoint("router")))])
    assert status(call(SelfHostASGIMiddleware(router), request("/health"))) == 200


def test_a_router_with_its_own_middleware_is_refused():
    router = Router(
        routes=[Route("/health", allow_remote(endpoint("router")))],
        middleware=[Middleware(Rewrite)],
    )
    assert status(call(SelfHostASGIMiddleware(router), request("/health"))) == 403


def test_an_asgi_app_without_a_router_has_no_exempt_routes():
    async def app(scope, receive, send):
        fastapi_app.ran.append("plain")

    allow_remote(app)  # an app is no endpoint: nothing routes to it
    assert status(call(SelfHostASGIMiddleware(app), request("/health"))) == 403


@pytest.mark.parametrize(
    "odd",
    [
        {"path": None},
        {"path": b"/healthz"},
        {"method": None},
        {"type": "websocket", "path": 7},
    ],
)
def test_odd_scopes_are_refused_never_an_error(odd):
    scope = {**request("/healthz"), **odd}
    assert status(call(fastapi_app.app, scope)) in (403, "websocket.close")


def test_an_allowed_request_does_no_routing(monkeypatch):
    """The exemption costs nothing on the common path: routing happens only
    for a refused request."""
    calls = []
    monkeypatch.setattr(SelfHostASGIMiddleware, "exempt_app", lambda self, s: calls.append(s))
    guard = SelfHostASGIMiddleware(Starlette(routes=[Route("/health", endpoint("x"))]))
    assert status(call(guard, request("/health", client=THIS_HOST))) == 200
    assert calls == []
    assert status(call(guard, request("/health"))) == 403
    assert len(calls) == 1


def test_a_websocket_route_of_a_plain_starlette_app():
    async def socket(websocket):
        await websocket.accept()
        await websocket.close()

    async def other(websocket):
        fastapi_app.ran.append("other")

    app = Starlette(
        routes=[WebSocketRoute("/ws", allow_remote(socket)), WebSocketRoute("/other", other)],
        middleware=[Middleware(SelfHostASGIMiddleware)],
    )
    assert call(app, request("/ws", kind="websocket"))[0]["type"] == "websocket.accept"
    assert call(app, request("/other", kind="websocket"))[0] == {
        "type": "websocket.close",
        "code": 1008,
    }


def test_an_endpoint_class_is_exempt_by_its_own_mark_only():
    from starlette.endpoints import HTTPEndpoint

    @allow_remote
    class Health(HTTPEndpoint):
        async def get(self, request):
            return PlainTextResponse("health")

    class Admin(Health):  # inherits the code, not the exemption
        async def get(self, request):
            fastapi_app.ran.append("admin class")
            return PlainTextResponse("admin")

    app = Starlette(
        routes=[Route("/health", Health), Route("/admin", Admin)],
        middleware=[Middleware(SelfHostASGIMiddleware)],
    )
    assert body(call(app, request("/health"))) == b"health"
    assert status(call(app, request("/admin"))) == 403
