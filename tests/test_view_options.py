"""A ``local_only`` view's own options under a guard that refuses first.

With ``SelfHost`` registered (Flask or Quart), or ``SelfHostMiddleware``
around a Flask app, the app-wide guard refuses another host before the view
runs. The view's response options (``refuse_status``, ``refuse_body``) must
still answer that refusal: a user who picks 404 to hide an endpoint must
not get a 403 that says it is there. Any other option of the view can only
make it stricter: a request must pass the app-wide guard and the view.

Flask's test client and Quart scopes here; a real gunicorn answering another
host (a network namespace) at the end.
"""

from __future__ import annotations

import logging
import sys

import pytest
from flask import Flask

from flask_selfhost import SelfHost, SelfHostMiddleware, local_only

#: Scopes written by hand name connections that do not exist (see the fixture).
pytestmark = pytest.mark.usefixtures("made_up_connections")

OTHER_HOST = "10.0.0.2"


def get(app, path, remote=OTHER_HOST, method="GET", **headers):
    environ = {"REMOTE_ADDR": remote}
    return app.test_client().open(path, method=method, environ_base=environ, headers=headers)


def flask_app(**extension) -> Flask:
    app = Flask(__name__)
    SelfHost(app, **extension)

    @app.get("/hidden")
    @local_only(refuse_status=404)
    def hidden():
        return "hidden"

    @app.get("/worded")
    @local_only(refuse_body="not here\n")
    def worded():
        return "worded"

    @app.get("/plain")
    @local_only
    def plain():
        return "plain"

    @app.get("/other")
    def other():
        return "other"

    return app


def test_the_views_status_answers_the_extensions_refusal(caplog):
    caplog.set_level(logging.WARNING, logger="flask_selfhost")
    app = flask_app()
    assert get(app, "/hidden").status_code == 404
    assert get(app, "/hidden", remote="127.0.0.1").status_code == 200
    # One refusal, logged once, by the app-wide guard (beside, in a fresh
    # process, the start-up line that the test client gives no socket).
    (record,) = [
        r
        for r in caplog.records
        if r.name == "flask_selfhost" and r.getMessage().startswith("selfhost=refused")
    ]
    assert record.getMessage().startswith(
        "selfhost=refused method=GET path=/hidden remote=10.0.0.2 "
    )
    assert "rule=source" in record.getMessage()


def test_the_views_body_answers_the_extensions_refusal():
    response = get(flask_app(), "/worded")
    assert (response.status_code, response.text) == (403, "not here\n")


def test_other_views_and_unknown_paths_keep_the_extensions_options():
    app = flask_app(refuse_status=451)
    assert get(app, "/hidden").status_code == 404
    assert get(app, "/worded").status_code == 451  # only its body is its own
    assert get(app, "/worded").text == "not here\n"
    for path in ("/plain", "/other", "/nothing", "/hidden/"):
        assert get(app, path).status_code == 451
    assert get(app, "/hidden", method="POST").status_code == 451  # a 405: not the view


def test_the_views_status_goes_through_the_apps_error_handlers():
    app = flask_app()

    @app.errorhandler(404)
    def not_found(error):
        decision = getattr(error, "selfhost_decision", None)
        return f"no such page ({decision.rule if decision is not None else 'route'})", 404

    response = get(app, "/hidden")
    assert (response.status_code, response.text) == (404, "no such page (source)")


def test_the_middleware_around_flask_answers_with_the_views_options():
    app = Flask(__name__)

    @app.get("/hidden")
    @local_only(refuse_status=404, refuse_body="gone\n")
    def hidden():
        return "hidden"

    @app.get("/other")
    def other():
        return "other"

    app.wsgi_app = SelfHostMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    response = get(app, "/hidden")
    assert (response.status_code, response.text) == (404, "gone\n")
    assert get(app, "/other").status_code == 403
    assert get(app, "/hidden", remote="127.0.0.1").text == "hidden"


def test_verdict_options_of_a_view_only_make_it_stricter():
    """Looser options on the view let in nothing the extension refuses;
    stricter ones refuse what the extension lets in."""
    app = Flask(__name__)
    SelfHost(app, allowed_hosts=["mybox"])

    @app.post("/loose")
    @local_only(check_cross_site=False, allowed_hosts=["*"], unix_socket_is_local=True)
    def loose():
        return "loose"

    @app.get("/strict")
    @local_only(allowed_hosts=[], refuse_status=404)
    def strict():
        return "strict"

    this_host = "127.0.0.1"
    assert get(app, "/loose", this_host, "POST").status_code == 200
    evil = {"Origin": "http://evil.example"}
    assert get(app, "/loose", this_host, "POST", **evil).status_code == 403
    assert get(app, "/loose", this_host, "POST", Host="evil.example").status_code == 403
    assert get(app, "/strict", this_host, Host="localhost").status_code == 200
    assert get(app, "/strict", this_host, Host="mybox").status_code == 404  # the view's own rule


def test_a_look_alike_attribute_is_not_a_views_options():
    from flask_selfhost.views import VIEW_OPTIONS

    app = Flask(__name__)
    SelfHost(app)

    @app.get("/fake")
    def fake():
        return "fake"

    setattr(fake, VIEW_OPTIONS, {"refuse_status": 404})
    assert get(app, "/fake").status_code == 403


# Quart ---------------------------------------------------------------------


def test_quart_the_views_options_answer_the_extensions_refusal():
    pytest.importorskip("quart", reason="needs quart (the test extra installs it)")
    from quart import Quart, websocket

    from flask_selfhost.quart import SelfHost as QuartSelfHost
    from flask_selfhost.quart import local_only as quart_local_only

    from .test_asgi_exempt import body, call, request, status

    app = Quart(__name__)
    QuartSelfHost(app)

    @app.get("/hidden")
    @quart_local_only(refuse_status=404, refuse_body="gone\n")
    async def hidden():
        return "hidden"

    @app.get("/other")
    async def other():
        return "other"

    @app.websocket("/ws")
    @quart_local_only(refuse_status=404)
    async def socket():
        await websocket.accept()

    sent = call(app, request("/hidden"))
    assert (status(sent), body(sent)) == (404, b"gone\n")
    assert status(call(app, request("/other"))) == 403
    assert status(call(app, request("/nothing"))) == 403
    assert body(call(app, request("/hidden", client="127.0.0.1"))) == b"hidden"
    handshake = request("/ws", kind="websocket")
    handshake["extensions"] = {"websocket.http.response": {}}
    assert call(app, handshake)[0]["status"] == 404


# A real server, another host -------------------------------------------------

APP = """
from {framework} import {cls}

from {front} import SelfHost, local_only

app = {cls}(__name__)
SelfHost(app)


@app.get("/hidden")
@local_only(refuse_status=404)
def hidden():
    return "hidden"


@app.get("/other")
def other():
    return "other"
"""

#: The app's source, and the server that serves it, per front.
SERVERS = {
    "flask-gunicorn": (
        {"framework": "flask", "cls": "Flask", "front": "flask_selfhost"},
        ["gunicorn", "--no-control-socket", "-b", "0.0.0.0:8000"],
    ),
    "quart-hypercorn": (
        {"framework": "quart", "cls": "Quart", "front": "flask_selfhost.quart"},
        ["hypercorn", "-b", "0.0.0.0:8000"],
    ),
}


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("case", list(SERVERS))
def test_another_host_gets_the_views_status_from_a_real_server(tmp_path, case):
    from .netns import http_get, require_netns, server_in, two_hosts

    require_netns()
    source, server = SERVERS[case]
    pytest.importorskip(source["framework"], reason="the test extra installs it")
    (tmp_path / "hidden_app.py").write_text(APP.format(**source))
    command = [sys.executable, "-m", *server, "hidden_app:app"]
    with two_hosts() as hosts, server_in(hosts.server_ns, command, tmp_path, server[0]):
        assert http_get(hosts.client_ns, hosts.server_ip4, 8000, "/hidden")[0] == 404
        assert http_get(hosts.client_ns, hosts.server_ip4, 8000, "/other")[0] == 403
        assert http_get(hosts.server_ns, "127.0.0.1", 8000, "/hidden") == (200, "hidden")


def test_a_status_without_a_werkzeug_class_is_answered_not_a_500(monkeypatch):
    """Werkzeug 2.x has no exception class for 421: the refusal is still a
    421 with the plain body, not a 500."""
    import werkzeug.exceptions

    monkeypatch.delitem(werkzeug.exceptions.default_exceptions, 421)
    app = Flask(__name__)
    SelfHost(app, refuse_status=421)

    @app.get("/")
    def index():
        return "ok"

    response = app.test_client().get("/", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 421
    assert response.get_data(as_text=True) == "Misdirected Request\n"
    assert response.headers["Cache-Control"] == "no-store"
