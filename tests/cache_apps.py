"""The apps that real servers run behind a shared cache (tests/test_shared_caches.py).

Each front (Flask under gunicorn, Starlette and Quart under uvicorn) serves
the same routes, one per way an app speaks to caches, guarded and trusting
the cache in front (127.0.0.1), plus one :func:`~flask_selfhost.allow_remote`
route that any cache may keep. Every answer's body is new (a random token),
so that a client can tell an answer the app made from one a cache replayed.
"""

from __future__ import annotations

import uuid
from email.utils import formatdate
from time import time

from flask_selfhost import allow_remote

TRUSTED = "127.0.0.1"


def expires_in_a_minute() -> str:
    return formatdate(time() + 60, usegmt=True)


#: Path -> the caching headers the app sets on it.
CASES: dict[str, list[tuple[str, str]]] = {
    "/nothing": [],
    "/max-age": [("Cache-Control", "max-age=60")],
    "/public": [("Cache-Control", "public, max-age=60")],
    "/expires": [],  # Expires, a minute from the answer: see caching_headers
    # What Varnish (Surrogate-Control) and nginx (X-Accel-Expires, read
    # before Cache-Control) obey instead of the app's own "private".
    "/targeted": [
        ("X-Accel-Expires", "60"),
        ("Surrogate-Control", "max-age=60"),
        ("Cache-Control", "private"),
    ],
}
#: The control: answers anyone, and lets any cache keep the answer.
SHARED = "/shared"


def caching_headers(path: str) -> list[tuple[str, str]]:
    if path == "/expires":
        return [("Expires", expires_in_a_minute())]
    if path == SHARED:
        return [("Cache-Control", "public, max-age=60")]
    return CASES[path]


def flask_app():
    """Flask with the extension (the WSGI closure), for gunicorn."""
    from flask import Flask, Response

    from flask_selfhost import SelfHost

    app = Flask(__name__)
    SelfHost(app, trusted_proxies=TRUSTED)

    def answer(path: str) -> Response:
        return Response(uuid.uuid4().hex, headers=caching_headers(path))

    for path in CASES:
        app.add_url_rule(path, path, lambda path=path: answer(path))
    app.add_url_rule(SHARED, SHARED, allow_remote(lambda: answer(SHARED)))
    return app


def starlette_app():
    """Starlette with SelfHostASGIMiddleware, for uvicorn."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from flask_selfhost.asgi import SelfHostASGIMiddleware

    def endpoint(path: str):
        async def answer(request):
            return PlainTextResponse(uuid.uuid4().hex, headers=dict(caching_headers(path)))

        return answer

    routes = [Route(path, endpoint(path)) for path in CASES]
    routes.append(Route(SHARED, allow_remote(endpoint(SHARED))))
    middleware = [Middleware(SelfHostASGIMiddleware, trusted_proxies=TRUSTED)]
    return Starlette(routes=routes, middleware=middleware)


def quart_app():
    """Quart with its extension, for uvicorn."""
    from quart import Quart, Response

    from flask_selfhost.quart import SelfHost

    app = Quart(__name__)
    SelfHost(app, trusted_proxies=TRUSTED)

    def endpoint(path: str):
        async def answer():
            return Response(uuid.uuid4().hex, headers=caching_headers(path))

        return answer

    for path in CASES:
        app.add_url_rule(path, path, endpoint(path))
    app.add_url_rule(SHARED, SHARED, allow_remote(endpoint(SHARED)))
    return app
