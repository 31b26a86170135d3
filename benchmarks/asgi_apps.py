"""The ASGI side of the benchmarks: a Starlette hello app, bare or guarded,
and a loop that serves it requests without a server (the scope uvicorn
builds for ``curl http://127.0.0.1:8000/``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from as_parsed import parsed_scope  # beside this script
from browser_request import asgi_headers
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from flask_selfhost.asgi import UNJUDGED_HEADERS, SelfHostASGIMiddleware
from flask_selfhost.crosssite import VARY
from flask_selfhost.log import DEBUG, is_enabled_for
from flask_selfhost.respond import send_with


class PassThrough:
    """The least an ASGI middleware can be: it awaits the app. Its cost is the
    floor under any guard written as ASGI middleware (servers and Starlette
    call ``__call__`` as a coroutine)."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await self.app(scope, receive, send)


class ReadingNames(PassThrough):
    """The same, after one set lookup per header name: what any guard must
    do at least, since a forwarding header may be any of them."""

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        for name, _ in scope["headers"]:
            if name in UNJUDGED_HEADERS:
                continue
        await self.app(scope, receive, send)


class AddingVary(PassThrough):
    """:class:`ReadingNames`, adding ``Vary`` to the answer as a browser's grant adds it
    (:func:`flask_selfhost.respond.send_with`): the floor under a browser's
    request, which the guard answers with ``Vary``."""

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        for name, _ in scope["headers"]:
            if name in UNJUDGED_HEADERS:
                continue
        await self.app(scope, receive, send_with(send, VARY))


class Remembering(PassThrough):
    """:class:`ReadingNames`, keeping the values of the headers a grant is
    keyed on (Host, Origin, ``Sec-Fetch-*``), then the guard's memory
    lookups as it makes them (the Host and the client for curl's request,
    one key of the browser's eight strings for a browser's), logging's level
    check, and ``Vary`` for a browser's grant as :class:`AddingVary` adds
    it: the least a guard that answers from memory does. The guard adds its
    type, HTTP/1.1 and repeated-header checks and the kernel witness."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app)
        self.hosts: set = set()
        self.remotes: dict = {}
        self.browsers: dict = {}

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        host = origin = site = mode = dest = None
        for name, value in scope["headers"]:
            if name in UNJUDGED_HEADERS:
                continue
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"sec-fetch-site":
                site = value
            elif name == b"sec-fetch-mode":
                mode = value
            elif name == b"sec-fetch-dest":
                dest = value
        client = scope["client"][0]
        if origin is not None or site is not None:
            key = (client, host, origin, site, mode, dest, scope["method"], scope["scheme"])
            grant = self.browsers.get(key)
            if grant is None:  # the first request: learnt, as the full rules would grant it
                grant = self.browsers[key] = VARY
        else:
            grant = self.remotes.get(client) if host in self.hosts else None
            if grant is None:
                self.hosts.add(host)
                grant = self.remotes[client] = ()
        is_enabled_for(DEBUG)
        if grant:
            send = send_with(send, grant)
        await self.app(scope, receive, send)


def starlette_hello(guarded: bool, middleware: type | None = None, **options: object) -> Starlette:
    """The hello app; with ``guarded``, SelfHostASGIMiddleware added, as the
    docs show (or ``middleware`` in its place), with ``options``."""

    async def hello(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("Hello, World!")

    app = Starlette(routes=[Route("/", hello)])
    if guarded:
        app.add_middleware(middleware or SelfHostASGIMiddleware, **options)
    return app


def uvicorn_like_scope() -> dict:
    """What uvicorn 0.54 puts in the scope of ``curl http://127.0.0.1:8000/``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"curl/7.88.1"),
            (b"accept", b"*/*"),
        ],
        "state": {},
    }


def browser_like_scope() -> dict:
    """The same, for a browser's request: Chrome's same-origin ``fetch()``
    (:mod:`browser_request`), whose ``Origin`` and ``Sec-Fetch-*`` the
    cross-site rule reads, and whose grant adds ``Vary`` to the answer."""
    scope = uvicorn_like_scope()
    scope["headers"] = asgi_headers()
    return scope


async def uvicorn_receive(accepted: socket.socket) -> tuple[Callable, asyncio.BaseTransport]:
    """The ``receive`` uvicorn's h11 protocol passes for a request on the
    connection ``accepted``: a bound method of its ``RequestResponseCycle``,
    whose ``transport`` is the connection's asyncio transport (made here,
    owning ``accepted``: close it when done). The guard finds the connection
    by it and asks the kernel once per connection; the app must not call it."""
    from uvicorn.protocols.http.h11_impl import RequestResponseCycle

    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock=accepted)
    cycle = object.__new__(RequestResponseCycle)
    cycle.transport = transport
    return cycle.receive, transport


async def serve(app, count: int, browser: bool = False) -> None:
    """Serve ``count`` requests to ``app``, one after another, as a server
    would: curl's (:func:`uvicorn_like_scope`), or a browser's."""
    scope = browser_like_scope() if browser else uvicorn_like_scope()
    # The client and server ends of a real loopback connection, and uvicorn's
    # receive for it: the guard asks the kernel for the client's socket on
    # the first request, and remembers the answer on the connection.
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, peer = listener.accept()
    scope["client"], scope["server"] = peer, accepted.getsockname()
    receive, transport = await uvicorn_receive(accepted)

    async def send(message: dict) -> None:
        pass

    for _ in range(count):
        await app(parsed_scope(scope), receive, send)
    transport.close()
    for sock in (client, listener):
        sock.close()
