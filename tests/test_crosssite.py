"""The cross-site and preflight rules (flask_selfhost.crosssite), table-driven in
the order of its docstring like Go's csrf_test.go; then every front (middleware,
Flask extension, local_only) for host, cross-site, preflight, Vary and options."""

from __future__ import annotations

import pytest
from flask import Flask, jsonify
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from flask_selfhost import SelfHost, SelfHostMiddleware, allow_remote, evaluate, local_only
from flask_selfhost import crosssite as cs
from flask_selfhost.crosssite import (
    judge_cross_site,
    normalise_trusted_origins,
    parse_origin,
)
from flask_selfhost.decision import CROSS_SITE, HOST, PREFLIGHT, SOURCE, Decision
from flask_selfhost.environ import facts_from_environ as facts
from flask_selfhost.options import Options

LOOPBACK_GRANT = Decision(True, SOURCE, "the client is loopback", "127.0.0.1", None)
TRUSTED = normalise_trusted_origins(["http://localhost:3000", "https://tool.example"])
APP = "http://127.0.0.1:8000"
EVIL = "http://evil.example"
CORS_TRUSTED = (
    ("Access-Control-Allow-Origin", "http://localhost:3000"),
    ("Access-Control-Allow-Credentials", "true"),
)


def env(method="GET", host="127.0.0.1:8000", scheme="http", **headers):
    """A WSGI environ; header keyword arguments as in the environ (origin -> HTTP_ORIGIN)."""
    environ = {"REQUEST_METHOD": method, "wsgi.url_scheme": scheme, "REMOTE_ADDR": "127.0.0.1"}
    if host is not None:
        environ["HTTP_HOST"] = host
    for name, value in headers.items():
        environ["HTTP_" + name.upper()] = value
    return environ


def nav(method="GET", site="cross-site", dest="document", **headers):
    return env(
        method, sec_fetch_site=site, sec_fetch_mode="navigate", sec_fetch_dest=dest, **headers
    )


# (environ, expected allowed, rule, reason)
# fmt: off
CASES = [
    # 1. neither Sec-Fetch-Site nor Origin: curl, scripts
    (env(), True, CROSS_SITE, "neither Origin nor Sec-Fetch-Site: not a cross-site request"),
    (env("POST"), True, CROSS_SITE, "neither Origin nor Sec-Fetch-Site: not a cross-site request"),
    (env("POST", sec_fetch_mode="no-cors"), True, CROSS_SITE,
     "neither Origin nor Sec-Fetch-Site: not a cross-site request"),
    # 2. preflights
    (env("OPTIONS", origin="http://localhost:3000", access_control_request_method="PUT"),
     True, PREFLIGHT, cs.PREFLIGHT_GRANTED),
    (env("OPTIONS", origin=EVIL, access_control_request_method="PUT"),
     False, PREFLIGHT, cs.PREFLIGHT_REFUSED),
    (env("OPTIONS", origin=APP, access_control_request_method="PUT"),
     False, PREFLIGHT, cs.PREFLIGHT_REFUSED),  # same-origin pages never preflight
    (env("OPTIONS", origin="null", access_control_request_method="PUT",
         access_control_request_private_network="true"),
     False, PREFLIGHT, cs.PREFLIGHT_REFUSED),
    (env("OPTIONS", origin="http://localhost:3000", access_control_request_method="PUT X"),
     False, PREFLIGHT, cs.PREFLIGHT_MALFORMED),
    (env("OPTIONS", origin="http://localhost:3000", access_control_request_method="PUT",
         access_control_request_headers="x-a, (bad)"),
     False, PREFLIGHT, cs.PREFLIGHT_MALFORMED),
    (env("OPTIONS", origin="http://localhost:3000", access_control_request_method=b"PUT"),
     False, PREFLIGHT, cs.PREFLIGHT_MALFORMED),
    (env("OPTIONS", origin=APP), True, CROSS_SITE, cs.ORIGIN_MATCHES),  # not a preflight
    # 3. trusted origins
    (env("POST", origin="http://localhost:3000", sec_fetch_site="same-site"),
     True, CROSS_SITE, cs.TRUSTED),
    (env("DELETE", origin="https://tool.example", sec_fetch_site="cross-site"),
     True, CROSS_SITE, cs.TRUSTED),
    (env("POST", origin="http://localhost:3000/", sec_fetch_site="same-site"),
     False, CROSS_SITE, cs.OTHER_SITE_PAGE),  # exact match only
    (env("POST", origin="http://LOCALHOST:3000"), False, CROSS_SITE, cs.OTHER_ORIGIN),
    # 4. Sec-Fetch-Site same-origin / none
    (env("POST", sec_fetch_site="same-origin"), True, CROSS_SITE, cs.SAME_ORIGIN),
    (env("POST", sec_fetch_site="same-origin", origin=EVIL), True, CROSS_SITE, cs.SAME_ORIGIN),
    (env("DELETE", sec_fetch_site="none"), True, CROSS_SITE, cs.SAME_ORIGIN),
    (env("GET", sec_fetch_site="same-origin", sec_fetch_mode="cors"), True, CROSS_SITE,
     cs.SAME_ORIGIN),
    # 5. cross-site / same-site: navigations only
    (nav(), True, CROSS_SITE, cs.NAVIGATION),
    (nav("HEAD"), True, CROSS_SITE, cs.NAVIGATION),
    (nav(site="same-site"), True, CROSS_SITE, cs.NAVIGATION),
    (nav(dest="iframe"), False, CROSS_SITE, cs.OTHER_SITE_PAGE),  # framing: clickjacking
    (nav(dest="frame"), False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    (nav(dest="fencedframe"), False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    (nav(site="same-site", dest="iframe"), False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    (nav(dest="object"), False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    (nav(dest="embed"), False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    (nav("POST", origin=EVIL), False, CROSS_SITE, cs.OTHER_SITE_PAGE),  # a form POST
    (nav("POST", site="same-site", origin="http://localhost:3001"),
     False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    (env("POST", sec_fetch_site="cross-site", sec_fetch_mode="no-cors", origin=EVIL),
     False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    (env("GET", sec_fetch_site="cross-site", sec_fetch_mode="cors", origin=EVIL),
     False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    (env("GET", sec_fetch_site="cross-site", sec_fetch_mode="no-cors", sec_fetch_dest="script"),
     False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    (env("GET", sec_fetch_site="cross-site", sec_fetch_mode="no-cors", sec_fetch_dest="image"),
     False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    (env("GET", sec_fetch_site="cross-site", sec_fetch_mode="websocket"),
     False, CROSS_SITE, cs.OTHER_SITE_PAGE),
    # 5. unknown values
    (env("GET", sec_fetch_site=""), False, CROSS_SITE, cs.BAD_FETCH_SITE),
    (env("GET", sec_fetch_site="Same-Origin"), False, CROSS_SITE, cs.BAD_FETCH_SITE),
    (env("GET", sec_fetch_site="same-origin, cross-site"), False, CROSS_SITE, cs.BAD_FETCH_SITE),
    (env("GET", sec_fetch_site=b"same-origin"), False, CROSS_SITE, cs.BAD_FETCH_SITE),
    # 6. no Sec-Fetch-Site: Origin against the request's own origin
    (env("POST", origin=APP), True, CROSS_SITE, cs.ORIGIN_MATCHES),
    (env("POST", origin="HTTP://127.0.0.1:8000"), True, CROSS_SITE, cs.ORIGIN_MATCHES),
    (env("POST", host="localhost", origin="http://localhost"), True, CROSS_SITE, cs.ORIGIN_MATCHES),
    (env("POST", host="localhost:80", origin="http://localhost"), True, CROSS_SITE,
     cs.ORIGIN_MATCHES),
    (env("POST", host="localhost", scheme="https", origin="https://localhost:443"), True,
     CROSS_SITE, cs.ORIGIN_MATCHES),
    (env("POST", host="[::1]:8000", origin="http://[::1]:8000"), True, CROSS_SITE,
     cs.ORIGIN_MATCHES),
    (env("POST", host="evil.example:8000", origin="http://evil.example:8000"), True, CROSS_SITE,
     cs.ORIGIN_MATCHES),  # DNS rebinding passes here: the host rule stops it
    (env("POST", origin="https://127.0.0.1:8000"), False, CROSS_SITE, cs.OTHER_ORIGIN),
    (env("POST", origin="http://127.0.0.1:8001"), False, CROSS_SITE, cs.OTHER_ORIGIN),
    (env("POST", origin="http://127.0.0.1"), False, CROSS_SITE, cs.OTHER_ORIGIN),
    (env("POST", origin="http://localhost:8000"), False, CROSS_SITE, cs.OTHER_ORIGIN),
    (env("POST", origin=EVIL), False, CROSS_SITE, cs.OTHER_ORIGIN),
    (env("GET", origin=EVIL), False, CROSS_SITE, cs.OTHER_ORIGIN),  # a CORS read
    (env("POST", origin="null"), False, CROSS_SITE, cs.NULL_ORIGIN),
    (env("POST", origin=""), False, CROSS_SITE, cs.OTHER_ORIGIN),
    (env("POST", origin=APP + "/"), False, CROSS_SITE, cs.OTHER_ORIGIN),
    (env("POST", origin="http://x@127.0.0.1:8000"), False, CROSS_SITE, cs.OTHER_ORIGIN),
    (env("POST", origin=APP + ", " + EVIL), False, CROSS_SITE, cs.OTHER_ORIGIN),
    (env("POST", origin=b"http://127.0.0.1:8000"), False, CROSS_SITE, cs.OTHER_ORIGIN),
    (env("POST", host=None, origin=APP), False, CROSS_SITE, cs.OTHER_ORIGIN),  # nothing to match
    (env("POST", host="bad host", origin="http://bad host"), False, CROSS_SITE, cs.OTHER_ORIGIN),
]
# fmt: on


@pytest.mark.parametrize(("environ", "allowed", "rule", "reason"), CASES)
def test_judge_cross_site(environ, allowed, rule, reason):
    decision = judge_cross_site(facts(environ), TRUSTED, LOOPBACK_GRANT)
    assert (decision.allowed, decision.rule, decision.reason) == (allowed, rule, reason)
    assert decision.remote_addr == "127.0.0.1"


def test_vary_on_every_decision_that_read_the_headers():
    assert judge_cross_site(facts(env()), TRUSTED, LOOPBACK_GRANT).headers == ()
    for environ, *_ in CASES:
        if "HTTP_ORIGIN" in environ or "HTTP_SEC_FETCH_SITE" in environ:
            headers = dict(judge_cross_site(facts(environ), TRUSTED, LOOPBACK_GRANT).headers)
            assert headers["Vary"] in (cs.VARY[0][1], cs.PREFLIGHT_VARY[0][1])


def test_trusted_origin_gets_cors_headers_never_a_star():
    environ = env("POST", origin="http://localhost:3000")
    decision = judge_cross_site(facts(environ), TRUSTED, LOOPBACK_GRANT)
    assert decision.headers == cs.VARY + CORS_TRUSTED


def test_granted_preflight_headers():
    decision = judge_cross_site(
        facts(
            env(
                "OPTIONS",
                origin="http://localhost:3000",
                access_control_request_method="PUT",
                access_control_request_headers="content-type, x-token",
                sec_fetch_site="same-site",
            )
        ),
        TRUSTED,
        LOOPBACK_GRANT,
    )
    assert decision.answers_preflight
    headers = dict(decision.headers)
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert headers["Access-Control-Allow-Methods"] == "PUT"
    assert headers["Access-Control-Allow-Headers"] == "content-type, x-token"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "Access-Control-Allow-Private-Network" not in headers  # not asked


@pytest.mark.parametrize(("asked", "granted"), [("true", True), ("false", False), ("TRUE", False)])
def test_private_network_grant_only_when_asked(asked, granted):
    decision = judge_cross_site(
        facts(
            env(
                "OPTIONS",
                origin="http://localhost:3000",
                access_control_request_method="GET",
                access_control_request_private_network=asked,
            )
        ),
        TRUSTED,
        LOOPBACK_GRANT,
    )
    headers = dict(decision.headers)
    assert ("Access-Control-Allow-Private-Network" in headers) is granted


def test_refused_preflight_has_no_cors_header():
    decision = judge_cross_site(
        facts(
            env(
                "OPTIONS",
                origin=EVIL,
                access_control_request_method="POST",
                access_control_request_private_network="true",
            )
        ),
        TRUSTED,
        LOOPBACK_GRANT,
    )
    assert not decision.allowed
    assert not decision.answers_preflight
    assert all(not name.startswith("Access-Control-") for name, _ in decision.headers)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://localhost:3000", ("http", "localhost", 3000)),
        ("HTTPS://Tool.Example", ("https", "tool.example", 443)),
        ("http://[::1]", ("http", "[::1]", 80)),
        ("chrome-extension://abcdef", ("chrome-extension", "abcdef", None)),
        ("null", None),
        ("http://", None),
        ("http://a/", None),
        ("http://a?x", None),
        ("http://a#x", None),
        ("http://u:p@a", None),
        ("//a", None),
        ("http://a:0", None),
        ("http://\u212a.example", None),
    ],
)
def test_parse_origin(text, expected):
    assert parse_origin(text) == expected


def test_trusted_origins_are_normalised_and_checked():
    assert normalise_trusted_origins(
        ["HTTP://LocalHost:3000", "https://x.example:443", "http://[0::1]:80", "http://a:8080"]
    ) == {"http://localhost:3000", "https://x.example", "http://[::1]", "http://a:8080"}
    assert Options(trusted_origins="http://a:1, http://b:2").trusted_origins == {
        "http://a:1",
        "http://b:2",
    }
    for bad in ["*", "null", "localhost:3000", "http://a/", "http://a/path", ""]:
        with pytest.raises(ValueError, match="trusted_origins"):
            Options(trusted_origins=[bad])
    with pytest.raises(TypeError):
        Options(check_cross_site="no")
    # An entry that is not text (a list of anything passes the option's own
    # check): named, never taken apart.
    for entry in [3000, b"http://a:1", None]:
        with pytest.raises(TypeError, match="trusted_origins entries must be strings"):
            Options(trusted_origins=["http://a:1", entry])


def test_extension_and_local_only_together_add_vary_once():
    app = Flask(__name__)
    SelfHost(app)

    @app.post("/both")
    @local_only
    def both():
        return "ok"

    reply = call(app, "POST", {"Sec-Fetch-Site": "same-origin"}, path="/both")
    assert reply.status_code == 200
    assert reply.headers.getlist("Vary") == ["Origin, Sec-Fetch-Site"]


def test_guard_order_host_before_cross_site():
    decision = evaluate(env("POST", host="evil.example:8000", origin="http://evil.example:8000"))
    assert (decision.allowed, decision.rule) == (False, HOST)


def test_check_cross_site_false_turns_the_rule_off():
    environ = env("POST", origin=EVIL, sec_fetch_site="cross-site")
    assert not evaluate(environ).allowed
    decision = evaluate(environ, Options(check_cross_site=False))
    assert (decision.allowed, decision.rule, decision.headers) == (True, SOURCE, ())


# ---------------------------------------------------------------- the fronts


def plain_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Vary", "Cookie")])
    return [b"data"]


def flask_app(guard="extension", **options):
    app = Flask(__name__)
    calls = []
    if guard == "extension":
        SelfHost(app, **options)
    wrap = local_only(**options) if guard == "local_only" else (lambda view: view)

    @app.route("/data", methods=["GET", "POST", "PUT"])
    @wrap
    def data():
        calls.append(1)
        return jsonify(ok=True)

    @app.post("/public")
    @allow_remote
    def public():
        calls.append(1)
        return "public"

    app.calls = calls
    return app


def fronts(**options):
    """(name, WSGI callable, counter of app calls) for each front."""
    calls = []

    def counting_app(environ, start_response):
        calls.append(1)
        return plain_app(environ, start_response)

    yield "middleware", SelfHostMiddleware(counting_app, **options), calls
    for guard in ("extension", "local_only"):
        app = flask_app(guard, **options)
        yield guard, app, app.calls


def call(wsgi, method="GET", headers=None, path="/data"):
    headers = {"Host": "127.0.0.1:8000", **(headers or {})}
    return Client(wsgi).open(
        path, method=method, headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}
    )


FRONT_IDS = ["middleware", "extension", "local_only"]


def front(name, **options):
    return next((wsgi, calls) for n, wsgi, calls in fronts(**options) if n == name)


@pytest.mark.parametrize("name", FRONT_IDS)
def test_front_refuses_rebinding_host_and_names_the_option(name, logged):
    wsgi, calls = front(name)
    reply = call(wsgi, headers={"Host": "evil.example:8000"})
    assert reply.status_code == 403
    assert "allowed_hosts" in logged()
    assert "(Host not allowed)" in reply.get_data(as_text=True)
    assert reply.headers["Cache-Control"] == "no-store"
    assert calls == []
    wsgi, calls = front(name, allowed_hosts=["evil.example"])
    assert call(wsgi, headers={"Host": "evil.example:8000"}).status_code == 200
    assert calls == [1]


@pytest.mark.parametrize("name", FRONT_IDS)
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Origin": EVIL},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Origin": EVIL},
        {"Sec-Fetch-Site": "bogus"},
    ],
)
def test_front_refuses_cross_site_post(name, headers, logged):
    wsgi, calls = front(name)
    reply = call(wsgi, "POST", headers)
    assert reply.status_code == 403
    assert "trusted_origins" in logged() or "Sec-Fetch-Site" in logged()
    assert "(cross-site request)" in reply.get_data(as_text=True)
    assert "Origin, Sec-Fetch-Site" in reply.headers.getlist("Vary")
    assert "Access-Control-Allow-Origin" not in reply.headers
    assert calls == []


@pytest.mark.parametrize("name", FRONT_IDS)
def test_front_allows_same_origin_and_navigation_with_vary(name):
    wsgi, calls = front(name)
    same = call(wsgi, "POST", {"Sec-Fetch-Site": "same-origin", "Origin": APP})
    assert same.status_code == 200
    assert "Origin, Sec-Fetch-Site" in same.headers.getlist("Vary")
    navigation = call(
        wsgi,
        "GET",
        {
            "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document",
        },
    )
    assert navigation.status_code == 200
    assert "Origin, Sec-Fetch-Site" in navigation.headers.getlist("Vary")
    plain = call(wsgi)  # curl: no Vary added on the common path
    assert plain.status_code == 200
    assert "Origin, Sec-Fetch-Site" not in plain.headers.getlist("Vary")
    assert len(calls) == 3


@pytest.mark.parametrize("name", FRONT_IDS)
def test_front_preflight(name, logged):
    asked = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type",
        "Access-Control-Request-Private-Network": "true",
        "Sec-Fetch-Site": "same-site",
        "Sec-Fetch-Mode": "cors",
    }
    wsgi, calls = front(name)
    refused = call(wsgi, "OPTIONS", asked)
    assert refused.status_code == 403
    assert "trusted_origins" in logged()
    assert "(cross-site request)" in refused.get_data(as_text=True)
    assert not [h for h, _ in refused.headers if h.startswith("Access-Control-")]

    wsgi, calls = front(name, trusted_origins=["http://localhost:3000"])
    granted = call(wsgi, "OPTIONS", asked)
    assert granted.status_code == 204
    assert granted.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert granted.headers["Access-Control-Allow-Methods"] == "PUT"
    assert granted.headers["Access-Control-Allow-Headers"] == "content-type"
    assert granted.headers["Access-Control-Allow-Private-Network"] == "true"
    assert "Origin" in granted.headers["Vary"]
    assert calls == []  # the guard answered, the app did not run

    actual = call(wsgi, "PUT", {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"})
    assert actual.status_code == 200
    assert actual.headers.getlist("Access-Control-Allow-Origin") == ["http://localhost:3000"]
    assert actual.headers["Access-Control-Allow-Credentials"] == "true"
    assert calls == [1]

    other = call(wsgi, "PUT", {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    assert other.status_code == 403
    assert calls == [1]


@pytest.mark.parametrize("name", ["extension", "local_only"])
def test_flask_plain_options_still_answered(name):
    wsgi, calls = front(name)
    reply = call(wsgi, "OPTIONS")
    assert reply.status_code == 200
    assert set(reply.headers["Allow"].split(", ")) >= {"GET", "POST", "PUT", "OPTIONS"}
    assert calls == []


def test_extension_exempt_view_still_gets_vary():
    app = flask_app("extension")
    reply = call(app, "POST", {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}, path="/public")
    assert reply.status_code == 200  # allow_remote: the app's choice
    assert "Origin, Sec-Fetch-Site" in reply.headers.getlist("Vary")


def test_extension_error_handler_keeps_vary():
    app = flask_app("extension")

    @app.errorhandler(403)
    def forbidden(error):
        return f"custom: {error.selfhost_decision.rule}", 403

    reply = call(app, "POST", {"Origin": EVIL})
    assert (reply.status_code, reply.get_data(as_text=True)) == (403, "custom: cross-site")
    assert "Origin, Sec-Fetch-Site" in reply.headers.getlist("Vary")


@pytest.mark.parametrize("name", FRONT_IDS)
def test_front_option_relaxes_cross_site(name):
    wsgi, calls = front(name, check_cross_site=False)
    assert call(wsgi, "POST", {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}).status_code == 200
    assert calls == [1]


@pytest.mark.parametrize("name", FRONT_IDS)
@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "OPTIONS", "HEAD", "PUT"]),
    host=st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["localhost:8000", "[::1]"])),
    origin=st.one_of(st.none(), st.text(max_size=30), st.sampled_from([APP, EVIL, "null"])),
    site=st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["cross-site", "none"])),
    mode=st.one_of(st.none(), st.sampled_from(["navigate", "cors", "no-cors", ""])),
    acrm=st.one_of(st.none(), st.text(max_size=10)),
)
def test_no_header_value_gives_a_500(name, method, host, origin, site, mode, acrm):
    wsgi, _ = front(name, trusted_origins=["http://localhost:3000"])
    environ = {"REQUEST_METHOD": method, "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http"}
    for key, value in [
        ("HTTP_HOST", host),
        ("HTTP_ORIGIN", origin),
        ("HTTP_SEC_FETCH_SITE", site),
        ("HTTP_SEC_FETCH_MODE", mode),
        ("HTTP_ACCESS_CONTROL_REQUEST_METHOD", acrm),
    ]:
        if value is not None:
            # A WSGI server hands headers over as latin-1 strings.
            environ[key] = value.encode("utf-8", "replace").decode("latin-1")
    decision = evaluate(environ)
    assert decision.allowed in (True, False)
    reply = Client(wsgi).open("/data", method=method, environ_overrides=environ)
    assert reply.status_code in (200, 204, 403, 405), reply.get_data(as_text=True)
