"""
Self-host guard for Flask
=========================

:class:`SelfHost` guards every route of an app, unknown paths included (a
remote client gets 403, not 404). :func:`allow_remote` exempts one view;
:func:`local_only` guards one view, with or without the extension.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import wraps
from types import MethodType
from typing import Any

from flask import Flask, Response, after_this_request, current_app, request
from flask.ctx import RequestContext
from werkzeug.exceptions import HTTPException, default_exceptions

from .decision import Decision
from .exempt import View, is_exempt
from .exempt import allow_remote as allow_remote  # the Flask front's name for it
from .guard import evaluate
from .log import log_decision
from .middleware import Refuse, guard_wsgi_app
from .options import Options
from .respond import NO_STORE, PLAIN_TEXT, merge_headers, refuse_wsgi, start_response_with

EXTENSION_NAME = "selfhost"
CONFIG_PREFIX = "SELFHOST_"


class SelfHostState:
    """What ``SelfHost.init_app`` (Flask's or Quart's) puts in
    ``app.extensions["selfhost"]``: the key the doctor and ``local_only`` read.

    :attr:`options` follow the app's ``SELFHOST_*`` config until the app
    serves its first request, then stay fixed: Flask's contract is that
    configuration is complete when the server begins handling requests, so
    a key set after ``SelfHost(app)`` (``app.config.from_prefixed_env()``
    after the extensions, say) counts, as Flask's own settings do.
    """

    __slots__ = ("_options", "_serving", "app", "extension")

    def __init__(self, extension: ExtensionBase, app: Any, options: Options) -> None:
        self.extension, self.app = extension, app
        self._options, self._serving = options, False

    @property
    def options(self) -> Options:
        """The options in force, or that the first request will use."""
        if not self._serving:
            current = self.extension.options_for(self.app)
            if current != self._options:  # equal: keep the object, its memory
                self._options = current
        return self._options

    def start_serving(self) -> Options:
        """The options from now on: the config as it is at the first request.
        A bad value set after ``init_app`` raises here, on every request
        until it is fixed: the server answers 500, nothing is served."""
        options = self.options
        self._serving = True
        return options


class ExtensionBase:
    """What the Flask and Quart extensions share: options checked at once,
    merged with the app's ``SELFHOST_*`` config in :meth:`register`, and
    read again when the app serves its first request (:class:`SelfHostState`).

    :param app: The app to guard now; or call ``init_app`` later.
    :param options: See :class:`~flask_selfhost.options.Options`. Checked
        here and again, merged with the app's config, in ``init_app``.
    """

    def __init__(self, app: Any = None, **options: Any) -> None:
        Options.from_mapping(options)
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:  # each front installs its own guard
        raise NotImplementedError

    def options_for(self, app: Any) -> Options:
        """The options for ``app`` as its config is now (the config wins)."""
        return Options.from_mapping({**self.options, **config_options(app.config)})

    def register(self, app: Any) -> SelfHostState:
        """Check the options for ``app`` now, so that a typo fails at start-up,
        and record them in its extensions."""
        if EXTENSION_NAME in app.extensions:
            raise RuntimeError("flask_selfhost: SelfHost is already registered on this app")
        state = SelfHostState(self, app, self.options_for(app))
        app.extensions[EXTENSION_NAME] = state
        return state


def config_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``SELFHOST_*`` keys of a Flask config, as option names."""
    return {
        key[len(CONFIG_PREFIX) :].lower(): value
        for key, value in config.items()
        if key.startswith(CONFIG_PREFIX)
    }


def refusal(
    decision: Decision, options: Options, response_class: type[Any] = Response
) -> HTTPException:
    """The exception a Flask (or, with Quart's ``Response``, a Quart) front
    raises for a refused request: rendered through the app's error handlers
    (``errorhandler(403)``), else as this plain text."""
    body = options.body_for(decision)
    response = response_class(body, options.refuse_status, content_type=PLAIN_TEXT)
    response.headers.set(*NO_STORE)
    error = default_exceptions[options.refuse_status](description=body, response=response)
    error.selfhost_decision = decision  # type: ignore[attr-defined]
    return error


#: Options that say how a refusal looks, not who is refused: a view's own
#: win for that view even when the app-wide guard refuses the request.
RESPONSE_OPTIONS = frozenset({"refuse_status", "refuse_body"})
#: The attribute ``local_only`` sets on the view it returns: its ViewOptions.
VIEW_OPTIONS = "_selfhost_view_options"


class ViewOptions:
    """The options of one ``local_only`` view (Flask's or Quart's): the
    app's extension options with the view's own on top, or the view's own
    alone where no extension is registered. Checked when the view is
    decorated; merged once per app.

    Under a guard that refuses before the view runs (the extension, or the
    middleware around a Flask app), the view's verdict options cannot let in
    what that guard refused: the request must pass both, so they can only
    make the view stricter. Its response options (:data:`RESPONSE_OPTIONS`)
    answer that guard's refusal too (:meth:`responding`), so that a view's
    ``refuse_status=404`` hides it whoever refuses.

    :param overrides: The options given to ``local_only``.
    """

    __slots__ = ("_merged", "_responding", "overrides", "own")

    def __init__(self, overrides: Mapping[str, Any]) -> None:
        self.own = Options.from_mapping(overrides)  # fail at import time, not per request
        self.overrides = dict(overrides)
        self._merged: dict[Options, Options] = {}  # extension options -> with ours on top
        self._responding: dict[Options, Options] = {}  # a guard's options -> our answer

    def for_app(self, extensions: Mapping[str, Any]) -> Options:
        """The options in force under an app with these ``app.extensions``."""
        state = extensions.get(EXTENSION_NAME)
        if state is None:
            return self.own
        merged = self._merged.get(state.options)
        if merged is None:
            merged = self._merged.setdefault(
                state.options, replace(state.options, **self.overrides)
            )
        return merged

    def responding(self, options: Options) -> Options:
        """``options`` with this view's response options on top: how a
        guard in front of the view answers a request it refuses."""
        answer = self._responding.get(options)
        if answer is None:
            own = {name: self.overrides[name] for name in RESPONSE_OPTIONS & self.overrides.keys()}
            answer = self._responding.setdefault(options, replace(options, **own))
        return answer


def refusal_options(view: object, options: Options) -> Options:
    """How a guard with ``options`` answers a refused request routed to
    ``view``: with the view's own response options if it is a ``local_only``
    view, else with ``options``."""
    view_options = getattr(view, VIEW_OPTIONS, None) if view is not None else None
    if isinstance(view_options, ViewOptions):  # exactly: a mock's attribute is not
        return view_options.responding(options)
    return options


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
    raise refusal(decision, options)


def _routed_context(app: Flask, environ: Any) -> RequestContext | None:
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


def _routed_view(app: Flask, context: RequestContext) -> Any:
    endpoint = context.request.endpoint  # None for unknown paths and methods
    return app.view_functions.get(endpoint) if endpoint else None


def exempt_views(app: Flask) -> list[str]:
    """The endpoints whose views answer anyone (:func:`allow_remote`)."""
    return sorted(endpoint for endpoint, view in app.view_functions.items() if is_exempt(view))


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
        context = _routed_context(app, environ)
        if context is None:
            # Refuse in plain text rather than let Werkzeug's error become a 500.
            return refuse_wsgi(decision, options, environ, start_response)
        view = _routed_view(app, context)
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
                    app.handle_user_exception(refusal(decision, answer))
                )
            except Exception as error:  # an error handler that fails: Flask's 500 path
                response = app.handle_exception(error)
            return response(environ, start_response)

    return refuse


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
        context = _routed_context(app, environ)
        view = None if context is None else _routed_view(app, context)
        if is_exempt(view):
            if decision.headers:
                start_response = start_response_with(start_response, decision.headers)
            return flask_wsgi_app(environ, start_response)
        answer = refusal_options(view, options)
        return refuse_wsgi(decision, answer, environ, start_response)

    return refuse_or_serve


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
    :class:`ViewOptions`).

    The view receives ``OPTIONS`` requests, so that the guard sees CORS
    preflights: it answers a granted preflight itself and any other
    ``OPTIONS`` as Flask's automatic handler would (the view is not called).
    """
    view_options = ViewOptions(options)

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded_view(*args: Any, **kwargs: Any) -> Any:
            decision = _check(view_options.for_app(current_app.extensions))
            if decision.answers_preflight:
                return Response(status=204, headers=list(decision.headers))
            if request.method == "OPTIONS":
                return current_app.make_default_options_response()
            return view(*args, **kwargs)

        # Route OPTIONS to the guarded view instead of Flask's automatic answer.
        guarded_view.required_methods = {"OPTIONS"}  # type: ignore[attr-defined]
        guarded_view.provide_automatic_options = False  # type: ignore[attr-defined]
        setattr(guarded_view, VIEW_OPTIONS, view_options)  # for a guard's refusal
        return guarded_view  # type: ignore[return-value]

    return decorate if view is None else decorate(view)
