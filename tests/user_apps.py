"""Apps for the real-server tests of ``allowed_users`` and proxies trusted
by their user (``tests/test_peer_users_servers.py``): guards whose options
come from ``SELFHOST_TEST_OPTIONS`` (JSON), since the users they name are
made by the test."""

from __future__ import annotations

import json
import os

from flask_selfhost import SelfHostMiddleware
from flask_selfhost.asgi import SelfHostASGIMiddleware

OPTIONS = json.loads(os.environ.get("SELFHOST_TEST_OPTIONS", "{}"))


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"hello from uid {os.geteuid()}".encode()]


async def hello_asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = f"hello from uid {os.geteuid()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


wsgi_app = SelfHostMiddleware(hello, **OPTIONS)
asgi_app = SelfHostASGIMiddleware(hello_asgi, **OPTIONS)
