"""
Which Flask view a request would run, without running it
========================================================

A guarded Flask app may have views that must answer anyone
(:func:`~flask_selfhost.allow_remote`) and views with their own refusal
(:func:`~flask_selfhost.local_only`). When a guard refuses a request, it
asks Flask's own router which view the request would run, so that such
views mean the same under the :class:`~flask_selfhost.SelfHost` extension
and under :func:`~flask_selfhost.SelfHostMiddleware` around a Flask app:
the request is matched as Flask matches it, with no hook and no view run.
A request that Flask cannot even route is refused, never a 500.

Needs Flask: :func:`~flask_selfhost.SelfHostMiddleware` imports this module
only when Flask is loaded (no Flask app can exist otherwise).
"""

from __future__ import annotations

from types import MethodType
from typing import Any

from flask import Flask
from flask.ctx import RequestContext

from .decision import Decision
from .exempt import is_exempt
from .middleware import Refuse
from .options import Options
from .respond import refuse_wsgi, start_response_with
from .views import refusal_options


def routed_context(app: Flask, environ: Any) -> RequestContext | None:
    """A request context for ``environ`` with routing done (no hook, no view
    runs), or ``None`` when Werkzeug cannot even build the request (a port
    it cannot read, say)."""
    try:
        context = app.request_context(environ)
        if context.url_adapter is not None:  # None when Werkzeug rejects the Host
            context.match_request()
    except Exception:
        return None
    return context


def routed_view(app: Flask, context: RequestContext) -> Any:
    """The view function ``context`` was routed to, or ``None``."""
    endpoint = context.request.endpoint  # None for unknown paths and methods
    return app.view_functions.get(endpoint) if endpoint else None


def find_flask_app(app: object, depth: int = 6) -> Flask | None:
    """The Flask app that a WSGI callable is, or wraps: a :class:`~flask.Flask`,
    its bound ``wsgi_app``, or middleware whose ``.app`` leads to one
    (``ProxyFix``), at most ``depth`` layers down."""
    for _ in range(depth + 1):
        if isinstance(app, Flask):
            return app
        owner = getattr(app, "__self__", None)  # a bound method: app.wsgi_app
        if isinstance(owner, Flask):
            return owner
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def refuse_unless_exempt(app: Flask, options: Options) -> Refuse:
    """A plain-text refusal, except for a request routed to an
    :func:`allow_remote` view of ``app``, which Flask then serves, and with
    a ``local_only`` view's own response options for a request routed to
    one. For :func:`SelfHostMiddleware` around a Flask app, so that both
    decorators mean the same there as under the extension."""
    flask_wsgi_app = MethodType(type(app).wsgi_app, app)

    def refuse_or_serve(decision: Decision, environ: Any, start_response: Any) -> Any:
        context = routed_context(app, environ)
        view = None if context is None else routed_view(app, context)
        if is_exempt(view):
            if decision.headers:
                start_response = start_response_with(start_response, decision.headers)
            return flask_wsgi_app(environ, start_response)
        answer = refusal_options(view, options)
        return refuse_wsgi(decision, answer, environ, start_response)

    return refuse_or_serve
