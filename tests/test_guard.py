"""environ.evaluate: an environ in, a decision out, for any environ."""

from __future__ import annotations

import socket
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_selfhost import Options, SelfHostMiddleware, connection, evaluate, local_address, servers
from flask_selfhost.decision import CROSS_SITE, FORWARDED, HOST, SOURCE
from flask_selfhost.environ import facts_from_environ
from flask_selfhost.forwarding_syntax import ENVIRON_KEYS

from .apps import APACHE
from .servers import accepted_connection


@pytest.fixture
def tcp_connection():
    """A real loopback TCP connection, dialled to 127.0.0.2: the server side."""
    with accepted_connection("127.0.0.2") as server_side:
        yield server_side


def test_local_address_prefers_server_addr(tcp_connection):
    environ = {"SERVER_ADDR": "192.168.0.13", "gunicorn.socket": tcp_connection, **APACHE}
    assert local_address(environ) == "192.168.0.13"


@pytest.mark.parametrize("key", ["gunicorn.socket", "werkzeug.socket"])
def test_local_address_from_the_connection_socket(tcp_connection, key):
    assert local_address({key: tcp_connection}) == "127.0.0.2"


def test_server_name_is_never_the_local_address():
    assert local_address({"SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000"}) is None


def test_unix_socket_has_no_local_address(tmp_path):
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert local_address({"gunicorn.socket": left}) is None


def test_closed_or_foreign_socket_is_unknown_not_an_error():
    closed = socket.socket()
    closed.close()
    assert local_address({"gunicorn.socket": closed}) is None
    assert local_address({"gunicorn.socket": object()}) is None
    assert local_address({"SERVER_ADDR": 42, **APACHE}) == ""  # present but unusable: refused later


def test_server_software_names_are_remembered_within_a_bound():
    for number in range(3 * servers.SOFTWARE_NAMES_LIMIT):
        for _ in range(2):  # the second time from memory
            assert servers.server_name({"SERVER_SOFTWARE": f"waitress/{number}"}) == "waitress"
            assert servers.server_name({"SERVER_SOFTWARE": f"Cheroot/{number}"}) == "cheroot"
            assert servers.server_name({"SERVER_SOFTWARE": f"gunicorn/{number}"}) == ""
    assert len(servers._software_names) <= servers.SOFTWARE_NAMES_LIMIT


class FakeUwsgi:
    """uWSGI's module as a worker sees it: the options it started with, and
    the descriptor of the connection it is serving; counts what is asked."""

    def __init__(self, options):
        self._options = options
        self.fd = -1
        self.options_read = self.fds_asked = 0

    @property
    def opt(self):
        self.options_read += 1
        return self._options

    def connection_fd(self):
        self.fds_asked += 1
        return self.fd


@pytest.fixture
def install_uwsgi(monkeypatch):
    """Makes a FakeUwsgi this process's ``uwsgi`` module; forgets it after."""

    def install(options):
        module = FakeUwsgi(options)
        monkeypatch.setitem(sys.modules, "uwsgi", module)
        connection._uwsgi_speaking_http.cache_clear()
        return module

    yield install
    connection._uwsgi_speaking_http.cache_clear()


UWSGI_ENVIRON = {"uwsgi.version": b"2.0.31", "REMOTE_ADDR": "10.0.0.2", "HTTP_HOST": "localhost"}


def test_uwsgi_options_are_read_once_and_each_connection_afresh(install_uwsgi):
    """A --http-socket worker: its module and options once per process; the
    connection on every request, though the next connection may get the
    same descriptor number. Each request's facts find it once."""
    uwsgi = install_uwsgi({"http-socket": b"[::]:8000"})
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.4"):
        with accepted_connection(address) as server_side:
            uwsgi.fd = server_side.fileno()
            assert local_address(UWSGI_ENVIRON) == address
            asked = uwsgi.fds_asked
            facts = facts_from_environ(UWSGI_ENVIRON)
            assert facts.connection.local_address() == address
            assert facts.connection.peer_address() == "127.0.0.1"
            assert not facts.connection.is_unix()
            assert uwsgi.fds_asked == asked + 1
            refused = evaluate(UWSGI_ENVIRON)
            assert (refused.allowed, refused.local_addr) == (False, address)
            assert server_side.getsockname()[0] == address  # the server's descriptor stays open
    assert uwsgi.options_read == 1


@pytest.mark.parametrize(
    ("options", "environ"),
    [
        ({"http-socket": b"[::]:8000", "socket": b"127.0.0.1:9000"}, UWSGI_ENVIRON),
        ({"uwsgi-socket": b"127.0.0.1:9000"}, UWSGI_ENVIRON),
        ({"http-socket": b"[::]:8000"}, {**UWSGI_ENVIRON, "UWSGI_ROUTER": "http"}),
    ],
)
def test_uwsgi_behind_nginx_or_its_router_has_no_witness(install_uwsgi, options, environ):
    uwsgi = install_uwsgi(options)
    with accepted_connection("127.0.0.2") as server_side:
        uwsgi.fd = server_side.fileno()
        assert local_address(environ) is None
        assert evaluate(environ).local_addr is None


def test_loopback_client_does_not_need_the_socket():
    decision = evaluate({"REMOTE_ADDR": "127.0.0.1", "gunicorn.socket": object()})
    assert decision.allowed and decision.local_addr is None


def test_other_host_judged_against_the_socket(tcp_connection):
    refused = evaluate({"REMOTE_ADDR": "10.0.0.2", "gunicorn.socket": tcp_connection})
    assert not refused.allowed
    assert (refused.rule, refused.local_addr) == (SOURCE, "127.0.0.2")


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_HOST": "rebound.example:8000"},  # the host rule refuses
        {"HTTP_HOST": "127.0.0.2:8000", "HTTP_SEC_FETCH_SITE": "cross-site"},  # cross-site
    ],
)
def test_a_loopback_client_refused_by_a_later_rule_is_logged_with_the_local_address(
    tcp_connection, headers, caplog
):
    # The source rule grants a loopback client without asking the connection;
    # the refusal of a later rule must still name the local address in the log.
    environ = {"REMOTE_ADDR": "127.0.0.1", "gunicorn.socket": tcp_connection, **headers}
    refused = evaluate(environ)
    assert not refused.allowed and refused.rule != SOURCE
    assert refused.local_addr == "127.0.0.2"
    caplog.set_level("WARNING", logger="flask_selfhost")
    statuses = []
    SelfHostMiddleware(lambda e, s: [])(environ, lambda status, headers: statuses.append(status))
    assert statuses == ["403 Forbidden"]
    assert "remote=127.0.0.1 local=127.0.0.2 " in caplog.records[-1].getMessage()


def test_client_equal_to_local_address_passes():
    decision = evaluate({"REMOTE_ADDR": "192.168.0.13", "SERVER_ADDR": "192.168.0.13", **APACHE})
    assert decision.allowed
    assert (decision.remote_addr, decision.local_addr) == ("192.168.0.13", "192.168.0.13")


@pytest.mark.parametrize("key", ENVIRON_KEYS)
def test_every_forwarding_header_refuses_even_from_loopback(key):
    decision = evaluate({"REMOTE_ADDR": "127.0.0.1", key: "127.0.0.1"})
    assert not decision.allowed
    assert decision.rule == FORWARDED


@pytest.mark.parametrize("value", ["", "127.0.0.1", "for=127.0.0.1", "unknown"])
def test_forwarding_header_never_grants_access(value):
    decision = evaluate(
        {
            "REMOTE_ADDR": "10.0.0.2",
            "SERVER_ADDR": "127.0.0.1",
            "HTTP_X_FORWARDED_FOR": value,
            **APACHE,
        }
    )
    assert not decision.allowed


@pytest.mark.parametrize("remote", [None, "", "<local>", b"127.0.0.1", 2130706433, ["127.0.0.1"]])
def test_missing_or_odd_remote_addr_is_refused(remote):
    environ = {"SERVER_ADDR": "127.0.0.1", **APACHE}
    if remote is not None:
        environ["REMOTE_ADDR"] = remote
    decision = evaluate(environ)
    assert not decision.allowed
    assert decision.remote_addr is None or decision.remote_addr == remote


def test_options_are_optional_and_accepted():
    environ = {"REMOTE_ADDR": "::1"}
    assert evaluate(environ).allowed
    assert evaluate(environ, Options(refuse_status=404)).allowed


odd_values = st.one_of(
    st.none(),
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(),
    st.lists(st.text(), max_size=3),
    st.dictionaries(st.text(), st.text(), max_size=2),
)
environ_keys = st.sampled_from(
    [
        "REMOTE_ADDR",
        "SERVER_ADDR",
        "SERVER_NAME",
        "gunicorn.socket",
        "werkzeug.socket",
        "HTTP_HOST",
        "REQUEST_METHOD",
        "PATH_INFO",
        *ENVIRON_KEYS,
    ]
)


@given(st.dictionaries(environ_keys, odd_values, max_size=8))
def test_no_environ_however_odd_raises(environ):
    decision = evaluate(environ)
    if decision.allowed:
        assert decision.rule == SOURCE
        assert not any(key in environ for key in ENVIRON_KEYS)


@pytest.fixture
def loopback_connection():
    """A real loopback TCP connection from 127.0.0.1: the server side."""
    with accepted_connection() as server_side:
        yield server_side


def test_proxy_fix_before_the_guard_cannot_launder_the_host(loopback_connection):
    from werkzeug.middleware.proxy_fix import ProxyFix
    from werkzeug.test import Client

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"admin"]

    # A rebinding page sends its own X-Forwarded-Host; ProxyFix (first) believes it.
    client = Client(ProxyFix(SelfHostMiddleware(app, trusted_proxies=["127.0.0.1"]), x_host=1))
    headers = {
        "Host": "evil.example:8000",
        "X-Forwarded-For": "127.0.0.1",
        "X-Forwarded-Host": "localhost:8000",
    }
    server = {"REMOTE_ADDR": "127.0.0.1", "werkzeug.socket": loopback_connection}
    response = client.get("/", headers=headers, environ_base=server)
    assert response.status_code == 403 and "Host" in response.text
    honest = {**headers, "Host": "localhost:8000"}
    assert client.get("/", headers=honest, environ_base=server).status_code == 200


@pytest.mark.parametrize("layers", [1, 2])
def test_a_proxy_fix_original_without_a_witness_never_grants(layers):
    """With no connection socket in the environ
    (gevent_pywsgi, waitress), ProxyFix's saved original cannot be checked;
    two layers overwrite it with the first layer's output (127.0.0.1)."""
    from werkzeug.middleware.proxy_fix import ProxyFix
    from werkzeug.test import Client

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"admin"]

    for options in ({}, {"trusted_proxies": ["127.0.0.1"]}):
        wrapped = SelfHostMiddleware(app, **options)
        for _ in range(layers):
            wrapped = ProxyFix(wrapped, x_for=1)
        client = Client(wrapped)
        # Another host, spoofing one entry per layer.
        xff = ", ".join(["127.0.0.1"] * (layers + 1))
        response = client.get(
            "/", headers={"X-Forwarded-For": xff}, environ_base={"REMOTE_ADDR": "10.9.9.9"}
        )
        assert response.status_code == 403, (layers, options)


def test_huge_headers_are_refused_and_never_cached():
    from flask_selfhost import crosssite, hosts

    before = (hosts.judge_host.cache_info().currsize, crosssite.parse_origin.cache_info().currsize)
    for size in (400, 10_000, 65_000):
        environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "a" * size}
        assert evaluate(environ).rule == HOST
        environ = {
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "localhost",
            "REQUEST_METHOD": "POST",
            "HTTP_ORIGIN": "http://" + "a" * size,
            "wsgi.url_scheme": "http",
        }
        assert evaluate(environ).rule == CROSS_SITE and not evaluate(environ).allowed
    after = (hosts.judge_host.cache_info().currsize, crosssite.parse_origin.cache_info().currsize)
    assert after[0] <= before[0] + 1 and after[1] <= before[1] + 1  # "localhost" and "" at most


SWITCHES = (
    "proxy_drops_underscore_headers",
    "unix_socket_is_local",
    "allow_cleartext_http2",
    "check_cross_site",
    "check_client_socket",
    "require_client_socket",
    "refuse_forwarders",
)


@pytest.mark.parametrize("name", SWITCHES)
@pytest.mark.parametrize("value", ["yes", "False", 1, 0, None])
def test_every_switch_takes_only_true_or_false(name, value):
    # A string from an environment variable is the usual mistake: "False" is truthy.
    with pytest.raises(TypeError, match=f"{name} must be True or False"):
        Options(**{name: value})
