"""
Self-host guard for any WSGI app
================================

A server bound to ``0.0.0.0`` answers every host that can reach it, and one
bound to ``127.0.0.1`` can still be reached from the LAN through a DNAT rule
plus ``route_localnet=1``. This middleware refuses, in the application,
every request that does not come from this host (see
the rules in :mod:`flask_selfhost.guard`), and logs each
decision on the ``flask_selfhost`` logger (see :mod:`flask_selfhost.log`):
refusals at WARNING, allowed requests at DEBUG.

.. code-block:: python

    from flask_selfhost import SelfHostMiddleware
    app.wsgi_app = SelfHostMiddleware(app.wsgi_app)      # Flask
    application = SelfHostMiddleware(application)        # any WSGI app

:param app: The WSGI application to guard.
:param options: See :class:`flask_selfhost.options.Options`; checked now.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from .decision import Decision
from .environ import environ_witnessed, evaluate, remembered_owner, remembered_user_allowed
from .kernel_witness import witnessed_connections as witnessed
from .log import DEBUG, is_enabled_for, log_decision
from .options import Options
from .respond import answer_preflight_wsgi, refuse_wsgi, start_response_with

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class GuardedApp(Protocol):
    """What :func:`SelfHostMiddleware` returns: a WSGI application that
    knows the app it guards and its options."""

    app: WSGIApplication
    options: Options

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse, /
    ) -> Iterable[bytes]: ...


Refuse = Callable[[Decision, "WSGIEnvironment", "StartResponse"], Iterable[bytes]]


def guard_wsgi_app(
    next_app: WSGIApplication,
    options: Options,
    refuse: Refuse,
    serving: Callable[[], tuple[Options, Refuse]] | None = None,
) -> GuardedApp:
    """The guarded WSGI callable: every WSGI front is this function.

    :param next_app: Where an allowed request goes.
    :param options: The guard's options.
    :param refuse: Answers (and logs) a refused request
        (:func:`~flask_selfhost.respond.refuse_wsgi`, or the
        Flask extension's rendering through the app's error handlers).
    :param serving: Called by the first request instead, for the options and
        ``refuse`` from then on (the Flask extension reads the app's config
        then). The first request always takes the full rules, since nothing
        is remembered yet, so the common path never asks.

    A closure, not an object with ``__call__``: calling an instance of a
    Python class costs about 800 CPU instructions more than calling a
    function, a sixth of the guard's whole common path.
    """
    remotes, hosts = options.accepted.remotes, options.accepted.hosts
    browsers = options.accepted.browsers
    if serving is not None:  # nothing granted from memory before serving() has run
        remotes, hosts, browsers = {}, {}, {}

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        nonlocal options, refuse, remotes, hosts, browsers, serving
        # The common requests, answered from what the full rules granted
        # before (see flask_selfhost.accepted). Written out here, not called: a
        # call costs as much as all of these lookups. HTTP/1.1 only: an HTTP/2
        # connection may be a proxy's tunnel (gunicorn's "HTTP/2.0" included).
        # HTTP/1.0 and a missing SERVER_PROTOCOL take the full rules
        # (facts.HTTP1_PROTOCOLS): a string compare costs a third of a
        # tuple's.
        extra = None  # a browser's grant's headers (Vary, maybe CORS)
        try:
            if "HTTP_ORIGIN" in environ or "HTTP_SEC_FETCH_SITE" in environ:
                # A browser's request: its grant is remembered whole, keyed on
                # every string the rules read of it (accepted.AcceptedRequests).
                grant = (
                    browsers.get(
                        (
                            environ["REMOTE_ADDR"],
                            environ["HTTP_HOST"],
                            environ.get("HTTP_ORIGIN"),
                            environ.get("HTTP_SEC_FETCH_SITE"),
                            environ.get("HTTP_SEC_FETCH_MODE"),
                            environ.get("HTTP_SEC_FETCH_DEST"),
                            environ["REQUEST_METHOD"],
                            environ["wsgi.url_scheme"],
                        )
                    )
                    if environ["SERVER_PROTOCOL"] == "HTTP/1.1"
                    else None
                )
                if grant is not None:
                    extra = grant.headers
            else:
                # curl's: the client and the Host, each remembered alone. A
                # Host remembered in WSGI's form only (``is str``): the memory
                # holds ASGI's bytes too, and the full rules refuse a Host
                # that is not text.
                grant = (
                    remotes[environ["REMOTE_ADDR"]]
                    if hosts[environ["HTTP_HOST"]] is str
                    and environ["SERVER_PROTOCOL"] == "HTTP/1.1"
                    else None
                )
        except (KeyError, TypeError):  # absent or unhashable: not the common request
            grant = None
        # The HTTP_ keys below are forwarding_syntax.ENVIRON_KEYS, one test
        # each (a set's isdisjoint costs more); tests/test_forwarding_headers.py
        # holds them to it.
        if (
            grant is not None
            and "HTTP_X_FORWARDED_FOR" not in environ
            and "HTTP_FORWARDED" not in environ
            and "HTTP_X_REAL_IP" not in environ
            and "HTTP_X_FORWARDED_HOST" not in environ
            and "HTTP_X_FORWARDED_PROTO" not in environ
            and "HTTP_X_FORWARDED_PORT" not in environ
            and "HTTP_X_FORWARDED_PREFIX" not in environ
            and "HTTP_X_FORWARDED_SERVER" not in environ
            and "HTTP_X_FORWARDED_SCHEME" not in environ
            and "HTTP_X_FORWARDED_SSL" not in environ
            and "HTTP_CF_CONNECTING_IP" not in environ
            and "HTTP_TRUE_CLIENT_IP" not in environ
            and "HTTP_X_CLIENT_IP" not in environ
            and "HTTP_X_CLUSTER_CLIENT_IP" not in environ
            and "HTTP_FASTLY_CLIENT_IP" not in environ
            and "PROXY_PROTOCOL" not in environ
            # The kernel's witness: a connection it vouched for, or asked now.
            # Every rule that reads the connection runs here, never from
            # memory: a new one joins the witness in this test (and in the
            # ASGI front's), or the memory stays empty while it is on.
            and (
                not options.check_client_socket
                or id(environ.get("gunicorn.socket")) in witnessed
                or environ_witnessed(environ, options.require_client_socket)
            )
            # allowed_users: the owner remembered on this connection, never the address's.
            and (
                options.allowed_users is None
                or remembered_user_allowed(environ, options.allowed_users)
            )
        ):
            if is_enabled_for(DEBUG):
                owner = remembered_owner(environ)
                if owner is not None:  # this connection's, never the address's
                    grant = grant._replace(peer_owner=owner)
                log_decision(grant, environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            if extra:
                return next_app(environ, start_response_with(start_response, extra))
            return next_app(environ, start_response)

        if serving is not None:  # raises until the options are good: nothing is served
            options, refuse = serving()
            remotes, hosts = options.accepted.remotes, options.accepted.hosts
            browsers = options.accepted.browsers
            app.options, serving = options, None
        decision = evaluate(environ, options)
        if decision.allowed:
            log_decision(decision, environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            if decision.headers:  # a browser's request: Vary, maybe CORS
                if decision.answers_preflight:
                    return answer_preflight_wsgi(decision, start_response)
                return next_app(environ, start_response_with(start_response, decision.headers))
            return next_app(environ, start_response)
        return refuse(decision, environ, start_response)

    app = cast(GuardedApp, guarded)
    app.app, app.options = next_app, options
    return app


def SelfHostMiddleware(app: WSGIApplication, **options: Any) -> GuardedApp:
    """Refuse requests that do not come from this host; pass the rest to ``app``.

    Named like a class, as WSGI middleware usually is, but returns the plain
    function :func:`guard_wsgi_app` builds (see there why): test for a guard
    with :func:`guard_options`, not ``isinstance``.

    Around a Flask app (the app, its ``wsgi_app``, or middleware whose
    ``.app`` leads to it), a refused request routed to an
    :func:`~flask_selfhost.allow_remote` view is served by Flask, as under
    :class:`~flask_selfhost.SelfHost`, and one routed to a
    :func:`~flask_selfhost.local_only` view is refused with that view's
    ``refuse_status`` and ``refuse_body``; refusals stay plain text.
    """
    checked = Options.from_mapping(options)

    def refuse(decision: Decision, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        return refuse_wsgi(decision, checked, environ, start_response)

    # Around a Flask app, @allow_remote and @local_only views mean what they
    # mean under SelfHost. No Flask app exists unless Flask is loaded, so a
    # plain WSGI app's guard never imports it; and flask_routes imports this
    # module, so it is imported here, not at the top.
    if "flask" not in sys.modules:
        return guard_wsgi_app(app, checked, refuse)
    from .flask_routes import find_flask_app, refuse_unless_exempt

    flask_app = find_flask_app(app)
    if flask_app is None:
        return guard_wsgi_app(app, checked, refuse)
    return guard_wsgi_app(app, checked, refuse_unless_exempt(flask_app, checked))


def guard_options(app: object) -> Options | None:
    """The options of a WSGI callable that a flask_selfhost front built, else ``None``."""
    options = getattr(app, "options", None)
    return options if isinstance(options, Options) and callable(app) else None
