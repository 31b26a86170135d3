"""SelfHostMiddleware in front of a plain WSGI app."""

from __future__ import annotations

import logging

import pytest
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import Client

from flask_selfhost import SelfHostMiddleware

from .apps import APACHE

calls: list[str] = []


def plain_app(environ, start_response):
    calls.append(environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"secret"]


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


def get(app, path="/", remote="127.0.0.1", **environ):
    return Client(app).get(path, environ_base={"REMOTE_ADDR": remote, **environ})


def test_loopback_client_reaches_the_app():
    response = get(SelfHostMiddleware(plain_app))
    assert (response.status_code, response.text) == (200, "secret")
    assert calls == ["/"]


def test_other_host_is_refused_before_the_app_runs(logged):
    response = get(
        SelfHostMiddleware(plain_app),
        "/admin",
        remote="10.0.0.2",
        SERVER_ADDR="127.0.0.1",
        **APACHE,
    )
    assert response.status_code == 403
    assert response.mimetype == "text/plain"
    assert "(not from this host)" in response.text and "10.0.0.2" not in response.text
    assert "another host" in logged()
    assert response.headers["Cache-Control"] == "no-store"
    assert calls == []


def test_refusal_can_hide_the_endpoint():
    guarded = SelfHostMiddleware(plain_app, refuse_status=404)
    response = get(guarded, remote="10.0.0.2")
    assert (response.status_code, response.text) == (404, "Not Found\n")


def test_refusal_body_can_be_set():
    guarded = SelfHostMiddleware(plain_app, refuse_body="go away\n")
    assert get(guarded, remote="10.0.0.2").text == "go away\n"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"refuse_satus": 404}, TypeError, "unknown option.*refuse_satus.*refuse_status"),
        ({"refuse_satus": 404}, TypeError, r"refuse_satus \(did you mean refuse_status\?\)"),
        ({"trusted_proxy": "::1"}, TypeError, r"\(did you mean trusted_proxies\?\)"),
        ({"colour": "red"}, TypeError, r"unknown option\(s\) colour; known options"),
        ({"refuse_status": "404"}, ValueError, r"an int, .* got '404' \(a str, not an int\)"),
        ({"refuse_status": 200}, ValueError, "refuse_status"),
        ({"refuse_status": True}, ValueError, "refuse_status"),
        ({"refuse_body": b"bytes"}, TypeError, "refuse_body"),
    ],
)
def test_bad_options_fail_at_construction(options, error, message):
    with pytest.raises(error, match=message):
        SelfHostMiddleware(plain_app, **options)


def test_each_decision_is_logged_with_both_addresses(caplog):
    guarded = SelfHostMiddleware(plain_app)
    with caplog.at_level(logging.DEBUG, logger="flask_selfhost"):
        get(guarded, "/ok")
        get(
            guarded, "/admin\r\nfake log line", remote="10.0.0.2", SERVER_ADDR="127.0.0.1", **APACHE
        )
    allowed, refused = caplog.records
    assert allowed.levelno == logging.DEBUG and "remote=127.0.0.1" in allowed.getMessage()
    assert refused.levelno == logging.WARNING
    message = refused.getMessage()
    assert "remote=10.0.0.2 local=127.0.0.1" in message
    assert 'method=GET path="/admin' in message and "another host" in message
    assert "\n" not in message  # a hostile path cannot forge log lines
    assert refused.selfhost_decision.allowed is False


def test_allowed_requests_are_not_formatted_above_debug(caplog):
    with caplog.at_level(logging.INFO, logger="flask_selfhost"):
        get(SelfHostMiddleware(plain_app))
    assert caplog.records == []


def test_a_relayed_request_is_logged_with_the_proxy_as_peer(caplog):
    guarded = SelfHostMiddleware(plain_app, trusted_proxies=["127.0.0.1"])
    with caplog.at_level(logging.DEBUG, logger="flask_selfhost"):
        get(guarded, "/admin", HTTP_X_FORWARDED_FOR="10.0.0.2", SERVER_ADDR="127.0.0.1", **APACHE)
    message = caplog.records[-1].getMessage()
    assert "remote=10.0.0.2" in message and "peer=127.0.0.1" in message
    assert caplog.records[-1].levelno == logging.WARNING


def flask_app_with_public_health_check():
    from flask import Flask

    from flask_selfhost import allow_remote

    app = Flask(__name__)

    @app.get("/healthz")
    @allow_remote
    def healthz():
        return "ok"

    @app.get("/admin")
    def admin():
        return "admin"

    return app


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(
            lambda app: setattr(app, "wsgi_app", SelfHostMiddleware(app.wsgi_app)) or app,
            id="wsgi_app",
        ),
        pytest.param(lambda app: SelfHostMiddleware(app), id="the-app"),
        pytest.param(lambda app: SelfHostMiddleware(ProxyFix(app.wsgi_app)), id="under-proxyfix"),
    ],
)
def test_allow_remote_works_under_the_middleware(wrap):
    """A Flask app wrapped in the middleware serves its @allow_remote views
    to remote clients, as under SelfHost."""
    guarded = wrap(flask_app_with_public_health_check())
    remote = get(guarded, "/healthz", remote="10.0.0.2")
    assert (remote.status_code, remote.text) == (200, "ok")
    refused = get(guarded, "/admin", remote="10.0.0.2")
    assert refused.status_code == 403
    assert refused.mimetype == "text/plain"  # the middleware's plain refusal
    assert get(guarded, "/nothing", remote="10.0.0.2").status_code == 403
    assert get(guarded, "/admin").text == "admin"


def test_a_plain_wsgi_app_is_not_looked_into():
    guarded = SelfHostMiddleware(plain_app)
    assert get(guarded, "/healthz", remote="10.0.0.2").status_code == 403
    assert calls == []
