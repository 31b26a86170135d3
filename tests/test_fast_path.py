"""The common path answers exactly as the full rules do.

The WSGI fronts answer the common request from grants that the full rules
remembered (:mod:`flask_selfhost.accepted`). This differential test sends
the same environs through two copies of the same front: one whose memory
works, and one that never remembers, so that every request takes the full
rules. Status, headers, body and log lines must be the same, with the
memory cold and warm, DEBUG logging on and off, and odd values anywhere.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_selfhost import Options, SelfHost, SelfHostMiddleware, kernel_witness
from flask_selfhost import accepted as memory
from flask_selfhost.accepted import LIMIT, AcceptedRequests
from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.environ import GUNICORN_HTTP2
from flask_selfhost.forwarding_syntax import ENVIRON_KEYS

#: Scopes written by hand name connections that do not exist (see the fixture).
pytestmark = pytest.mark.usefixtures("made_up_connections")


class NeverRemember(AcceptedRequests):
    """A memory that stays empty: every request takes the full rules."""

    def remember(self, facts, decision):
        pass


def forgetful(options: Options) -> Options:
    object.__setattr__(options, "accepted", NeverRemember(options.allowed_hosts))
    return options


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the app"]


@dataclass
class Recorded:
    status: str = ""
    headers: list = field(default_factory=list)
    body: bytes = b""


def call(front, environ) -> Recorded:
    recorded = Recorded()

    def start_response(status, headers, exc_info=None):
        recorded.status, recorded.headers = status, list(headers)

    recorded.body = b"".join(front(dict(environ), start_response))
    return recorded


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def log_lines():
    # Said once per process, at the first request whose server gives no
    # 4-tuple (these environs): said here, so that no request's lines hold it.
    kernel_witness.note_unwitnessed(None)
    logger = logging.getLogger("flask_selfhost")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)
    logger.setLevel(level)


odd = st.one_of(st.binary(max_size=4), st.integers(), st.just(["127.0.0.1"]), st.just(None))
remotes = st.one_of(
    st.sampled_from(["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "10.0.0.2", ""]),
    odd,
)
hosts = st.one_of(
    st.sampled_from(["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "evil.example", "10.0.0.1"]),
    st.text(max_size=8),
    odd,
)
#: What the full rules read besides the client and the Host.
OPTIONAL = [
    "HTTP_ORIGIN",
    "HTTP_SEC_FETCH_SITE",
    *ENVIRON_KEYS,
    "werkzeug.proxy_fix.orig",
]
values = st.one_of(
    st.sampled_from(["127.0.0.1", "http://evil.example", "same-origin", "cross-site", "for=::1"]),
    odd,
)
#: What every server puts in the environ (Flask needs it to route).
SERVER = {
    "wsgi.url_scheme": "http",
    "SERVER_NAME": "0.0.0.0",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
}
#: SERVER_PROTOCOL as servers write it (hypercorn and granian "HTTP/2",
#: gunicorn "HTTP/2.0"), missing, or odd; and the scheme it came with
#: (always there: Flask routes with it).
protocols = st.one_of(
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/2.0", "HTTP/3", "http/1.1", ...]),
    odd,
)
schemes = st.sampled_from(["http", "https"])
environs = st.builds(
    lambda remote, host, extra, method, protocol, scheme: {
        **SERVER,
        "REQUEST_METHOD": method,
        "PATH_INFO": "/admin",
        **({} if remote is ... else {"REMOTE_ADDR": remote}),
        **({} if host is ... else {"HTTP_HOST": host}),
        **extra,
        "SERVER_PROTOCOL": protocol,
        "wsgi.url_scheme": scheme,
    },
    st.one_of(remotes, st.just(...)),
    st.one_of(hosts, st.just(...)),
    st.dictionaries(st.sampled_from(OPTIONAL), values, max_size=2),
    st.sampled_from(["GET", "POST", "OPTIONS"]),
    st.one_of(st.just("HTTP/1.1"), protocols),
    st.one_of(st.just("http"), schemes),
).map(lambda environ: {key: value for key, value in environ.items() if value is not ...})
OPTIONS = [
    {},
    {"trusted_proxies": ["127.0.0.1"]},
    {"allowed_hosts": ["evil.example"], "refuse_status": 404},
    {"trusted_origins": ["http://evil.example"]},
    {"allow_cleartext_http2": True},
    {"allowed_users": ["self"]},
    {"trusted_proxies": ["user:root"]},
]
# The common request, as a server sends it again and again: warms the memory.
COMMON = [
    {**SERVER, "REMOTE_ADDR": remote, "HTTP_HOST": host, "REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    for remote in ("127.0.0.1", "::1", "127.0.0.2")
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000")
]


def wsgi_fronts(options):
    return SelfHostMiddleware(app, **options), SelfHostMiddleware(app, **options)


def flask_fronts(options):
    fronts = []
    for _ in range(2):
        flask_app = Flask(__name__)
        flask_app.add_url_rule("/admin", "admin", lambda: "the app", methods=["GET", "POST"])
        SelfHost(flask_app, **options)
        fronts.append(flask_app)
    return fronts


@pytest.mark.parametrize("make_fronts", [wsgi_fronts, flask_fronts], ids=["wsgi", "flask"])
@pytest.mark.parametrize("options", OPTIONS, ids=range(len(OPTIONS)))
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(environs, min_size=1, max_size=6), debug=st.booleans(), warm=st.booleans())
def test_the_common_path_answers_as_the_full_rules(
    make_fronts, options, batch, debug, warm, log_lines
):
    logger, handler = log_lines
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    fast, full = make_fronts(options)
    forgetful(full.options if hasattr(full, "options") else full.extensions["selfhost"].options)
    if warm:
        for environ in COMMON:
            call(fast, environ), call(full, environ)
    for environ in batch * 2:  # each twice: the first may teach the memory
        handler.lines.clear()
        fast_answer = call(fast, environ)
        fast_lines = list(handler.lines)
        handler.lines.clear()
        full_answer = call(full, environ)
        assert fast_answer == full_answer, environ
        assert fast_lines == handler.lines, environ


def test_the_common_path_answers_the_common_request(monkeypatch):
    """The differential tests above mean something only if the common path
    does answer: once warm, the common request never reaches the full rules."""
    front = SelfHostMiddleware(app)
    for environ in COMMON:
        call(front, environ)
    monkeypatch.setattr("flask_selfhost.middleware.evaluate", None)  # a call would raise
    for environ in COMMON:
        assert call(front, environ).status == "200 OK", environ


@pytest.mark.parametrize("options", [{}, {"trusted_proxies": ["127.0.0.1"]}])
@pytest.mark.parametrize(
    "protocol", ["HTTP/2", "HTTP/2.0", "HTTP/3", "http/1.1", b"HTTP/1.1", None]
)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http2_takes_the_full_rules_after_warm_up(options, protocol, scheme):
    """A warm common path and the common request over HTTP/2 (or an odd
    protocol): the full rules' answer, and over cleartext, a refusal."""
    for allow in (False, True):
        fast, full = wsgi_fronts({**options, "allow_cleartext_http2": allow})
        forgetful(full.options)
        for environ in COMMON:
            call(fast, environ), call(full, environ)
        environ = {**COMMON[0], "SERVER_PROTOCOL": protocol, "wsgi.url_scheme": scheme}
        if options:  # a relayed request is the common one behind a trusted proxy
            environ["HTTP_X_FORWARDED_FOR"] = "127.0.0.2"
        answer = call(fast, environ)
        assert answer == call(full, environ), environ
        assert answer.status == ("200 OK" if allow or scheme == "https" else "403 Forbidden")


def test_the_memory_is_used_and_bounded():
    front = SelfHostMiddleware(app)
    accepted = front.options.accepted
    for environ in COMMON:
        call(front, environ)
    assert set(accepted.remotes) == {"127.0.0.1", "::1", "127.0.0.2"}
    assert {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"} <= accepted.hosts.keys()
    for number in range(2 * LIMIT):  # distinct loopback sources and Host names
        call(
            front,
            {
                "REMOTE_ADDR": f"127.0.{number // 250}.{number % 250 + 1}",
                "HTTP_HOST": f"h{number}.localhost",
            },
        )
    assert len(accepted.remotes) <= LIMIT and len(accepted.hosts) <= LIMIT


@pytest.mark.parametrize(
    "environ",
    [
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "10.0.0.1"},  # needs the local address
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "a" * 400},  # too long to remember
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "HTTP_X_REAL_IP": "127.0.0.1"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "HTTP_ORIGIN": "http://localhost"},
        {"REMOTE_ADDR": "10.0.0.2", "HTTP_HOST": "localhost"},
    ],
)
def test_what_is_never_remembered(environ):
    front = SelfHostMiddleware(app)
    call(front, environ)
    accepted = front.options.accepted
    assert "10.0.0.2" not in accepted.remotes
    assert environ["HTTP_HOST"] not in accepted.hosts or environ["HTTP_HOST"] == "localhost"
    if set(environ) - {"REMOTE_ADDR", "HTTP_HOST"}:
        assert not accepted.remotes  # a request with other headers teaches nothing


@pytest.mark.parametrize("key", [*OPTIONAL, "PROXY_PROTOCOL", GUNICORN_HTTP2, "SERVER_PROTOCOL"])
@pytest.mark.parametrize("value", ["127.0.0.1", "same-origin", "http://localhost:8000", ""])
def test_each_header_takes_the_full_rules_after_warm_up(key, value):
    """The fast path's list of headers, one by one: a warm memory and a
    common request plus that one header answer as the full rules do."""
    for options in OPTIONS:
        fast, full = wsgi_fronts(options)
        forgetful(full.options)
        for environ in COMMON:
            call(fast, environ), call(full, environ)
        environ = {**COMMON[0], key: value}
        assert call(fast, environ) == call(full, environ), (options, environ)


def test_a_host_of_the_other_interfaces_type_takes_the_full_rules():
    """The memory holds each Host as WSGI's str and as ASGI's bytes. After
    a warm-up, a WSGI environ whose Host is those bytes (and a scope whose
    Host is that str) is refused as the full rules refuse it: the other
    interface's form grants nothing."""
    fast, full = wsgi_fronts({})
    forgetful(full.options)
    for environ in COMMON:
        call(fast, environ), call(full, environ)
    assert b"127.0.0.1:8000" in fast.options.accepted.hosts
    environ = {**COMMON[0], "HTTP_HOST": b"127.0.0.1:8000"}
    assert call(fast, environ) == call(full, environ)
    assert call(fast, environ).status == "403 Forbidden"

    front = SelfHostASGIMiddleware(asgi_app)
    for scope in ASGI_COMMON:
        asgi_call(front, scope)
    assert "127.0.0.1:8000" in front.options.accepted.hosts
    scope = {**ASGI_COMMON[0], "headers": [(b"host", "127.0.0.1:8000")]}
    assert asgi_call(front, scope)[0]["status"] == 403


# The ASGI front: the same differential test on scopes ----------------------


async def asgi_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"the app"})


def asgi_call(front, scope) -> list:
    """Every message the front sends for ``scope`` (the app's or the refusal's)."""
    sent: list = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(front(dict(scope), receive, send))
    return sent


#: Header names as servers send them, and as a careless one might: the rules
#: read some of them, any case variant must take the full rules too.
HEADER_NAMES = [
    b"host",
    b"Host",
    b"user-agent",
    b"accept",
    b"origin",
    b"Origin",
    b"sec-fetch-site",
    b"x-forwarded-for",
    b"X-Forwarded-For",
    b"forwarded",
    b"x-real-ip",
    b"referer",
    b"x-custom",
]
HEADER_VALUES = [
    b"127.0.0.1:8000",
    b"localhost:8000",
    b"evil.example",
    b"127.0.0.1",
    b"cross-site",
    b"http://evil.example",
    b"for=127.0.0.1",
    b"",
]
header_values = st.one_of(st.sampled_from(HEADER_VALUES), st.binary(max_size=6))
pairs = st.one_of(
    st.tuples(st.sampled_from(HEADER_NAMES), header_values),
    st.just((b"host",)),  # malformed: not a pair
    st.tuples(st.just(b"host"), st.just("127.0.0.1:8000")),  # str, not bytes
)
#: ``http_version`` as servers write it (hypercorn "2"), missing, or odd.
versions = st.one_of(st.sampled_from(["1.1", "1.0", "2", "3", "2.0", ...]), odd)
#: The scheme of an HTTP scope (or a WebSocket's): plain, TLS, missing, odd.
asgi_schemes = st.sampled_from(["http", "https", "ws", "wss", ..., "gopher"])
random_scopes = st.builds(
    lambda kind, client, headers, version, scheme: {
        "type": kind,
        "method": "GET",
        "path": "/admin",
        "scheme": "ws" if kind == "websocket" else "http",
        "server": ("127.0.0.1", 8000),
        "client": client,
        "headers": headers,
        "http_version": version,
        **({} if scheme is None else {"scheme": scheme}),
    },
    st.sampled_from(["http", "http", "websocket"]),
    st.one_of(st.tuples(remotes, st.integers(0, 65535)), odd),
    st.one_of(st.lists(pairs, max_size=5), odd),
    st.one_of(st.just("1.1"), versions),
    st.one_of(st.just(None), asgi_schemes),
).map(lambda scope: {key: value for key, value in scope.items() if value is not ...})
ASGI_COMMON = [
    {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": (remote, 40000),
        "headers": [(b"host", host), (b"user-agent", b"curl/8"), (b"accept", b"*/*")],
    }
    for remote in ("127.0.0.1", "::1", "127.0.0.2")
    for host in (b"127.0.0.1:8000", b"localhost:8000", b"[::1]:8000")
]


# The common request plus a header or two, anywhere in the list, or over
# another protocol: where a fast path that skipped a check would answer
# differently.
near_common = st.builds(
    lambda scope, extra, at, version, scheme: {
        **scope,
        "headers": scope["headers"][:at] + extra + scope["headers"][at:],
        "http_version": version,
        "scheme": scheme,
    },
    st.sampled_from(ASGI_COMMON),
    st.lists(pairs, max_size=2),
    st.integers(0, 3),
    st.one_of(st.just("1.1"), versions),
    st.one_of(st.just("http"), asgi_schemes),
).map(lambda scope: {key: value for key, value in scope.items() if value is not ...})
scopes = st.one_of(random_scopes, near_common)


@pytest.mark.parametrize("options", OPTIONS, ids=range(len(OPTIONS)))
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(scopes, min_size=1, max_size=6), debug=st.booleans(), warm=st.booleans())
def test_the_asgi_common_path_answers_as_the_full_rules(options, batch, debug, warm, log_lines):
    logger, handler = log_lines
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    fast = SelfHostASGIMiddleware(asgi_app, **options)
    full = SelfHostASGIMiddleware(asgi_app, **options)
    forgetful(full.options)
    if warm:
        for scope in ASGI_COMMON:
            asgi_call(fast, scope), asgi_call(full, scope)
        # The memory is warm, but for a proxy trusted by its user (never remembered).
        assert fast.options.accepted.remotes or not fast.options.accepted.remembering
    for scope in batch * 2:  # each twice: the first may teach the memory
        handler.lines.clear()
        fast_answer = asgi_call(fast, scope)
        fast_lines = list(handler.lines)
        handler.lines.clear()
        assert fast_answer == asgi_call(full, scope), scope
        assert fast_lines == handler.lines, scope


@pytest.mark.parametrize("name", [name for name in HEADER_NAMES if name != b"user-agent"])
@pytest.mark.parametrize("value", HEADER_VALUES)
def test_each_asgi_header_takes_the_full_rules_after_warm_up(name, value):
    """Each header name (in either case) and value, after a warm-up: the
    common request plus that header answers as the full rules do."""
    for options in OPTIONS:
        fast = SelfHostASGIMiddleware(asgi_app, **options)
        full = SelfHostASGIMiddleware(asgi_app, **options)
        forgetful(full.options)
        for scope in ASGI_COMMON:
            asgi_call(fast, scope), asgi_call(full, scope)
        scope = {**ASGI_COMMON[0], "headers": [*ASGI_COMMON[0]["headers"], (name, value)]}
        assert asgi_call(fast, scope) == asgi_call(full, scope), (options, scope)


def test_the_asgi_common_path_answers_the_common_request(monkeypatch):
    """As for WSGI: once warm, the common scope never reaches the full rules."""
    front = SelfHostASGIMiddleware(asgi_app)
    for scope in ASGI_COMMON:
        asgi_call(front, scope)

    async def never(*args):
        raise AssertionError("the full rules ran")

    monkeypatch.setattr(front, "judged", never)
    for scope in ASGI_COMMON:
        assert asgi_call(front, scope)[0]["status"] == 200, scope


@pytest.mark.parametrize("options", [{}, {"trusted_proxies": ["127.0.0.1"]}])
@pytest.mark.parametrize("version", ["2", "3", "2.0", b"1.1", None, ...])
@pytest.mark.parametrize("scheme", ["http", "https", "ws", "wss", ...])
def test_asgi_http2_takes_the_full_rules_after_warm_up(options, version, scheme):
    """A warm common path and the common scope over HTTP/2 (or an odd or
    missing version): the full rules' answer, and over cleartext (a scheme
    other than https/wss, or none), a refusal unless allow_cleartext_http2."""
    for allow in (False, True):
        fast = SelfHostASGIMiddleware(asgi_app, allow_cleartext_http2=allow, **options)
        full = SelfHostASGIMiddleware(asgi_app, allow_cleartext_http2=allow, **options)
        forgetful(full.options)
        for scope in ASGI_COMMON:
            asgi_call(fast, scope), asgi_call(full, scope)
        scope = {**ASGI_COMMON[0], "http_version": version, "scheme": scheme}
        scope = {key: value for key, value in scope.items() if value is not ...}
        if options:  # a relayed request is the common one behind a trusted proxy
            scope["headers"] = [*scope["headers"], (b"x-forwarded-for", b"127.0.0.2")]
        answer = asgi_call(fast, scope)
        assert answer == asgi_call(full, scope), scope
        http1 = version is ...  # missing: 1.1, as the spec says
        allowed = http1 or allow or scheme in ("https", "wss")
        assert answer[0]["status"] == (200 if allowed else 403), scope


class ForgetWhileChecking(int):
    """:data:`LIMIT` for one call of ``remember``: the first PROXY protocol
    header arrives (on another thread) just as the size check runs."""

    def __gt__(self, other):
        memory.forget_everything()
        return int(self) > other


def test_a_grant_remembered_while_everything_is_forgotten_is_forgotten(monkeypatch):
    """gthread: one thread remembers a loopback grant while another thread
    reads the process's first PROXY header and forgets everything. The
    grant must not survive: the later requests of a PROXY connection show
    the relay (127.0.0.1) as a plain client, and the common path would
    answer them from it."""
    front = SelfHostMiddleware(app)
    monkeypatch.setattr(memory, "LIMIT", ForgetWhileChecking(LIMIT))
    call(front, COMMON[0])
    assert not front.options.accepted.remotes
    assert not front.options.accepted.hosts
