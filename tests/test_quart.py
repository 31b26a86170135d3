"""The Quart extension (``flask_selfhost.quart``): SelfHost, allow_remote,
local_only, from an ASGI scope as the servers make it.

The threat is the Flask extension's: a remote client (or another site's
page) using an app meant for this host. Each test calls the guarded Quart
app with a scope and checks the answer, and that no guarded view ran for a
refused request. The app under hypercorn, from another network namespace, is
in ``test_asgi_frameworks.py``.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("quart", reason="needs quart (the test extra installs it)")

from quart import Quart, websocket

from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.doctor import guard_of, is_guarded
from flask_selfhost.quart import SelfHost, allow_remote, exempt_views, local_only

from . import quart_app
from .test_asgi_exempt import OTHER_HOST, THIS_HOST, body, call, request, status

#: Scopes written by hand name connections that do not exist (see the fixture).
pytestmark = pytest.mark.usefixtures("made_up_connections")

PROXIED = {"x_forwarded_for": "::1"}  # the proxy relays a client on this host


@pytest.fixture(autouse=True)
def nothing_ran():
    quart_app.ran.clear()
    yield
    assert quart_app.ran == []  # no test here lets a guarded view run unchecked


@pytest.mark.parametrize(
    ("path", "method", "expected"),
    [
        ("/healthz", "GET", 200),
        ("/healthz", "HEAD", 200),  # Quart, like Flask, routes HEAD to a GET view
        ("/admin", "GET", 403),
        ("/admin/act", "POST", 403),
        ("/healthz", "POST", 403),  # a 405: not the exempt view
        ("/healthz/", "GET", 403),  # a redirect or 404, not the view
        ("/nothing", "GET", 403),  # a 404 of a guarded app is a 403
        ("/static/x.css", "GET", 403),  # Quart's own static view is not exempt
    ],
)
def test_another_host_reaches_only_the_exempt_views(path, method, expected):
    assert status(call(quart_app.app, request(path, method=method))) == expected


def test_this_host_reaches_every_view():
    # 127.0.0.1 is the configured proxy (SELFHOST_TRUSTED_PROXIES): other
    # local clients come from this host's own address, or 127.0.0.2.
    for client in (THIS_HOST, "127.0.0.2"):
        assert status(call(quart_app.app, request("/admin", client=client))) == 200
    assert quart_app.ran == ["admin", "admin"]
    quart_app.ran.clear()


def test_the_config_keys_are_honoured(logged):
    """SELFHOST_TRUSTED_PROXIES=127.0.0.1: from the proxy, the forwarded
    client is judged; without a forwarding header, the client is unknown."""
    sent = call(quart_app.app, request("/admin", client="127.0.0.1"))
    assert status(sent) == 403 and "trusted proxy but carries no forwarding" in logged()
    proxied = call(quart_app.app, request("/admin", client="127.0.0.1", **PROXIED))
    assert status(proxied) == 200
    relayed = {"x_forwarded_for": OTHER_HOST}
    assert status(call(quart_app.app, request("/admin", client="127.0.0.1", **relayed))) == 403
    # Only the configured proxy is believed.
    assert status(call(quart_app.app, request("/admin", **PROXIED))) == 403
    assert quart_app.ran == ["admin"]
    quart_app.ran.clear()
    assert guard_of(quart_app.app).trusted_proxies.unix is False
    assert {str(n) for n in guard_of(quart_app.app).trusted_proxies.networks} == {"127.0.0.1/32"}


def test_websocket_views():
    public = call(quart_app.app, request("/ws/public", kind="websocket"))
    assert public[0]["type"] == "websocket.accept"
    private = call(quart_app.app, request("/ws/private", kind="websocket"))
    assert private == [{"type": "websocket.close", "code": 1008}]
    cross_site = request("/ws/private", client="127.0.0.2", origin="http://evil.example")
    cross_site["type"], cross_site["scheme"] = "websocket", "ws"
    cross_site["extensions"] = {"websocket.http.response": {}}
    refused = call(quart_app.app, cross_site)
    assert refused[0]["type"] == "websocket.http.response.start" and status(refused) == 403


def new_app(**config):
    app = Quart(__name__)
    app.config.update(config)
    return app


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"SELFHOST_REFUSE_STATUS": 299}, "refuse_status must be"),
        ({"SELFHOST_NO_SUCH_OPTION": 1}, "unknown option(s) no_such_option"),
        ({"SELFHOST_TRUSTED_PROXIES": 7}, "trusted_proxies must be"),
    ],
)
def test_bad_config_fails_at_init_app_as_for_flask(config, error):
    with pytest.raises((TypeError, ValueError), match=re.escape(error)):
        SelfHost(new_app(**config))


def test_config_set_after_init_app_counts_from_the_first_request():
    app = guarded_views(new_app())
    SelfHost(app)
    app.config["SELFHOST_REFUSE_STATUS"] = 404
    assert status(call(app, request("/local"))) == 404
    app.config["SELFHOST_REFUSE_STATUS"] = 403  # once serving, the options stay
    assert status(call(app, request("/local"))) == 404
    assert guard_of(app).refuse_status == 404


def test_init_app_options_and_config():
    selfhost = SelfHost(refuse_status=404, refuse_body="no\n")
    app = new_app(SELFHOST_REFUSE_BODY="not here\n")
    selfhost.init_app(app)
    app.get("/admin")(quart_app.admin)
    sent = call(app, request("/admin"))
    assert status(sent) == 404 and body(sent) == b"not here\n"  # the config wins
    with pytest.raises(RuntimeError, match="already registered"):
        selfhost.init_app(app)
    assert is_guarded(app) and guard_of(app).refuse_status == 404


def test_exempt_views_are_served_past_earlier_middleware():
    """Middleware added to asgi_app before the extension could route the
    request elsewhere: for an exempt view, Quart serves it directly."""
    app = new_app()

    @app.get("/healthz")
    @allow_remote
    async def healthz():
        return "healthz"

    app.get("/admin")(quart_app.admin)
    inner = app.asgi_app

    async def rewrite(scope, receive, send):
        if scope["type"] == "http":
            quart_app.ran.append("rewrite")
            scope = {**scope, "path": "/admin", "raw_path": b"/admin"}
        await inner(scope, receive, send)

    app.asgi_app = rewrite
    SelfHost(app)
    sent = call(app, request("/healthz"))
    assert status(sent) == 200 and body(sent) == b"healthz"
    assert exempt_views(app) == ["healthz"]


def test_a_manual_guard_on_asgi_app_is_recognised():
    app = new_app()
    assert not is_guarded(app)
    app.asgi_app = SelfHostASGIMiddleware(app.asgi_app, refuse_status=404)
    assert guard_of(app).refuse_status == 404


# local_only -------------------------------------------------------------------


def guarded_views(app):
    @app.route("/local", methods=["GET", "POST"])
    @local_only
    async def local():
        return "local"

    @app.get("/sync")
    @local_only(refuse_status=404)
    def sync():
        return "sync"

    @app.get("/open")
    async def open_view():
        return "open"

    @app.websocket("/ws")
    @local_only
    async def socket():
        await websocket.accept()
        await websocket.send("hi")

    return app


def test_local_only_without_the_extension():
    app = guarded_views(new_app())
    assert status(call(app, request("/local"))) == 403
    assert status(call(app, request("/local", method="POST"))) == 403
    assert status(call(app, request("/local", client=THIS_HOST))) == 200
    assert body(call(app, request("/sync", client="127.0.0.1"))) == b"sync"
    assert status(call(app, request("/sync"))) == 404
    assert status(call(app, request("/open"))) == 200  # not guarded
    cross_site = call(app, request("/local", client="127.0.0.1", origin="http://evil.example"))
    assert status(cross_site) == 403
    assert call(app, request("/ws", kind="websocket"))[0]["type"] == "websocket.close"
    local = call(app, request("/ws", client="127.0.0.1", kind="websocket"))
    assert local[0]["type"] == "websocket.accept"


def test_local_only_takes_the_extensions_options():
    app = guarded_views(new_app(SELFHOST_REFUSE_STATUS=451))
    SelfHost(app)
    inner = app.asgi_app.app  # past the extension's guard: local_only alone judges
    assert status(call(inner, request("/local"))) == 451
    assert status(call(inner, request("/sync"))) == 404  # its own option wins


def test_local_only_refusals_go_through_error_handlers():
    app = guarded_views(new_app())

    @app.errorhandler(403)
    async def forbidden(error):
        return f"handled: {error.selfhost_decision.rule}", 403

    sent = call(app, request("/local"))
    assert status(sent) == 403 and body(sent) == b"handled: source"


def test_local_only_answers_preflights_and_adds_vary():
    app = guarded_views(new_app())
    SelfHost(app, trusted_origins=["http://localhost:3000"])
    inner = app.asgi_app.app
    preflight = request(
        "/local",
        client="127.0.0.1",
        method="OPTIONS",
        origin="http://localhost:3000",
        access_control_request_method="POST",
    )
    sent = call(inner, preflight)
    assert status(sent) == 204
    assert (b"access-control-allow-origin", b"http://localhost:3000") in sent[0]["headers"]
    plain_options = call(inner, request("/local", client="127.0.0.1", method="OPTIONS"))
    assert status(plain_options) == 200
    browser = call(inner, request("/local", client="127.0.0.1", sec_fetch_site="same-origin"))
    assert status(browser) == 200
    assert (b"vary", b"Origin, Sec-Fetch-Site") in browser[0]["headers"]
