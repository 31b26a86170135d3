"""The new option and the doctor's reading of nginx, without servers (the
real servers and proxies are in ``test_quirks.py``)."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_selfhost import SelfHost, SelfHostMiddleware
from flask_selfhost.doctor.proxies import passes_underscores
from flask_selfhost.flask_cli import status
from flask_selfhost.options import Options
from flask_selfhost.servers import FOLDS_UNDERSCORE_NAMES


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_proxy_drops_underscore_headers_is_a_bool(value):
    with pytest.raises(TypeError, match="proxy_drops_underscore_headers must be True or False"):
        Options(proxy_drops_underscore_headers=value)
    with pytest.raises(TypeError):
        SelfHostMiddleware(lambda environ, start_response: [], proxy_drops_underscore_headers=value)


@pytest.mark.parametrize(
    ("config", "passes"),
    [
        ("http {\n    underscores_in_headers on;\n}", True),
        ("server { listen 80; underscores_in_headers  on ; }", True),
        ("http {\n    # underscores_in_headers on;\n}", False),
        ("http {\n    underscores_in_headers off;\n}", False),
        ("", False),
    ],
)
def test_the_doctor_reads_underscores_in_headers(config, passes):
    assert passes_underscores(config) is passes


@pytest.mark.parametrize("drops", [False, True])
def test_status_says_what_the_option_means(drops):
    app = Flask(__name__)
    SelfHost(app, trusted_proxies="127.0.0.1", proxy_drops_underscore_headers=drops)
    output = app.test_cli_runner().invoke(status).output
    assert f"proxy_drops_underscore_headers  {drops}" in output
    if drops:
        assert "RequestHeader unset X_Forwarded_For" in output
    else:
        assert "until proxy_drops_underscore_headers=True" in output and "granian" in output


def test_a_waitress_channel_that_cannot_be_read_grants_nothing():
    """An environ marked by waitress whose channel has no request to read
    (an internal that moved): refused every time, the fast path included."""
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status[:3])

    guarded = SelfHostMiddleware(lambda environ, start_response: start_response("200 OK", []) or [])
    for _ in range(3):
        environ = {
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "localhost:8000",
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/",
            "wsgi.url_scheme": "http",
            "waitress.client_disconnected": lambda: False,  # a function: no channel
        }
        guarded(environ, start_response)
    assert statuses == ["403"] * 3


def test_the_folding_servers_are_the_measured_ones():
    """The guard's list is the one the real servers showed (test_quirks.py)."""
    from .test_quirks import FOLDING, PACKAGES

    assert {PACKAGES.get(name, name) for name in FOLDING} == FOLDS_UNDERSCORE_NAMES
