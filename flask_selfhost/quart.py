"""
Self-host guard for Quart
=========================

The Flask extension's API for Quart apps: :class:`SelfHost` guards every
route (unknown paths and WebSocket routes included: another host gets 403,
not 404), :func:`allow_remote` exempts one view, :func:`local_only` guards
one view, with or without the extension.

.. code-block:: python

    from quart import Quart
    from flask_selfhost.quart import SelfHost, allow_remote

    app = Quart(__name__)
    app.config["SELFHOST_TRUSTED_PROXIES"] = ["127.0.0.1"]   # optional
    SelfHost(app)                                   # or SelfHost().init_app(app)

    @app.get("/healthz")
    @allow_remote
    async def healthz():
        return {"ok": True}

Options come from the keyword arguments of :class:`SelfHost` and, per app,
from the same ``SELFHOST_<OPTION>`` config keys as the Flask extension
(which win): checked by ``init_app``, and read again when the app serves
(lifespan's startup or its first request), as the Flask extension does.
The guard is :class:`~flask_selfhost.asgi.SelfHostASGIMiddleware` around
``app.asgi_app`` (Quart's documented place for middleware), so it judges
the scope as the server made it, before any Quart code runs. A refused
request gets the plain-text refusal of the ASGI front, unless Quart routes
it to an ``allow_remote`` view: Quart then serves it, past any middleware
added to ``app.asgi_app`` before the extension (such middleware could route
it to another view).

Needs Quart; the rest of the package does not import it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from types import MethodType
from typing import Any

from quart import (
    Quart,
    Response,
    after_this_request,
    current_app,
    has_websocket_context,
    request,
    websocket,
)
from werkzeug.datastructures import Headers

from .asgi import SelfHostASGIMiddleware
from .decision import Decision
from .exempt import View, is_exempt
from .exempt import allow_remote as allow_remote  # the same mark as Flask's
from .log import log_decision
from .options import Options
from .respond import merge_headers
from .scope import ASGIApp, Receive, Scope, Send, evaluate_scope
from .views import (
    ExtensionBase,
    SelfHostState,
    ViewOptions,
    exempt_views,
    local_only_decorator,
    refusal,
    refusal_options,
)


class QuartGuard(SelfHostASGIMiddleware):
    """:class:`~flask_selfhost.asgi.SelfHostASGIMiddleware` that routes a
    refused request with Quart, to serve it if its view is exempt."""

    def __init__(self, app: ASGIApp, quart_app: Quart, state: SelfHostState) -> None:
        super().__init__(app)
        self.state, self._serving = state, False
        self.options = state.options
        # Nothing granted from memory before the first call has read the config.
        self._remotes, self._hosts, self._browsers = {}, {}, {}
        self.quart_app = quart_app
        # Quart's own asgi_app, under any middleware that was there before us.
        self.quart_asgi_app: ASGIApp = MethodType(type(quart_app).asgi_app, quart_app)

    def use(self, options: Options) -> None:
        self.options = options
        # The common path reads these options' memory, not the default's.
        self._remotes, self._hosts = options.accepted.remotes, options.accepted.hosts
        self._browsers = options.accepted.asgi_browsers

    async def judged(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The full rules; the first call (lifespan's startup, or the first
        request: the common path grants nothing before it) reads the app's
        config, as the Flask extension does."""
        if not self._serving:
            self.use(self.state.start_serving())  # raises until the config is good
            self._serving = True
        await super().judged(scope, receive, send)

    def exempt_app(self, scope: Scope) -> ASGIApp | None:
        try:
            view = routed_view(self.quart_app, scope)
        except Exception:  # a scope Quart cannot read: refused, never a 500
            return None
        return self.quart_asgi_app if is_exempt(view) else None

    def refusal_options(self, scope: Scope) -> Options:
        """A ``local_only`` view's own ``refuse_status`` and ``refuse_body``
        for a request routed to it (routed again: refusals only)."""
        try:
            view = routed_view(self.quart_app, scope)
        except Exception:  # a scope Quart cannot read: the guard's own answer
            return self.options
        return refusal_options(view, self.options)


async def _never_sent(message: Any) -> None:  # pragma: no cover - routing sends nothing
    raise RuntimeError("flask_selfhost: routing must not send")


def routed_view(app: Quart, scope: Scope) -> Any:
    """The view function Quart would run for ``scope``, or ``None`` (no
    route, a 404/405/redirect, a host it will not route). No hook and no
    view runs: the request is built and matched as Quart does, then dropped.
    """
    # Quart's own way from a scope to a request (private, so read through Any:
    # if Quart renames it, this raises and the request is refused).
    quart: Any = app
    if scope.get("type") == "http":
        connection = quart.asgi_http_class(app, scope)._create_request_from_scope(_never_sent)
        context = quart.request_context(connection)
    elif scope.get("type") == "websocket":
        connection = quart.asgi_websocket_class(app, scope)._create_websocket_from_scope(
            _never_sent
        )
        context = quart.websocket_context(connection)
    else:
        return None
    if context.url_adapter is None:
        return None
    context.match_request()
    if connection.routing_exception is not None or connection.url_rule is None:
        return None
    return app.view_functions.get(connection.url_rule.endpoint)


class SelfHost(ExtensionBase):
    """Quart extension: refuse every request and WebSocket handshake that
    does not come from this host.

    :param app: The app to guard now; or call :meth:`init_app` later.
    :param options: See :class:`~flask_selfhost.options.Options`. Checked
        here and again, merged with the app's config, in :meth:`init_app`.
    """

    def init_app(self, app: Quart) -> None:
        state = self.register(app)  # the SELFHOST_* keys and checks of flask_selfhost.views
        # Outermost, so that the guard sees the scope as the server made it.
        guard = QuartGuard(app.asgi_app, app, state)  # type: ignore[arg-type]
        app.asgi_app = guard  # type: ignore[method-assign,assignment]


def _check(options: Options) -> Decision:
    """Judge the current request or WebSocket handshake (inside a view); log
    it; raise if refused. The decision's headers (``Vary``, CORS) are added
    to an HTTP view's response."""
    is_websocket = has_websocket_context()
    connection: Any = websocket if is_websocket else request
    decision = evaluate_scope(connection.scope, options)
    if decision.headers and not decision.answers_preflight and not is_websocket:
        extra = decision.headers

        @after_this_request  # runs for the view's answer and for the refusal alike
        async def add_headers(response: Any) -> Any:
            merged = merge_headers(list(response.headers.items()), extra)
            response.headers.clear()
            response.headers.extend(merged)
            return response

    log_decision(decision, connection.method, connection.path)
    if decision.allowed:
        return decision
    raise refusal(decision, options, Response)


def local_only(view: View | None = None, /, **options: Any) -> Any:
    """Guard one Quart view or WebSocket view: ``@local_only`` or
    ``@local_only(refuse_status=404)``; sync or async.

    With :class:`SelfHost` registered on the app, the extension's options
    apply, overridden by any given here; without it, the options given here.
    ``refuse_status`` and ``refuse_body`` given here also answer a request
    to this view that the extension refuses; any other option can only make
    the view stricter than the extension (see
    :class:`~flask_selfhost.views.ViewOptions`). Put it under the route
    decorator, as with Flask.

    An HTTP view receives ``OPTIONS`` requests, so that the guard sees CORS
    preflights: it answers a granted preflight itself and any other
    ``OPTIONS`` as Quart's automatic handler would (the view is not called).
    A refused WebSocket handshake gets 403 before it is accepted.
    """
    return local_only_decorator(_guard_view, view, options)


def _guard_view(view: View, view_options: ViewOptions) -> Callable[..., Any]:
    """``view`` (sync or async) behind the guard, with the options of
    ``view_options``."""

    @wraps(view)
    async def guarded_view(*args: Any, **kwargs: Any) -> Any:
        decision = _check(view_options.for_app(current_app.extensions))
        if decision.answers_preflight:
            return Response("", 204, headers=Headers(list(decision.headers)))
        if not has_websocket_context() and request.method == "OPTIONS":
            return await current_app.make_default_options_response()
        run: Callable[..., Awaitable[Any]] = current_app.ensure_async(view)
        return await run(*args, **kwargs)

    return guarded_view


__all__ = ["QuartGuard", "SelfHost", "allow_remote", "exempt_views", "local_only", "routed_view"]
