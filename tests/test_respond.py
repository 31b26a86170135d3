"""What the guard answers on its own account (flask_selfhost.respond): the
plain refusal under WSGI and ASGI, and the decision's headers merged into the
app's answer, the same under both."""

from __future__ import annotations

import asyncio

import pytest

from flask_selfhost import crosssite as cs
from flask_selfhost.caching import PRIVATE
from flask_selfhost.decision import Decision
from flask_selfhost.options import Options
from flask_selfhost.respond import (
    POLICY_VIOLATION,
    encoded,
    merge_encoded,
    merge_headers,
    refuse_asgi,
    refuse_wsgi,
    send_with,
    start_response_with,
)

CORS_TRUSTED = (
    ("Access-Control-Allow-Origin", "http://localhost:3000"),
    ("Access-Control-Allow-Credentials", "true"),
)
REFUSED = Decision(False, "cross-site", "a page of another site", "127.0.0.1", None, None, cs.VARY)


def test_merge_headers_vary_added_others_only_when_absent():
    app_headers = [("Vary", "Cookie"), ("access-control-allow-origin", "http://x")]
    merged = merge_headers(app_headers, cs.VARY + CORS_TRUSTED)
    assert merged == [
        *app_headers,
        cs.VARY[0],
        ("Access-Control-Allow-Credentials", "true"),
    ]
    assert merge_headers(merged, cs.VARY) == merged  # a second guard adds nothing


def asgi_form(headers):
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


APP_HEADERS = [
    [],
    [("Content-Type", "text/plain"), ("Vary", "Cookie")],
    [("Access-Control-Allow-Origin", "http://x"), ("Content-Length", "2")],
    [("Cache-Control", "public, max-age=60"), ("Surrogate-Control", "max-age=3600")],
    [("Expires", "0"), ("CDN-Cache-Control", "max-age=9"), ("Vary", "Accept-Encoding")],
]
EXTRAS = [cs.VARY, cs.VARY + CORS_TRUSTED, PRIVATE, PRIVATE + cs.VARY, CORS_TRUSTED + cs.VARY]


@pytest.mark.parametrize("app_headers", APP_HEADERS)
@pytest.mark.parametrize("extra", EXTRAS)
def test_asgi_merge_is_the_wsgi_merge(app_headers, extra):
    """The same fields, in the same order, as merge_headers gives a WSGI answer."""
    merged = merge_encoded(asgi_form(app_headers), encoded(extra))
    assert merged == asgi_form(merge_headers(app_headers, extra))


@pytest.mark.parametrize("extra", EXTRAS)
def test_asgi_merge_twice_adds_nothing(extra):
    """A second guard (an app guarded twice) adds no second Vary."""
    once = merge_encoded(asgi_form(APP_HEADERS[1]), encoded(extra))
    assert merge_encoded(once, encoded(extra)) == once


def test_asgi_merge_passes_the_apps_fields_as_they_are():
    """Read, not decoded and encoded again: the app's own pairs (a name's
    case, a list instead of a tuple) reach the server unchanged, unless a
    relayed grant rewrites them all."""
    app_headers = [[b"Content-Type", b"text/plain"], (b"x-app", b"1")]
    merged = merge_encoded(app_headers, encoded(cs.VARY))
    assert merged[0] is app_headers[0] and merged[1] is app_headers[1]
    assert merged[2:] == [(b"vary", b"Origin, Sec-Fetch-Site")]
    assert encoded(cs.VARY) is encoded(cs.VARY)  # encoded once


def test_send_with_adds_to_the_start_only():
    sent = []

    async def send(message):
        sent.append(message)

    async def answer():
        wrapped = send_with(send, cs.VARY)
        await wrapped({"type": "http.response.start", "status": 200, "headers": []})
        await wrapped({"type": "http.response.body", "body": b"x"})

    asyncio.run(answer())
    assert sent == [
        {"type": "http.response.start", "status": 200, "headers": asgi_form(cs.VARY)},
        {"type": "http.response.body", "body": b"x"},
    ]


def refused_under_asgi(scope):
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(refuse_asgi(REFUSED, Options(refuse_status=404), scope, send))
    return sent


def test_the_refusal_is_the_same_under_wsgi_and_asgi(logged):
    started = []
    body = refuse_wsgi(
        REFUSED,
        Options(refuse_status=404),
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/"},
        lambda status, headers: started.append((status, headers)),
    )
    [(status, headers)] = started
    assert status == "404 Not Found"
    assert headers == [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body[0]))),
        ("Cache-Control", "no-store"),
        *cs.VARY,
    ]
    start, sent_body = refused_under_asgi({"type": "http", "method": "GET", "path": "/"})
    assert start == {"type": "http.response.start", "status": 404, "headers": asgi_form(headers)}
    assert sent_body == {"type": "http.response.body", "body": body[0]}
    assert logged().count("selfhost=refused") == 2  # each logged where it is answered


def test_a_refused_websocket_handshake(logged):
    handshake = {"type": "websocket", "path": "/ws", "extensions": {}}
    assert refused_under_asgi(handshake) == [{"type": "websocket.close", "code": POLICY_VIOLATION}]
    denial = {**handshake, "extensions": {"websocket.http.response": {}}}
    start, body = refused_under_asgi(denial)
    assert start["type"] == "websocket.http.response.start" and start["status"] == 404
    assert body["type"] == "websocket.http.response.body"
    assert logged().count("method=GET path=/ws") == 2


def test_a_vary_named_as_asgi_names_it_counts():
    """An answer that passed a guard under ASGI (``vary``, lowercase) gets no
    second Vary from another guard, relayed grant or not."""
    once = [("vary", cs.VARY[0][1])]
    assert merge_headers(once, cs.VARY) == once
    assert merge_headers(once, PRIVATE + cs.VARY) == [*once, ("Cache-Control", "private")]


@pytest.mark.parametrize("app_headers", APP_HEADERS)
@pytest.mark.parametrize("extra", EXTRAS)
def test_send_with_merges_as_merge_encoded_and_leaves_the_apps_list(app_headers, extra):
    """Each wrapper (the one for Vary alone and the general one) answers what
    merge_encoded gives, and leaves the app's list as it was."""
    sent = []

    async def send(message):
        sent.append(message)

    fields = asgi_form(app_headers)
    kept = list(fields)
    start = {"type": "http.response.start", "status": 200, "headers": fields}
    asyncio.run(send_with(send, extra)(start))
    assert sent == [{**start, "headers": merge_encoded(kept, encoded(extra))}]
    assert fields == kept
    if extra is not cs.VARY:  # what a grant says beyond Vary never stays with the app's message
        assert start["headers"] is fields


@pytest.mark.parametrize("app_headers", APP_HEADERS)
@pytest.mark.parametrize("extra", EXTRAS)
def test_start_response_with_merges_as_merge_headers(app_headers, extra):
    started = []
    start_response = start_response_with(lambda *args: started.append(args), extra)
    start_response("200 OK", list(app_headers))
    assert started == [("200 OK", merge_headers(app_headers, extra), None)]


APP_FIELDS = (("Content-Type", "text/plain"), ("Content-Length", "2"))


def test_vary_is_added_to_headers_of_any_kind():
    """A WSGI app's headers as a tuple, an ASGI app's as a generator: the
    app's fields all reach the server, and Vary once."""
    started = []
    start_response_with(lambda *args: started.append(args), cs.VARY)("200 OK", APP_FIELDS)
    assert started == [("200 OK", [*APP_FIELDS, cs.VARY[0]], None)]
    sent = []

    async def send(message):
        sent.append(message)

    fields = asgi_form(APP_FIELDS)
    start = {"type": "http.response.start", "status": 200, "headers": (f for f in fields)}
    asyncio.run(send_with(send, cs.VARY)(start))
    assert sent[0]["headers"] == [*fields, *asgi_form(cs.VARY)]


def test_a_message_sent_again_keeps_one_vary():
    """An app that sends one constant start message to every request: Vary is
    set in it by the first browser's grant, and never added twice."""
    sent = []

    async def send(message):
        sent.append(list(message["headers"]))

    start = {"type": "http.response.start", "status": 200, "headers": asgi_form(APP_FIELDS)}
    for _ in range(2):
        asyncio.run(send_with(send, cs.VARY)(start))
    assert sent == [[*asgi_form(APP_FIELDS), *asgi_form(cs.VARY)]] * 2
    started = []
    fields = list(APP_FIELDS)
    for _ in range(2):
        start_response_with(lambda *args: started.append(list(args[1])), cs.VARY)("200 OK", fields)
    assert started == [[*APP_FIELDS, cs.VARY[0]]] * 2
