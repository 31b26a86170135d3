"""A browser's request answered from memory answers as the full rules do.

The fronts remember a browser's granted request whole, keyed on the strings
the rules read of it (:mod:`flask_selfhost.accepted`). These differential
tests send browser-shaped requests (same-origin, same-site, cross-site,
navigations, preflights, trusted origins, odd and repeated values) through
two copies of each front, one whose memory works and one that never
remembers, and compare status, headers, body and log lines, cold and warm,
DEBUG on and off. Then the attacks: each tries to get a grant for a
cross-site request out of a memory that holds a same-origin grant with
nearly the same strings, and would get it from a memory keyed on less.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_selfhost import peer_socket
from flask_selfhost.accepted import LIMIT
from flask_selfhost.asgi import SelfHostASGIMiddleware
from flask_selfhost.scope import JUDGED_HEADERS, SINGLE
from tests.test_fast_path import (
    SERVER,
    app,
    asgi_app,
    asgi_call,
    call,
    flask_fronts,
    forgetful,
    wsgi_fronts,
)
from tests.test_fast_path import (
    log_lines as log_lines,
)

pytestmark = pytest.mark.usefixtures("made_up_connections")

OWN = "http://127.0.0.1:8000"
TRUSTED = "http://trusted.example:3000"
OPTIONS = [
    {},
    {"trusted_origins": [TRUSTED]},
    {"check_cross_site": False},
    {"allowed_hosts": ["mybox"], "refuse_status": 404},
]

#: What Chrome sends for a same-origin fetch from the app's own page.
SAME_ORIGIN = {
    "HTTP_ORIGIN": OWN,
    "HTTP_SEC_FETCH_SITE": "same-origin",
    "HTTP_SEC_FETCH_MODE": "cors",
    "HTTP_SEC_FETCH_DEST": "empty",
}


def environ(method: str = "GET", scheme: str = "http", **headers: str | None) -> dict:
    """A loopback client's request to the app, with ``headers`` (environ keys)."""
    made = {
        **SERVER,
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "REQUEST_METHOD": method,
        "PATH_INFO": "/admin",
        "wsgi.url_scheme": scheme,
        **headers,
    }
    return {key: value for key, value in made.items() if value is not None}


def scope(method: str = "GET", scheme: str = "http", headers: list | None = None) -> dict:
    """The same, as an ASGI scope; ``headers`` after the Host."""
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": "/admin",
        "scheme": scheme,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "headers": [(b"host", b"127.0.0.1:8000"), *(headers or [])],
    }


def asgi_headers(environ_headers: dict) -> list:
    """``environ_headers`` (``HTTP_`` keys) as ASGI pairs."""
    return [
        (key[5:].lower().replace("_", "-").encode(), value.encode("latin-1"))
        for key, value in environ_headers.items()
    ]


# The differential tests -------------------------------------------------------

browser_values = {
    "HTTP_HOST": ["127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "127.0.0.1:8001", "evil"],
    "HTTP_ORIGIN": [
        OWN,
        "http://localhost:8000",
        "http://LOCALHOST:8000",
        "https://127.0.0.1:8000",
        "http://evil.example",
        TRUSTED,
        "null",
        "",
    ],
    "HTTP_SEC_FETCH_SITE": [
        "same-origin",
        "same-site",
        "cross-site",
        "none",
        "Same-Origin",
        "same-origin, cross-site",
        "",
    ],
    "HTTP_SEC_FETCH_MODE": ["cors", "navigate", "no-cors", "NAVIGATE", "websocket"],
    "HTTP_SEC_FETCH_DEST": ["empty", "document", "iframe", "image"],
    "HTTP_ACCESS_CONTROL_REQUEST_METHOD": ["POST", "x y"],
    "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": ["content-type"],
    "HTTP_X_FORWARDED_FOR": ["127.0.0.1"],
}
browser_headers = st.fixed_dictionaries(
    {"HTTP_HOST": st.sampled_from(browser_values["HTTP_HOST"])},
    optional={
        key: st.sampled_from(values) for key, values in browser_values.items() if key != "HTTP_HOST"
    },
)
browser_environs = st.builds(
    lambda headers, method, scheme, remote: {
        **environ(method, scheme, **headers),
        "REMOTE_ADDR": remote,
    },
    browser_headers,
    st.sampled_from(["GET", "HEAD", "POST", "OPTIONS", "get"]),
    st.sampled_from(["http", "https", "HTTP"]),
    st.sampled_from(["127.0.0.1", "::1", "127.0.0.2", "10.0.0.2"]),
)
#: A browser's requests from the app's own pages: they warm the memory.
WARM = [
    environ(**SAME_ORIGIN),
    environ("POST", **SAME_ORIGIN),
    environ(
        HTTP_SEC_FETCH_SITE="none", HTTP_SEC_FETCH_MODE="navigate", HTTP_SEC_FETCH_DEST="document"
    ),
    environ(HTTP_ORIGIN=OWN),
    environ(HTTP_ORIGIN=TRUSTED, HTTP_SEC_FETCH_SITE="cross-site"),
]


def differ(fast, full, environs, handler, caller) -> None:
    for request in environs:
        handler.lines.clear()
        fast_answer = caller(fast, request)
        fast_lines = list(handler.lines)
        handler.lines.clear()
        assert fast_answer == caller(full, request), request
        assert fast_lines == handler.lines, request


@pytest.mark.parametrize("make_fronts", [wsgi_fronts, flask_fronts], ids=["wsgi", "flask"])
@pytest.mark.parametrize("options", OPTIONS, ids=range(len(OPTIONS)))
@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(browser_environs, min_size=1, max_size=6),
    debug=st.booleans(),
    warm=st.booleans(),
)
def test_a_browsers_request_is_answered_as_the_full_rules_answer_it(
    make_fronts, options, batch, debug, warm, log_lines
):
    logger, handler = log_lines
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    fast, full = make_fronts(options)
    forgetful(full.options if hasattr(full, "options") else full.extensions["selfhost"].options)
    differ(fast, full, WARM if warm else [], handler, call)
    differ(fast, full, batch * 2, handler, call)  # each twice: the first may teach


def as_scope(request: dict) -> dict:
    headers = {key: value for key, value in request.items() if key.startswith("HTTP_")}
    made = scope(request["REQUEST_METHOD"], request["wsgi.url_scheme"], [])
    made["headers"] = asgi_headers(headers)
    made["client"] = (request["REMOTE_ADDR"], 40000)
    return made


#: Header lists a careless or hostile client makes: a judged header twice
#: (the first same-origin), in another case, or not bytes.
odd_headers = st.lists(
    st.tuples(
        st.sampled_from([b"sec-fetch-site", b"Sec-Fetch-Site", b"origin", b"ORIGIN", b"host"]),
        st.sampled_from([b"same-origin", b"cross-site", OWN.encode(), b"127.0.0.1:8000", "x"]),
    ),
    max_size=2,
)
browser_scopes = st.builds(
    lambda request, extra, at: (
        lambda made: {**made, "headers": made["headers"][:at] + extra + made["headers"][at:]}
    )(as_scope(request)),
    browser_environs,
    odd_headers,
    st.integers(0, 4),
)


@pytest.mark.parametrize("options", OPTIONS, ids=range(len(OPTIONS)))
@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(browser_scopes, min_size=1, max_size=6), debug=st.booleans(), warm=st.booleans()
)
def test_a_browsers_scope_is_answered_as_the_full_rules_answer_it(
    options, batch, debug, warm, log_lines
):
    logger, handler = log_lines
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    fast = SelfHostASGIMiddleware(asgi_app, **options)
    full = SelfHostASGIMiddleware(asgi_app, **options)
    forgetful(full.options)
    differ(fast, full, [as_scope(request) for request in WARM] if warm else [], handler, asgi_call)
    differ(fast, full, batch * 2, handler, asgi_call)


def test_a_browsers_request_is_answered_from_memory(monkeypatch):
    """The differential tests mean something only if the memory answers:
    once warm, the browser's requests never reach the full rules, and the
    answer still carries the grant's Vary (and CORS) headers."""
    front = SelfHostMiddleware_with_trusted()
    asgi_front = SelfHostASGIMiddleware(asgi_app, trusted_origins=[TRUSTED])
    answers = [call(front, request) for request in WARM]
    asgi_answers = [asgi_call(asgi_front, as_scope(request)) for request in WARM]
    monkeypatch.setattr("flask_selfhost.middleware.evaluate", None)  # a call would raise

    async def never(*args):
        raise AssertionError("the full rules ran")

    monkeypatch.setattr(asgi_front, "judged", never)
    assert [call(front, request) for request in WARM] == answers
    assert [asgi_call(asgi_front, as_scope(request)) for request in WARM] == asgi_answers
    assert ("Vary", "Origin, Sec-Fetch-Site") in answers[0].headers
    assert ("Access-Control-Allow-Origin", TRUSTED) in answers[-1].headers
    assert (b"access-control-allow-origin", TRUSTED.encode()) in asgi_answers[-1][0]["headers"]


def SelfHostMiddleware_with_trusted():
    from flask_selfhost import SelfHostMiddleware

    return SelfHostMiddleware(app, trusted_origins=[TRUSTED])


# The attacks: a cross-site request that a memory keyed on less would grant ------

#: (what warms the memory: granted, what follows: refused by the full rules).
ATTACKS = {
    "same Origin, another Sec-Fetch-Site": (
        SAME_ORIGIN,
        {**SAME_ORIGIN, "HTTP_SEC_FETCH_SITE": "cross-site"},
    ),
    "a navigation's strings, another mode": (
        {
            "HTTP_SEC_FETCH_SITE": "cross-site",
            "HTTP_SEC_FETCH_MODE": "navigate",
            "HTTP_SEC_FETCH_DEST": "document",
        },
        {
            "HTTP_SEC_FETCH_SITE": "cross-site",
            "HTTP_SEC_FETCH_MODE": "no-cors",
            "HTTP_SEC_FETCH_DEST": "document",
        },
    ),
    "a navigation's strings, another destination": (
        {
            "HTTP_SEC_FETCH_SITE": "cross-site",
            "HTTP_SEC_FETCH_MODE": "navigate",
            "HTTP_SEC_FETCH_DEST": "document",
        },
        {
            "HTTP_SEC_FETCH_SITE": "cross-site",
            "HTTP_SEC_FETCH_MODE": "navigate",
            "HTTP_SEC_FETCH_DEST": "iframe",
        },
    ),
    "the own Origin, another Host port": (
        {"HTTP_ORIGIN": OWN},
        {"HTTP_ORIGIN": OWN, "HTTP_HOST": "127.0.0.1:8001"},
    ),
    "repeated Sec-Fetch-Site, the first same-origin": (
        SAME_ORIGIN,
        {**SAME_ORIGIN, "HTTP_SEC_FETCH_SITE": "same-origin, cross-site"},
    ),
}


def methods_and_schemes() -> dict:
    """Attacks that change the method or the scheme alone."""
    navigation = {
        "HTTP_SEC_FETCH_SITE": "cross-site",
        "HTTP_SEC_FETCH_MODE": "navigate",
        "HTTP_SEC_FETCH_DEST": "document",
    }
    return {
        "a navigation's strings, another method": (
            environ("GET", **navigation),
            environ("POST", **navigation),
        ),
        "the own Origin, another scheme": (
            environ(HTTP_ORIGIN=OWN),
            environ(scheme="https", HTTP_ORIGIN=OWN),
        ),
        "a same-origin OPTIONS, then a preflight with its strings": (
            environ("OPTIONS", **SAME_ORIGIN),
            environ("OPTIONS", **SAME_ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD="PUT"),
        ),
    }


ALL_ATTACKS = {
    **{name: (environ(**warm), environ(**attack)) for name, (warm, attack) in ATTACKS.items()},
    **methods_and_schemes(),
}


@pytest.mark.parametrize("name", list(ALL_ATTACKS))
@pytest.mark.parametrize("make_fronts", [wsgi_fronts, flask_fronts], ids=["wsgi", "flask"])
def test_a_same_origin_grant_never_grants_a_cross_site_request(name, make_fronts):
    warm, attack = ALL_ATTACKS[name]
    fast, full = make_fronts({})
    forgetful(full.options if hasattr(full, "options") else full.extensions["selfhost"].options)
    for _ in range(2):
        assert call(fast, warm).status[:3] == "200"
    memory = fast.options if hasattr(fast, "options") else fast.extensions["selfhost"].options
    assert memory.accepted.browsers or "OPTIONS" in name  # the memory is warm
    refused = call(fast, attack)
    assert refused.status[:3] == "403", attack
    assert refused == call(full, attack)


ASGI_ATTACKS = {
    **{name: (as_scope(warm), as_scope(attack)) for name, (warm, attack) in ALL_ATTACKS.items()},
    # What only ASGI can carry: the same header twice, or in another case.
    "two Sec-Fetch-Site headers, the first same-origin": (
        scope(headers=asgi_headers(SAME_ORIGIN)),
        scope(headers=[*asgi_headers(SAME_ORIGIN), (b"sec-fetch-site", b"cross-site")]),
    ),
    "a second Sec-Fetch-Site in another case": (
        scope(headers=asgi_headers(SAME_ORIGIN)),
        scope(headers=[*asgi_headers(SAME_ORIGIN), (b"Sec-Fetch-Site", b"cross-site")]),
    ),
    "a second Host in another case": (
        scope(headers=asgi_headers({"HTTP_ORIGIN": OWN})),
        scope(headers=[(b"Host", b"127.0.0.1:8001"), *asgi_headers({"HTTP_ORIGIN": OWN})]),
    ),
}


@pytest.mark.parametrize("name", list(ASGI_ATTACKS))
def test_a_same_origin_grant_never_grants_a_cross_site_scope(name):
    warm, attack = ASGI_ATTACKS[name]
    fast = SelfHostASGIMiddleware(asgi_app)
    full = SelfHostASGIMiddleware(asgi_app)
    forgetful(full.options)
    for _ in range(2):
        assert asgi_call(fast, warm)[0]["status"] == 200
    assert fast.options.accepted.asgi_browsers or "OPTIONS" in name
    refused = asgi_call(fast, attack)
    assert refused[0]["status"] == 403, attack
    assert refused == asgi_call(full, attack)


def test_the_memory_never_skips_the_kernel_witness(monkeypatch):
    """A remembered same-origin grant, then the kernel finds no client of
    this host behind the connection (NAT from another host): refused, on
    both fronts, with the kernel's reason."""
    front = SelfHostASGIMiddleware(asgi_app)
    warm = scope(headers=asgi_headers(SAME_ORIGIN))
    assert asgi_call(front, warm)[0]["status"] == 200
    assert front.options.accepted.asgi_browsers

    def not_found(peer, peer_port, local, local_port):
        return peer_socket.Verdict(False, peer_socket.NOT_FOUND, "another host")

    monkeypatch.setattr(peer_socket, "check_client", not_found)
    assert asgi_call(front, warm)[0]["status"] == 403


def test_what_a_browser_memory_never_holds():
    """Refusals, preflights, relayed requests, long values and Hosts that
    need the local address teach nothing; and the memory is bounded."""
    front = SelfHostMiddleware_with_trusted()
    accepted = front.options.accepted
    for request in (
        environ(**{**SAME_ORIGIN, "HTTP_SEC_FETCH_SITE": "cross-site"}),  # refused
        environ("OPTIONS", HTTP_ORIGIN=TRUSTED, HTTP_ACCESS_CONTROL_REQUEST_METHOD="PUT"),
        environ(**SAME_ORIGIN, HTTP_X_FORWARDED_FOR="127.0.0.1"),
        environ(**{**SAME_ORIGIN, "HTTP_SEC_FETCH_MODE": "x" * 400}),
        environ(**SAME_ORIGIN, HTTP_HOST="10.0.0.1"),
        {**environ(**SAME_ORIGIN), "REMOTE_ADDR": "10.0.0.2"},
    ):
        call(front, request)
    assert not accepted.browsers and not accepted.asgi_browsers
    for number in range(2 * LIMIT):
        call(front, environ(**SAME_ORIGIN, HTTP_HOST=f"h{number}.localhost"))
    assert len(accepted.browsers) <= LIMIT and len(accepted.asgi_browsers) <= LIMIT


def test_the_adapter_keeps_only_the_headers_the_rules_read():
    """The ASGI adapter's set is the forwarding headers and the rules' own
    (scope.JUDGED_HEADERS): the memory's key names (scope.SINGLE) are among
    them, and every name that facts_from_scope reads is in the set."""
    import ast
    import inspect

    from flask_selfhost import scope as scope_module
    from flask_selfhost.forwarding_syntax import ASGI_NAMES

    tree = ast.parse(inspect.getsource(scope_module.facts_from_scope))
    read = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "header"
        and isinstance(node.args[0], ast.Constant)
    }
    assert read and read <= JUDGED_HEADERS
    assert read - ASGI_NAMES | set(SINGLE) == JUDGED_HEADERS - ASGI_NAMES


def test_quart_answers_a_browser_from_memory_and_refuses_the_cross_site_one():
    """Quart's extension through the ASGI front: a warm same-origin memory
    answers the same request, and a cross-site request with its Origin is
    still refused."""
    quart = pytest.importorskip("quart")
    from flask_selfhost.quart import SelfHost
    from tests.test_asgi_exempt import call as call_until_disconnect
    from tests.test_asgi_exempt import status

    quart_app = quart.Quart(__name__)
    quart_app.get("/admin")(lambda: "the app")
    SelfHost(quart_app)
    quart_parts = {"query_string": b"", "raw_path": b"/admin", "root_path": ""}
    same_origin = {**scope(headers=asgi_headers(SAME_ORIGIN)), **quart_parts}
    cross_site = {
        **scope(headers=asgi_headers({**SAME_ORIGIN, "HTTP_SEC_FETCH_SITE": "cross-site"})),
        **quart_parts,
    }
    for _ in range(2):
        assert status(call_until_disconnect(quart_app, same_origin)) == 200
    guard = quart_app.asgi_app
    assert guard._browsers  # the memory is warm
    assert status(call_until_disconnect(quart_app, cross_site)) == 403
