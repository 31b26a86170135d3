"""
Self-host guard for Flask
=========================

:class:`SelfHost` guards every route of an app, unknown paths included (a
remote client gets 403, not 404). :func:`~flask_selfhost.allow_remote`
exempts one view; :func:`local_only` guards one view, with or without the
extension.

.. code-block:: python

    from flask_selfhost import SelfHost, allow_remote, local_only

    selfhost = SelfHost()

    def create_app():
        app = Flask(__name__)
        app.config["SELFHOST_REFUSE_STATUS"] = 404   # optional
        selfhost.init_app(app)
        return app

    @bp.get("/healthz")
    @allow_remote
    def healthz(): ...

Options come from the keyword arguments of :class:`SelfHost` and, per app,
from ``app.config`` keys ``SELFHOST_<OPTION>`` (which win), checked by
``init_app`` and read again when the app serves its first request, so that
keys set after ``init_app`` count; later changes do not. The extension wraps
``app.wsgi_app``: middleware added to ``app.wsgi_app`` after ``init_app``
runs before the guard. Refusals raise
Werkzeug's ``Forbidden`` (or the configured status), carrying a plain-text
response and the decision as ``selfhost_decision``, so that an app's
``errorhandler(403)`` renders them.

What this front shares with Quart's (options, per-view options) is in
:mod:`flask_selfhost.views`; how a refused request is routed, in
:mod:`flask_selfhost.flask_routes`. Needs Flask: ``import flask_selfhost``
imports this module only when ``SelfHost`` or ``local_only`` is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from types import MethodType
from typing import Any

from flask import Flask, Response, after_this_request, current_app, request

from .decision import Decision
from .environ import evaluate
from .exempt import View, is_exempt
from .flask_routes import routed_context, routed_view
from .log import log_decision
from .middleware import Refuse, guard_wsgi_app
from .options import Options
from .respond import merge_headers, refuse_wsgi, start_response_with
from .views import ExtensionBase, ViewOptions, local_only_decorator, refusal, refusal_options


def _check(options: Options) -> Decision:
    """Evaluate the current request (inside a view); log it; raise if refused.

    The decision's headers (``Vary``, CORS) are added to the view's response.
    """
    decision = evaluate(request.environ, options)
    if decision.headers and not decision.answers_preflight:
        extra = decision.headers

        @after_this_request  # runs for the view's answer and for the refusal alike
        def add_headers(response: Response) -> Response:
            merged = merge_headers(response.headers.to_wsgi_list(), extra)
            response.headers.clear()
            response.headers.extend(merged)
            return response

    log_decision(decision, request.method, request.path)
    if decision.allowed:
        return decision
    raise refusal(decision, options, Response)


def _refuse_through_flask(app: Flask, options: Options) -> Refuse:
    """How the extension answers a refused request: rendered by Flask itself,
    through the app's error handlers and ``after_request`` hooks (the request
    context is pushed for that, so the session opens and teardown runs),
    unless its view is exempt. No ``before_request`` hook and no view of the
    app runs for it."""
    # Flask's own wsgi_app, under any middleware that was there before us.
    flask_wsgi_app = MethodType(type(app).wsgi_app, app)

    def refuse(decision: Decision, environ: Any, start_response: Any) -> Any:
        if decision.headers:  # Vary, on the refusal and on an exempt view's answer alike
            start_response = start_response_with(start_response, decision.headers)
        context = routed_context(app, environ)
        if context is None:
            # Refuse in plain text rather than let Werkzeug's error become a 500.
            return refuse_wsgi(decision, options, environ, start_response)
        view = routed_view(app, context)
        if is_exempt(view):
            # Straight to Flask, past any middleware between it and the guard:
            # such middleware (ProxyFix's x_host, a method override, a mounted
            # app) could route the request elsewhere than this exempt view.
            return flask_wsgi_app(environ, start_response)
        log_decision(decision, environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
        answer = refusal_options(view, options)  # a local_only view's refuse_status
        with context:
            try:
                response = app.finalize_request(
                    app.handle_user_exception(refusal(decision, answer, Response))
                )
            except Exception as error:  # an error handler that fails: Flask's 500 path
                response = app.handle_exception(error)
            return response(environ, start_response)

    return refuse


class SelfHost(ExtensionBase):
    """Flask extension: refuse every request that does not come from this host.

    :param app: The app to guard now; or call :meth:`init_app` later.
    :param options: See :class:`~flask_selfhost.options.Options`. Checked
        here and again, merged with the app's config, in :meth:`init_app`.
    """

    def init_app(self, app: Flask) -> None:
        state = self.register(app)

        def serving() -> tuple[Options, Refuse]:
            options = state.start_serving()
            return options, _refuse_through_flask(app, options)

        # Outermost, so that the guard sees the environ as the server made it,
        # before any other middleware (ProxyFix, say) rewrites it. An allowed
        # request goes straight on: the guard adds no request-context work.
        options = state.options
        refuse = _refuse_through_flask(app, options)
        app.wsgi_app = guard_wsgi_app(app.wsgi_app, options, refuse, serving)  # type: ignore[method-assign,assignment]


def local_only(view: View | None = None, /, **options: Any) -> Any:
    """Guard one view: ``@local_only`` or ``@local_only(refuse_status=404)``.

    With :class:`SelfHost` registered on the app, the extension's options
    apply, overridden by any given here; without it, the options given here.
    ``refuse_status`` and ``refuse_body`` given here also answer a request
    to this view that the extension or the middleware refuses; any other
    option can only make the view stricter than that guard (see
    :class:`~flask_selfhost.views.ViewOptions`).

    The view receives ``OPTIONS`` requests, so that the guard sees CORS
    preflights: it answers a granted preflight itself and any other
    ``OPTIONS`` as Flask's automatic handler would (the view is not called).
    """
    return local_only_decorator(_guard_view, view, options)


def _guard_view(view: View, view_options: ViewOptions) -> Callable[..., Any]:
    """``view`` behind the guard, with the options of ``view_options``."""

    @wraps(view)
    def guarded_view(*args: Any, **kwargs: Any) -> Any:
        decision = _check(view_options.for_app(current_app.extensions))
        if decision.answers_preflight:
            return Response(status=204, headers=list(decision.headers))
        if request.method == "OPTIONS":
            return current_app.make_default_options_response()
        return view(*args, **kwargs)

    return guarded_view
