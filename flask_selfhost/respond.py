"""
How a guard answers
===================

What every front sends on the guard's own account, written once, with no
framework: the plain-text refusal (WSGI and ASGI; for a WebSocket handshake
an HTTP denial response or a close), the answer to a granted CORS
preflight, and the decision's headers (``Vary``, CORS, a relayed grant's
``Cache-Control``) merged into the app's answer (:func:`merge_headers`).

A refusal tells the client only the fixed text of
:meth:`~flask_selfhost.options.Options.body_for`; the full reason goes to
the log, in the same call (:func:`refuse_wsgi`, :func:`refuse_asgi`), so
that no refusal is answered unlogged. ``Cache-Control: no-store`` keeps a
cache from replaying a refusal to a client that would be granted.

Under ASGI the merge runs on every answer to a browser's request (they
carry ``Vary``), so the decision's headers are encoded once per distinct
headers tuple (:func:`encoded`: the rules hand out a few constant ones),
and the app's headers are read, not decoded and encoded again, unless a
relayed grant makes the answer private (:func:`flask_selfhost.caching.make_private`
reads every field).
"""

from __future__ import annotations

from collections.abc import Awaitable
from functools import lru_cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NamedTuple

from .caching import make_private
from .crosssite import VARY
from .decision import Decision, Headers
from .log import log_decision
from .options import Options

if TYPE_CHECKING:  # no WSGI front loads the ASGI adapter
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .scope import Message, Scope, Send

PLAIN_TEXT = "text/plain; charset=utf-8"
#: What keeps any cache from storing a refusal.
NO_STORE = ("Cache-Control", "no-store")
#: The WebSocket close code of a refused handshake where the server cannot
#: send an HTTP answer (policy violation); servers answer it with 403.
POLICY_VIOLATION = 1008
#: The ASGI extension that lets an app answer a WebSocket handshake with HTTP.
DENIAL_RESPONSE = "websocket.http.response"


def refusal_headers(decision: Decision, body: bytes) -> list[tuple[str, str]]:
    """The headers of a plain-text refusal with ``body``, the decision's included."""
    return [
        ("Content-Type", PLAIN_TEXT),
        ("Content-Length", str(len(body))),
        NO_STORE,
        *decision.headers,
    ]


def merge_headers(response_headers: list[tuple[str, str]], extra: Headers) -> list[tuple[str, str]]:
    """``response_headers`` plus ``extra``: ``Vary`` is added unless the same
    value is there, named ``Vary`` or, as ASGI names are, ``vary`` (it is a
    list; a second field adds to the first);
    ``Cache-Control`` (a relayed grant's) overrides whatever the app said, so
    that no shared cache stores the answer
    (:func:`flask_selfhost.caching.make_private`); any other header is added
    only when the app did not set it (an app's own CORS layer wins)."""
    merged = list(response_headers)
    private = False
    for header in extra:
        name = header[0]
        if name == "Vary":
            if header in merged or ("vary", header[1]) in merged:
                continue
        elif name == "Cache-Control":
            private = True
            continue
        elif any(present.lower() == name.lower() for present, _ in response_headers):
            continue
        merged.append(header)
    return make_private(merged) if private else merged


# ---------------------------------------------------------------- WSGI


def refuse_wsgi(
    decision: Decision, options: Options, environ: WSGIEnvironment, start_response: StartResponse
) -> list[bytes]:
    """Log a refusal and answer it in plain text, with the decision's headers."""
    log_decision(decision, environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
    body = options.body_for(decision).encode("utf-8")
    status = options.refuse_status
    start_response(f"{status} {HTTPStatus(status).phrase}", refusal_headers(decision, body))
    return [body]


def answer_preflight_wsgi(decision: Decision, start_response: StartResponse) -> list[bytes]:
    """The answer to a granted CORS preflight: 204 and the CORS headers."""
    start_response("204 No Content", list(decision.headers))
    return []


#: The cross-site rule's usual grant headers, ``Vary`` alone, merged without
#: a loop by :func:`start_response_with`.
VARY_ALONE = VARY
VARY_FIELD = VARY[0]
VARY_FIELD_LOWER = ("vary", VARY[0][1])


def start_response_with(start_response: StartResponse, headers: Headers) -> StartResponse:
    """``start_response`` that merges the decision's ``headers`` into whatever
    the app sends (:func:`merge_headers`)."""

    if headers is VARY_ALONE:  # a browser's same-origin grant: merged as merge_headers would

        def start_with_vary(status: str, response_headers: Any, exc_info: Any = None) -> Any:
            # Added to the app's own list, as WSGI middleware commonly does: a
            # list the app passes again keeps one Vary, harmless on any answer.
            if VARY_FIELD not in response_headers and VARY_FIELD_LOWER not in response_headers:
                try:
                    response_headers.append(VARY_FIELD)
                except AttributeError:  # a tuple, which some servers take too
                    response_headers = [*response_headers, VARY_FIELD]
            return start_response(status, response_headers, exc_info)

        return start_with_vary

    def start_with_headers(status: str, response_headers: Any, exc_info: Any = None) -> Any:
        return start_response(status, merge_headers(response_headers, headers), exc_info)

    return start_with_headers


# ---------------------------------------------------------------- ASGI


def _encode(headers: list[tuple[str, str]] | Headers) -> list[tuple[bytes, bytes]]:
    """ASGI's form: lowercase names, bytes."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _start(status: int, headers: list[tuple[bytes, bytes]], kind: str) -> Message:
    return {"type": kind, "status": status, "headers": headers}


async def refuse_asgi(decision: Decision, options: Options, scope: Scope, send: Send) -> None:
    """Log a refusal and answer it as :func:`refuse_wsgi` does; a WebSocket
    handshake gets that answer where the server supports the denial-response
    extension, else a close before accept (which servers answer with 403)."""
    websocket = scope.get("type") == "websocket"
    log_decision(decision, "GET" if websocket else scope.get("method"), scope.get("path"))
    if websocket and not can_deny_websocket(scope):
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        return
    kind = "websocket.http.response" if websocket else "http.response"
    body = options.body_for(decision).encode("utf-8")
    await send(
        _start(options.refuse_status, _encode(refusal_headers(decision, body)), f"{kind}.start")
    )
    await send({"type": f"{kind}.body", "body": body})


def can_deny_websocket(scope: Scope) -> bool:
    """Whether the server lets the app answer a WebSocket handshake with HTTP."""
    return DENIAL_RESPONSE in (scope.get("extensions") or {})


async def answer_preflight_asgi(decision: Decision, send: Send) -> None:
    """The answer to a granted CORS preflight: 204 and the CORS headers."""
    await send(_start(204, _encode(decision.headers), "http.response.start"))
    await send({"type": "http.response.body", "body": b""})


class EncodedHeaders(NamedTuple):
    """A decision's headers as an ASGI answer carries them."""

    #: The headers, encoded (lowercase names, bytes), in their order.
    fields: tuple[tuple[bytes, bytes], ...]
    #: A ``Cache-Control`` among them: the answer is made private.
    private: bool
    #: The headers as the decision holds them.
    decision_headers: Headers


#: :data:`VARY_ALONE` as ASGI carries it, and the field an app may have sent
#: already, under either name.
VARY_ENCODED = (b"vary", VARY[0][1].encode("latin-1"))
VARY_TITLED = (b"Vary", VARY_ENCODED[1])


@lru_cache(maxsize=256)  # a few constant tuples, and one per trusted origin
def encoded(headers: Headers) -> EncodedHeaders:
    """``headers`` (a decision's) encoded once, for every answer that adds them."""
    private = any(name == "Cache-Control" for name, _ in headers)
    return EncodedHeaders(tuple(_encode(headers)), private, headers)


def merge_encoded(response_headers: Any, extra: EncodedHeaders) -> list[Any]:
    """An ASGI answer's ``headers`` plus the decision's, as :func:`merge_headers`
    merges them: the app's fields pass as they are (read, not re-encoded),
    except under a relayed grant, whose ``Cache-Control`` rewrites them all."""
    if extra.private:
        present = [
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in response_headers
        ]
        return _encode(merge_headers(present, extra.decision_headers))
    merged = list(response_headers)
    names: set[bytes] | None = None
    for field in extra.fields:
        name, value = field
        if name == b"vary":  # added unless the same field is there, as merge_headers says
            if field not in merged and (b"Vary", value) not in merged:
                merged.append(field)
            continue
        if names is None:
            names = {bytes(key).lower() for key, _ in response_headers}
        if name not in names:  # else the app's own (its CORS layer) wins
            merged.append(field)
    return merged


def send_with(send: Send, headers: Headers) -> Send:
    """``send`` that merges the decision's ``headers`` into the answer
    (:func:`merge_encoded`). ``Vary`` alone (a browser's usual grant) is set
    in the app's start message itself, as a new ``headers`` list, which
    ASGI middleware commonly does (Starlette's own do): the app's list is left
    as it was, and a message the app sends again keeps one ``Vary``, harmless
    on any answer. Any other headers go in a copy of the message, so that
    what one grant says (a CORS origin) never stays with the app's message."""
    if headers is VARY_ALONE:  # a browser's same-origin grant: merged as merge_encoded would

        def send_with_vary(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                fields = [*(message.get("headers") or ())]  # any iterable, read once
                if VARY_ENCODED not in fields and VARY_TITLED not in fields:
                    fields.append(VARY_ENCODED)
                    message["headers"] = fields
            return send(message)

        return send_with_vary
    extra = encoded(headers)

    # A plain function that returns what ``send`` returns, for the app to
    # await: a coroutine of its own would cost one more frame per message.
    def send_with_headers(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            message = {**message, "headers": merge_encoded(message.get("headers") or (), extra)}
        return send(message)

    return send_with_headers
