"""More attacks on the ASGI front: what another host or a hostile page may try.

Each test is an attack that must be refused (or an odd input that must get
the full rules' answer), in process; the real-server attacks from another
network namespace are at the end.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sys

import pytest

pytest.importorskip("fastapi", reason="needs fastapi (the test extra installs it)")

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket

from flask_selfhost import allow_remote
from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.fastapi import local_only
from flask_selfhost.options import Options
from flask_selfhost.scope import evaluate_scope

from .test_asgi_exempt import THIS_HOST, body, call, request, status

#: Scopes written by hand name connections that do not exist (see the fixture).
pytestmark = pytest.mark.usefixtures("made_up_connections")


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
        {**COMMON, "headers": [*COMMON["headers"], (Liar(b"x-forwarded-for"), b"10.0.0.2")]},
        {**COMMON, "headers": [(b"host", LooksLocal(b"evil.example"))]},
        {**COMMON, "client": (LocalText("10.0.0.2"), 40000)},
    ],
    ids=["name", "forwarding-name", "host-value", "client"],
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


# Client headers: a server may be told to take the client from any of them.

CLIENT_HEADERS = ["X-Real-IP", "CF-Connecting-IP", "True-Client-IP", "X-Client-IP"]
CLIENT_HEADERS += ["X-Cluster-Client-IP", "Fastly-Client-IP"]


@pytest.mark.parametrize("name", CLIENT_HEADERS)
def test_a_client_header_is_a_forwarding_header_on_every_front(name):
    """daphne --proxy-headers --proxy-headers-host NAME puts that header's
    address in the client: a loopback client with it is a relayed request,
    refused without trusted proxies, on the ASGI and the WSGI fronts alike."""
    from flask_selfhost.environ import evaluate

    scope = {**COMMON, "headers": [*COMMON["headers"], (name.lower().encode(), b"127.0.0.1")]}
    assert guard_answer(scope) == 403
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000"}
    environ["HTTP_" + name.upper().replace("-", "_")] = "127.0.0.1"
    assert not evaluate(environ, Options()).allowed


@pytest.mark.parametrize("name", CLIENT_HEADERS)
def test_a_client_the_server_took_from_a_client_header_is_not_the_proxy(name):
    """trusted_proxies=['127.0.0.1'] and daphne told to read NAME: another
    host sends NAME: 127.0.0.1 (daphne's client) and X-Forwarded-For: ::1
    (the client the "proxy" names). The client was the server's doing."""
    options = Options(trusted_proxies=("127.0.0.1",))
    headers = [(b"host", b"127.0.0.1:8000"), (b"x-forwarded-for", b"::1")]
    scope = {**COMMON, "headers": headers}
    assert evaluate_scope(scope, options).allowed  # a real proxy on this host
    value = b" 127.0.0.1 , 10.0.0.2"  # daphne takes the first entry, stripped
    scope = {**COMMON, "headers": [*headers, (name.lower().encode(), value)]}
    decision = evaluate_scope(scope, options)
    assert not decision.allowed and "daphne" in decision.reason


# Real servers, attacked from another network namespace ---------------------

APP_PORT = 8000
#: The app the real servers run: the guard over a FastAPI app whose /admin
#: counts the requests that reached it; options from SELFHOST_TEST_OPTIONS.
SERVED_APP = """
import json, os
from fastapi import FastAPI
from flask_selfhost import allow_remote
from flask_selfhost.asgi import SelfHostASGIMiddleware

ran = []
api = FastAPI()

@api.get("/healthz")
@allow_remote
def healthz():
    return "ok"

@api.get("/admin")
def admin():
    ran.append("admin")
    return "admin"

@api.get("/ran")
def what_ran():
    return ran

api.add_middleware(SelfHostASGIMiddleware, **json.loads(os.environ["SELFHOST_TEST_OPTIONS"]))
app = api
"""


def raw(first: str, *headers: str) -> bytes:
    return (first + "\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode("latin-1")


@pytest.fixture
def served(tmp_path):
    """Run a server on SERVED_APP in one namespace; yield a function that
    sends raw requests to it from the other, and one that reads /ran."""
    from .netns import http_get, raw_exchange, require_netns, server_in, two_hosts

    require_netns()
    (tmp_path / "served_app.py").write_text(SERVED_APP)

    @contextlib.contextmanager
    def serve(command: list[str], **options):
        with two_hosts() as hosts:
            env = {"SELFHOST_TEST_OPTIONS": json.dumps(options)}
            with server_in(hosts.server_ns, command, tmp_path, command[2], **env):

                def attack(*payloads: bytes, pipelined: bool = False, local=False) -> list[int]:
                    """From the other host; or ``local``: from this host's
                    loopback, as a hostile page in this host's browser."""
                    ns, address = hosts.client_ns, hosts.server_ip4
                    if local:
                        ns, address = hosts.server_ns, "127.0.0.1"
                    statuses, _ = raw_exchange(ns, address, APP_PORT, payloads, pipelined, 0.15)
                    return statuses

                def ran() -> list[str]:
                    # This host by its own address: 127.0.0.1 may be the trusted proxy.
                    status, body = http_get(hosts.server_ns, hosts.server_ip4, APP_PORT, "/ran")
                    assert status == 200, body
                    return json.loads(body)

                yield hosts, attack, ran

    return serve


def daphne(*args: str) -> list[str]:
    pytest.importorskip("daphne", reason="needs daphne")
    return [sys.executable, "-m", "daphne", "-b", "0.0.0.0", "-p", str(APP_PORT), *args]


@pytest.mark.slow
@pytest.mark.root
def test_daphne_told_to_read_a_cdn_client_header(served):
    """daphne --proxy-headers --proxy-headers-host CF-Connecting-IP, as
    behind Cloudflare: another host that reaches daphne directly and sends
    CF-Connecting-IP: 127.0.0.1 is not this host."""
    command = daphne("--proxy-headers", "--proxy-headers-host", "CF-Connecting-IP")
    with served([*command, "served_app:app"]) as (hosts, attack, ran):
        host = f"Host: {hosts.server_ip4}:{APP_PORT}"
        assert attack(raw("GET /healthz HTTP/1.1", host)) == [200]
        assert attack(raw("GET /admin HTTP/1.1", host, "CF-Connecting-IP: 127.0.0.1")) == [403]
        assert ran() == []


@pytest.mark.slow
@pytest.mark.root
def test_daphne_told_to_read_x_real_ip_with_a_trusted_proxy(served):
    """daphne --proxy-headers-host X-Real-IP and trusted_proxies=['127.0.0.1']
    (nginx on this host): another host sends X-Real-IP: 127.0.0.1, which
    daphne makes the client, and X-Forwarded-For: ::1 for the "proxy" to name."""
    command = daphne("--proxy-headers", "--proxy-headers-host", "X-Real-IP", "served_app:app")
    with served(command, trusted_proxies=["127.0.0.1"]) as (hosts, attack, ran):
        host = f"Host: {hosts.server_ip4}:{APP_PORT}"
        relayed = ("X-Real-IP: 127.0.0.1", "X-Forwarded-For: ::1")
        assert attack(raw("GET /admin HTTP/1.1", host, *relayed)) == [403]
        assert ran() == []


def test_the_quart_guard_answers_the_common_request_from_its_own_memory(monkeypatch):
    """The Quart extension's guard takes the common path from the memory of
    the options it judges with (not of a default it replaced), so that a
    grant under one set of options never answers for another."""
    pytest.importorskip("quart", reason="needs quart (the test extra installs it)")
    from quart import Quart

    import flask_selfhost.asgi
    from flask_selfhost.quart import SelfHost

    app = Quart(__name__)
    SelfHost(app, allowed_hosts=["mybox"])

    @app.get("/")
    async def index() -> str:
        return "index"

    scope = {**request("/", client="127.0.0.1"), "headers": [(b"host", b"mybox:8000")]}
    assert status(call(app, scope)) == 200  # judged, and remembered

    def no_full_rules(*args):
        raise AssertionError("the common request took the full rules")

    monkeypatch.setattr(flask_selfhost.asgi, "evaluate_scope", no_full_rules)
    assert status(call(app, scope)) == 200


WS = (
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
)
LOCAL = "Host: 127.0.0.1:8000"
EVIL = "Origin: http://evil.example"


def servers() -> list:
    py = [sys.executable, "-m"]
    port = str(APP_PORT)
    return [
        pytest.param([*py, "uvicorn", "--host", "0.0.0.0", "--port", port], id="uvicorn"),
        pytest.param(
            [*py, "uvicorn", "--host", "0.0.0.0", "--port", port, "--forwarded-allow-ips", "*"],
            id="uvicorn-forwarded-all",
        ),
        pytest.param([*py, "hypercorn", "--bind", f"0.0.0.0:{port}"], id="hypercorn"),
        pytest.param([*py, "daphne", "-b", "0.0.0.0", "-p", port, "--proxy-headers"], id="daphne"),
    ]


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("command", servers())
def test_raw_attacks_on_real_servers(served, command):
    """Raw requests a server may parse in its own way: another host's
    claims to be local, and a hostile page's requests from this host's
    browser (rebinding Host, cross-site Origin, WebSocket). Each is refused,
    by the guard (403) or by the server (400); none reaches /admin."""
    pytest.importorskip(command[2], reason=f"needs {command[2]}")
    with served([*command, "served_app:app"]) as (hosts, attack, ran):
        own = f"Host: {hosts.server_ip4}:{APP_PORT}"
        refused = {403, 400}
        for payload in (
            raw("GET http://127.0.0.1:8000/admin HTTP/1.1", LOCAL),  # absolute form
            raw("GET /admin HTTP/1.0"),  # no Host at all
            raw("GET /admin HTTP/1.1", own, "X-Forwarded-For: 127.0.0.1"),
            raw("GET /admin HTTP/1.1", own, "Forwarded: for=127.0.0.1"),
            raw("GET /admin HTTP/1.1", own, "X-Real-IP: 127.0.0.1"),
            raw("GET /admin HTTP/1.1", own, *WS),
        ):
            statuses = attack(payload)
            assert statuses and set(statuses) <= refused, (payload, statuses)
        exempt_then_admin = (raw("GET /healthz HTTP/1.1", own), raw("GET /admin HTTP/1.1", own))
        for pipelined in (False, True):
            assert attack(*exempt_then_admin, pipelined=pipelined) == [200, 403]
        for payload in (
            raw("GET /admin HTTP/1.1", "Host: evil.example:8000"),  # DNS rebinding
            raw("GET /admin HTTP/1.1", LOCAL, "Host: evil.example"),
            raw("GET /admin HTTP/1.1", "HOST: evil.example"),
            raw("GET /admin HTTP/1.1", LOCAL, EVIL),
            raw("GET /admin HTTP/1.1", LOCAL, "Origin: http://127.0.0.1:8000", EVIL),
            raw("GET /admin HTTP/1.1", LOCAL, EVIL, *WS),
            raw("GET /admin HTTP/1.1", LOCAL, "Origin: null", *WS),
        ):
            statuses = attack(payload, local=True)
            assert statuses and set(statuses) <= refused, (payload, statuses)
        rebound = (raw("GET /healthz HTTP/1.1", LOCAL), raw("GET /admin HTTP/1.1", "Host: evil"))
        for pipelined in (False, True):
            assert attack(*rebound, pipelined=pipelined, local=True) == [200, 403]
        assert ran() == []
