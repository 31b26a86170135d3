"""
``allow_remote`` under the ASGI middleware (Starlette, FastAPI)
===============================================================

The threat: an exemption that lets a refused request reach anything but the
one endpoint that was exempted. So when the guard refuses a request, it asks
the Starlette (or FastAPI) router below it which endpoint the request would
run, exactly as the router will decide it, and lets the request on only if
that endpoint is marked by :func:`~flask_selfhost.allow_remote`:

.. code-block:: python

    from fastapi import FastAPI
    from flask_selfhost import allow_remote
    from flask_selfhost.asgi import SelfHostASGIMiddleware

    api = FastAPI()
    api.add_middleware(SelfHostASGIMiddleware)

    @api.get("/healthz")
    @allow_remote
    def healthz():
        return {"ok": True}

Whatever is unclear is refused: no router found, a route that matches only
partly (a 405), a redirect or a 404, a ``Mount`` or ``Host`` (another app
routes below it), router-level middleware, a router class of the app's own.

The request is passed to the innermost stretch of layers, above the router,
that are the framework's own (Starlette's and FastAPI's classes); middleware
of the app's own between the guard and the router (``@app.middleware("http")``
functions too) is skipped for it, as the Flask extension skips WSGI
middleware: such middleware could rewrite the path or method and so run
another endpoint than the one that was checked.

Starlette is never imported here: an app whose modules are not loaded is no
Starlette app.
"""

from __future__ import annotations

import sys
from typing import Any

from .exempt import is_exempt

#: How many layers (middleware, apps) are followed down to the router.
MAX_LAYERS = 32
_FRAMEWORKS = frozenset({"starlette", "fastapi"})
#: Framework classes that run the app's own function on the request before
#: routing: ``@app.middleware("http")`` is a ``BaseHTTPMiddleware`` whose
#: ``dispatch`` is the app's, and could reroute (rewrite the path, override
#: the method). Such a layer is the app's own code.
_RUNS_APP_CODE = frozenset({"starlette.middleware.base.BaseHTTPMiddleware"})


def _is_framework(layer: object) -> bool:
    """A class of Starlette's or FastAPI's own (not a subclass of the app's)
    that runs no function of the app's before the router."""
    kind = type(layer)
    if f"{kind.__module__}.{kind.__qualname__}" in _RUNS_APP_CODE:
        return False
    return kind.__module__.partition(".")[0] in _FRAMEWORKS


def starlette_exempt_app(app: Any, scope: Any) -> Any | None:
    """The ASGI app to pass a refused request to, when the Starlette or
    FastAPI router below ``app`` would run an :func:`allow_remote` endpoint
    for ``scope``; else ``None``. May raise on odd input: the caller refuses.

    :param app: What the guard wraps: a Starlette/FastAPI app, or the next
        layer of one's middleware stack (``add_middleware``).
    """
    routing = sys.modules.get("starlette.routing")
    applications = sys.modules.get("starlette.applications")
    if routing is None or applications is None:
        return None  # Starlette not loaded: no Starlette app to route
    entry: Any = None  # the first layer of the framework's own run down to the router
    entry_owner: Any = None  # the Starlette app whose stack holds that entry
    owner: Any = None
    layer = app
    for _ in range(MAX_LAYERS):
        if not _is_framework(layer):
            entry = None  # the app's own code: start the run below it
        elif entry is None:
            entry, entry_owner = layer, owner
        if isinstance(layer, routing.Router):
            break
        if isinstance(layer, applications.Starlette):
            if getattr(layer, "root_path", ""):
                return None  # FastAPI(root_path=...) reroutes in __call__: unclear
            if layer.middleware_stack is None:  # built on first use, as Starlette does
                layer.middleware_stack = layer.build_middleware_stack()
            owner, layer = layer, layer.middleware_stack
        else:
            layer = getattr(layer, "app", None)
            if layer is None:
                return None  # a layer that does not say what it calls
    else:
        return None
    router = layer
    if entry is None:
        return None
    if getattr(router, "middleware_stack", router.app) != router.app:
        return None  # Router(middleware=...): it could reroute
    if scope.get("type") not in ("http", "websocket"):
        return None
    # Routed on a copy: FastAPI's matching writes (and restores) keys in the scope.
    probe = {key: dict(value) if type(value) is dict else value for key, value in scope.items()}
    endpoint = _routed_endpoint(routing, router, probe)
    if not is_exempt(endpoint):
        return None
    if entry_owner is not None:
        scope.setdefault("app", entry_owner)  # as Starlette.__call__ would have set it
    return entry


def _routed_endpoint(routing: Any, router: Any, scope: Any) -> Any:
    """The endpoint ``router`` runs for ``scope``: its first full match, as
    ``Router.app`` picks it (a partial match, a 405, is served only when no
    route matches fully, so it never names an endpoint here)."""
    for route in router.routes:
        match, _ = route.matches(scope)
        if match is routing.Match.FULL:
            return _endpoint_of(routing, route, scope)
    return None


def _endpoint_of(routing: Any, route: Any, scope: Any) -> Any:
    """The endpoint a fully matched route runs, or ``None`` when it hands the
    request to another app (``Mount``, ``Host``) or is of a kind not known."""
    if isinstance(route, (routing.Route, routing.WebSocketRoute)):
        return route.endpoint
    # FastAPI >= 0.16x keeps an included APIRouter whole, as one route that
    # selects among its own routes with _match (as its handle does).
    if type(route).__name__ == "_IncludedRouter" and _is_framework(route):
        match, _, selected, _ = route._match(scope)
        if match is routing.Match.FULL and selected is not None:
            return _endpoint_of(routing, selected, scope)
    return None
