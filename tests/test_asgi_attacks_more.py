"""More attacks on the ASGI front: what another host or a hostile page may try.

Each test is an attack that must be refused (or an odd input that must get
the full rules' answer), in process; the real-server attacks from another
network namespace are at the end.
"""

from __future__ import annotations

import collections
import json

import pytest

pytest.importorskip("fastapi", reason="needs fastapi (the test extra installs it)")

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket

from flask_selfhost import allow_remote
from flask_selfhost.asgi import SelfHostASGIMiddleware, evaluate_scope
from flask_selfhost.fastapi import local_only
from flask_selfhost.options import Options

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


# Odd scopes: the same answer from the common path and the full rules, and
# never a pass for headers the rules cannot read.

COMMON = {
    "type": "http",
    "method": "POST",
    "path": "/",
    "scheme": "http",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 40000),
    "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*")],
}


class Liar(bytes):
    """Equal to anything, hashed as what it holds."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = bytes.__hash__


class LooksLocal(bytes):
    """Equal to, and hashed as, the remembered Host, whatever it holds."""

    def __eq__(self, other: object) -> bool:
        return other == b"127.0.0.1:8000" or bytes.__eq__(self, other)

    def __hash__(self) -> int:
        return hash(b"127.0.0.1:8000")


class LocalText(str):
    """A client address equal to, and hashed as, loopback."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("127.0.0.1")


def guard_answer(scope) -> int:
    """The status a warm guard (its memory taught the common request) sends."""
    from .test_fast_path import asgi_app, asgi_call

    guard = SelfHostASGIMiddleware(asgi_app)
    assert asgi_call(guard, COMMON)[0]["status"] == 200
    assert guard.options.accepted.remotes  # warm
    return asgi_call(guard, scope)[0]["status"]


@pytest.mark.parametrize(
    "scope",
    [
        {**COMMON, "headers": [(Liar(b"origin"), b"127.0.0.1:8000")]},
        {**COMMON, "headers": [(b"host", LooksLocal(b"evil.example"))]},
        {**COMMON, "client": (LocalText("10.0.0.2"), 40000)},
    ],
    ids=["name", "host-value", "client"],
)
def test_subclasses_that_lie_take_the_full_rules(scope):
    """A bytes or str subclass that compares as the remembered grant: the
    common path must not take it, the full rules read what it holds."""
    assert guard_answer(scope) == 403


def pairs():
    yield (b"host", b"evil.example")


@pytest.mark.parametrize(
    "headers",
    [
        collections.deque([(b"host", b"evil.example")]),  # an app reads it all the same
        pairs(),
        [("host", "evil.example")],  # a bare ASGI app may read str names
        [(b"host", b"evil.example", b"")],
        [(b"host", b"127.0.0.1:8000"), (b"origin", "http://evil.example")],
        [(b"host", b"127.0.0.1:8000"), (b"x-forwarded-for", "10.0.0.2")],
    ],
    ids=["deque", "generator", "str-name", "triple", "str-origin", "str-forwarded"],
)
def test_headers_the_rules_cannot_read_are_refused(headers):
    """A loopback client whose headers cannot be read: they may name
    another Host, Origin or client, so the request is refused, warm or not."""
    assert not evaluate_scope({**COMMON, "headers": headers}, Options()).allowed
    if not isinstance(headers, type(pairs())):  # a generator is read once
        assert guard_answer({**COMMON, "headers": headers}) == 403


def test_an_unreadable_value_spoils_the_whole_header():
    """One value that is not bytes among good ones: the header is unusable,
    not read as the good values alone (here, a trusted proxy naming loopback)."""
    options = Options(trusted_proxies=("127.0.0.1",))
    good = [(b"host", b"127.0.0.1:8000"), (b"x-forwarded-for", b"::1")]
    assert evaluate_scope({**COMMON, "headers": good}, options).allowed
    odd = [*good, (b"x-forwarded-for", "10.0.0.2")]
    assert not evaluate_scope({**COMMON, "headers": odd}, options).allowed
