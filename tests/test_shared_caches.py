"""A shared cache in front of the app must not replay a relayed grant.

Varnish (its built-in VCL) or nginx (``proxy_cache``, ``proxy_cache_valid
200 1m``) runs in the *server* namespace in front of a real server and a
guarded app that trusts it (``tests/cache_apps.py``): Flask under gunicorn,
Starlette and Quart under uvicorn. A client on this host asks first; then
another host (the *client* namespace) asks for the same URL. Without the
fix, the cache answers the other host with the stored 200 and the guard
never sees the request; with it, the guard refuses the other host (403).
The table tests below pin the header rewrite itself, and the in-process
tests each front.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_selfhost import SelfHostMiddleware
from flask_selfhost.caching import PRIVATE, UNREADABLE, make_private, private_cache_control
from flask_selfhost.crosssite import VARY
from flask_selfhost.environ import evaluate
from flask_selfhost.options import Options
from flask_selfhost.respond import merge_headers

from . import cache_apps
from .conftest import require_commands
from .netns import Hosts, gunicorn_in, ns_command, ns_run, server_in, two_hosts, wait_for_port_in
from .nginx import X_FORWARDED_FOR, nginx, require_nginx

#: Scopes written by hand name connections that do not exist (see the fixture).
pytestmark = pytest.mark.usefixtures("made_up_connections")

# The header rewrite -------------------------------------------------------


@pytest.mark.parametrize(
    ("app_value", "private_value"),
    [
        ("", "private"),
        ("max-age=60", "private, max-age=60"),
        ("public, max-age=60", "private, max-age=60"),
        ("PUBLIC,Max-Age=60", "private, Max-Age=60"),
        ("s-maxage=60, max-age=5", "private, max-age=5"),
        ("public, s-maxage=600", "private"),
        ("private", "private"),
        ("private, max-age=60", "private, max-age=60"),
        # Private for some fields only: the rest of the answer is shareable.
        ('private="Set-Cookie, X-Token", max-age=60', "private, max-age=60"),
        ("no-store", "private, no-store"),
        ("no-cache, must-revalidate", "private, no-cache, must-revalidate"),
        ('no-cache="Set-Cookie"', 'private, no-cache="Set-Cookie"'),
        ("max-age=60, stale-while-revalidate=30", "private, max-age=60, stale-while-revalidate=30"),
        (" , max-age=60 ,, ", "private, max-age=60"),
        ("no-store, must-understand", "private, no-store, must-understand"),
        # Nothing of an unreadable value may be assumed.
        ('no-cache="Set-Cookie', UNREADABLE),
        ("max age=60", UNREADABLE),
        ("max-age=", UNREADABLE),
        ("=60", UNREADABLE),
        ("public; max-age=60", UNREADABLE),
        ("max-age=60\x00public", UNREADABLE),
    ],
)
def test_cache_control_is_made_private(app_value, private_value):
    assert private_cache_control(app_value) == private_value
    assert private_cache_control(private_value) == private_value  # a second guard: unchanged


PIECES = st.sampled_from(
    [
        *[" ", "\t", ",", "=", '"', "\\", ";", "x", "60", '"a, public"', "\x00"],
        *["public", "PUBLIC", "private", "s-maxage", "S-MaxAge", "max-age", "no-store"],
    ]
)


def directive_names(value: str) -> list[str]:
    """The names of a Cache-Control value's directives, read apart from the
    code under test: commas inside quoted strings do not split."""
    elements, current, quoted, escaped = [], "", False, False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            elements.append(current)
            current = ""
            continue
        current += char
    elements.append(current)
    return [element.split("=")[0].strip().lower() for element in elements]


@given(st.lists(PIECES, max_size=12).map("".join))
def test_no_value_keeps_a_directive_that_shares_the_answer(value):
    private = private_cache_control(value)
    names = directive_names(private)
    assert names[0] == "private" and "private" not in names[1:], private
    assert "public" not in names and "s-maxage" not in names, private
    assert private_cache_control(private) == private


EXPIRES = ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")
TYPE = ("Content-Type", "text/plain")


@pytest.mark.parametrize(
    ("app_headers", "private_headers"),
    [
        ([TYPE], [TYPE, ("Cache-Control", "private")]),
        # Expires and Vary stay: every cache that reads Cache-Control obeys private.
        ([TYPE, EXPIRES], [TYPE, EXPIRES, ("Cache-Control", "private")]),
        ([("Vary", "Cookie"), TYPE], [("Vary", "Cookie"), TYPE, ("Cache-Control", "private")]),
        # Rewritten where the app put it; two fields become one.
        (
            [("cache-control", "public"), TYPE, ("Cache-Control", "max-age=60")],
            [("Cache-Control", "private, max-age=60"), TYPE],
        ),
        # Fields that Varnish, nginx and CDNs obey instead of Cache-Control.
        (
            [
                ("Cache-Control", "private"),
                ("Surrogate-Control", "max-age=60"),
                ("X-Accel-Expires", "60"),
                ("CDN-Cache-Control", "max-age=60"),
                ("Cloudflare-CDN-Cache-Control", "max-age=60"),
                ("edge-control", "cache-maxage=60m"),
                TYPE,
            ],
            [("Cache-Control", "private"), TYPE],
        ),
    ],
)
def test_answers_are_made_private(app_headers, private_headers):
    assert make_private(app_headers) == private_headers
    assert make_private(private_headers) == private_headers


def test_merge_headers_overrides_cache_control_and_adds_the_rest():
    app_headers = [("Cache-Control", "public, max-age=60"), ("Surrogate-Control", "max-age=60")]
    merged = merge_headers(app_headers, PRIVATE + VARY)
    assert merged == [("Cache-Control", "private, max-age=60"), *VARY]
    assert merge_headers(merged, PRIVATE + VARY) == merged  # a second guard adds nothing
    # Without a relayed grant's Cache-Control, the app's caching stays its own.
    assert merge_headers(app_headers, VARY) == [*app_headers, *VARY]


# Which decisions carry it ---------------------------------------------------

TRUSTING = Options(trusted_proxies="127.0.0.1")
RELAYED = {
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "127.0.0.1",
    "HTTP_X_FORWARDED_FOR": "127.0.0.1",
    "wsgi.url_scheme": "http",
}


@pytest.mark.parametrize(
    ("extra", "carries"),
    [
        ({}, True),
        # The cross-site rule's grant keeps it, before its own Vary.
        ({"HTTP_SEC_FETCH_SITE": "same-origin"}, True),
        ({"HTTP_ORIGIN": "http://127.0.0.1"}, True),
        # Refusals are no-store already, and an exempt view's answer is anyone's.
        ({"HTTP_X_FORWARDED_FOR": "10.0.0.2"}, False),
        ({"HTTP_HOST": "evil.test"}, False),
        ({"HTTP_SEC_FETCH_SITE": "cross-site"}, False),
        # Not relayed: the app's own caching (a header-less forwarder is the
        # threat model's, and the common path stays free of a wrapper).
        ({"HTTP_X_FORWARDED_FOR": None, "REMOTE_ADDR": "127.0.0.2"}, False),
    ],
)
def test_only_relayed_grants_make_the_answer_private(extra, carries):
    environ = {**RELAYED, **extra}
    environ = {key: value for key, value in environ.items() if value is not None}
    decision = evaluate(environ, TRUSTING)
    assert (decision.headers[: len(PRIVATE)] == PRIVATE) is carries
    assert (PRIVATE[0] in decision.headers) is carries


# Each front, in process -----------------------------------------------------

PUBLIC = [("Content-Type", "text/plain"), ("Cache-Control", "public, max-age=60")]
TARGETED = [("Surrogate-Control", "max-age=60"), ("X-Accel-Expires", "60")]


def wsgi_answer(environ, start_response):
    start_response("200 OK", [*PUBLIC, *TARGETED])
    return [b"ok"]


def run_wsgi(app, environ) -> tuple[str, list[tuple[str, str]]]:
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, headers

    b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/", **environ}, start_response))
    return seen["status"], seen["headers"]


def caching_of(headers) -> dict[str, list[str]]:
    """The answer's caching fields, by lowercase name."""
    found: dict[str, list[str]] = {}
    for name, value in headers:
        name = name.decode() if isinstance(name, bytes) else name
        value = value.decode() if isinstance(value, bytes) else value
        if name.lower() in ("cache-control", "surrogate-control", "x-accel-expires"):
            found.setdefault(name.lower(), []).append(value)
    return found


MADE_PRIVATE = {"cache-control": ["private, max-age=60"]}
AS_THE_APP_SAID = {
    "cache-control": ["public, max-age=60"],
    "surrogate-control": ["max-age=60"],
    "x-accel-expires": ["60"],
}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (RELAYED, MADE_PRIVATE),
        ({"REMOTE_ADDR": "127.0.0.2", "HTTP_HOST": "127.0.0.1"}, AS_THE_APP_SAID),
    ],
)
def test_wsgi_middleware(environ, expected):
    app = SelfHostMiddleware(wsgi_answer, trusted_proxies="127.0.0.1")
    status, headers = run_wsgi(app, environ)
    assert status == "200 OK"
    assert caching_of(headers) == expected


def flask_public_app():
    from flask import Flask, Response

    from flask_selfhost import SelfHost, local_only

    app = Flask(__name__)

    @app.get("/")
    def index():
        return Response("ok", headers=[*PUBLIC, *TARGETED])

    @app.get("/view")
    @local_only(trusted_proxies="127.0.0.1")
    def view():
        return Response("ok", headers=[*PUBLIC, *TARGETED])

    return app, SelfHost


@pytest.mark.parametrize("path", ["/", "/view"])
def test_flask_extension_and_local_only(path):
    app, SelfHost = flask_public_app()
    if path == "/":
        SelfHost(app, trusted_proxies="127.0.0.1")
    client = app.test_client()
    relayed = client.get(
        path, environ_base={"REMOTE_ADDR": "127.0.0.1"}, headers={"X-Forwarded-For": "127.0.0.1"}
    )
    assert relayed.status_code == 200
    assert caching_of(relayed.headers.to_wsgi_list()) == MADE_PRIVATE
    direct = client.get(path, environ_base={"REMOTE_ADDR": "127.0.0.2"})
    assert direct.status_code == 200
    assert caching_of(direct.headers.to_wsgi_list()) == AS_THE_APP_SAID


def asgi_scope(client: str, relayed: bool) -> dict:
    headers = [(b"host", b"127.0.0.1")]
    if relayed:  # not the peer's own address, which a server may have put there
        headers.append((b"x-forwarded-for", b"::1"))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": (client, 40000),
        "server": ("127.0.0.1", 8000),
    }


def run_asgi(app, scope) -> list[dict]:
    sent: list[dict] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if requests:
            return requests.pop()
        await asyncio.sleep(3600)  # the client stays: an app may wait for its disconnect

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


async def asgi_answer(scope, receive, send):
    headers = [(n.lower().encode(), v.encode()) for n, v in [*PUBLIC, *TARGETED]]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    ("client", "relayed", "expected"),
    [("127.0.0.1", True, MADE_PRIVATE), ("127.0.0.2", False, AS_THE_APP_SAID)],
)
def test_asgi_middleware(client, relayed, expected):
    from flask_selfhost.asgi import SelfHostASGIMiddleware

    app = SelfHostASGIMiddleware(asgi_answer, trusted_proxies="127.0.0.1")
    start = run_asgi(app, asgi_scope(client, relayed))[0]
    assert start["status"] == 200
    assert caching_of(start["headers"]) == expected


@pytest.mark.parametrize("path", ["/", "/view"])
@pytest.mark.parametrize(
    ("client", "relayed", "expected"),
    [("127.0.0.1", True, MADE_PRIVATE), ("127.0.0.2", False, AS_THE_APP_SAID)],
)
def test_quart_extension_and_local_only(path, client, relayed, expected):
    pytest.importorskip("quart", reason="pip install quart (the quart extra)")
    from quart import Quart, Response

    from flask_selfhost.quart import SelfHost, local_only

    app = Quart(__name__)
    if path == "/":
        SelfHost(app, trusted_proxies="127.0.0.1")

    @app.get("/")
    async def index():
        return Response("ok", headers=[*PUBLIC, *TARGETED])

    @app.get("/view")
    @local_only(trusted_proxies="127.0.0.1")
    async def view():
        return Response("ok", headers=[*PUBLIC, *TARGETED])

    scope = {**asgi_scope(client, relayed), "path": path, "raw_path": path.encode()}
    sent = run_asgi(app, scope)
    start = next(message for message in sent if message["type"] == "http.response.start")
    assert start["status"] == 200
    assert caching_of(start["headers"]) == expected


# Real caches, real servers, another host -----------------------------------

CACHE_PORT = 8080  # fresh namespaces for each test: any port is free there
APP_PORT = 8000

#: One request from inside a namespace: status, headers and body, as JSON.
_CLIENT = r"""
import http.client, json, sys
host, port, path, headers = json.loads(sys.argv[1])
connection = http.client.HTTPConnection(host, port, timeout=10)
connection.request("GET", path, headers=headers)
reply = connection.getresponse()
print(json.dumps({
    "status": reply.status,
    "headers": [[name.lower(), value] for name, value in reply.getheaders()],
    "body": reply.read().decode("utf-8", "replace"),
}))
"""


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: str

    def fields(self, name: str) -> list[str]:
        return [value for field, value in self.headers if field == name]


@dataclass
class Stack:
    hosts: Hosts

    def ask(self, ns: str, address: str, path: str) -> Answer:
        # The same Host from both hosts: Varnish's key is the URL and the Host.
        arguments = [address, CACHE_PORT, path, {"Host": f"127.0.0.1:{CACHE_PORT}"}]
        done = ns_run(ns, sys.executable, "-c", _CLIENT, json.dumps(arguments), timeout=30)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        return Answer(result["status"], [tuple(pair) for pair in result["headers"]], result["body"])

    def this_host(self, path: str) -> Answer:
        # This host's own address, not loopback: the cache's peer is 127.0.0.1,
        # and under ASGI a client equal to the peer is refused as one the
        # server may have rewritten.
        return self.ask(self.hosts.server_ns, self.hosts.server_ip4, path)

    def other_host(self, path: str) -> Answer:
        return self.ask(self.hosts.client_ns, self.hosts.server_ip4, path)


@pytest.fixture
def hosts():
    from .netns import require_netns

    require_netns()
    with two_hosts() as pair:
        yield pair


@contextlib.contextmanager
def app_server(front: str, hosts: Hosts, tmp_path: Path) -> Iterator[object]:
    """The guarded app on 127.0.0.1:APP_PORT in the server namespace."""
    if front == "flask":
        args = ["--bind", f"127.0.0.1:{APP_PORT}", "--workers", "1"]
        with gunicorn_in(
            hosts.server_ns, [*args, "tests.cache_apps:flask_app()"], APP_PORT, tmp_path
        ) as server:
            yield server
        return
    pytest.importorskip("uvicorn", reason="pip install uvicorn (the test extra)")
    if front == "quart":
        pytest.importorskip("quart", reason="pip install quart (the quart extra)")
    command = [
        *[sys.executable, "-m", "uvicorn", "--factory", f"tests.cache_apps:{front}_app"],
        *["--host", "127.0.0.1", "--port", str(APP_PORT)],
        # uvicorn would put X-Forwarded-For's client in scope["client"] itself.
        "--no-proxy-headers",
    ]
    with server_in(hosts.server_ns, command, tmp_path, "uvicorn", port=APP_PORT) as server:
        yield server


@contextlib.contextmanager
def varnish(hosts: Hosts, tmp_path: Path) -> Iterator[object]:
    """varnishd with its built-in VCL, on every address of the server namespace."""
    require_commands("varnishd")
    command = [
        *["varnishd", "-F", "-a", f":{CACHE_PORT}", "-b", f"127.0.0.1:{APP_PORT}"],
        *["-n", str(tmp_path / "varnish"), "-s", "malloc,16m"],
    ]
    with server_in(hosts.server_ns, command, tmp_path, "varnish", port=CACHE_PORT) as process:
        yield process


@contextlib.contextmanager
def nginx_cache(hosts: Hosts, tmp_path: Path) -> Iterator[object]:
    """nginx with proxy_cache, keeping every 200 for a minute."""
    require_nginx()
    directory = tmp_path / "nginx"
    directory.mkdir()
    http = f"    proxy_cache_path {directory}/cache keys_zone=shared:1m;"
    location = "\n            ".join(
        [X_FORWARDED_FOR, "proxy_cache shared;", "proxy_cache_valid 200 1m;"]
    )
    listen = [("127.0.0.1", CACHE_PORT), (hosts.server_ip4, CACHE_PORT)]
    with nginx(
        listen,
        f"http://127.0.0.1:{APP_PORT}",
        location,
        directory,
        prefix=ns_command(hosts.server_ns),
        wait=lambda process: wait_for_port_in(
            hosts.server_ns, "127.0.0.1", CACHE_PORT, process=process
        ),
        http=http,
    ) as server:
        yield server


CACHES: dict[str, Callable[[Hosts, Path], contextlib.AbstractContextManager[object]]] = {
    "varnish": varnish,
    "nginx": nginx_cache,
}


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("front", ["flask", "starlette", "quart"])
@pytest.mark.parametrize("cache", list(CACHES))
def test_a_shared_cache_does_not_replay_a_local_answer(hosts, tmp_path, cache, front):
    with app_server(front, hosts, tmp_path), CACHES[cache](hosts, tmp_path):
        stack = Stack(hosts)
        # The control: an answer the app lets anyone have, and any cache keep,
        # is replayed. So this cache does store answers here.
        first = stack.other_host(f"{cache_apps.SHARED}?x")
        again = stack.other_host(f"{cache_apps.SHARED}?x")
        assert (first.status, again.status) == (200, 200), (first, again)
        assert again.body == first.body, "the cache did not keep a cacheable answer"

        answered, mine = {}, {}
        for path in cache_apps.CASES:
            mine[path] = stack.this_host(f"{path}?x")
            assert mine[path].status == 200, (path, mine[path])
            theirs = stack.other_host(f"{path}?x")
            answered[path] = "replayed" if theirs.body == mine[path].body else theirs.status
        assert answered == dict.fromkeys(cache_apps.CASES, 403)

        for path, answer in mine.items():
            assert answer.fields("cache-control")[0].startswith("private"), (path, answer)
            assert not answer.fields("surrogate-control"), (path, answer)
