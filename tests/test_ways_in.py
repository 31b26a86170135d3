"""The ways past the guard that an attack on real servers found,
each as a test that fails on the code before the fix, and the invariant
that closes their common cause: a grant never skips a later rule.

The real-server forms of these attacks (namespaces, gunicorn, nginx,
waitress, Chromium) are in the ``test_attacks_*`` files.
"""

from __future__ import annotations

import ipaddress
import logging

import logfmtkv as logfmt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import Client

from flask_selfhost import Options, SelfHostMiddleware, evaluate
from flask_selfhost.decision import CROSS_SITE, PREFLIGHT, Decision
from flask_selfhost.environ import facts_from_environ
from flask_selfhost.guard import RULES, judge
from flask_selfhost.log import log_field

from .servers import accepted_connection

# Apache/mod_wsgi's way of saying which local address a connection used.
LAN = {"mod_wsgi.version": (4, 9, 0), "SERVER_ADDR": "192.0.2.7", "REMOTE_ADDR": "192.0.2.7"}


def lan(**headers: str) -> dict[str, object]:
    """A request from this host to its own LAN URL http://192.0.2.7:8000/."""
    environ: dict[str, object] = {
        **LAN,
        "HTTP_HOST": "192.0.2.7:8000",
        "REQUEST_METHOD": "GET",
        "wsgi.url_scheme": "http",
    }
    environ.update(headers)
    return environ


# Finding 1: the cross-site rule on this host's LAN URL ------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"REQUEST_METHOD": "POST", "HTTP_ORIGIN": "http://evil.example"},
        {"REQUEST_METHOD": "POST", "HTTP_ORIGIN": "null"},
        {"REQUEST_METHOD": "POST", "HTTP_SEC_FETCH_SITE": "cross-site"},
        {"HTTP_SEC_FETCH_SITE": "cross-site", "HTTP_SEC_FETCH_DEST": "iframe"},
        {
            "REQUEST_METHOD": "OPTIONS",
            "HTTP_ORIGIN": "http://evil.example",
            "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "PUT",
        },
    ],
)
def test_cross_site_requests_to_the_lan_url_are_refused(headers):
    decision = evaluate(lan(**headers))
    assert not decision.allowed
    assert decision.rule in (CROSS_SITE, PREFLIGHT)


def test_own_pages_on_the_lan_url_still_work():
    assert evaluate(lan()).allowed
    same_origin = lan(REQUEST_METHOD="POST", HTTP_ORIGIN="http://192.0.2.7:8000")
    assert evaluate(same_origin).allowed


# Finding 2: every request on a PROXY-protocol connection is relayed ----------


@pytest.fixture
def proxied_connection():
    """The server side of a real loopback connection: a relay on this host
    that speaks the PROXY protocol, as gunicorn's socket for it."""
    with accepted_connection() as server_side:
        yield server_side


def gunicorn_environ(sock, **extra):
    environ = {"gunicorn.socket": sock, "REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET"}
    environ.update(extra)
    return environ


def test_second_request_on_a_proxy_protocol_connection_is_still_relayed(proxied_connection):
    options = Options(trusted_proxies=["127.0.0.1"])
    # The common path is warm: loopback requests have been granted before.
    assert evaluate(gunicorn_environ(None, HTTP_HOST="localhost:8000")).allowed
    assert evaluate(gunicorn_environ(None, REMOTE_ADDR="127.0.0.2"), options).allowed
    first = gunicorn_environ(
        proxied_connection,
        REMOTE_ADDR="10.9.9.9",
        PROXY_PROTOCOL="TCP4",
        PROXY_ADDR="10.0.0.1",
        HTTP_HOST="localhost:8000",
    )
    assert evaluate(first, options).reason.endswith("another host")
    # gunicorn's gthread worker: the next request shows the proxy as the client.
    for extra in ({"HTTP_HOST": "localhost:8000"}, {}):  # HTTP/1.0 without Host too
        later = gunicorn_environ(proxied_connection, **extra)
        decision = evaluate(later, options)
        assert not decision.allowed and decision.remote_addr == "10.9.9.9"
        assert not evaluate(later).allowed  # default options: PROXY sender untrusted


def test_other_connections_are_not_affected(proxied_connection):
    options = Options(trusted_proxies=["127.0.0.1"])
    first = gunicorn_environ(proxied_connection, REMOTE_ADDR="127.0.0.1", PROXY_PROTOCOL="TCP4")
    assert evaluate(first, options).allowed  # a client on this host, relayed
    with accepted_connection("127.0.0.2") as other:
        assert evaluate(gunicorn_environ(other)).allowed


# Finding 5: every field of the log line is escaped ----------------------------


FORGERIES = [
    '127.0.0.1 local=127.0.0.1 rule=source reason="the client is loopback"',
    "10.0.0.2\nselfhost=allowed method=GET path=/admin remote=127.0.0.1 rule=source",
    '10.0.0.2\\" rule=source reason="x',
    "10.0.0.2\r\x1b[2Kallowed",
    "10.0.0.2\u2028allowed",
    "\u202e1.0.0.721",
]


@pytest.mark.parametrize("forged", FORGERIES)
def test_a_rewritten_client_address_cannot_forge_the_log(forged, caplog):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"admin"]

    client = Client(ProxyFix(SelfHostMiddleware(app), x_for=1))
    server = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": forged}
    with caplog.at_level(logging.DEBUG, logger="flask_selfhost"):
        response = client.get("/admin", environ_base=server)
    assert response.status_code == 403
    (record,) = caplog.records
    line = record.getMessage()
    assert line.isascii() and line.isprintable(), line
    # The forged text stays inside its one quoted field, and reads back exactly.
    fields = logfmt.parse(line, strict=True, duplicates="error")
    assert list(fields) == ["selfhost", "method", "path", "remote", "local", "rule", "reason"]
    assert fields["remote"] == forged.strip()
    assert (fields["selfhost"], fields["local"], fields["rule"]) == ("refused", "-", "forwarded")


@given(st.one_of(st.none(), st.text(), st.binary(), st.integers()))
def test_log_fields_are_one_printable_token(value):
    field = log_field(value)
    assert field.isascii() and field.isprintable()
    assert " " not in field or field[0] == '"'  # spaces only inside quotes
    if isinstance(value, str) and value.isascii() and value.replace(".", "").isalnum():
        assert field == value  # an address prints as it is
    text = "-" if value is None else value if isinstance(value, str) else repr(value)
    assert logfmt.parse(f"k={field}", strict=True) == {"k": text}  # and reads back


def test_absent_addresses_print_as_a_dash(caplog):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    with caplog.at_level(logging.WARNING, logger="flask_selfhost"):
        Client(SelfHostMiddleware(app)).get("/", environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert "remote=10.0.0.2 local=- rule=source" in caplog.records[0].getMessage()


# Finding 6: a conflict between Forwarded and X-Forwarded-For frames no one ----


def test_conflicting_headers_log_no_client_chosen_by_the_client(caplog):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    guarded = SelfHostMiddleware(app, trusted_proxies=["127.0.0.1"])
    headers = {"Forwarded": "for=203.0.113.77", "X-Forwarded-For": "10.0.0.2"}
    with caplog.at_level(logging.WARNING, logger="flask_selfhost"):
        response = Client(guarded).get(
            "/", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}
        )
    assert response.status_code == 403 and "different clients" in caplog.text
    line = caplog.records[0].getMessage()
    assert "203.0.113.77" not in line and "remote=- " in line and "peer=127.0.0.1" in line


# The invariant: a grant by one rule never skips a later rule ------------------

GRANT = Decision(True, "test", "granted by the test", "127.0.0.1", None)

header_values = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "",
            "localhost:8000",
            "127.0.0.1:8000",
            "192.0.2.7:8000",
            "[::1]:8000",
            "evil.example",
            "http://evil.example",
            "http://192.0.2.7:8000",
            "null",
            "same-origin",
            "cross-site",
            "none",
            "navigate",
            "document",
            "iframe",
            "for=127.0.0.1",
            "127.0.0.1",
            "10.0.0.2",
            "GET",
            "OPTIONS",
            "POST",
        ]
    ),
    st.text(max_size=12),
)
keys = st.sampled_from(
    [
        "HTTP_HOST",
        "HTTP_ORIGIN",
        "HTTP_SEC_FETCH_SITE",
        "HTTP_SEC_FETCH_MODE",
        "HTTP_SEC_FETCH_DEST",
        "HTTP_ACCESS_CONTROL_REQUEST_METHOD",
        "HTTP_X_FORWARDED_FOR",
        "HTTP_FORWARDED",
        "HTTP_X_REAL_IP",
        "REQUEST_METHOD",
        "SERVER_ADDR",
        "PROXY_PROTOCOL",
    ]
)
environs = st.builds(
    lambda remote, headers, mod_wsgi: {
        "REMOTE_ADDR": remote,
        "wsgi.url_scheme": "http",
        **({"mod_wsgi.version": (4, 9, 0)} if mod_wsgi else {}),
        **{key: value for key, value in headers.items() if value is not None},
    },
    st.sampled_from(["127.0.0.1", "::1", "192.0.2.7", "10.0.0.2", "", None]),
    st.dictionaries(keys, header_values),
    st.booleans(),
)
options_choices = st.sampled_from(
    [
        Options(),
        Options(trusted_proxies=["127.0.0.1"]),
        Options(allowed_hosts=["evil.example"]),
        Options(trusted_origins=["http://evil.example"]),
        Options(allowed_users=["self"]),
        Options(trusted_proxies=["user:root"]),
    ]
)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(environs, options_choices)
def test_when_one_rule_alone_refuses_the_guard_refuses(environ, options):
    facts = facts_from_environ(environ)
    alone = [rule(facts, options, GRANT) for rule in RULES]
    refused_alone = any(not decision.allowed for decision in alone)
    for _ in range(2):  # cold, then with whatever the first call remembered
        decision = evaluate(environ, options)
        if refused_alone:
            assert not decision.allowed, (alone, decision)
    assert judge(facts, options).allowed == decision.allowed


def test_cross_site_rule_runs_behind_a_trusted_proxy_on_the_lan_url(monkeypatch):
    """Finding 1 on the trusted-proxy path: a Host naming one of this host's
    own addresses is accepted there, and the cross-site rule still runs."""
    from flask_selfhost import hosts
    from flask_selfhost.host_addresses import HostAddresses

    own = HostAddresses(reader=lambda: frozenset({ipaddress.ip_address("192.0.2.7")}))
    monkeypatch.setattr(hosts, "host_addresses", own)
    options = Options(trusted_proxies=["127.0.0.1"])
    relayed = {
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_FORWARDED_FOR": "127.0.0.1",
        "HTTP_HOST": "192.0.2.7:8000",
        "wsgi.url_scheme": "http",
        "REQUEST_METHOD": "POST",
    }
    assert evaluate(relayed, options).allowed
    for browser in (
        {"HTTP_ORIGIN": "http://evil.example"},
        {"HTTP_ORIGIN": "null"},
        {"HTTP_SEC_FETCH_SITE": "cross-site"},
    ):
        decision = evaluate({**relayed, **browser}, options)
        assert not decision.allowed and decision.rule == CROSS_SITE, browser


# Finding 7: SERVER_ADDR only from servers that set it per connection ---------


@pytest.mark.parametrize(
    ("marks", "trusted"),
    [
        ({}, False),  # granian: the process environment, copied
        ({"mod_wsgi.version": "4.9.0"}, False),  # an environment variable is a string
        ({"uwsgi.version": "2.0.31"}, False),
        ({"mod_wsgi.version": (4, 9, 0)}, True),  # Apache's mod_wsgi
        ({"uwsgi.version": b"2.0.31"}, True),  # uWSGI
    ],
)
def test_server_addr_is_read_only_where_the_server_sets_it(marks, trusted):
    environ = {"REMOTE_ADDR": "192.0.2.9", "SERVER_ADDR": "192.0.2.9", "HTTP_HOST": "localhost"}
    assert evaluate({**environ, **marks}).allowed is trusted


def test_a_green_socket_is_a_witness():
    """gevent's socket, not patched into the standard one (gunicorn's gevent
    worker with --preload): the C-level family getter refuses it."""
    gevent_socket = pytest.importorskip("gevent.socket", reason="needs gevent")
    from flask_selfhost.connection import local_address, peer_address

    with accepted_connection("127.0.0.2", gevent_socket) as server_side:
        assert local_address({"gunicorn.socket": server_side}) == "127.0.0.2"
        assert peer_address(server_side) == "127.0.0.1"


# Finding 8: gunicorn's cleartext HTTP/2 drops the PROXY header's client -------


class FakeTLSSocket:
    """Stands for an ``ssl.SSLSocket`` (or gevent's): it has ``getpeercert``."""

    def getpeercert(self):
        return None


def the_app(environ, start_response):
    start_response("200 OK", [])
    return [b"the app"]


@pytest.mark.parametrize("options", [{}, {"trusted_proxies": ["127.0.0.1"]}])
def test_gunicorn_h2c_is_refused_even_from_loopback(options):
    """An HTTP/2 request under gunicorn over a plain socket (h2c): gunicorn
    accepts it from its proxies only and never passes on a PROXY header's
    client, so REMOTE_ADDR may be a relay on this host. Refused, by the
    common path (warm) as by the full rules, whatever the headers say; over
    TLS (where gunicorn reads no PROXY header) it is an ordinary request."""
    front = SelfHostMiddleware(the_app, **options)
    common = {"REMOTE_ADDR": "::1", "HTTP_HOST": "localhost:8000", "REQUEST_METHOD": "GET"}
    h2 = {**common, "SERVER_PROTOCOL": "HTTP/2.0", "gunicorn.http2.priority_weight": 16}

    def status(environ) -> list[str]:
        seen: list[str] = []
        front(environ, lambda status, headers, exc_info=None: seen.append(status))
        return seen

    assert status(common) == ["200 OK"]
    assert front.options.accepted.remotes  # the common path would answer ::1
    with accepted_connection() as plain:
        for extra in ({}, {"HTTP_X_FORWARDED_FOR": "::1"}, {"gunicorn.socket": plain}):
            environ = {**h2, **extra}
            decision = evaluate(environ, front.options)
            assert not decision.allowed and "h2c" in decision.reason, decision
            assert status(environ) == ["403 Forbidden"], extra
    assert evaluate({**h2, "gunicorn.socket": FakeTLSSocket()}, front.options).allowed
