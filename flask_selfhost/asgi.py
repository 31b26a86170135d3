"""
Self-host guard for any ASGI app
================================

The same rules as the WSGI fronts (:mod:`flask_selfhost.guard`), for ASGI 3
apps: Starlette, FastAPI, Quart, Litestar, Django's ASGI handler, or a bare
ASGI callable. HTTP requests and WebSocket handshakes are judged; lifespan
passes through untouched.

.. code-block:: python

    from flask_selfhost.asgi import SelfHostASGIMiddleware
    app = SelfHostASGIMiddleware(app)                 # any ASGI app
    app.add_middleware(SelfHostASGIMiddleware)        # Starlette, FastAPI

The scope is read by :mod:`flask_selfhost.scope` (what each ASGI server
puts there, and what the guard makes of it), and every answer of the guard's
own comes from :mod:`flask_selfhost.respond`. Here:

- the common requests (HTTP/1.1 from a loopback client, no forwarding
  header: curl's, with one Host, and a browser's from the app's own pages,
  with one Host, ``Origin`` and ``Sec-Fetch-*``) are answered from what the
  full rules granted before (:mod:`flask_selfhost.accepted`), as the WSGI
  fronts do;
- everything else is judged; a grant's headers (``Vary``, CORS) are added
  to the app's answer, and a granted CORS preflight is answered here;
- a refused WebSocket handshake gets an HTTP 403 where the server supports
  the denial-response extension, else a close before accept (which servers
  answer with 403);
- a refused request that the Starlette/FastAPI router below would give to an
  :func:`~flask_selfhost.allow_remote` endpoint is passed on to it, and to
  nothing else (see :mod:`flask_selfhost.asgi_routes`). Quart apps use
  :mod:`flask_selfhost.quart`.

:param app: The ASGI application to guard.
:param options: See :class:`flask_selfhost.options.Options`; checked now.
"""

from __future__ import annotations

from typing import Any

from .asgi_connection import connection_object, connection_verdict
from .asgi_routes import starlette_exempt_app
from .decision import PREFLIGHT
from .exempt import allow_remote
from .log import DEBUG, is_enabled_for, log_decision, log_warning
from .options import Options
from .respond import answer_preflight_asgi, refuse_asgi, send_with
from .scope import (
    JUDGED_HEADERS,
    ASGIApp,
    Receive,
    Scope,
    ScopeConnection,
    Send,
    evaluate_scope,
)

#: Request headers that no rule reads (lowercase, as ASGI requires), which
#: browsers and clients send: the common path passes them at the cost of one
#: set lookup, with no type test (a browser sends ten of them). The lookup
#: matches by hash and equality, so only an object that lies about both could
#: pass for one of these names while holding another (a name that merely
#: compares equal to anything does not): code in this process, which could
#: as well unwrap the guard. Any other name must be exact ``bytes``, costs a
#: ``lower()`` more, and goes to the full rules when that is one the rules
#: read (:data:`~flask_selfhost.scope.JUDGED_HEADERS`).
UNJUDGED_HEADERS = frozenset(
    {
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-length",
        b"content-type",
        b"cookie",
        b"dnt",
        b"if-modified-since",
        b"if-none-match",
        b"pragma",
        b"priority",
        b"range",
        b"referer",
        b"sec-ch-ua",
        b"sec-ch-ua-mobile",
        b"sec-ch-ua-platform",
        b"sec-fetch-user",
        b"te",
        b"upgrade-insecure-requests",
        b"user-agent",
        b"x-requested-with",
    }
)


#: Whether this process has looked at its server yet.
_server_checked = False


class SelfHostASGIMiddleware:
    """Refuse requests and WebSocket handshakes that do not come from this host."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        self.options = Options.from_mapping(options)
        self._remotes = self.options.accepted.remotes
        self._hosts = self.options.accepted.hosts
        self._browsers = self.options.accepted.asgi_browsers
        #: A rule that reads the connection is on: the fast path asks it too.
        self._per_connection = (
            self.options.check_client_socket or self.options.allowed_users is not None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ``async``, though the common path awaits one thing only: servers
        # (uvicorn, hypercorn, daphne) tell ASGI 3 apps by a coroutine __call__.
        # The common requests, answered from what the full rules granted
        # before (see flask_selfhost.accepted, and guard_wsgi_app).
        grant = None
        try:
            client, headers = scope["client"][0], scope["headers"]
            # Exact types for what is looked up in a memory: a subclass of str
            # or bytes may hash and compare as it likes, while the full rules
            # read what it holds. HTTP/1.1 only: an HTTP/2 connection may be a
            # proxy's tunnel (1.0 and a missing version, which means 1.1, take
            # the full rules).
            if (
                type(client) is str
                and type(headers) is list
                and scope["type"] == "http"
                and scope["http_version"] == "1.1"
            ):
                # The keyed headers (scope.SINGLE), each at most once and as
                # bytes: twice is malformed and not bytes unusable, which only
                # the full rules answer. Compared one by one: cheaper than a
                # dict per request.
                host = origin = site = mode = dest = None
                for name, value in headers:
                    if name in UNJUDGED_HEADERS:
                        continue  # no rule reads it (see UNJUDGED_HEADERS)
                    if type(name) is not bytes or type(value) is not bytes:
                        break
                    if name == b"host":
                        if host is not None:
                            break
                        host = value
                    elif name == b"origin":
                        if origin is not None:
                            break
                        origin = value
                    elif name == b"sec-fetch-site":
                        if site is not None:
                            break
                        site = value
                    elif name == b"sec-fetch-mode":
                        if mode is not None:
                            break
                        mode = value
                    elif name == b"sec-fetch-dest":
                        if dest is not None:
                            break
                        dest = value
                    elif name.lower() in JUDGED_HEADERS:
                        break  # a forwarding header, a preflight's, or a case variant
                else:
                    if origin is not None or site is not None:
                        method, scheme = scope["method"], scope["scheme"]
                        if type(method) is str and type(scheme) is str:
                            grant = self._browsers.get(
                                (client, host, origin, site, mode, dest, method, scheme)
                            )
                    elif host in self._hosts:  # bytes here: ASGI's form
                        grant = self._remotes.get(client)
        except (KeyError, TypeError, ValueError, IndexError):
            pass  # absent, odd or unhashable: not the common request
        if grant is None:
            await self.judged(scope, receive, send)
            return
        # Every rule that reads the connection runs here, never from memory
        # (the kernel's witness, the owner of the client's socket): a new one
        # joins asgi_connection.connection_verdict (and guard_wsgi_app's
        # tests), or the memory stays empty while it is on
        # (accepted.AcceptedRequests.remembering).
        owner = None
        if self._per_connection:
            allowed, owner = connection_verdict(scope, receive, self.options)
            if not allowed:
                await self.judged(scope, receive, send)
                return
        # log_decision logs a grant at DEBUG only; asked here first, since
        # the call alone would cost a sizeable part of the common path.
        if is_enabled_for(DEBUG):
            if owner is not None:  # this connection's, never the address's
                grant = grant._replace(peer_owner=owner)
            log_decision(grant, scope.get("method"), scope.get("path"))
        extra = grant.headers
        if extra:  # a browser's grant: Vary, maybe CORS
            await self.app(scope, receive, send_with(send, extra))
            return
        await self.app(scope, receive, send)

    async def judged(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request the common path does not take: the full rules."""
        kind = scope.get("type")
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)  # lifespan, and anything newer
            return
        global _server_checked
        if not _server_checked:
            _server_checked = True
            reason = ScopeConnection(scope).unknown_local_reason()
            if reason is not None:  # once per process: what the server cannot tell
                log_warning(reason)
        per_connection = self.options.check_client_socket or self.options.allowed_users is not None
        connection = connection_object(scope, receive) if per_connection else None
        decision = evaluate_scope(scope, self.options, connection)
        if not decision.allowed:
            exempt = self.exempt_app(scope)  # routing happens on refusals only
            if exempt is not None:
                if decision.headers and kind == "http":  # Vary, as on an allowed answer
                    send = send_with(send, decision.headers)
                await exempt(scope, receive, send)
                return
            await refuse_asgi(decision, self.refusal_options(scope), scope, send)
            return
        method = "GET" if kind == "websocket" else scope.get("method")
        log_decision(decision, method, scope.get("path"))
        if decision.rule == PREFLIGHT:  # granted: answered here
            await answer_preflight_asgi(decision, send)
            return
        if decision.headers and kind == "http":
            await self.app(scope, receive, send_with(send, decision.headers))
            return
        await self.app(scope, receive, send)

    def exempt_app(self, scope: Scope) -> ASGIApp | None:
        """Where a refused request goes instead of the refusal: the app's own
        routing, when it would run an :func:`allow_remote` endpoint, else
        ``None``. Never raises: whatever cannot be routed is refused.

        Here, the Starlette/FastAPI router below this middleware (see
        :func:`starlette_exempt_app`); the Quart extension routes with Quart.
        """
        try:
            return starlette_exempt_app(self.app, scope)
        except Exception:  # an odd scope, a router we misread: refused, never a 500
            return None

    def refusal_options(self, scope: Scope) -> Options:
        """The options a refusal is answered with (its status and body):
        here the guard's own; the Quart extension's are those of the view
        the request is routed to, where that view says."""
        return self.options


def asgi_guard_options(app: object) -> Options | None:
    """The options of an ASGI app guarded by :class:`SelfHostASGIMiddleware`
    (directly, or one Starlette middleware layer down), else ``None``."""
    if isinstance(app, SelfHostASGIMiddleware):
        return app.options
    for layer in getattr(app, "user_middleware", ()) or ():  # Starlette, FastAPI
        if getattr(layer, "cls", None) is SelfHostASGIMiddleware:
            return Options.from_mapping(getattr(layer, "kwargs", {}) or {})
    return None


__all__ = ["SelfHostASGIMiddleware", "allow_remote", "asgi_guard_options"]
